"""Score candidates in parallel: a pool of scorer workers, on Ray actors or in-process.

Each worker holds one scorer, loaded once by `cmirm_plugin.scoring.load_scorer` from a spec (any
scorer that follows the contract). Candidates are grouped by instruction (so a worker's prompt
cache serves the whole group) and cut into batches; at most ``max_in_flight``
batches wait on each worker. Audio travels as arrays through Ray's object store. Results come back
in input order; `ScorerPool.iter_results` yields them batch by batch as they finish so a caller can
write them incrementally.

Fault tolerance: a worker that dies has its unfinished batches resubmitted to a replacement (up
to ``max_restarts`` replacements); a batch's results are accepted once, so no candidate is lost or
reported twice. A candidate whose audio is bad gets an error record instead of failing the job.
``backend="local"`` runs the very same worker code in this process (for debugging and tiny jobs).
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import Instruction, Scores
from cmirm_plugin.scoring.settings import ScoringSettings
from cmirm_plugin.scoring.spec import ScorerSpec


@dataclass
class PoolConfig:
    """How to score: which scorer (a spec and its settings), where, and how much in parallel."""

    spec: ScorerSpec
    settings: ScoringSettings = field(default_factory=ScoringSettings)
    backend: Literal["ray", "local"] = "ray"
    num_actors: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    threads_per_actor: int = 1
    batch_size: int = 8
    max_in_flight: int = 2
    ray_address: str | None = None
    device: str | None = None
    max_restarts: int = 3

    def __post_init__(self) -> None:
        if self.backend not in ("ray", "local"):
            raise CmirmError(f"backend must be 'ray' or 'local', got {self.backend!r}")
        for name in ("num_actors", "threads_per_actor", "batch_size", "max_in_flight"):
            if int(getattr(self, name)) < 1:
                raise CmirmError(f"pool option {name} must be >= 1, got {getattr(self, name)!r}")
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
    """Scores of one candidate, or the error that prevented them."""

    key: str
    scores: Scores | None
    error: str | None = None


class ScorerWorker:
    """The scoring code every backend runs: load a scorer once, score batches, isolate bad audio."""

    def __init__(self, spec: ScorerSpec, settings: ScoringSettings, device: str | None, threads: int) -> None:
        from cmirm_plugin.scoring.loader import load_scorer

        self.threads = threads
        self.label = spec.label
        with self._threads():
            self.scorer = load_scorer(spec, settings, device)

    @contextlib.contextmanager
    def _threads(self):
        import torch

        saved = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(saved)

    def pid(self) -> int:
        return os.getpid()

    def axes(self) -> tuple[str, ...]:
        """The loaded scorer's axes (the columns of every score row)."""
        return tuple(self.scorer.axes)

    def score(self, batch: list[tuple[Any, int | None, dict]]) -> list[tuple[list[float] | None, str | None]]:
        """Score ``[(audio (path or array), sample_rate, instruction dict)]``; bad items get an error string."""
        from cmirm_plugin.scoring.contract import score_isolated

        results: list[tuple[list[float] | None, str | None]] = [(None, None)] * len(batch)
        clips, insts, slots = [], [], []
        for i, (audio, sr, inst) in enumerate(batch):
            try:
                clips.append(audio if isinstance(audio, str) else Audio.from_array(audio, sr))
                insts.append(Instruction.from_dict(inst))
                slots.append(i)
            except CmirmError as exc:
                results[i] = (None, f"{type(exc).__name__}: {exc}")
        with self._threads():
            outcomes = score_isolated(self.scorer, clips, insts, name=self.label)
        for i, outcome in zip(slots, outcomes):
            results[i] = (list(outcome.scores.values) if outcome.scores else None, outcome.error)
        return results


def _payload(item: ScoreItem) -> tuple[Any, int | None, dict]:
    inst = item.instruction.to_dict()
    if isinstance(item.instruction.ref_audio, Audio) and item.instruction.ref_audio.source is None:
        raise CmirmError(f"{item.key}: an in-memory reference clip needs a file path to be sent to a worker")
    if isinstance(item.audio, Audio):
        return item.audio.waveform.numpy(), item.audio.sample_rate, inst
    return str(item.audio), None, inst


def make_batches(items: Sequence[ScoreItem], batch_size: int) -> list[list[int]]:
    """Indices grouped by instruction (first-seen order), cut into batches of ``batch_size``."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[item.instruction.id].append(i)
    return [idx[s : s + batch_size] for idx in groups.values() for s in range(0, len(idx), batch_size)]


class ScorerPool:
    """A pool of scorer workers (see module docstring). Use as a context manager."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self._ray = None
        self._started_ray = False
        self._workers: list[Any] = []
        self._restarts = 0
        self.axes: tuple[str, ...] = ()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "ScorerPool":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        cfg = self.config
        if cfg.backend == "local":
            self._workers = [ScorerWorker(cfg.spec, cfg.settings, cfg.device, cfg.threads_per_actor)]
            self.axes = self._workers[0].axes()
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        self._ray = ray
        if not ray.is_initialized():
            if cfg.ray_address:
                ray.init(address=cfg.ray_address, log_to_driver=False)
            else:
                needed = max(os.cpu_count() or 1, int(np.ceil(cfg.num_actors * cfg.num_cpus_per_actor)))
                ray.init(address="local", num_cpus=needed, include_dashboard=False, log_to_driver=False)
            self._started_ray = True
        self._actor_cls = ray.remote(num_cpus=cfg.num_cpus_per_actor, num_gpus=cfg.num_gpus_per_actor)(ScorerWorker)
        self._workers = [self._new_actor() for _ in range(cfg.num_actors)]
        try:
            self.axes = ray.get(self._workers[0].axes.remote())
        except ray.exceptions.RayError as exc:   # the scorer failed to load on the worker
            self.close()
            lines = [line for line in str(exc).splitlines() if line.strip()]
            cause = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "")
            raise CmirmError(f"scorer {cfg.spec.label} could not be loaded on a Ray worker: {cause.strip()}") from exc

    def _new_actor(self):
        cfg = self.config
        return self._actor_cls.remote(cfg.spec, cfg.settings, cfg.device, cfg.threads_per_actor)

    def close(self) -> None:
        if self._ray is not None:
            for actor in self._workers:
                self._ray.kill(actor)
            if self._started_ray:
                self._ray.shutdown()
        self._workers = []
        self._ray = None

    @property
    def workers(self) -> list[Any]:
        """The live workers (Ray actor handles, or the in-process worker)."""
        return list(self._workers)

    @property
    def restarts(self) -> int:
        return self._restarts

    # ------------------------------------------------------------------ scoring
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
        if not self._workers:
            raise CmirmError("the pool is not started: use `with ScorerPool(config) as pool:`")
        batches = make_batches(items, self.config.batch_size)
        payloads = [[_payload(items[i]) for i in batch] for batch in batches]
        if self._ray is None:
            worker = self._workers[0]
            for batch, payload in zip(batches, payloads):
                yield self._collect(items, batch, worker.score(payload))
            return
        yield from self._iter_ray(items, batches, payloads)

    def _collect(self, items, batch, raw) -> list[tuple[int, ScoreResult]]:
        return [(i, ScoreResult(items[i].key, Scores(self.axes, tuple(r)) if r is not None else None, err))
                for i, (r, err) in zip(batch, raw)]

    def _iter_ray(self, items, batches, payloads) -> Iterator[list[tuple[int, ScoreResult]]]:
        ray = self._ray
        todo = list(range(len(batches)))[::-1]           # a stack: pop() takes batches in order
        refs = [ray.put(p) for p in payloads]            # audio goes to the object store once
        in_flight: dict[Any, tuple[int, int]] = {}       # object ref -> (batch id, worker slot)
        load = [0] * len(self._workers)
        done: set[int] = set()
        while todo or in_flight:
            for slot in range(len(self._workers)):
                while todo and load[slot] < self.config.max_in_flight:
                    b = todo.pop()
                    in_flight[self._workers[slot].score.remote(refs[b])] = (b, slot)
                    load[slot] += 1
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=None)
            for ref in ready:
                b, slot = in_flight.pop(ref)
                load[slot] -= 1
                try:
                    raw = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError,
                        ray.exceptions.ActorUnavailableError):
                    self._replace(slot, b, todo, in_flight, load)
                    continue
                except ray.exceptions.RayTaskError as exc:      # a bug while scoring: record, do not retry
                    raw = [(None, f"worker error: {str(exc).splitlines()[0]}")] * len(batches[b])
                if b not in done:
                    done.add(b)
                    yield self._collect(items, batches[b], raw)

    def _replace(self, slot: int, failed: int, todo: list[int], in_flight: dict, load: list[int]) -> None:
        """Swap the dead worker of ``slot`` for a new one and requeue everything it still held."""
        if self._restarts >= self.config.max_restarts:
            raise CmirmError(f"scorer workers died {self._restarts + 1} times; giving up (max_restarts="
                             f"{self.config.max_restarts})")
        self._restarts += 1
        lost = [failed] + [b for ref, (b, s) in list(in_flight.items()) if s == slot]
        for ref in [r for r, (_, s) in in_flight.items() if s == slot]:
            del in_flight[ref]
        load[slot] = 0
        with contextlib.suppress(Exception):
            self._ray.kill(self._workers[slot])
        self._workers[slot] = self._new_actor()
        todo.extend(sorted(lost, reverse=True))
