"""The pool options of the commands (generator and scorer workers), and the pool configs they resolve to.

The commands default to ``--backend auto``: in-process for one generator and one scorer on this
machine without ``--ray-address`` (no Ray start-up cost), Ray otherwise; both stages use the same
backend. ``--schedule auto`` streams on Ray (each stage in its own actors) and runs the stages one
after the other in-process (one process would otherwise hold both models). ``--threads-per-actor``
defaults to this process's torch threads for the in-process scorer and to an even share of the
CPUs for Ray actors; each Ray scorer reserves that many CPUs, each generator ``--gen-cpus-per-actor``
(fractions allowed), and a private Ray cluster offers at least what all of them reserve together,
so the two stages never wait on each other's CPU reservations.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cmirm_plugin.errors import ConfigError, check_count
from cmirm_plugin.scoring.settings import ScoringSettings
from cmirm_plugin.scoring.spec import ScorerSpec
from generators import Generator
from rerank import defaults
from rerank.gen_pool import GeneratorPoolConfig, default_device
from rerank.pool import PoolConfig

Backend = Literal["auto", "ray", "local"]
ScheduleOption = Literal["auto", "stream", "phased"]


def _fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a number >= 0 (fractions share a device), got {value!r}")


@dataclass(frozen=True)
class PoolOptions:
    """Where and how much in parallel to generate and score (none of these changes any candidate or score).

    Validated on construction, with the command-line option names, so a bad value fails before
    any work. ``gen_gpus_per_actor`` None reserves one GPU per generator when this machine has one.
    ``gen_resources`` are Ray custom resources each generator actor needs (e.g. to pin generators
    to the nodes that have the model).
    """

    backend: Backend = defaults.BACKEND  # type: ignore[assignment]
    num_actors: int = defaults.NUM_ACTORS
    num_gpus_per_actor: float = defaults.NUM_GPUS_PER_ACTOR
    threads_per_actor: int | None = None
    score_batch_size: int = defaults.SCORE_BATCH_SIZE
    max_in_flight: int = defaults.MAX_IN_FLIGHT
    ray_address: str | None = None
    device: str | None = None
    gen_actors: int = defaults.GEN_ACTORS
    gen_gpus_per_actor: float | None = None
    gen_cpus_per_actor: float = defaults.GEN_CPUS_PER_ACTOR
    gen_resources: dict[str, float] = field(default_factory=dict)
    schedule: ScheduleOption = defaults.SCHEDULE  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "ray", "local"):
            raise ConfigError(f"--backend must be auto, ray or local, got {self.backend!r}")
        if self.schedule not in ("auto", "stream", "phased"):
            raise ConfigError(f"--schedule must be auto, stream or phased, got {self.schedule!r}")
        check_count("--num-actors", self.num_actors)
        check_count("--gen-actors", self.gen_actors)
        check_count("--score-batch-size", self.score_batch_size)
        check_count("--max-in-flight", self.max_in_flight)
        if self.threads_per_actor is not None:
            check_count("--threads-per-actor", self.threads_per_actor)
        _fraction("--num-gpus-per-actor", self.num_gpus_per_actor)
        if self.gen_gpus_per_actor is not None:
            _fraction("--gen-gpus-per-actor", self.gen_gpus_per_actor)
        _fraction("--gen-cpus-per-actor", self.gen_cpus_per_actor)
        for name, value in self.gen_resources.items():
            _fraction(f"generator resource {name!r}", value)
        if self.backend == "local" and (self.num_actors != 1 or self.gen_actors != 1 or self.ray_address):
            raise ConfigError("--backend local runs one in-process generator and scorer: drop --num-actors/"
                              "--gen-actors/--ray-address or use --backend ray")

    @property
    def resolved_backend(self) -> Literal["ray", "local"]:
        if self.backend != "auto":
            return self.backend
        return "ray" if self.num_actors > 1 or self.gen_actors > 1 or self.ray_address else "local"

    @property
    def resolved_schedule(self) -> Literal["stream", "phased"]:
        """``--schedule``; auto: stream on Ray, phased in-process (see the module docstring)."""
        if self.schedule != "auto":
            return self.schedule
        return "stream" if self.resolved_backend == "ray" else "phased"

    def threads(self) -> int:
        """Torch threads per scorer worker (see the module docstring)."""
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

    def scorer_cpus(self) -> float:
        """CPUs each Ray scorer actor reserves: its threads, or one beside a GPU."""
        return float(self.threads()) if self.num_gpus_per_actor == 0 else 1.0

    def pool_config(self, spec: ScorerSpec, settings: ScoringSettings) -> PoolConfig:
        """The `PoolConfig` scoring with ``spec``: ``settings`` with the dtype resolved on `scorer_device`,
        so every worker scores alike (and ``run.json`` records what they do)."""
        settings = settings.with_options(dtype=settings.resolved_dtype(self.scorer_device()))
        return PoolConfig(spec=spec, settings=settings, backend=self.resolved_backend, num_actors=self.num_actors,
                          num_gpus_per_actor=self.num_gpus_per_actor, num_cpus_per_actor=self.scorer_cpus(),
                          threads_per_actor=self.threads(), batch_size=self.score_batch_size,
                          max_in_flight=self.max_in_flight, ray_address=self.ray_address, device=self.device)

    def gen_gpus(self) -> float:
        """GPUs each Ray generator actor reserves: ``--gen-gpus-per-actor``, else one when this machine has one."""
        if self.gen_gpus_per_actor is not None:
            return float(self.gen_gpus_per_actor)
        import torch

        return 1.0 if torch.cuda.is_available() else 0.0

    def generator_config(self, generator: str | Generator, device: str | None = None) -> GeneratorPoolConfig:
        """The `GeneratorPoolConfig` of ``generator`` (a registry name or a built `Generator`).

        Its device: ``device``, else ``--device``, else on Ray cuda when the actors reserve a GPU,
        in-process this machine's default. Ray actors run ``--gen-cpus-per-actor`` torch threads (at least one).
        """
        ray = self.resolved_backend == "ray"
        gpus = self.gen_gpus() if ray else 0.0
        device = device or self.device or (("cuda" if gpus > 0 else "cpu") if ray else default_device())
        return GeneratorPoolConfig(generator, backend=self.resolved_backend, num_actors=self.gen_actors,
                                   num_gpus_per_actor=gpus, num_cpus_per_actor=self.gen_cpus_per_actor,
                                   resources=dict(self.gen_resources),
                                   threads_per_actor=max(1, int(self.gen_cpus_per_actor)) if ray else None,
                                   device=device, max_in_flight=self.max_in_flight, ray_address=self.ray_address)

    def reserved_cpus(self) -> float:
        """CPUs all Ray actors of a job reserve together (what a private cluster must offer)."""
        return self.gen_actors * self.gen_cpus_per_actor + self.num_actors * self.scorer_cpus()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "backend": self.resolved_backend, "schedule": self.resolved_schedule}
