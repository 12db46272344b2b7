"""Turn a step's `Request`s into candidates with a generator, and replay a lineage.

`generate_requests` is what a generator worker runs for one step of one instruction: it groups
the requests into as few generator calls as their kinds allow (all first samples in one
`Generator.sample`, the continuations of one parent in one `Generator.extend`, all latent starts
in one `Generator.sample_from_latents`), gives each candidate its request's lineage, and keeps it
in a `CandidateStore`, where later steps find the clips they continue. Requests whose candidate
the store already holds (a resumed step) are not generated again.

`regenerate` makes one candidate again from its seed and lineage alone, through the same
generator calls: for segment searches (beam, smc), ``sample`` then one ``extend`` per later segment; for noise, the
latent rebuilt by `rerank.search.noise.noise_latents`. At ``batch_size=1`` the audio is
bit-identical (see each backend for batching).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Iterable, Protocol, Sequence, Union

import torch

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import Candidate, Instruction, Lineage
from generators import CandidateFailure, GenerationResult, Generator
from rerank.search.noise import noise_latents
from rerank.search.state import Request

Made = Union[Candidate, CandidateFailure]


class CandidateStore(Protocol):
    """Where a search keeps the candidates it may still continue or return (memory, or a run directory)."""

    def get(self, candidate_id: str) -> Candidate | None: ...

    def put(self, candidate: Candidate) -> None: ...

    def keep(self, candidate_ids: Iterable[str]) -> None:
        """Drop every candidate not in ``candidate_ids`` (a run directory may keep them on disk anyway)."""


class MemoryStore:
    """A `CandidateStore` in a dict (the in-memory driver's)."""

    def __init__(self, candidates: Iterable[Candidate] = ()) -> None:
        self.candidates: dict[str, Candidate] = {c.id: c for c in candidates}

    def get(self, candidate_id: str) -> Candidate | None:
        return self.candidates.get(candidate_id)

    def put(self, candidate: Candidate) -> None:
        self.candidates[candidate.id] = candidate

    def keep(self, candidate_ids: Iterable[str]) -> None:
        wanted = set(candidate_ids)
        self.candidates = {key: c for key, c in self.candidates.items() if key in wanted}


def _parent(store: CandidateStore, request: Request) -> Candidate:
    parent = store.get(request.lineage.parent)
    if parent is None:
        raise CmirmError(f"candidate {request.lineage.parent!r}, which seed {request.seed} continues, is not in the "
                         "candidate store; a resumed search needs its frontier's candidates (audio and codes)")
    return parent


def _call(generator: Generator, instruction: Instruction, kind: str, group: list[Request], store: CandidateStore,
          batch_size: int | None, params: dict[str, Any]) -> GenerationResult:
    seeds, seconds = [r.seed for r in group], group[0].seconds
    if kind == "sample":
        return generator.sample(instruction, seeds, seconds, batch_size=batch_size, **params)
    if kind == "extend":
        return generator.extend(instruction, _parent(store, group[0]), seeds, seconds, batch_size=batch_size,
                                **params)
    latents = torch.stack([noise_latents(generator, r.lineage.noise_seeds, r.lineage.radius) for r in group])
    return generator.sample_from_latents(instruction, latents, seeds, seconds, batch_size=batch_size,
                                         sampler_seeds=[r.lineage.sampler_seed for r in group], **params)


def generate_requests(generator: Generator, instruction: Instruction, requests: Sequence[Request],
                      store: CandidateStore, *, batch_size: int | None = None,
                      params: dict[str, Any] | None = None) -> list[Made]:
    """One `Candidate` (with its request's lineage, kept in ``store``) or `CandidateFailure` per request, in order."""
    params = dict(params or {})
    made: dict[int, Made] = {}
    groups: dict[tuple, list[Request]] = defaultdict(list)
    for request in requests:
        known = store.get(request.candidate_id(instruction.id, generator.name))
        if known is not None:
            made[request.seed] = known
        else:
            groups[(request.kind, request.seconds, request.lineage.parent if request.kind == "extend" else None)].append(request)
    for (kind, _, _), group in groups.items():
        result = _call(generator, instruction, kind, group, store, batch_size, params)
        lineage = {r.seed: r.lineage for r in group}
        for candidate in result:
            candidate = dataclasses.replace(candidate, lineage=lineage[candidate.seed])
            store.put(candidate)
            made[candidate.seed] = candidate
        made.update((failure.seed, failure) for failure in result.failures)
    return [made[request.seed] for request in requests]


def regenerate(generator: Generator, instruction: Instruction, seed: int, lineage: Lineage, duration: float, *,
               batch_size: int | None = None, **params: Any) -> Candidate:
    """Make the candidate of ``seed`` and ``lineage`` again (see the module docstring); raise if it fails."""
    def one(result: GenerationResult) -> Candidate:
        result.raise_for_failures()
        return result[0]

    if lineage.segment_seeds or lineage.segment_seconds is not None:   # beam, smc
        seeds, segment = lineage.segment_seeds, lineage.segment_seconds
        if not seeds or seeds[-1] != seed or segment is None:
            raise CmirmError(f"{lineage.method} lineage {lineage.to_dict()} does not end with seed {seed} "
                             "or lacks its segment")
        candidate = one(generator.sample(instruction, [seeds[0]], segment, batch_size=batch_size, **params))
        for later in seeds[1:]:
            candidate = one(generator.extend(instruction, candidate, [later], segment, batch_size=batch_size, **params))
    elif lineage.method == "noise":
        if not lineage.noise_seeds or lineage.noise_seeds[-1] != seed or lineage.radius is None:
            raise CmirmError(f"noise lineage {lineage.to_dict()} does not end with seed {seed} or lacks its radius")
        latent = noise_latents(generator, lineage.noise_seeds, lineage.radius)
        candidate = one(generator.sample_from_latents(instruction, latent[None], [seed], duration,
                                                      sampler_seeds=[lineage.sampler_seed], batch_size=batch_size,
                                                      **params))
    else:
        candidate = one(generator.sample(instruction, [seed], duration, batch_size=batch_size, **params))
    return dataclasses.replace(candidate, lineage=lineage)
