"""A reward model as judge: the clip with the higher score wins, per axis.

Any scorer of `cmirm_plugin.scoring.load_scorer` judges (CMI-RM by default; a single-axis scorer's
one score judges both axes, see `cmi_columns`). The verdict on an axis is ``first`` when
``score(first) - score(second) > margin``, ``second`` when it is below ``-margin``, and ``tie``
otherwise. Scorers score each clip independently of its batch, so this judge has no position bias
by construction; it is the cheap baseline next to the LLM judges, and a way to distil one reward
model into another.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import AXES, Instruction
from cmirm_plugin.scoring.contract import Scorer, check_output, cmi_columns
from cmirm_plugin.scoring.settings import ScoringSettings
from train.pseudo.judges.base import AxisVerdict, Choice, JudgeReply, PairView, judge_id

_CACHE_SIZE = 64


class RewardJudge:
    """Judge with a scorer (score difference, ``margin`` for ties).

    ``name`` identifies the model in the judge id (its spec label); the id also holds the margin and,
    for scorers with `ScoringSettings`, the ``max_dur`` and (when not the default ``mask``) the
    missing-input policy. Scores are cached per (clip, instruction), so the second order of a pair
    costs nothing.
    """

    def __init__(self, scorer: Scorer, name: str, margin: float = 0.0) -> None:
        if not margin >= 0:
            raise CmirmError(f"--margin must be >= 0, got {margin}")
        self.scorer = scorer
        self.name = name
        self.margin = float(margin)
        self.columns = dict(zip(AXES, cmi_columns(scorer.axes, name)))
        settings = getattr(scorer, "settings", None)
        extra: dict = {}
        if isinstance(settings, ScoringSettings):
            extra["max_dur"] = settings.max_dur
            if settings.missing != ScoringSettings().missing:
                extra["missing"] = settings.missing
        self.id = judge_id("reward", name, margin=self.margin, **extra)
        self._scores: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def _score(self, clips: Sequence[Path], inst: Instruction) -> list[np.ndarray]:
        keys = [(str(c), str(inst.id)) for c in clips]
        todo = [c for c, k in zip(clips, keys) if k not in self._scores]
        if todo:
            rows = check_output(self.scorer.score_batch([str(c) for c in todo], inst), len(todo), self.scorer.axes,
                                self.name)
            for clip, row in zip(todo, rows):
                self._scores[(str(clip), str(inst.id))] = row
        scores = [self._scores[k] for k in keys]
        while len(self._scores) > _CACHE_SIZE:
            self._scores.popitem(last=False)
        return scores

    def _choice(self, diff: float) -> Choice:
        if diff > self.margin:
            return "first"
        return "second" if diff < -self.margin else "tie"

    def judge(self, view: PairView, axes: Sequence[str]) -> JudgeReply:
        first, second = self._score([view.first, view.second], view.instruction)
        column = self.columns
        verdicts = {axis: AxisVerdict(self._choice(float(first[column[axis]] - second[column[axis]])))
                    for axis in axes}
        raw = {"first": dict(zip(self.scorer.axes, map(float, first))),
               "second": dict(zip(self.scorer.axes, map(float, second)))}
        return JudgeReply(verdicts, raw)
