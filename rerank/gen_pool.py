"""Generate candidates in parallel: a pool of generator workers, on Ray actors or in-process.

Each worker builds its generator once (`generators.build_generator` by name, on its own device, or
a `Generator` object the caller built, sent to Ray actors by pickling) and then serves work items
of (instruction, seeds): `GeneratorWorker.generate` returns the `GenerationResult` (candidates with
their audio, and failures), which travels back to the driver through Ray's object store; the
driver alone writes the run directory. Before any generation the job's whole request (every
instruction, every seed, duration, parameters) is checked on one worker
(`GeneratorPool.check_request`), so a refusal (an unsupported input, a seed outside a tool's
range, an over-long prompt) costs seconds. Faults are `rerank.actor_pool.ActorPool`'s: a dead
worker's items go to a replacement, and an item's result is accepted once, so a candidate is never
generated twice into the run nor lost.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.records import Candidate, Instruction
from generators import Generator, GenerationResult, build_generator
from rerank import defaults
from rerank.actor_pool import ActorPool, Placement, Worker
from rerank.pool import torch_threads


def default_device() -> str:
    """cuda when this process sees a GPU, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class GeneratorWorker(Worker):
    """The generation code every backend runs: build one generator, serve (instruction, seeds) items."""

    def __init__(self, generator: str | Generator, device: str | None, threads: int | None) -> None:
        self.threads = threads
        with torch_threads(threads):
            self.generator = generator if isinstance(generator, Generator) else \
                build_generator(generator, device=device or default_device())

    def name(self) -> str:
        """What the candidates record as their generator."""
        return self.generator.name

    def check_request(self, instructions: Sequence[Instruction], seeds: Sequence[int], duration: float,
                      batch_size: int | None, params: Mapping[str, Any]) -> None:
        """`Generator.check_request` of the whole job."""
        self.generator.check_request(instructions, seeds, duration, batch_size, **params)

    def generate(self, instruction: Instruction, seeds: Sequence[int], duration: float, batch_size: int | None,
                 params: Mapping[str, Any]) -> GenerationResult:
        """One item: a candidate (or a failure) per seed."""
        with torch_threads(self.threads):
            return self.generator.sample(instruction, list(seeds), duration, batch_size=batch_size, **params)

    def check_search(self, method: Any, duration: float, params: Mapping[str, Any]) -> None:
        """`rerank.search.SearchMethod.check` against this worker's generator (can it continue / take latents)."""
        method.check(self.generator, duration, dict(params))

    def generate_requests(self, instruction: Instruction, requests: Sequence[Any], parents: Mapping[str, Candidate],
                          batch_size: int | None, params: Mapping[str, Any]) -> GenerationResult:
        """One search item: a candidate (or a failure) per `rerank.search.Request`, continuing ``parents``."""
        from rerank.search.execute import MemoryStore, generate_requests

        with torch_threads(self.threads):
            made = generate_requests(self.generator, instruction, requests, MemoryStore(parents.values()),
                                     batch_size=batch_size, params=dict(params))
        return GenerationResult([m for m in made if isinstance(m, Candidate)],
                                [m for m in made if not isinstance(m, Candidate)])


@dataclass
class GeneratorPoolConfig:
    """Where and how many generators run. ``generator`` is a registry name or a built `Generator`."""

    generator: str | Generator
    backend: Literal["ray", "local"] = "local"
    num_actors: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    resources: Mapping[str, float] = field(default_factory=dict)
    threads_per_actor: int | None = None
    device: str | None = None
    max_in_flight: int = defaults.MAX_IN_FLIGHT
    max_restarts: int = 3
    ray_address: str | None = None


class GeneratorPool(ActorPool):
    """A pool of generator workers (see the module docstring). Use as a context manager."""

    def __init__(self, config: GeneratorPoolConfig) -> None:
        self.config = config
        label = config.generator.name if isinstance(config.generator, Generator) else config.generator
        super().__init__(
            GeneratorWorker, (config.generator, config.device, config.threads_per_actor), name="generator",
            label=label, backend=config.backend, size=config.num_actors,
            placement=Placement(config.num_cpus_per_actor, config.num_gpus_per_actor, dict(config.resources)),
            max_in_flight=config.max_in_flight, max_restarts=config.max_restarts, ray_address=config.ray_address)

    def check_request(self, instructions: Sequence[Instruction], seeds: Sequence[int], duration: float,
                      batch_size: int | None, params: Mapping[str, Any]) -> str:
        """Refuse the job now if its generator would refuse any part of it; the name candidates record."""
        self.call("check_request", list(instructions), list(seeds), duration, batch_size, dict(params))
        return self.call("name")

    def submit_item(self, key: Any, instruction: Instruction, seeds: Sequence[int], duration: float,
                    batch_size: int | None, params: Mapping[str, Any]) -> None:
        """Queue one work item: ``instruction`` with ``seeds``."""
        self.submit(key, "generate", instruction, list(seeds), duration, batch_size, dict(params))

    def submit_requests(self, key: Any, instruction: Instruction, requests: Sequence[Any],
                        parents: Mapping[str, Candidate], batch_size: int | None, params: Mapping[str, Any]) -> None:
        """Queue one search item: ``instruction``'s `rerank.search.Request`s (see `GeneratorWorker.generate_requests`)."""
        self.submit(key, "generate_requests", instruction, list(requests), dict(parents), batch_size, dict(params))

    def close(self) -> None:
        """Release the generators (and their memory: the scorers may need it next)."""
        super().close()
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def require_generator_name(generator: Generator, expected: str) -> None:
    """A `Generator` given for a job must be the one the job names (its recorded name would differ otherwise)."""
    if generator.name != expected:
        raise ConfigError(f"the generator given is named {generator.name!r} but the job says {expected!r}")
