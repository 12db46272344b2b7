"""A pool of identical workers fed keyed tasks: Ray actors, or one worker in this process.

Both stages of the pipeline run on it (generator workers, `rerank.gen_pool`; scorer workers,
`rerank.pool`), so they share one fault-tolerance story, built on Ray's own actors, object refs and
``ray.wait`` (this module only keeps the books):

- **Placement**: each Ray actor reserves a `Placement` (CPUs, GPUs (fractions share one), custom
  resources). An actor gets work only once its ``ready`` call has returned, so an actor Ray cannot
  place yet (the other stage holds the GPU, its node is gone) never holds any.
- **Back-pressure**: at most ``max_in_flight`` tasks wait on each actor; callers submit while
  `ActorPool.capacity` is positive, so nothing piles up in memory or in the object store.
- **Faults**: an actor that dies has its unfinished tasks resubmitted to the live actors, and is
  replaced (at most ``max_restarts`` times in all); a result lost with its node is resubmitted. A
  task's result is accepted once (its ref leaves the books when it is handled or resubmitted), so no
  task is lost or reported twice. An actor whose constructor raises is not retried: its error is
  raised at once. A task that raises inside its worker returns a `TaskFailed` (it would fail again).
- ``backend="local"``: the very same worker class, built once in this process; `next_results` runs
  its queued tasks one at a time.

`next_results(pools)` runs or waits for the next finished tasks of several pools at once (one
``ray.wait`` over all their refs), which is how the pipeline overlaps its stages.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Hashable, Literal, Mapping, Sequence

from cmirm_plugin.errors import CmirmError

Backend = Literal["ray", "local"]


@dataclass(frozen=True)
class Placement:
    """What one Ray actor reserves: CPUs, GPUs (fractions share a GPU) and custom resources."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0 or any(v < 0 for v in self.resources.values()):
            raise CmirmError(f"actor reservations must be >= 0, got {self}")

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``ray.remote`` / ``.options``."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "resources": dict(self.resources)}


@dataclass(frozen=True)
class TaskFailed:
    """The result of a task that raised inside its worker (a bug, or an input it cannot take); not retried."""

    message: str


class Worker:
    """Base of pool workers: `ready` tells the pool the worker is up, and where it runs."""

    def ready(self) -> dict[str, Any]:
        """Where this worker runs: pid, host and Ray node id (None outside Ray)."""
        node = None
        with contextlib.suppress(Exception):
            import ray

            if ray.is_initialized():
                node = ray.get_runtime_context().get_node_id()
        return {"pid": os.getpid(), "host": socket.gethostname(), "node": node}


@dataclass(frozen=True)
class PoolReport:
    """Where a pool's workers ran (`Worker.ready` of each, replacements included) and how many were replaced."""

    workers: list[dict[str, Any]]
    restarts: int

    @property
    def nodes(self) -> set[str]:
        """The Ray nodes the workers ran on."""
        return {w["node"] for w in self.workers if w.get("node")}


@dataclass
class _Task:
    seq: int
    key: Hashable
    method: str
    args: tuple[Any, ...]


@dataclass
class _Slot:
    actor: Any
    ready_ref: Any | None                                  # None once the actor has answered `ready`
    in_flight: dict[Any, _Task] = field(default_factory=dict)


def _cause(exc: BaseException) -> str:
    """The last error line of a Ray exception's text (the worker's own error), without Ray's framing."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = next((line for line in reversed(lines) if "Error" in line or "Exception" in line),
                lines[-1] if lines else type(exc).__name__)
    head, sep, rest = line.partition(": ")
    return f"{head.rsplit('.', 1)[-1]}: {rest}" if sep and " " not in head else line


class ActorPool:
    """A pool of ``size`` workers of ``worker_cls`` (see the module docstring). Use as a context manager.

    ``name`` names the workers in errors (e.g. ``scorer``); ``label`` what they hold (e.g. the
    scorer's spec). With ``worker`` an already-built in-process worker is used as it is.
    """

    def __init__(self, worker_cls: type, args: tuple[Any, ...] = (), *, name: str, label: str = "",
                 backend: Backend = "local", size: int = 1, placement: Placement = Placement(),
                 max_in_flight: int = 1, max_restarts: int = 3, ray_address: str | None = None,
                 worker: Any = None) -> None:
        if backend not in ("ray", "local"):
            raise CmirmError(f"backend must be 'ray' or 'local', got {backend!r}")
        if backend == "local" and size != 1:
            raise CmirmError(f"an in-process {name} pool has one worker, got size={size}")
        if size < 1 or max_in_flight < 1 or max_restarts < 0:
            raise CmirmError(f"{name} pool: size and max_in_flight must be >= 1 and max_restarts >= 0")
        self.worker_cls, self.args, self.name, self.label = worker_cls, tuple(args), name, label
        self.backend, self.size, self.placement = backend, size, placement
        self.max_in_flight, self.max_restarts, self.ray_address = max_in_flight, max_restarts, ray_address
        self._given = self._local = worker
        self._slots: list[_Slot] = []
        self._queue: deque[_Task] = deque()
        self._seq = 0
        self._restarts = 0
        self._started = False
        self._session: contextlib.ExitStack | None = None
        self._actor_cls: Any = None
        #: `Worker.ready` of every worker that started (replacements included), in start order.
        self.infos: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ lifecycle
    @property
    def is_local(self) -> bool:
        return self.backend == "local"

    @property
    def started(self) -> bool:
        return self._started

    @property
    def restarts(self) -> int:
        """How many dead workers were replaced."""
        return self._restarts

    def report(self) -> PoolReport:
        return PoolReport(list(self.infos), self._restarts)

    def start(self) -> "ActorPool":
        """Build the in-process worker, or create the Ray actors (joining or starting Ray first)."""
        if self._started:
            return self
        if self.is_local:
            if self._local is None:
                self._local = self.worker_cls(*self.args)
            self.infos.append(self._local.ready())
            self._started = True
            return self
        import ray

        from rerank.ray_session import ray_session

        self._session = contextlib.ExitStack()
        self._session.enter_context(ray_session(self.ray_address, num_cpus=self.size * self.placement.num_cpus))
        self._actor_cls = ray.remote(max_restarts=0, max_task_retries=0, **self.placement.options())(self.worker_cls)
        self._slots = [self._new_slot() for _ in range(self.size)]
        self._started = True
        return self

    def _new_slot(self) -> _Slot:
        actor = self._actor_cls.remote(*self.args)
        return _Slot(actor, actor.ready.remote())

    def close(self) -> None:
        """Kill the actors (or drop the in-process worker) and leave Ray if this pool joined it."""
        if self._slots:
            import ray

            for slot in self._slots:
                with contextlib.suppress(Exception):
                    ray.kill(slot.actor)
        self._slots, self._local, self._queue = [], self._given, deque()
        if self._session is not None:
            self._session.close()
            self._session = None
        self._started = False

    def __enter__(self) -> "ActorPool":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def workers(self) -> list[Any]:
        """The live workers: Ray actor handles, or the in-process worker."""
        return [slot.actor for slot in self._slots] if not self.is_local else [self._local]

    @property
    def local_worker(self) -> Any:
        """The in-process worker (local backend only)."""
        return self._local

    # ------------------------------------------------------------------ submitting
    def submit(self, key: Hashable, method: str, *args: Any) -> None:
        """Queue ``worker.method(*args)``; its result comes back from `next_results` under ``key``."""
        if not self._started:
            raise CmirmError(f"the {self.name} pool is not started")
        self._queue.append(_Task(self._seq, key, method, args))
        self._seq += 1
        self._dispatch()

    def capacity(self) -> int:
        """How many more tasks can be submitted without waiting in this pool's queue."""
        if self.is_local:
            return self.max_in_flight - len(self._queue)
        free = sum(self.max_in_flight - len(s.in_flight) for s in self._slots if s.ready_ref is None)
        return free - len(self._queue)

    def pending(self) -> int:
        """Tasks submitted and not yet returned."""
        return len(self._queue) + sum(len(s.in_flight) for s in self._slots)

    def busy(self) -> bool:
        """Whether anything is queued, running, or starting (a result or a started actor is to come)."""
        return bool(self._queue) or any(s.in_flight or s.ready_ref is not None for s in self._slots)

    def _dispatch(self) -> None:
        """Hand queued tasks to the least-loaded started actors (up to ``max_in_flight`` each)."""
        while self._queue and not self.is_local:
            ready = [s for s in self._slots if s.ready_ref is None and len(s.in_flight) < self.max_in_flight]
            if not ready:
                return
            slot = min(ready, key=lambda s: len(s.in_flight))
            task = self._queue.popleft()
            slot.in_flight[getattr(slot.actor, task.method).remote(*task.args)] = task

    def _requeue(self, tasks: list[_Task]) -> None:
        """Put ``tasks`` back at the front of the queue, in submission order."""
        for task in sorted(tasks, key=lambda t: t.seq, reverse=True):
            self._queue.appendleft(task)

    # ------------------------------------------------------------------ results
    def _run_one(self) -> tuple[Hashable, Any]:
        """Run the first queued task in this process (local backend)."""
        task = self._queue.popleft()
        try:
            return task.key, getattr(self._local, task.method)(*task.args)
        except Exception as exc:  # the same contract as a task raising on a Ray actor
            return task.key, TaskFailed(f"worker error: {type(exc).__name__}: {exc}")

    def _refs(self) -> list[Any]:
        return [ref for s in self._slots for ref in (s.in_flight if s.ready_ref is None else [s.ready_ref])]

    def _handle(self, ref: Any) -> list[tuple[Hashable, Any]]:
        """Book a ref ``ray.wait`` returned: an actor that started, a result, or a fault."""
        import ray

        slot = next((s for s in self._slots if s.ready_ref == ref or ref in s.in_flight), None)
        if slot is None:                                   # a ref of an actor already replaced
            return []
        if slot.ready_ref == ref:
            try:
                self.infos.append(ray.get(ref))
                slot.ready_ref = None
            except ray.exceptions.RayActorError as exc:
                if getattr(exc, "actor_init_failed", False):
                    raise CmirmError(f"{self.name} {self.label} could not be loaded on a Ray worker: "
                                     f"{_cause(exc)}") from exc
                self._replace(slot)
            self._dispatch()
            return []
        task = slot.in_flight.pop(ref)
        try:
            value = ray.get(ref)
        except ray.exceptions.RayActorError:               # the actor died (or its node went away)
            slot.in_flight[ref] = task
            self._replace(slot)
            self._dispatch()
            return []
        except ray.exceptions.ObjectLostError:             # the result was lost with its node
            self._requeue([task])
            self._dispatch()
            return []
        except ray.exceptions.RayTaskError as exc:         # raised inside the worker: it would raise again
            value = TaskFailed(f"worker error: {_cause(exc)}")
        self._dispatch()
        return [(task.key, value)]

    def _replace(self, slot: _Slot) -> None:
        """Swap a dead actor for a new one and requeue everything it held."""
        import ray

        if self._restarts >= self.max_restarts:
            raise CmirmError(f"{self.name} workers died {self._restarts + 1} times; giving up "
                             f"(max_restarts={self.max_restarts})")
        self._restarts += 1
        self._requeue(list(slot.in_flight.values()))
        with contextlib.suppress(Exception):
            ray.kill(slot.actor)
        self._slots[self._slots.index(slot)] = self._new_slot()

    def wait_ready(self, timeout: float | None = None, every: bool = False) -> None:
        """Block until one worker (``every``: all of them) has started; raises if they cannot load."""
        if self.is_local:
            return
        import ray

        def waiting() -> list[Any]:
            return [s.ready_ref for s in self._slots if s.ready_ref is not None]

        while waiting() and (every or not any(s.ready_ref is None for s in self._slots)):
            ready, _ = ray.wait(waiting(), num_returns=1, timeout=timeout)
            if not ready:
                raise CmirmError(f"no {self.name} worker started within {timeout:g} s (are the resources it "
                                 f"reserves, {self.placement}, available on the cluster?)")
            self._handle(ready[0])

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """``worker.method(*args)`` on one started worker, now, re-raising its own error (e.g. a refusal)."""
        if self.is_local:
            return getattr(self._local, method)(*args)
        import ray

        self.wait_ready(timeout)
        slot = next(s for s in self._slots if s.ready_ref is None)
        try:
            return ray.get(getattr(slot.actor, method).remote(*args), timeout=timeout)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, CmirmError):
                raise cause from None
            raise CmirmError(f"{self.name} {self.label}: {_cause(exc)}") from exc


def next_results(pools: Sequence[ActorPool], timeout: float | None = None) -> list[tuple[ActorPool, Hashable, Any]]:
    """The next finished tasks of ``pools`` as ``[(pool, key, result)]`` (empty after ``timeout`` seconds).

    An in-process pool with queued work runs one task (the first such pool in ``pools``: list the
    downstream stage first so finished work flows on); Ray pools are waited on together.
    """
    for pool in pools:
        if pool.is_local and pool.started and pool._queue:
            return [(pool, *pool._run_one())]
    owners = {ref: pool for pool in pools if pool.started and not pool.is_local for ref in pool._refs()}
    if not owners:
        return []
    import ray

    ready, rest = ray.wait(list(owners), num_returns=1, timeout=timeout)
    if ready and rest:
        ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
    return [(owners[ref], key, value) for ref in ready for key, value in owners[ref]._handle(ref)]
