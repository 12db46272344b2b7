"""The serialisable state of one search over one instruction, and what a step asks for and gets back.

A search method is a step function over `SearchState` (see `rerank.search.method`): ``ask``
turns the state into the `Request`s of the next step, whoever executes them (the in-memory
driver `rerank.search.driver.run_search`, or the disk pipeline's generator and scorer pools)
answers with one `Evaluation` per request, and ``tell`` folds them into the next state. The state
holds records only (seeds, lineage, scores, compute, the frontier), never audio, so it goes to
JSON between steps and a search resumes from it at segment / round granularity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import Candidate, Compute, Lineage, Scores

#: How a request is generated: `Generator.sample`, `Generator.extend` (from ``lineage.parent``),
#: or `Generator.sample_from_latents` (latents rebuilt from ``lineage.noise_seeds``).
REQUEST_KINDS = ("sample", "extend", "latents")

#: The version of `SearchState.to_dict`'s layout.
STATE_VERSION = 1


@dataclass(frozen=True)
class Request:
    """One candidate a step asks for.

    ``seed`` is unique within the search, so the candidate's id is
    ``Candidate.make_id(instruction_id, generator, seed)`` (`Request.candidate_id`). ``seconds``
    is the audio to generate: the whole clip (``sample``, ``latents``) or the segment (``extend``).
    """

    kind: str
    seed: int
    seconds: float
    lineage: Lineage

    def __post_init__(self) -> None:
        if self.kind not in REQUEST_KINDS:
            raise CmirmError(f"unknown request kind {self.kind!r}; expected one of {REQUEST_KINDS}")
        if self.kind == "extend" and self.lineage.parent is None:
            raise CmirmError(f"an extend request needs the parent it continues (seed {self.seed})")

    def candidate_id(self, instruction_id: str, generator: str) -> str:
        return Candidate.make_id(instruction_id, generator, self.seed)


@dataclass(frozen=True)
class Evaluation:
    """What became of one request: its scores, or why it has none (generation or scoring error)."""

    id: str
    scores: Scores | None = None
    error: str | None = None
    compute: Compute | None = None

    def __post_init__(self) -> None:
        if (self.scores is None) == (self.error is None):
            raise CmirmError(f"evaluation of {self.id!r} needs scores or an error, not both or neither")


@dataclass(frozen=True)
class Node:
    """One generated (or failed) candidate of the search, as the state remembers it."""

    id: str
    seed: int
    lineage: Lineage
    scores: Scores | None = None
    error: str | None = None
    compute: Compute | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "seed": self.seed, "lineage": self.lineage.to_dict(),
                "scores": None if self.scores is None else self.scores.to_dict(), "error": self.error,
                "compute": None if self.compute is None else self.compute.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Node":
        return cls(data["id"], int(data["seed"]), Lineage.from_dict(data["lineage"]),
                   None if data.get("scores") is None else Scores.from_dict(data["scores"]), data.get("error"),
                   None if data.get("compute") is None else Compute.from_dict(data["compute"]))


@dataclass
class SearchState:
    """Where one search over one instruction stands (see the module docstring).

    ``method`` is the resolved method's spec (a resumed search must match it); ``step`` counts the
    completed steps; ``nodes`` holds every candidate asked for so far, in order; ``frontier`` the
    ids the next step builds on (beam: the surviving beams; noise: the pivot).
    """

    method: str
    instruction_id: str
    generator: str
    duration: float
    seed_base: int = 0
    step: int = 0
    frontier: list[str] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)
    done: bool = False

    def scored(self, ids: Sequence[str] | None = None) -> list[Node]:
        """The nodes (all, or those of ``ids``, in that order) that have scores."""
        chosen = self.nodes.values() if ids is None else (self.nodes[i] for i in ids)
        return [node for node in chosen if node.scores is not None]

    def compute(self) -> Compute:
        """What every candidate generated so far cost, pruned ones included."""
        return Compute.sum([node.compute for node in self.nodes.values() if node.compute is not None])

    def to_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "method": self.method, "instruction_id": self.instruction_id,
                "generator": self.generator, "duration": self.duration, "seed_base": self.seed_base,
                "step": self.step, "frontier": list(self.frontier), "done": self.done,
                "nodes": [node.to_dict() for node in self.nodes.values()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchState":
        """Inverse of `to_dict`; a state written by another layout version is refused."""
        if data.get("version") != STATE_VERSION:
            raise CmirmError(f"search state version {data.get('version')!r} is not {STATE_VERSION}; "
                             "it was written by another cmirm version: restart the search")
        nodes = [Node.from_dict(node) for node in data["nodes"]]
        return cls(data["method"], data["instruction_id"], data["generator"], float(data["duration"]),
                   int(data["seed_base"]), int(data["step"]), list(data["frontier"]),
                   {node.id: node for node in nodes}, bool(data["done"]))
