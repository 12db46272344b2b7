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
from typing import ClassVar

from cmirm_plugin.errors import ConfigError, check_count
from rerank.policies import Policy
from rerank.search.method import rank
from rerank.search.segments import SegmentSearch
from rerank.search.state import Request, SearchState


@dataclass(frozen=True)
class BeamSearch(SegmentSearch):
    """``beam:width=B,expand=K,segment=S`` (seconds); ``expand`` may be left to a budget (budget / width)."""

    name: ClassVar[str] = "beam"
    width: int = 4
    expand: int | None = None
    segment: float = 5.0

    def __post_init__(self) -> None:
        check_count("search 'beam': width", self.width)
        if self.expand is not None:
            check_count("search 'beam': expand", self.expand)
        self._check_segment()

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

    def ask(self, state: SearchState) -> list[Request]:
        method = self.resolved()
        return self._segment_requests(state, method.width * method.expand, method.expand)

    def _advance(self, state: SearchState, new_ids: list[str], policy: Policy,
                 axes: tuple[str, ...]) -> tuple[list[str], bool]:
        best = rank([state.nodes[i] for i in new_ids], policy, axes)[: self.width]
        frontier = [node.id for node in best]
        return frontier, not frontier or self.is_last_step(state)
