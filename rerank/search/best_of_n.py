"""Best-of-N as a search method: N independent candidates in one step, each from its own seed.

Every candidate is final; the policy then picks the best. Its seeds are every job's
(`rerank.stream.job_seeds`), so it makes the candidates `rerank.best_of_n.best_of_n` and ``cmirm
generate`` make; it is the baseline the other methods are compared with at equal budget.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.records import Lineage
from rerank.policies import Policy
from rerank.search.method import SearchMethod
from rerank.search.state import Request, SearchState
from rerank.stream import job_seeds


@dataclass(frozen=True)
class BestOfNSearch(SearchMethod):
    """``best-of-n:n=N``. ``seeds`` (Python only) replaces the default ``seed_base + i``."""

    name: ClassVar[str] = "best-of-n"
    n: int | None = None
    seeds: tuple[int, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.seeds is not None:
            object.__setattr__(self, "seeds", tuple(self.seeds))
            if self.n is None:
                object.__setattr__(self, "n", len(self.seeds))
            elif self.n != len(self.seeds):
                raise ConfigError(f"search 'best-of-n': n={self.n} but {len(self.seeds)} seeds were given")
        if self.n is not None and (not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1):
            raise ConfigError(f"search 'best-of-n': n must be an integer >= 1, got {self.n!r}")

    def budget(self) -> int | None:
        return self.n

    def for_budget(self, budget: int) -> "BestOfNSearch":
        if self.seeds is not None and budget != len(self.seeds):
            raise ConfigError(f"search 'best-of-n' has {len(self.seeds)} explicit seeds; it cannot spend a budget "
                              f"of {budget}")
        return dataclasses.replace(self, n=budget)

    def ask(self, state: SearchState) -> list[Request]:
        if state.done:
            return []
        seeds = job_seeds(self.resolved().n, state.seed_base, self.seeds)
        return [Request("sample", seed, state.duration, Lineage(self.name)) for seed in seeds]

    def _advance(self, state: SearchState, new_ids: list[str], policy: Policy,
                 axes: tuple[str, ...]) -> tuple[list[str], bool]:
        return [], True

    def candidates(self, state: SearchState) -> list[str]:
        return [node.id for node in state.scored()]
