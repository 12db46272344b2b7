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
from cmirm_plugin.scoring.settings import ScoringSettings
from cmirm_plugin.scoring.spec import ScorerSpec
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

    def scorer_device(self) -> str:
        """Where the scorers run: ``--device``; else on Ray a GPU when actors reserve one (Ray hides GPUs
        from actors that reserve none), in-process this machine's default. The dtype resolves on it."""
        if self.device is not None:
            return self.device
        if self.resolved_backend == "ray":
            return "cuda" if self.num_gpus_per_actor > 0 else "cpu"
        from cmirm_plugin.scoring.settings import default_device_type

        return default_device_type()

    def pool_config(self, spec: ScorerSpec, settings: ScoringSettings) -> PoolConfig:
        """The `PoolConfig` scoring with ``spec``: ``settings`` with the dtype resolved on `scorer_device`,
        so every worker scores alike (and ``run.json`` records what they do)."""
        threads = self.threads()
        settings = settings.with_options(dtype=settings.resolved_dtype(self.scorer_device()))
        return PoolConfig(spec=spec, settings=settings, backend=self.resolved_backend, num_actors=self.num_actors,
                          num_gpus_per_actor=self.num_gpus_per_actor,
                          num_cpus_per_actor=float(threads) if self.num_gpus_per_actor == 0 else 1.0,
                          threads_per_actor=threads, batch_size=self.score_batch_size,
                          max_in_flight=self.max_in_flight, ray_address=self.ray_address, device=self.device)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "backend": self.resolved_backend}
