"""Sequential Monte Carlo over segments: Feynman-Kac steering (Singhal et al., arXiv 2501.06848).

``particles`` clips grow one ``segment`` at a time. Every step extends each particle by one
segment (its own seed), scores the prefixes under the policy, and, except after the last
segment, draws ``particles`` new particles with replacement, each with probability
``softmax(lambda x composite reward)`` (`resample_probabilities`): good prefixes get copies,
bad ones die out. ``lambda=0`` keeps every particle equally likely (independent clips with
random restarts); a large ``lambda`` keeps only the best prefix (greedy). The final particles
are the candidates.

The draw uses a generator seeded from the state (`resampling_rng`: its ``seed_base`` and step),
so a run is reproducible and a resumed search draws what the uninterrupted one drew.

Compute: every step generates ``particles`` segments, so the search generates exactly
``particles x duration`` seconds of audio, best-of-N's with N = particles (its budget).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from cmirm_plugin.errors import ConfigError, check_count
from rerank.policies import Policy
from rerank.search.method import score_matrix
from rerank.search.segments import SegmentSearch
from rerank.search.state import Request, SearchState

#: Separates the resampling stream from anything else seeded by ``seed_base``.
_RESAMPLE_STREAM = 0x5AC


def resample_probabilities(composite: np.ndarray, eligible: np.ndarray, lam: float) -> np.ndarray:
    """``softmax(lam x composite)`` over the eligible particles (ineligible ones get 0); all zero if none is."""
    probabilities = np.zeros(len(composite))
    if eligible.any():
        logits = lam * np.asarray(composite, dtype=np.float64)[eligible]
        weights = np.exp(logits - logits.max())
        probabilities[eligible] = weights / weights.sum()
    return probabilities


def resampling_rng(state: SearchState) -> np.random.Generator:
    """The generator of the draw after step ``state.step``: a function of the state alone, so resume is exact."""
    return np.random.default_rng([_RESAMPLE_STREAM, state.seed_base, state.step])


@dataclass(frozen=True)
class SmcSearch(SegmentSearch):
    """``smc:particles=P,segment=S,lambda=L`` (seconds); ``particles`` may be left to a budget (= budget)."""

    name: ClassVar[str] = "smc"
    particles: int | None = None
    segment: float = 5.0
    lambda_: float = field(default=10.0, metadata={"key": "lambda"})

    def __post_init__(self) -> None:
        if self.particles is not None:
            check_count("search 'smc': particles", self.particles)
        self._check_segment()
        if not isinstance(self.lambda_, (int, float)) or isinstance(self.lambda_, bool) \
                or not 0 <= self.lambda_ < math.inf:
            raise ConfigError(f"search 'smc': lambda must be a number >= 0, got {self.lambda_!r}")
        object.__setattr__(self, "lambda_", float(self.lambda_))

    def budget(self) -> int | None:
        return self.particles

    def for_budget(self, budget: int) -> "SmcSearch":
        if self.particles is not None and self.particles != budget:
            raise ConfigError(f"search {self.spec()!r} spends {self.particles} clips' worth of audio, not a budget of "
                              f"{budget}; leave 'particles' unset to fit budgets")
        return dataclasses.replace(self, particles=budget)

    def ask(self, state: SearchState) -> list[Request]:
        return self._segment_requests(state, self.resolved().particles, 1)

    def _advance(self, state: SearchState, new_ids: list[str], policy: Policy,
                 axes: tuple[str, ...]) -> tuple[list[str], bool]:
        scored = state.scored(new_ids)
        if not scored or self.is_last_step(state):
            return [node.id for node in scored], True
        matrix = score_matrix(scored, axes)
        probabilities = resample_probabilities(policy.composite(matrix, axes), policy.eligible(matrix, axes),
                                               self.lambda_)
        if not probabilities.any():
            return [], True
        drawn = np.sort(resampling_rng(state).choice(len(scored), size=len(new_ids), p=probabilities))
        return [scored[i].id for i in drawn], False
