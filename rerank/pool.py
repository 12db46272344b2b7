"""Score candidates in parallel: a pool of scorer workers, on Ray actors or in-process.

Each worker holds one scorer, loaded once by `cmirm_plugin.scoring.load_scorer` from a spec (any
scorer that follows the contract), or wraps a scorer already built in this process
(`ScorerPool.of`). Candidates are grouped by instruction (so a worker's prompt cache serves the
whole group) and cut into batches. Audio travels as `Audio` through Ray's object store, and so does
the instruction (with its reference clip once loaded, `Instruction.load_ref`), so workers on other
machines need no access to the driver's files. `ScorerPool.iter_results` yields results batch by
batch as they finish so a caller can write them incrementally; the pipeline submits its own batches
(`ScorerPool.submit_batch`).

Faults are `rerank.actor_pool.ActorPool`'s: a dead worker's batches go to a replacement (up to
``max_restarts``), each batch is reported once, a batch that raises inside its worker gets an error
per candidate. A candidate whose audio is bad gets an error instead of failing its batch.
``backend="local"`` runs the very same worker code in this process.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Literal, Mapping, Sequence

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import CmirmError, check_count
from cmirm_plugin.records import Instruction, Scores
from cmirm_plugin.scoring.settings import ScoringSettings
from cmirm_plugin.scoring.spec import ScorerSpec
from rerank import defaults
from rerank.actor_pool import ActorPool, Placement, TaskFailed, Worker, next_results


@dataclass
class PoolConfig:
    """How to score: which scorer (a spec, its settings and constructor arguments), where, and how much in parallel."""

    spec: ScorerSpec
    settings: ScoringSettings = field(default_factory=ScoringSettings)
    backend: Literal["ray", "local"] = "ray"
    num_actors: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    threads_per_actor: int = 1
    batch_size: int = defaults.SCORE_BATCH_SIZE
    max_in_flight: int = defaults.MAX_IN_FLIGHT
    ray_address: str | None = None
    device: str | None = None
    max_restarts: int = 3
    init_kwargs: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("ray", "local"):
            raise CmirmError(f"backend must be 'ray' or 'local', got {self.backend!r}")
        for name in ("num_actors", "threads_per_actor", "batch_size", "max_in_flight"):
            check_count(f"pool option {name}", getattr(self, name))
        if self.num_gpus_per_actor < 0 or self.num_cpus_per_actor < 0:
            raise CmirmError("num_gpus_per_actor and num_cpus_per_actor must be >= 0")


@dataclass
class ScoreItem:
    """One candidate to score: its key (for the caller), its audio and its instruction."""

    key: str
    audio: Audio | str
    instruction: Instruction


@dataclass
class ScoreResult:
    """Scores of one candidate, or the error that prevented them, and its share of the batch's wall
    seconds on the worker (``seconds``: the batch's scoring time split equally over its candidates)."""

    key: str
    scores: Scores | None
    error: str | None = None
    seconds: float | None = None


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` torch threads (None: leave this process's setting alone)."""
    if threads is None:
        yield
        return
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class ScorerWorker(Worker):
    """The scoring code every backend runs: load a scorer once, score batches, isolate bad audio."""

    def __init__(self, spec: ScorerSpec, settings: ScoringSettings, device: str | None, threads: int | None,
                 init_kwargs: Mapping[str, Any] | None = None) -> None:
        from cmirm_plugin.scoring.loader import load_scorer

        self.threads = threads
        self.label = spec.label
        with torch_threads(threads):
            self.scorer = load_scorer(spec, settings, device, init_kwargs=init_kwargs)

    @classmethod
    def wrap(cls, scorer: Any, label: str) -> "ScorerWorker":
        """A worker around a scorer already built in this process (its threads left alone)."""
        worker = cls.__new__(cls)
        worker.scorer, worker.label, worker.threads = scorer, label, None
        return worker

    def ready(self) -> dict[str, Any]:
        """`Worker.ready` plus the scorer's axes (the columns of every score row)."""
        return {**super().ready(), "axes": tuple(self.scorer.axes)}

    def score(self, batch: list[tuple[Audio | str, Instruction]]
              ) -> list[tuple[list[float] | None, str | None, float]]:
        """Score ``[(audio or path, instruction)]``: per item its values (or an error string) and its share
        of the batch's wall seconds here (the compute records' ``scorer_seconds``)."""
        from cmirm_plugin.scoring.contract import score_isolated

        began = time.perf_counter()
        with torch_threads(self.threads):
            outcomes = score_isolated(self.scorer, [audio for audio, _ in batch], [inst for _, inst in batch],
                                      name=self.label)
        share = (time.perf_counter() - began) / max(len(batch), 1)
        return [(list(o.scores.values) if o.scores else None, o.error, share) for o in outcomes]


def make_batches(items: Sequence[ScoreItem], batch_size: int) -> list[list[int]]:
    """Indices grouped by instruction (first-seen order), cut into batches of ``batch_size``."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[item.instruction.id].append(i)
    return [idx[s : s + batch_size] for idx in groups.values() for s in range(0, len(idx), batch_size)]


def _payload(items: Sequence[ScoreItem]) -> list[tuple[Audio | str, Instruction]]:
    return [(item.audio, item.instruction) for item in items]


class ScorerPool(ActorPool):
    """A pool of scorer workers (see the module docstring). Use as a context manager."""

    def __init__(self, config: PoolConfig, *, worker: ScorerWorker | None = None) -> None:
        self.config = config
        super().__init__(
            ScorerWorker, (config.spec, config.settings, config.device, config.threads_per_actor, config.init_kwargs),
            name="scorer", label=config.spec.label, backend=config.backend, size=config.num_actors,
            placement=Placement(config.num_cpus_per_actor, config.num_gpus_per_actor),
            max_in_flight=config.max_in_flight, max_restarts=config.max_restarts, ray_address=config.ray_address,
            worker=worker)
        self._calls = itertools.count()

    @classmethod
    def of(cls, scorer: Any, batch_size: int = defaults.SCORE_BATCH_SIZE) -> "ScorerPool":
        """An in-process pool around a scorer object already built (e.g. for `best_of_n`)."""
        label = getattr(scorer, "label", None) or type(scorer).__name__
        spec = ScorerSpec("plugin", f"{type(scorer).__module__}:{type(scorer).__qualname__}")
        return cls(PoolConfig(spec=spec, backend="local", batch_size=batch_size),
                   worker=ScorerWorker.wrap(scorer, label))

    @property
    def axes(self) -> tuple[str, ...]:
        """The scorer's axes (waits for a worker to start)."""
        if not self.started:
            raise CmirmError("the pool is not started: use `with ScorerPool(config) as pool:`")
        self.wait_ready()
        return tuple(self.infos[0]["axes"])

    # ------------------------------------------------------------------ the pipeline's interface
    def submit_batch(self, key: Hashable, items: Sequence[ScoreItem]) -> None:
        """Queue one batch (one instruction's candidates); `to_results` reads what comes back."""
        self.submit(key, "score", _payload(items))

    def to_results(self, keys: Sequence[str], raw: Any) -> list[ScoreResult]:
        """The `ScoreResult`s of a finished batch of the candidates ``keys`` (a failed batch: an error for each)."""
        if isinstance(raw, TaskFailed):
            return [ScoreResult(key, None, raw.message) for key in keys]
        axes = self.axes
        return [ScoreResult(key, Scores(axes, tuple(r)) if r is not None else None, error, seconds)
                for key, (r, error, seconds) in zip(keys, raw, strict=True)]

    # ------------------------------------------------------------------ standalone use
    def score(self, items: Sequence[ScoreItem], on_batch: Callable[[list[tuple[int, ScoreResult]]], None] | None = None
              ) -> list[ScoreResult]:
        """Scores of every item, in input order."""
        out: list[ScoreResult | None] = [None] * len(items)
        for done in self.iter_results(items):
            for i, result in done:
                out[i] = result
            if on_batch is not None:
                on_batch(done)
        return out  # type: ignore[return-value]

    def iter_results(self, items: Sequence[ScoreItem]) -> Iterator[list[tuple[int, ScoreResult]]]:
        """Yield ``[(input index, result)]`` per finished batch (completion order)."""
        if not self.started:
            raise CmirmError("the pool is not started: use `with ScorerPool(config) as pool:`")
        call = next(self._calls)
        todo = list(enumerate(make_batches(items, self.config.batch_size)))[::-1]
        waiting = 0
        while todo or waiting:
            while todo and self.capacity() > 0:
                b, batch = todo.pop()
                self.submit_batch((call, b, tuple(batch)), [items[i] for i in batch])
                waiting += 1
            for _, (_, _, batch), raw in next_results([self]):
                waiting -= 1
                results = self.to_results([items[i].key for i in batch], raw)
                yield list(zip(batch, results))
