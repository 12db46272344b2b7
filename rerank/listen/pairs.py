"""Which two candidates of an instruction a reviewer hears next (``cmirm review --pairs``).

`plan_pairs` orders every pair a mode allows, once per app; each pair's A/B order is drawn at
random, so position says nothing about the scores. Only candidates whose audio is on disk take part.

* ``random``: every two candidates of an instruction, shuffled across instructions.
* ``near-ties``: the same pairs, the smallest score gap under the run's scorer first: the gap is
  the sum over the scorer's axes of the absolute score differences, so the pairs the reward model
  is least sure about (on every axis) get the votes first. Needs scores.
* ``top-vs-rest``: each instruction's rank-1 candidate against each other ranked candidate
  (rank 2 first), one round over all instructions at a time. Needs ``ranking.jsonl``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import combinations
from typing import Literal, get_args

from cmirm_plugin.errors import ConfigError
from rerank.listen.run_view import ListenCandidate, ListenRun

PairMode = Literal["random", "near-ties", "top-vs-rest"]
PAIR_MODES: tuple[str, ...] = get_args(PairMode)


@dataclass(frozen=True)
class Pair:
    """Two candidates of one instruction, in the order shown (A, B), and their score gap (None: unscored)."""

    instruction_id: str
    a: str
    b: str
    gap: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        """The pair without its order (votes on A/B and on B/A are votes on the same pair)."""
        return (self.a, self.b) if self.a <= self.b else (self.b, self.a)


def _gap(run: ListenRun, x: ListenCandidate, y: ListenCandidate) -> float | None:
    sx, sy = run.scores(x), run.scores(y)
    if sx is None or sy is None:
        return None
    return float(sum(abs(sx[axis] - sy[axis]) for axis in run.axes))


def _shown(run: ListenRun, x: ListenCandidate, y: ListenCandidate, rng: random.Random) -> Pair:
    if rng.random() < 0.5:
        x, y = y, x
    return Pair(x.instruction.id, x.id, y.id, _gap(run, x, y))


def _playable_groups(run: ListenRun) -> list[list[ListenCandidate]]:
    return [[c for c in candidates if c.playable] for _, candidates in run.instructions()]


def plan_pairs(run: ListenRun, mode: str, seed: int | None = None) -> list[Pair]:
    """Every pair ``mode`` offers, in the order reviewers get them (see the module docstring)."""
    if mode not in PAIR_MODES:
        raise ConfigError(f"--pairs must be one of {', '.join(PAIR_MODES)}, got {mode!r}")
    rng = random.Random(seed)
    groups = _playable_groups(run)
    if mode == "random":
        pairs = [_shown(run, x, y, rng) for group in groups for x, y in combinations(group, 2)]
        rng.shuffle(pairs)
        return pairs
    if mode == "near-ties":
        scored = [[c for c in group if run.scores(c) is not None] for group in groups]
        pairs = [_shown(run, x, y, rng) for group in scored for x, y in combinations(group, 2)]
        if not pairs:
            raise ConfigError(f"{run.root}: --pairs near-ties needs two scored candidates with audio for an "
                              f"instruction (scorer {run.scorer or 'none'}); use --pairs random")
        rng.shuffle(pairs)   # equal gaps in random order
        return sorted(pairs, key=lambda p: p.gap)  # type: ignore[arg-type,return-value]
    ranked = [sorted((c for c in group if c.rank is not None), key=lambda c: c.rank) for group in groups]
    rounds = [[_shown(run, group[0], other, rng) for other in group[1:]] for group in ranked if group[0:1]
              and group[0].rank == 1]
    if not any(rounds):
        raise ConfigError(f"{run.root}: --pairs top-vs-rest needs a ranking (ranking.jsonl) with two ranked "
                          "candidates with audio for an instruction; run `cmirm rerank` on it, or use --pairs random")
    return [pairs[r] for r in range(max(map(len, rounds))) for pairs in rounds if r < len(pairs)]
