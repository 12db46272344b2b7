"""How a search scores what it generates: a `ScoringStep`, the scorer seen as one call per step.

`scoring_step` turns any contract scorer (`cmirm_plugin.scoring.load_scorer(...)`) or a started
`rerank.pool.ScorerPool` into one; anything else with ``axes`` and the same call signature (the
disk pipeline's scorer pool, say) is a scoring step already. A clip that cannot be scored gets
an error, never an exception (`cmirm_plugin.scoring.contract.score_isolated`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, Union, runtime_checkable

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.records import Candidate, Instruction
from cmirm_plugin.scoring.contract import ScoreOutcome, Scorer, score_isolated
from rerank.pool import ScoreItem, ScorerPool

ScorerLike = Union[Scorer, ScorerPool]


@runtime_checkable
class ScoringStep(Protocol):
    """Scores one step's candidates of one instruction: one `ScoreOutcome` per candidate, in order."""

    @property
    def axes(self) -> tuple[str, ...]: ...

    def __call__(self, instruction: Instruction, candidates: Sequence[Candidate]) -> list[ScoreOutcome]: ...


def score_candidates(scorer: ScorerLike, candidates: Sequence[Candidate], instruction: Instruction) -> list[ScoreOutcome]:
    """One `ScoreOutcome` per candidate from a contract scorer (one batch, bad clips isolated) or a pool."""
    if not candidates:
        return []
    if isinstance(scorer, ScorerPool):
        items = [ScoreItem(c.id, c.audio, instruction) for c in candidates]
        return [ScoreOutcome(r.scores, r.error) for r in scorer.score(items)]
    return score_isolated(scorer, [c.audio for c in candidates], instruction)


@dataclass(frozen=True)
class ScorerStep:
    """A contract scorer or a started `ScorerPool` as a `ScoringStep`."""

    scorer: ScorerLike

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(self.scorer.axes)

    def __call__(self, instruction: Instruction, candidates: Sequence[Candidate]) -> list[ScoreOutcome]:
        return score_candidates(self.scorer, candidates, instruction)


def scoring_step(scorer: Any) -> ScoringStep:
    """``scorer`` as a `ScoringStep` (see the module docstring); `ConfigError` for anything else."""
    if isinstance(scorer, ScorerPool) or hasattr(scorer, "score_batch"):
        return ScorerStep(scorer)
    if callable(scorer) and getattr(scorer, "axes", None):
        return scorer
    raise ConfigError(f"cannot score with {type(scorer).__name__}: give a contract scorer "
                      "(cmirm_plugin.scoring.load_scorer), a started ScorerPool, or a callable "
                      "(instruction, candidates) -> [ScoreOutcome] with an 'axes' attribute")
