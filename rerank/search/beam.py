"""Segment-level beam search for generators that can continue a clip.

Step 0 samples ``width x expand`` first segments; every later step continues each of the
``width`` best clips so far by one ``segment`` from ``expand`` new seeds. Each step scores the
clips so far (prefixes) and keeps the best ``width`` under the policy, until ``duration``; the
final beams are the candidates. Pruning early spends the budget on continuations of good
prefixes instead of whole clips that went wrong in their first seconds.

Compute: every step generates ``width x expand`` segments, so the search generates exactly
``width x expand x duration`` seconds of audio: the same as best-of-N with N = width x expand
(its budget). Work units differ slightly: each segment pays the generator's per-call overhead
(MusicGen: the codebook delay), which the compute record shows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cmirm_plugin.errors import ConfigError, check_count
from cmirm_plugin.records import Lineage
from rerank.policies import Policy
from rerank.search.method import SearchMethod, rank
from rerank.search.state import Request, SearchState

if TYPE_CHECKING:
    from generators import Generator

#: Tolerance on duration / segment being a whole number of steps.
_EPS = 1e-6


@dataclass(frozen=True)
class BeamSearch(SearchMethod):
    """``beam:width=B,expand=K,segment=S`` (seconds); ``expand`` may be left to a budget (budget / width)."""

    name: ClassVar[str] = "beam"
    capability: ClassVar[str | None] = "can_continue"
    width: int = 4
    expand: int | None = None
    segment: float = 5.0

    def __post_init__(self) -> None:
        check_count("search 'beam': width", self.width)
        if self.expand is not None:
            check_count("search 'beam': expand", self.expand)
        if not isinstance(self.segment, (int, float)) or isinstance(self.segment, bool) or not self.segment > 0:
            raise ConfigError(f"search 'beam': segment must be a number of seconds > 0, got {self.segment!r}")
        object.__setattr__(self, "segment", float(self.segment))

    def budget(self) -> int | None:
        return None if self.expand is None else self.width * self.expand

    def for_budget(self, budget: int) -> "BeamSearch":
        if self.expand is not None:
            if self.width * self.expand != budget:
                raise ConfigError(f"search {self.spec()!r} spends {self.width * self.expand} clips' worth of audio, "
                                  f"not a budget of {budget}; leave 'expand' unset to fit budgets")
            return self
        if budget % self.width:
            raise ConfigError(f"search 'beam': a budget of {budget} is not a multiple of width={self.width} "
                              "(each of the width beams gets budget / width continuations per segment)")
        return dataclasses.replace(self, expand=budget // self.width)

    def steps(self, duration: float) -> int:
        """How many segments make a ``duration``-second clip; `ConfigError` unless a whole number."""
        steps = duration / self.segment
        if round(steps) < 1 or abs(steps - round(steps)) > _EPS:
            raise ConfigError(f"search 'beam': duration {duration:g} s is not a whole number of segments of "
                              f"{self.segment:g} s; choose a segment that divides it")
        return round(steps)

    def check_settings(self, duration: float) -> None:
        self.steps(duration)

    def check(self, generator: "Generator", duration: float, params: dict[str, Any]) -> None:
        super().check(generator, duration, params)
        generator.check_segment(self.segment, generator.params_type.from_kwargs(generator.name, params))

    def ask(self, state: SearchState) -> list[Request]:
        if state.done:
            return []
        method = self.resolved()
        partial = state.step + 1 < self.steps(state.duration)
        if state.step == 0:
            seeds = self._seeds(state, method.width * method.expand)
            return [Request("sample", seed, self.segment,
                            Lineage(self.name, 0, None, self.segment, (seed,), partial=partial)) for seed in seeds]
        seeds = iter(self._seeds(state, len(state.frontier) * method.expand))
        requests = []
        for beam in state.frontier:
            parent = state.nodes[beam].lineage
            for seed in (next(seeds) for _ in range(method.expand)):
                lineage = Lineage(self.name, state.step, beam, self.segment, parent.segment_seeds + (seed,),
                                  partial=partial)
                requests.append(Request("extend", seed, self.segment, lineage))
        return requests

    def _advance(self, state: SearchState, new_ids: list[str], policy: Policy,
                 axes: tuple[str, ...]) -> tuple[list[str], bool]:
        best = rank([state.nodes[i] for i in new_ids], policy, axes)[: self.width]
        frontier = [node.id for node in best]
        return frontier, not frontier or state.step >= self.steps(state.duration)

    def candidates(self, state: SearchState) -> list[str]:
        return list(state.frontier) if state.done else []
