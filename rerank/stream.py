"""The pipeline every job runs: generate -> score -> rank, streaming between the stages.

`cmirm generate`, `cmirm scaling` (on disk, `rerank.generate`) and `best_of_n` / `@best_of` (in
memory, `rerank.best_of_n`) all describe their work as a `JobPlan` (the same seeds rule,
`job_seeds`) and run it with `run_pipeline` on a generator pool and a scorer pool
(`rerank.gen_pool`, `rerank.pool`: Ray actors or in-process) into a `Sink` that keeps the results
(a run directory, or memory) and ranks each instruction with the same selection code
(`rerank.policies.rank_per_instruction`).

**Streaming.** A finished generation item is handed to the sink at once (a run directory writes
the wavs and records), its candidates join their instruction's scoring batches, and a batch goes
to the scorer pool as soon as it is complete; an instruction is handed to ``sink.instruction_done``
(ranked) as soon as its last candidate is scored, while later instructions are still being
generated. Queues are bounded: at most ``max_in_flight`` items wait on each worker, and new
generation waits while the candidates handed to scoring and not yet scored exceed a few scorer
batches, so a job's memory does not grow with its number of prompts.

**Schedule.** ``stream`` runs both stages at once (generators and scorers may share GPUs by
fractions; actors Ray cannot place yet simply start later); ``phased`` generates everything, releases
the generators, then scores (one small GPU never holds both models). The generator pool is released
as soon as generation is over in both.

**Determinism.** Generation items are fixed chunks of ``gen_batch_size`` of an instruction's
missing seeds, and scoring batches fixed chunks of ``score_batch_size`` of its candidates in index
order, whatever the timing, so a Ray run and an in-process run with the same seeds make the same
candidates and the same scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Protocol, Sequence

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.records import Instruction
from generators.base import MAX_SEED, CandidateFailure, GenerationResult, validate_seeds
from rerank.actor_pool import ActorPool, TaskFailed, next_results
from rerank.gen_pool import GeneratorPool
from rerank.pool import ScoreItem, ScoreResult, ScorerPool
from rerank.progress import LogProgress

Schedule = Literal["stream", "phased"]
SCHEDULES = ("stream", "phased")

#: How often (seconds) the loop wakes up to refresh progress while it waits.
TICK_S = 1.0


def job_seeds(n: int, seed_base: int = 0, seeds: Sequence[int] | None = None) -> list[int]:
    """The seeds rule of every job: candidate i gets ``seeds[i]`` (then ``n`` is ignored), else ``seed_base + i``."""
    if seeds is not None:
        return validate_seeds(seeds)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(seed_base, bool) or not isinstance(seed_base, int) or seed_base < 0:
        raise ConfigError(f"seed_base must be an integer >= 0, got {seed_base!r}")
    if seed_base + n - 1 > MAX_SEED:
        raise ConfigError(f"seed_base + n - 1 = {seed_base + n - 1} exceeds the largest seed {MAX_SEED}; lower seed_base")
    return [seed_base + i for i in range(n)]


@dataclass(frozen=True)
class Ticket:
    """One candidate the job must finish: its index and seed, and its id when it exists already (then it
    only needs scores); ``key`` None means it is to be generated."""

    index: int
    seed: int
    key: str | None = None


@dataclass
class JobPlan:
    """What a job does: per instruction (in run order) the candidates it must finish, in index order.

    Instructions without tickets are complete already. ``score_batch_size`` None scores each
    instruction's candidates in one batch.
    """

    instructions: list[Instruction]
    tickets: dict[str, list[Ticket]]
    duration: float
    params: dict[str, Any] = field(default_factory=dict)
    gen_batch_size: int | None = None
    score_batch_size: int | None = None

    @classmethod
    def fresh(cls, instructions: Sequence[Instruction], seeds: Sequence[int], duration: float,
              params: Mapping[str, Any], gen_batch_size: int | None = None,
              score_batch_size: int | None = None) -> "JobPlan":
        """Every seed of every instruction, nothing existing yet (`best_of_n`)."""
        tickets = {inst.id: [Ticket(i, s) for i, s in enumerate(seeds)] for inst in instructions}
        return cls(list(instructions), tickets, duration, dict(params), gen_batch_size, score_batch_size)

    def to_generate(self) -> int:
        return sum(1 for ts in self.tickets.values() for t in ts if t.key is None)

    def has_work(self) -> bool:
        return any(self.tickets.values())


@dataclass
class JobCounts:
    """What one invocation did (reused = found finished; repaired = a broken wav found and regenerated)."""

    generated: int = 0
    generation_failed: int = 0
    reused: int = 0
    repaired: int = 0
    scored: int = 0
    score_failed: int = 0


class Sink(Protocol):
    """Where a job's results go (a run directory, or memory)."""

    counts: JobCounts

    def generated(self, instruction: Instruction, indices: Mapping[int, int], result: GenerationResult
                  ) -> dict[int, str | None]:
        """Keep an item's outcome (``indices``: seed -> candidate index); each seed's candidate id (None: failed)."""

    def score_item(self, key: str, instruction: Instruction) -> ScoreItem:
        """What the scorer gets for candidate ``key`` (its audio)."""

    def scored(self, results: Sequence[ScoreResult]) -> None:
        """Keep a batch's scores (or errors)."""

    def instruction_done(self, instruction: Instruction) -> None:
        """Every candidate of ``instruction`` is finished (rank it, if the sink ranks)."""


_PENDING = object()   # a ticket not resolved yet


class _Track:
    """One instruction's progress: which tickets are resolved, which batches are out."""

    def __init__(self, instruction: Instruction, tickets: list[Ticket]) -> None:
        self.instruction = instruction
        self.tickets = tickets
        self.resolved: list[Any] = [t.key if t.key is not None else _PENDING for t in tickets]
        self.cursor = 0                  # first ticket not yet put in a scoring batch
        self.buffer: list[str] = []      # resolved, scorable, not yet in a batch
        self.open_batches = 0            # batches made and not yet scored

    def take_batches(self, size: int | None) -> list[list[str]]:
        """Scoring batches now complete: fixed chunks of ``size`` scorable candidates in index order."""
        out = []
        while self.cursor < len(self.tickets) and self.resolved[self.cursor] is not _PENDING:
            key = self.resolved[self.cursor]
            self.cursor += 1
            if key is not None:
                self.buffer.append(key)
            if size is not None and len(self.buffer) == size:
                out.append(self.buffer)
                self.buffer = []
        if self.cursor == len(self.tickets) and self.buffer:
            out.append(self.buffer)
            self.buffer = []
        self.open_batches += len(out)
        return out

    @property
    def done(self) -> bool:
        return self.cursor == len(self.tickets) and not self.buffer and self.open_batches == 0


@dataclass
class _Stages:
    """The progress tasks of a run (created only for stages that have work)."""

    progress: Any
    generate: Any = None
    score: Any = None
    rank: Any = None


class _Run:
    """One `run_pipeline` call's state (see the module docstring)."""

    def __init__(self, plan: JobPlan, sink: Sink, generators: GeneratorPool | None, scorers: ScorerPool | None,
                 schedule: Schedule, progress: Any) -> None:
        self.plan, self.sink, self.schedule = plan, sink, schedule
        self.generators, self.scorers = generators, scorers
        self.tracks = {inst.id: _Track(inst, list(plan.tickets.get(inst.id, []))) for inst in plan.instructions}
        self.items: list[tuple[str, list[int]]] = []       # (instruction id, ticket positions), in plan order
        for inst in plan.instructions:
            todo = [p for p, t in enumerate(self.tracks[inst.id].tickets) if t.key is None]
            size = plan.gen_batch_size or len(todo) or 1
            self.items += [(inst.id, todo[s:s + size]) for s in range(0, len(todo), size)]
        self.next_item = 0
        self.items_out = 0
        self.ready: list[tuple[str, list[str]]] = []        # scoring batches made, not yet submitted
        self.batch_seq = 0
        self.unscored = 0                                   # candidates in made batches, not yet scored
        self.score_total = sum(len(t) for t in plan.tickets.values())   # shrinks as generations fail
        self.generator_name: str | None = None
        self.owned: list[ActorPool] = []
        self.stages = _Stages(progress)
        self.finished: set[str] = set()

    # ------------------------------------------------------------------ pools
    def _start(self, pool: ActorPool | None) -> None:
        if pool is not None and not pool.started:
            pool.start()
            self.owned.append(pool)

    def _release(self, pool: ActorPool | None) -> None:
        if pool is not None and pool in self.owned:
            pool.close()
            self.owned.remove(pool)

    def _start_generation(self) -> None:
        if not self.items:
            return
        if self.generators is None:
            raise ConfigError("this job has candidates to generate but no generator")
        self._start(self.generators)
        seeds = sorted({self.tracks[i].tickets[p].seed for i, positions in self.items for p in positions})
        instructions = [self.tracks[i].instruction for i in dict.fromkeys(i for i, _ in self.items)]
        self.generator_name = self.generators.check_request(instructions, seeds, self.plan.duration,
                                                            self.plan.gen_batch_size, self.plan.params)

    # ------------------------------------------------------------------ submitting
    def _backlog_limit(self) -> int | None:
        if self.schedule == "phased" or self.scorers is None or self.plan.score_batch_size is None:
            return None
        return 4 * self.plan.score_batch_size * self.scorers.size * self.scorers.max_in_flight

    def _submit_generation(self) -> None:
        limit = self._backlog_limit()
        while self.next_item < len(self.items) and self.generators.capacity() > 0 \
                and (limit is None or self.unscored < limit):
            inst_id, positions = self.items[self.next_item]
            track = self.tracks[inst_id]
            seeds = [track.tickets[p].seed for p in positions]
            self.generators.submit_item(self.next_item, track.instruction, seeds, self.plan.duration,
                                        self.plan.gen_batch_size, self.plan.params)
            self.next_item += 1
            self.items_out += 1

    def _submit_scoring(self) -> None:
        while self.ready and self.scorers.capacity() > 0:
            inst_id, keys = self.ready.pop(0)
            instruction = self.tracks[inst_id].instruction
            items = [self.sink.score_item(key, instruction) for key in keys]
            self.scorers.submit_batch((self.batch_seq, inst_id, tuple(keys)), items)
            self.batch_seq += 1

    def _make_batches(self, track: _Track) -> None:
        for keys in track.take_batches(self.plan.score_batch_size):
            self.ready.append((track.instruction.id, keys))
            self.unscored += len(keys)
        self._maybe_done(track)

    def _maybe_done(self, track: _Track) -> None:
        if track.done and track.instruction.id not in self.finished:
            self.finished.add(track.instruction.id)
            self.sink.instruction_done(track.instruction)
            if self.stages.rank is not None:
                self.stages.progress.advance(self.stages.rank, 1)

    # ------------------------------------------------------------------ results
    def _on_generated(self, item: int, value: Any) -> None:
        self.items_out -= 1
        inst_id, positions = self.items[item]
        track = self.tracks[inst_id]
        indices = {track.tickets[p].seed: track.tickets[p].index for p in positions}
        if isinstance(value, TaskFailed):   # the worker failed as a whole: every seed of the item failed
            value = GenerationResult(failures=[CandidateFailure(inst_id, self.generator_name or "?", seed,
                                                                "exception", value.message) for seed in indices])
        keys = self.sink.generated(track.instruction, indices, value)
        failed = 0
        for p in positions:
            key = keys.get(track.tickets[p].seed)
            track.resolved[p] = key
            failed += key is None
        self.stages.progress.advance(self.stages.generate, len(positions))
        if failed:
            self.score_total -= failed
            self.stages.progress.update(self.stages.score, total=self.score_total)
        self._make_batches(track)

    def _on_scored(self, key: tuple[int, str, tuple[str, ...]], value: Any) -> None:
        _, inst_id, keys = key
        track = self.tracks[inst_id]
        self.sink.scored(self.scorers.to_results(keys, value))
        self.unscored -= len(keys)
        track.open_batches -= 1
        self.stages.progress.advance(self.stages.score, len(keys))
        self._maybe_done(track)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        progress = self.stages.progress
        to_generate = self.plan.to_generate()
        to_score = self.score_total
        if to_generate:
            self.stages.generate = progress.add_task("generating", total=to_generate)
        if to_score:
            self.stages.score = progress.add_task("scoring", total=to_score)
        if getattr(self.sink, "ranks", False):
            self.stages.rank = progress.add_task("ranked instructions", total=len(self.tracks))
        try:
            if self.schedule == "stream" and to_score:
                self._start(self.scorers)      # its actors load while the generator loads
            self._start_generation()
            for track in self.tracks.values():   # resumed candidates and complete instructions
                self._make_batches(track)
            self._loop(score=self.schedule == "stream")
            self._release(self.generators)
            if self.ready or any(t.open_batches for t in self.tracks.values()):
                self._start(self.scorers)
                self._loop(score=True)
            stuck = [i for i, t in self.tracks.items() if not t.done]
            if stuck:
                raise RuntimeError(f"the pipeline stopped with unfinished instructions {stuck[:5]}")
        finally:
            for pool in list(self.owned):
                self._release(pool)

    def _loop(self, score: bool) -> None:
        """Run until generation is over (and, with ``score``, scoring too)."""
        progress = self.stages.progress
        while True:
            if score:
                self._submit_scoring()
            if self.generators is not None and self.generators.started:
                self._submit_generation()
            generating = self.next_item < len(self.items) or self.items_out > 0
            if not generating and self.generators is not None:
                self._release(self.generators)
            scoring = score and (self.ready or self.unscored > 0)
            if not generating and not scoring:
                return
            pools = [p for p in ((self.scorers if score else None), self.generators) if p is not None and p.started]
            if not any(pool.busy() for pool in pools):   # nothing queued, running or starting: no result can come
                raise RuntimeError("the pipeline stalled: work is left but nothing is running (a bug)")
            results = next_results(pools, timeout=TICK_S)   # empty when only actors started (more can be submitted)
            for pool, key, value in results:
                if pool is self.generators:
                    self._on_generated(key, value)
                else:
                    self._on_scored(key, value)
            progress.refresh()


def run_pipeline(plan: JobPlan, sink: Sink, *, generators: GeneratorPool | None, scorers: ScorerPool | None,
                 schedule: Schedule = "phased", progress: Any = None) -> None:
    """Run ``plan`` into ``sink`` (see the module docstring).

    Pools not started yet are started when their stage begins and closed when it ends; pools the
    caller started are left to the caller (e.g. a warm pool reused by several jobs).
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if not plan.has_work():
        return
    if progress is None:
        from rich.console import Console

        progress = LogProgress(Console(quiet=True))
    _Run(plan, sink, generators, scorers, schedule, progress).run()
