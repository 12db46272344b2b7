"""The CMI-RewardBench plug-in contract (spec §6), in both directions.

The official benchmark runner calls ``model.sr`` and ``model.score_batch(inputs, batch_size,
max_dur, **kwargs)`` with `BenchmarkBatchInput` items and expects ``[len(inputs), 2]`` (column 0
alignment, column 1 musicality). Two adapters connect that contract with ours
(`cmirm_plugin.scoring.contract.Scorer`):

* `BenchmarkAdapter` / `CMIRMBenchmarkModel`: any cmirm scorer as an official plug-in, so the
  official runner (``--model_class cmirm_plugin.scoring:CMIRMBenchmarkModel``) can evaluate it;
* `BenchmarkPluginScorer`: an official plug-in as a cmirm scorer (axes alignment, musicality), so
  ``cmirm bench --model``, ``generate --reward`` and the rest take plug-ins written for the
  official runner. `load_scorer` wraps any ``module:Name`` object that has ``sr`` and
  ``score_batch`` but no ``axes`` this way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, List, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import CmirmError
from cmirm_plugin.hub import DEFAULT_MODEL
from cmirm_plugin.records import AXES, Instruction
from cmirm_plugin.scoring.contract import Scorer, as_clips, as_instructions, check_output, cmi_columns
from cmirm_plugin.scoring.loader import load_scorer
from cmirm_plugin.scoring.settings import ScoringSettings


@dataclass
class BenchmarkBatchInput:
    """One item to score: the clip (a path or a 24 kHz tensor) and its instruction fields.

    Empty strings mean "absent" for ``text`` / ``lyrics``; ``ref_audio`` is None when absent.
    """

    audio: Any
    text: str = ""
    lyrics: str = ""
    ref_audio: Any | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class BenchmarkModel(Protocol):
    """What the official runner needs from a plug-in (duck-typed)."""

    @property
    def sr(self) -> int: ...

    def score_batch(self, inputs: List[BenchmarkBatchInput], batch_size: int, max_dur: float,
                    **kwargs: Any) -> np.ndarray: ...


def _as_clip(value: Any, sr: int) -> Any:
    """A benchmark clip for a cmirm scorer: paths as they are, tensors/arrays taken to be at ``sr``."""
    if value is None or isinstance(value, (str, Path, Audio)):
        return value
    if hasattr(value, "ndim"):
        return Audio.from_array(value, sr)
    raise CmirmError(f"benchmark audio must be a path or a waveform tensor, got {type(value).__name__}")


class BenchmarkAdapter:
    """A cmirm scorer seen through the official plug-in contract (columns alignment, musicality).

    ``max_dur`` of a call replaces the scorer's crop when the scorer can change settings without
    reloading (`RewardScorer.with_settings`); other scorers crop as their own settings say.
    """

    def __init__(self, scorer: Scorer, name: str = "scorer") -> None:
        self.scorer = scorer
        self.name = name
        self.columns = list(cmi_columns(scorer.axes, name))

    @property
    def sr(self) -> int:
        return self.scorer.sr

    def _for(self, max_dur: float) -> Scorer:
        settings = getattr(self.scorer, "settings", None)
        if isinstance(settings, ScoringSettings) and settings.max_dur != float(max_dur) \
                and hasattr(self.scorer, "with_settings"):
            self.scorer = self.scorer.with_settings(replace(settings, max_dur=float(max_dur)))
        return self.scorer

    def score_batch(self, inputs: List[BenchmarkBatchInput | dict], batch_size: int = 12, max_dur: float = 120.0,
                    **kwargs: Any) -> np.ndarray:
        items = [BenchmarkBatchInput(**i) if isinstance(i, dict) else i for i in inputs]
        scorer = self._for(max_dur)
        audios = [_as_clip(i.audio, self.sr) for i in items]
        insts = [Instruction(text=i.text, lyrics=i.lyrics, ref_audio=_as_clip(i.ref_audio, self.sr)) for i in items]
        rows = check_output(scorer.score_batch(audios, insts), len(items), scorer.axes, self.name)
        return rows[:, self.columns]


class CMIRMBenchmarkModel(BenchmarkAdapter):
    """CMI-RM (or any scorer spec) as an official CMI-RewardBench plug-in.

    ``checkpoint`` is any `load_scorer` spec (a released-layout folder, a hub id, ``tiny`` ...);
    ``options`` are `ScoringSettings` fields (e.g. ``missing="null"`` from the official runner's
    ``--model_init_json``) applied on top of ``settings``.
    """

    def __init__(self, checkpoint: str = DEFAULT_MODEL, device: str | None = None,
                 settings: ScoringSettings | None = None, **options: Any) -> None:
        settings = (settings or ScoringSettings()).with_options(**options)
        super().__init__(load_scorer(checkpoint, settings, device), checkpoint)


class BenchmarkPluginScorer:
    """An official CMI-RewardBench plug-in behind the cmirm scorer contract (axes alignment, musicality).

    Each ``score_batch`` is one plug-in call with ``batch_size`` = the number of clips, ``max_dur``
    from ``settings`` and ``score_kwargs``, as the official runner makes it.
    """

    axes: tuple[str, ...] = AXES

    def __init__(self, plugin: Any, settings: ScoringSettings | None = None,
                 score_kwargs: Mapping[str, Any] | None = None) -> None:
        self.plugin = plugin
        self.settings = settings or ScoringSettings()
        self.score_kwargs = dict(score_kwargs or {})

    @property
    def sr(self) -> int:
        return int(self.plugin.sr)

    def score_batch(self, audios: Sequence[Any], instructions: Instruction | Sequence[Instruction],
                    sample_rate: int | None = None) -> np.ndarray:
        clips = as_clips(audios)
        insts = as_instructions(instructions, len(clips))
        inputs = [BenchmarkBatchInput(audio=_plugin_clip(clip, self.sr, sample_rate), text=inst.text or "",
                                      lyrics=inst.lyrics or "", ref_audio=_plugin_clip(inst.ref_audio, self.sr, None))
                  for clip, inst in zip(clips, insts)]
        return self.plugin.score_batch(inputs, batch_size=len(inputs), max_dur=self.settings.max_dur,
                                       **self.score_kwargs)


def _plugin_clip(clip: Any, sr: int, sample_rate: int | None) -> Any:
    """A clip as official plug-ins take it: a path string, or a mono tensor at the plug-in's rate."""
    if clip is None:
        return None
    if isinstance(clip, (str, Path)):
        return str(clip)
    audio = Audio.coerce(clip, sample_rate)
    if audio.source is not None:
        return audio.source
    return audio.to_mono().resample(sr).waveform[0]
