"""What the segment-level searches (`BeamSearch`, `SmcSearch`) share: clips grown one ``segment`` at a time.

Step 0 samples first segments; every later step continues clips of the frontier by one segment,
each continuation from its own seed, and records the whole chain of segment seeds in its
`Lineage` (so `rerank.search.execute.regenerate` replays it). The search ends after
``duration / segment`` steps; its final frontier is the candidates. The methods differ only in
how many clips a step makes and how the frontier is chosen from them (`SearchMethod._advance`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.records import Lineage
from rerank.search.method import SearchMethod
from rerank.search.state import Request, SearchState

if TYPE_CHECKING:
    from generators import Generator

#: Tolerance on duration / segment being a whole number of steps.
_EPS = 1e-6


class SegmentSearch(SearchMethod):
    """Base of the methods that grow clips by segments; subclasses are frozen dataclasses with a ``segment``
    field (seconds) and call `_check_segment` from their ``__post_init__``."""

    capability: ClassVar[str | None] = "can_continue"
    segment: float

    def _check_segment(self) -> None:
        """Validate ``segment`` (a number of seconds > 0) and store it as a float."""
        if not isinstance(self.segment, (int, float)) or isinstance(self.segment, bool) or not self.segment > 0:
            raise ConfigError(f"search '{self.name}': segment must be a number of seconds > 0, got {self.segment!r}")
        object.__setattr__(self, "segment", float(self.segment))

    def steps(self, duration: float) -> int:
        """How many segments make a ``duration``-second clip; `ConfigError` unless a whole number."""
        steps = duration / self.segment
        if round(steps) < 1 or abs(steps - round(steps)) > _EPS:
            raise ConfigError(f"search '{self.name}': duration {duration:g} s is not a whole number of segments of "
                              f"{self.segment:g} s; choose a segment that divides it")
        return round(steps)

    def check_settings(self, duration: float) -> None:
        self.steps(duration)

    def check(self, generator: "Generator", duration: float, params: dict[str, Any]) -> None:
        super().check(generator, duration, params)
        generator.check_segment(self.segment, generator.params_type.from_kwargs(generator.name, params))

    def is_last_step(self, state: SearchState) -> bool:
        """Whether the step ``state`` has just completed made whole clips (``state.step`` counts completed steps)."""
        return state.step >= self.steps(state.duration)

    def _segment_requests(self, state: SearchState, first: int, per_parent: int) -> list[Request]:
        """The next step's requests: ``first`` first segments at step 0, then ``per_parent`` continuations of
        every frontier entry (in frontier order; an id the frontier holds twice is continued twice)."""
        if state.done:
            return []
        partial = state.step + 1 < self.steps(state.duration)
        if state.step == 0:
            return [Request("sample", seed, self.segment,
                            Lineage(self.name, 0, None, self.segment, (seed,), partial=partial))
                    for seed in self._seeds(state, first)]
        seeds = iter(self._seeds(state, len(state.frontier) * per_parent))
        requests = []
        for parent_id in state.frontier:
            parent = state.nodes[parent_id].lineage
            for seed in (next(seeds) for _ in range(per_parent)):
                lineage = Lineage(self.name, state.step, parent_id, self.segment, parent.segment_seeds + (seed,),
                                  partial=partial)
                requests.append(Request("extend", seed, self.segment, lineage))
        return requests

    def candidates(self, state: SearchState) -> list[str]:
        return list(state.frontier) if state.done else []
