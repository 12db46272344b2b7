"""Pairwise preference labels: the runner's prediction and the evaluator's normalisation (§5.3, §5.5)."""

from __future__ import annotations

import math
from typing import Any

_NORMALISED = {"a": "model_a", "model_a": "model_a", "b": "model_b", "model_b": "model_b",
               "both": "both", "neither": "both"}


def predicted_label(score_a: float | None, score_b: float | None) -> str | None:
    """``model_a`` if A scores strictly higher, else ``model_b`` (ties go to B); None if a score is missing/NaN."""
    if score_a is None or score_b is None or math.isnan(score_a) or math.isnan(score_b):
        return None
    return "model_a" if score_a > score_b else "model_b"


def normalise_label(value: Any) -> str | None:
    """``model_a`` / ``model_b`` / ``both`` for the label spellings the evaluator knows, else None.

    Lowercased only (no stripping), as the official evaluator: ``tie``, ``""`` or null are unknown.
    """
    return _NORMALISED.get(str(value).lower())


def credit(truth: str, prediction: str) -> float:
    """1 for an exact match, 0.5 when either side is ``both``, else 0."""
    if truth == prediction:
        return 1.0
    return 0.5 if "both" in (truth, prediction) else 0.0
