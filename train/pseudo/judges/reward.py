"""A reward model as judge: the clip with the higher CMI-RM score wins, per axis.

The verdict on an axis is ``first`` when ``score(first) - score(second) > margin``, ``second`` when
it is below ``-margin``, and ``tie`` otherwise. `RewardScorer` scores each clip independently of
its batch, so this judge has no position bias by construction; it is the cheap baseline next to the
LLM judges, and a way to distil one reward model into another.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import AXES, Instruction
from cmirm_plugin.scoring import RewardScorer
from train.pseudo.judges.base import AxisVerdict, Choice, JudgeReply, PairView, judge_id

_CACHE_SIZE = 64


class RewardJudge:
    """Judge with a `RewardScorer` (score difference, ``margin`` for ties).

    ``name`` identifies the model in the judge id (e.g. its folder or hub id); the id also holds the
    margin, the scorer's ``max_dur`` and, when not the default ``mask``, its missing-input policy.
    Scores are cached per (clip, instruction), so the second order of a pair costs nothing.
    """

    def __init__(self, scorer: RewardScorer, name: str, margin: float = 0.0) -> None:
        if not margin >= 0:
            raise CmirmError(f"--margin must be >= 0, got {margin}")
        self.scorer = scorer
        self.margin = float(margin)
        extra = {"missing": scorer.missing} if scorer.missing != "mask" else {}
        self.id = judge_id("reward", name, margin=self.margin, max_dur=float(scorer.max_dur), **extra)
        self._scores: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def _score(self, clips: Sequence[Path], inst: Instruction) -> list[np.ndarray]:
        keys = [(str(c), str(inst.id)) for c in clips]
        todo = [c for c, k in zip(clips, keys) if k not in self._scores]
        if todo:
            for clip, row in zip(todo, self.scorer.score_batch([str(c) for c in todo], inst)):
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
        verdicts = {axis: AxisVerdict(self._choice(float(first[AXES.index(axis)] - second[AXES.index(axis)])))
                    for axis in axes}
        raw = {"first": dict(zip(AXES, map(float, first))), "second": dict(zip(AXES, map(float, second)))}
        return JudgeReply(verdicts, raw)
