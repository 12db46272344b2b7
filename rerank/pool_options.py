"""The scorer-pool options of the commands, and the `PoolConfig` they resolve to.

The commands default to ``--backend auto``: in-process for one actor on this machine (no Ray
start-up cost), Ray otherwise. ``--threads-per-actor`` defaults to this process's torch threads
for the in-process worker and to an even share of the CPUs for Ray actors; each Ray actor
reserves that many CPUs, so actors never oversubscribe the machine.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cmirm_plugin.errors import ConfigError
from rerank.pool import PoolConfig

Backend = Literal["auto", "ray", "local"]


def check_count(name: str, value: Any) -> int:
    """``value`` if it is an integer >= 1 (bools refused), else a `ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class PoolOptions:
    """How to score: backend, actors, threads, batches (none of these changes any score).

    Validated on construction, with the command-line option names, so a bad value fails before
    any generation rather than when scoring starts.
    """

    backend: Backend = "auto"
    num_actors: int = 1
    num_gpus_per_actor: float = 0.0
    threads_per_actor: int | None = None
    score_batch_size: int = 8
    max_in_flight: int = 2
    ray_address: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "ray", "local"):
            raise ConfigError(f"--backend must be auto, ray or local, got {self.backend!r}")
        check_count("--num-actors", self.num_actors)
        check_count("--score-batch-size", self.score_batch_size)
        check_count("--max-in-flight", self.max_in_flight)
        if self.threads_per_actor is not None:
            check_count("--threads-per-actor", self.threads_per_actor)
        gpus = self.num_gpus_per_actor
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or gpus < 0:
            raise ConfigError(f"--num-gpus-per-actor must be a number >= 0 (fractions share a GPU), got {gpus!r}")
        if self.backend == "local" and (self.num_actors != 1 or self.ray_address):
            raise ConfigError("--backend local runs one in-process scorer: drop --num-actors/--ray-address or use ray")

    @property
    def resolved_backend(self) -> Literal["ray", "local"]:
        if self.backend != "auto":
            return self.backend
        return "ray" if self.num_actors > 1 or self.ray_address else "local"

    def threads(self) -> int:
        """Torch threads per worker (see the module docstring)."""
        if self.threads_per_actor is not None:
            return self.threads_per_actor
        if self.resolved_backend == "local":
            import torch

            return torch.get_num_threads()
        return max(1, (os.cpu_count() or 1) // self.num_actors)

    def pool_config(self, model: str, max_dur: float, missing: str) -> PoolConfig:
        """The `PoolConfig` scoring with ``model`` (a folder or hub id).

        ``max_dur`` and ``missing`` change scores, so they come from the run's recorded settings
        (`rerank.run_config.ResultSettings`), never from a default here.
        """
        threads = self.threads()
        return PoolConfig(model=model, backend=self.resolved_backend, num_actors=self.num_actors,
                          num_gpus_per_actor=self.num_gpus_per_actor,
                          num_cpus_per_actor=float(threads) if self.num_gpus_per_actor == 0 else 1.0,
                          threads_per_actor=threads, batch_size=self.score_batch_size,
                          max_in_flight=self.max_in_flight, ray_address=self.ray_address, device=self.device,
                          max_dur=max_dur, missing=missing)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "backend": self.resolved_backend}
