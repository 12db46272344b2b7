"""The CMI-RewardBench plug-in contract (spec §6), shared by scorers and the benchmark runner.

Any object with an ``sr`` property and ``score_batch(inputs, batch_size, max_dur, **kwargs)``
returning a float array ``[len(inputs), 2]`` (column 0 = alignment, column 1 = musicality) can
be evaluated by ``cmirm bench`` and used as a reranking scorer. Subclassing is not required.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, List, Protocol, runtime_checkable

import numpy as np
import torch


@dataclass
class BenchmarkBatchInput:
    """One item to score: the clip (a path or a 24 kHz tensor) and its instruction fields.

    Empty strings mean "absent" for ``text`` / ``lyrics``; ``ref_audio`` is None when absent.
    """

    audio: str | torch.Tensor
    text: str = ""
    lyrics: str = ""
    ref_audio: Any | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class BenchmarkModel(Protocol):
    """What ``cmirm bench`` needs from a scorer (duck-typed; see module docstring)."""

    @property
    def sr(self) -> int: ...

    def score_batch(self, inputs: List[BenchmarkBatchInput], batch_size: int, max_dur: float,
                    **kwargs: Any) -> np.ndarray: ...
