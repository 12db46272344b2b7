"""Scoring benchmark rows with any cmirm scorer (loaded by `cmirm_plugin.scoring.load_scorer`).

The benchmark compares alignment and musicality, so a scorer is read through
`cmirm_plugin.scoring.contract.cmi_columns` (a single-axis scorer's score stands for both).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import Instruction
from cmirm_plugin.scoring.contract import Scorer, check_output, cmi_columns
from train.bench.errors import ScorerError


class BenchScorer:
    """A scorer and the columns of its (alignment, musicality) scores."""

    def __init__(self, scorer: Scorer, name: str) -> None:
        self.scorer, self.name = scorer, name
        try:
            self.columns = list(cmi_columns(scorer.axes, name))
        except CmirmError as exc:
            raise ScorerError(str(exc)) from exc

    def score(self, clips: Sequence[Any], instructions: Sequence[Instruction], where: str) -> np.ndarray:
        """Float64 ``[len(clips), 2]`` (alignment, musicality); NaN allowed (the metrics drop it).

        ``where`` (subset, side, lines) goes into the error raised for output of another shape.
        """
        try:
            rows = check_output(self.scorer.score_batch(list(clips), list(instructions)), len(clips),
                                self.scorer.axes, self.name)
        except CmirmError as exc:
            raise ScorerError(f"{exc} ({where})") from exc
        return rows[:, self.columns]
