"""Zero-order search over a diffusion generator's initial noise (Ma et al., arXiv 2501.09732).

Round 0 draws ``neighbors`` random initial noises (each seed's own, exactly best-of-N's
candidates) and takes the best as the pivot. Each of the ``rounds`` later rounds draws
``neighbors`` neighbours of the pivot, ``z + radius * eps`` renormalised to the Gaussian norm
(`noise_latents`), and moves the pivot to the best of pivot and neighbours under the policy.
Every node keeps its root's sampler seed, so the reward is a function of the latent alone.
Every evaluated node is a candidate. ``rounds=0`` is random search, i.e. best-of-N.

Compute: ``neighbors x (rounds + 1)`` clips of ``duration``, each a full sampler run (its NFEs),
so its budget compares with best-of-N's N at equal audio seconds and equal NFEs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Sequence

import torch

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.records import Lineage
from rerank.policies import Policy
from rerank.search.method import SearchMethod, rank
from rerank.search.state import Request, SearchState

if TYPE_CHECKING:
    from generators import Generator


def noise_latents(generator: "Generator", noise_seeds: Sequence[int], radius: float) -> torch.Tensor:
    """The initial latent of a noise lineage: the first seed's own noise, moved once per later seed.

    A move is ``z <- (z + radius * eps) * sqrt(d) / |z + radius * eps|`` with ``eps`` that seed's
    own noise and ``d`` the latent's size: the neighbour keeps the norm a standard Gaussian latent
    has (about ``sqrt(d)``), which the sampler expects; ``radius`` sets how far it moves.
    """
    noises = generator.initial_latents(list(noise_seeds))
    latent = noises[0]
    for eps in noises[1:]:
        latent = latent + radius * eps
        latent = latent * (math.sqrt(latent.numel()) / latent.norm())
    return latent


@dataclass(frozen=True)
class NoiseSearch(SearchMethod):
    """``noise:rounds=R,neighbors=M,radius=r``; ``rounds`` may be left to a budget (budget / M - 1)."""

    name: ClassVar[str] = "noise"
    capability: ClassVar[str | None] = "accepts_latents"
    rounds: int | None = None
    neighbors: int = 4
    radius: float = 0.3

    def __post_init__(self) -> None:
        if self.rounds is not None and (not isinstance(self.rounds, int) or isinstance(self.rounds, bool)
                                        or self.rounds < 0):
            raise ConfigError(f"search 'noise': rounds must be an integer >= 0, got {self.rounds!r}")
        if not isinstance(self.neighbors, int) or isinstance(self.neighbors, bool) or self.neighbors < 1:
            raise ConfigError(f"search 'noise': neighbors must be an integer >= 1, got {self.neighbors!r}")
        if not isinstance(self.radius, (int, float)) or isinstance(self.radius, bool) or not 0 < self.radius < math.inf:
            raise ConfigError(f"search 'noise': radius must be a number > 0, got {self.radius!r}")
        object.__setattr__(self, "radius", float(self.radius))

    def budget(self) -> int | None:
        return None if self.rounds is None else self.neighbors * (self.rounds + 1)

    def for_budget(self, budget: int) -> "NoiseSearch":
        if self.rounds is not None:
            if self.budget() != budget:
                raise ConfigError(f"search {self.spec()!r} spends {self.budget()} clips, not a budget of {budget}; "
                                  "leave 'rounds' unset to fit budgets")
            return self
        if budget % self.neighbors or budget < self.neighbors:
            raise ConfigError(f"search 'noise': a budget of {budget} is not a positive multiple of "
                              f"neighbors={self.neighbors} (rounds = budget / neighbors - 1)")
        return dataclasses.replace(self, rounds=budget // self.neighbors - 1)

    def ask(self, state: SearchState) -> list[Request]:
        if state.done:
            return []
        seeds = self._seeds(state, self.neighbors)
        if state.step == 0:
            return [Request("latents", seed, state.duration,
                            Lineage(self.name, 0, None, noise_seeds=(seed,), radius=self.radius, sampler_seed=seed))
                    for seed in seeds]
        pivot = state.nodes[state.frontier[0]]
        return [Request("latents", seed, state.duration,
                        Lineage(self.name, state.step, pivot.id, noise_seeds=pivot.lineage.noise_seeds + (seed,),
                                radius=self.radius, sampler_seed=pivot.lineage.sampler_seed))
                for seed in seeds]

    def _advance(self, state: SearchState, new_ids: list[str], policy: Policy,
                 axes: tuple[str, ...]) -> tuple[list[str], bool]:
        pool = [state.nodes[i] for i in [*state.frontier, *new_ids]]
        best = rank(pool, policy, axes)[:1]
        frontier = [node.id for node in best]
        return frontier, not frontier or state.step > self.resolved().rounds

    def candidates(self, state: SearchState) -> list[str]:
        return [node.id for node in state.scored()]
