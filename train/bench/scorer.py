"""Loading a scorer by ``module:Class`` and calling it under the plug-in contract (spec §6).

Our own model is loaded the same way as a user's plug-in, by its ``module:Class`` string, so the
benchmark never imports model internals.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from cmirm_plugin.importing import import_object
from cmirm_plugin.plugin_contract import BenchmarkBatchInput, BenchmarkModel
from train.bench.errors import ScorerError

#: The CMI-RM scorer of this project.
DEFAULT_MODEL_CLASS = "cmirm_plugin.scoring:CMIRMBenchmarkModel"


def check_contract(model: Any, name: str) -> BenchmarkModel:
    """``model`` itself if it has an ``sr`` and a callable ``score_batch``; else a `ScorerError`."""
    missing = []
    if not hasattr(model, "sr"):
        missing.append("an 'sr' property (its sample rate)")
    if not callable(getattr(model, "score_batch", None)):
        missing.append("a callable 'score_batch(inputs, batch_size, max_dur, **kwargs)'")
    if missing:
        raise ScorerError(f"{name} does not honour the benchmark plug-in contract: it lacks {' and '.join(missing)}")
    return model


def load_scorer(spec: str, *, checkpoint: str | None, device: str,
                init_kwargs: Mapping[str, Any] | None = None) -> BenchmarkModel:
    """Instantiate ``spec`` as ``Class(**init_kwargs)`` with ``checkpoint`` and ``device`` set by default.

    A None ``checkpoint`` is not passed, so the class's own default checkpoint applies.
    """
    cls = import_object(spec, what="model class", error=ScorerError)
    kwargs = dict(init_kwargs or {})
    if checkpoint is not None:
        kwargs.setdefault("checkpoint", checkpoint)
    kwargs.setdefault("device", device)
    try:
        model = cls(**kwargs)
    except TypeError as exc:
        raise ScorerError(f"cannot instantiate {spec} with arguments {sorted(kwargs)}: {exc}") from exc
    return check_contract(model, spec)


def score(model: BenchmarkModel, inputs: Sequence[BenchmarkBatchInput], *, max_dur: float,
          score_kwargs: Mapping[str, Any], where: str) -> np.ndarray:
    """One ``score_batch`` call as the official runner makes it; returns float64 ``[len(inputs), 2]``.

    ``where`` (subset, side, lines) goes into the error raised when the output has another shape
    or is not numeric. NaN scores are allowed: the metrics drop them.
    """
    output = model.score_batch(list(inputs), batch_size=len(inputs), max_dur=max_dur, **score_kwargs)
    try:
        scores = np.asarray(output, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ScorerError(f"score_batch returned {type(output).__name__} for {where}, "
                          f"expected a float array [{len(inputs)}, 2] ({exc})") from exc
    if scores.shape != (len(inputs), 2):
        raise ScorerError(f"score_batch returned shape {list(scores.shape)} for {len(inputs)} inputs ({where}); "
                          f"expected [{len(inputs)}, 2]: column 0 alignment, column 1 musicality")
    return scores
