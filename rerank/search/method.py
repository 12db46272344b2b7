"""`SearchMethod`: the one interface every search method implements, as a step function.

A method is a small frozen dataclass of settings (``beam:width=4,expand=2,segment=5`` parses
into one, see `rerank.search.spec`) with four steps::

    state = method.start(instruction.id, generator.name, duration, seed_base)
    while not state.done:
        requests = method.ask(state)            # what to generate next (deterministic in the state)
        evaluations = ...                       # generate each request, score it (any executor)
        state = method.tell(state, evaluations, policy, axes)
    method.candidates(state)                    # the ids of the final candidates

``ask`` never changes the state and gives the same requests for the same state, so an executor
that persists the state after each ``tell`` (and the candidates as it makes them) resumes a
search mid-way by asking again. Seeds are allocated in order from ``seed_base`` (one per
request, never reused), so every candidate id is unique within the search.

Budget: `SearchMethod.budget` is the generated audio a method spends, in whole clips of
``duration`` (best-of-N: N; beam: width x expand; noise: neighbors x (rounds + 1)), so methods
at the same budget generate the same audio seconds; `SearchMethod.for_budget` sets the free
setting to meet a budget.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from cmirm_plugin.errors import CmirmError, ConfigError
from rerank.policies import Policy
from rerank.search.state import Evaluation, Node, Request, SearchState

if TYPE_CHECKING:
    from generators import Generator


def spec_key(f: dataclasses.Field) -> str:
    """The key a setting has in specs: the field's name, or its ``metadata["key"]`` where the name cannot be
    a Python identifier (smc's ``lambda`` is the field ``lambda_``)."""
    return f.metadata.get("key", f.name)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class SearchMethod(ABC):
    """Settings of one search method plus its step function (see the module docstring).

    Subclasses are frozen dataclasses whose fields are the settings (``repr=False`` fields, such
    as best-of-N's explicit seeds, are Python-only and not in the spec).
    """

    name: ClassVar[str]
    #: The `generators.base.Capabilities` field a generator needs to run this method (None: any can).
    capability: ClassVar[str | None] = None

    # ------------------------------------------------------------------ settings
    def settings(self) -> dict[str, Any]:
        """The settings that the spec carries (those that are set), by `spec_key`, in field order."""
        return {spec_key(f): getattr(self, f.name) for f in dataclasses.fields(self)
                if f.repr and getattr(self, f.name) is not None}

    def spec(self) -> str:
        """The method as `rerank.search.spec.parse_search` reads it back (what run records carry)."""
        args = ",".join(f"{key}={_fmt(value)}" for key, value in self.settings().items())
        return f"{self.name}:{args}" if args else self.name

    @abstractmethod
    def budget(self) -> int | None:
        """Generated audio in whole clips of ``duration`` (None while a free setting is unset)."""

    @abstractmethod
    def for_budget(self, budget: int) -> "SearchMethod":
        """A copy whose free setting meets ``budget``; `ConfigError` if the settings cannot."""

    def resolved(self) -> "SearchMethod":
        """Self, after checking every setting is set (`ConfigError` naming what is missing otherwise)."""
        if self.budget() is None:
            raise ConfigError(f"search {self.spec()!r} leaves its size open: give a budget "
                              f"(e.g. search(..., budget=8)) or set every setting")
        return self

    def check_settings(self, duration: float) -> None:
        """Raise `ConfigError` if these settings cannot make ``duration``-second clips (default: they can)."""

    def check_named(self, generator: str, duration: float) -> None:
        """`check_settings`, and the capability of generator ``generator`` (a registry name) where its name
        tells (`generators.registry.known_capabilities`): what a job checks before any model loads. The
        built generator is checked again by `check` (``cmd:`` / ``py:`` generators are known only then)."""
        from generators.base import require_capability
        from generators.registry import known_capabilities

        self.check_settings(duration)
        if self.capability is None:
            return
        try:
            capabilities = known_capabilities(generator)
        except ConfigError:   # not a registry name (a job given a built generator): `check` sees it
            return
        if capabilities is not None:
            require_capability(capabilities, self.capability, generator)

    def check(self, generator: "Generator", duration: float, params: dict[str, Any]) -> None:
        """Raise `ConfigError` before any work if ``generator`` (built) cannot run this method."""
        self.check_settings(duration)
        if self.capability is not None:
            generator.require_capability(self.capability)

    # ------------------------------------------------------------------ steps
    def start(self, instruction_id: str, generator: str, duration: float, seed_base: int = 0) -> SearchState:
        """The empty state of a search over one instruction."""
        return SearchState(self.resolved().spec(), instruction_id, generator, float(duration), int(seed_base))

    @abstractmethod
    def ask(self, state: SearchState) -> list[Request]:
        """The requests of the next step (empty once the search is done)."""

    def tell(self, state: SearchState, evaluations: Sequence[Evaluation], policy: Policy,
             axes: Sequence[str]) -> SearchState:
        """The state after this step: one `Evaluation` per request of ``ask(state)``, any order."""
        self.check_state(state)
        requests = self.ask(state)
        if not requests:
            raise CmirmError(f"search {state.method!r} over {state.instruction_id!r} is already done")
        ids = [r.candidate_id(state.instruction_id, state.generator) for r in requests]
        given = {e.id: e for e in evaluations}
        missing, extra = [i for i in ids if i not in given], sorted(set(given) - set(ids))
        if missing or extra:
            raise CmirmError(f"step {state.step} of {state.method!r}: evaluations must answer its requests exactly; "
                             f"missing {missing}, unexpected {extra}")
        nodes = dict(state.nodes)
        for request, node_id in zip(requests, ids):
            e = given[node_id]
            nodes[node_id] = Node(node_id, request.seed, request.lineage, e.scores, e.error, e.compute)
        new = dataclasses.replace(state, nodes=nodes, step=state.step + 1)
        frontier, done = self._advance(new, ids, policy, tuple(axes))
        return dataclasses.replace(new, frontier=frontier, done=done)

    @abstractmethod
    def _advance(self, state: SearchState, new_ids: list[str], policy: Policy,
                 axes: tuple[str, ...]) -> tuple[list[str], bool]:
        """The frontier after a step whose nodes are ``new_ids`` (already in ``state``), and whether it is done."""

    @abstractmethod
    def candidates(self, state: SearchState) -> list[str]:
        """The ids of the search's candidates (scored ones only; beam: its final beams, none before the end)."""

    def needed(self, state: SearchState) -> set[str]:
        """The ids whose audio (and codes) the next steps or the result still need."""
        return set(state.frontier) | set(self.candidates(state))

    def check_state(self, state: SearchState) -> None:
        """Raise `ConfigError` unless ``state`` was made by this method with these settings."""
        if state.method != self.resolved().spec():
            raise ConfigError(f"this search state was made by {state.method!r}, not {self.spec()!r}; "
                              "resume it with the same method and settings")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _seeds(state: SearchState, count: int) -> list[int]:
        """The next ``count`` seeds: one per request ever made, counted from ``seed_base``."""
        start = state.seed_base + len(state.nodes)
        return list(range(start, start + count))


def score_matrix(nodes: Sequence[Node], axes: Sequence[str]) -> np.ndarray:
    """``[len(nodes), len(axes)]``: each scored node's values on ``axes`` (what policies read)."""
    return np.array([[node.scores[axis] for axis in axes] for node in nodes])


def rank(nodes: Sequence[Node], policy: Policy, axes: Sequence[str]) -> list[Node]:
    """Scored ``nodes`` best first under ``policy`` (ineligible ones last; ties to the earlier node)."""
    scored = [node for node in nodes if node.scores is not None]
    if not scored:
        return []
    return [scored[i] for i in policy.order(score_matrix(scored, axes), axes)]
