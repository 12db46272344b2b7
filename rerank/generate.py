"""The main job: sample N candidates per instruction, score them, keep the top k, in a run directory.

`run_generate` runs the pipeline (`rerank.stream`) into a run directory (layout and records:
`rerank.run_records`; lock, whole files and I/O errors: `rerank.run_dir`):

- **generate**: candidate i of an instruction uses seed ``seed_base + i`` (or the i-th explicit
  seed; `rerank.stream.job_seeds`), so a rerun asks for the same candidates. A candidate whose
  record is in the manifest and whose wav is whole (`rerank.run_dir.wav_problem`) is reused; a
  broken or missing wav is regenerated. Each finished work item's wavs are written and its records
  appended at once, by this process only (on a Ray cluster the audio comes back through the object
  store). Failed generations are records too, and are not retried unless ``retry_errors``. The
  generator is built only if something is missing, and the whole request (every instruction and
  seed) is checked by it before anything is generated. Instructions it cannot honour (lyrics for
  a generator that cannot sing) are refused before that, from the inputs its backend declares
  (`generators.registry.require_inputs`), so a refused start loads nothing and writes nothing.
- **score**: every candidate without scores from the reward model is scored on the scorer pool
  as soon as its batch is complete; bad audio gets a ``score_failed`` record (retried only with
  ``retry_errors``).
- **rank**: each instruction is ranked as soon as all its candidates are scored
  (`rerank.rerank_run.RankingWriter`: its ``ranking.jsonl`` rows and ``top/`` files), and the whole
  ranking settled in run order at the end.

The directory is locked for the job (`RunDirLock`). ``run.json`` is checked first
(`rerank.run_config`): a rerun with another generator, parameters, duration or reward model is
refused before any work. `prepare_candidates` generates and scores only (what scaling curves need),
from a `CandidatesConfig` (no k, no policy); `GenerateConfig` adds the selection. The manifest is
read once per job: records appended later are folded into the same views (`RunLog`).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from rich.console import Console

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import CmirmError, ConfigError, check_count, check_output_path
from cmirm_plugin.manifest import ManifestWriter
from cmirm_plugin.records import Instruction
from cmirm_plugin.scoring.settings import ScoringSettings
from cmirm_plugin.scoring.spec import ScorerSpec
from generators import GenerationResult, Generator, recorded_name
from generators.registry import require_inputs
from rerank import defaults
from rerank.actor_pool import PoolReport
from rerank.gen_pool import GeneratorPool, require_generator_name
from rerank.policies import Policy, check_k_of_n, default_policy, parse_policy
from rerank.pool import ScoreItem, ScoreResult, ScorerPool
from rerank.pool_options import PoolOptions
from rerank.progress import job_progress
from rerank.rerank_run import Ranking, RankingWriter
from rerank.run_config import ResultSettings, RunConfig, save_run_config
from rerank.run_dir import RunDirLock, remove_stale_temps, save_codes, save_wav, wav_problem
from rerank.run_records import (
    CandidateView,
    RunPaths,
    candidate_record,
    failure_record,
    fold_records,
    in_run_order,
    load_views,
    score_record,
    views_by_seed,
)
from rerank.stream import JobCounts, JobPlan, Ticket, job_seeds, run_pipeline

RecordCallback = Callable[[dict[str, Any]], None]


@dataclass
class CandidatesConfig:
    """A pool of candidates to generate and score: phases 1-2 (`prepare_candidates`), no selection.

    Attributes:
        out: the run directory.
        instructions: what to generate for (distinct ids).
        generator: a `generators.registry` name (``musicgen-small``, ``tiny-musicgen``, ``py:mod:fn`` ...).
        reward: the selection scorer (`cmirm_plugin.scoring.ScorerSpec`).
        n: candidates per instruction (ignored when ``seeds`` is given).
        duration: seconds per candidate; params: the generator's sampling parameters.
        seed_base / seeds: candidate i gets ``seed_base + i``, or ``seeds[i]``.
        gen_batch_size: seeds per generator call (one work item); device: where the generator runs (default:
            the pool options' device, else cuda if available).
        scoring: how the scorers score (`ScoringSettings`; what changes scores is recorded in ``run.json``).
        pool: where and how much in parallel to generate and score (`PoolOptions`, schedule included).
        retry_errors: regenerate failed generations and rescore failed scorings of earlier runs.
        search: the search method (`rerank.search.parse_search` spec or `SearchMethod`; default best-of-n).
            A size it leaves open is filled from ``n`` (`SearchMethod.for_budget`); methods other than
            best-of-n run step by step (`rerank.search_run`) and take no explicit ``seeds``.
    """

    out: Path
    instructions: Sequence[Instruction]
    generator: str
    reward: ScorerSpec
    n: int = defaults.CANDIDATES
    duration: float = defaults.DURATION
    params: dict[str, Any] = field(default_factory=dict)
    seed_base: int = defaults.SEED_BASE
    seeds: Sequence[int] | None = None
    gen_batch_size: int = defaults.GEN_BATCH_SIZE
    device: str | None = None
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    pool: PoolOptions = field(default_factory=PoolOptions)
    retry_errors: bool = False
    search: Any = defaults.SEARCH

    def __post_init__(self) -> None:
        from rerank.search import BestOfNSearch, parse_search

        self.out = check_output_path(self.out, "--out", directory=True)
        check_count("n", self.n)
        check_count("gen_batch_size", self.gen_batch_size)
        method = parse_search(self.search)
        if method.budget() is None:
            method = method.for_budget(self.n)
        if isinstance(method, BestOfNSearch):
            self.n = method.n if method.seeds is None else len(method.seeds)
        elif self.seeds is not None:
            raise ConfigError(f"--seeds gives best-of-N's candidates; search {method.spec()!r} allocates its own "
                              "seeds from --seed-base")
        method.check_named(self.generator, self.duration)   # before any model loads
        self.search = method
        seeds = job_seeds(self.n, self.seed_base, self.seeds)   # validated up front
        if self.seeds is not None:
            self.seeds = seeds
        ids = [inst.id for inst in self.instructions]
        if not ids:
            raise ConfigError("no instructions to generate for")
        if len(set(ids)) != len(ids):
            repeated = sorted(i for i in set(ids) if ids.count(i) > 1)
            raise ConfigError(f"instruction ids must be distinct, got {repeated} more than once")

    def candidate_seeds(self) -> list[int]:
        """The seed of candidate i, for every i (`rerank.stream.job_seeds`)."""
        return job_seeds(self.n, self.seed_base, self.seeds)

    @property
    def searching(self) -> bool:
        """Whether the job runs a search other than best-of-N (step by step, `rerank.search_run`)."""
        from rerank.search import BestOfNSearch

        return not isinstance(self.search, BestOfNSearch)

    def result_settings(self) -> ResultSettings:
        """The settings that determine candidates' audio and scores (``run.json``'s ``result``); the search
        method with all its settings (best-of-N: its name only, since more seeds may join a run). A reward
        server's scores are made with its dtype, so that is the one recorded."""
        identity = self.scoring.score_identity(self.pool.scorer_device())
        served = self.reward.served_settings()
        if served is not None:
            identity["dtype"] = served.get("dtype")
        return ResultSettings(self.generator, dict(self.params), float(self.duration), self.reward.label, **identity,
                              search=self.search.spec() if self.searching else self.search.name)

    def request(self) -> dict[str, Any]:
        """What this job asks for (``run.json``'s ``request``)."""
        return {"n": len(self.candidate_seeds()), "seed_base": self.seed_base,
                "seeds": list(self.seeds) if self.seeds is not None else None,
                "instructions": [i.id for i in self.instructions], "search": self.search.spec()}

    def run_config(self) -> RunConfig:
        """What ``run.json`` records for this job."""
        pool = {**self.pool.to_dict(), "gen_batch_size": self.gen_batch_size, "generator_device": self.device}
        return RunConfig(self.result_settings(), self.request(), pool)


@dataclass
class GenerateConfig(CandidatesConfig):
    """One ``cmirm generate`` job (the CLI options, typed): a `CandidatesConfig` plus the selection.

    Attributes (besides `CandidatesConfig`'s):
        k: candidates kept per instruction (default `rerank.defaults.K`, or all when fewer are asked for).
        policy / minimums: the selection policy and ``--min`` thresholds (`rerank.policies.parse_policy`).
    """

    k: int | None = None
    policy: str | None = None
    minimums: Sequence[str] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k is not None:
            check_count("k", self.k)
        self.k = check_k_of_n(self.k, len(self.candidate_seeds()), "-k", "--seeds" if self.seeds is not None else "-n")
        axes = self.reward.known_axes()
        if axes is not None:  # a bad policy, or one naming an axis the scorer lacks, fails before any work
            self.selection_policy(axes).check_axes(axes)
        elif self.policy is not None:
            parse_policy(self.policy, self.minimums)

    def selection_policy(self, axes: Sequence[str] | None = None) -> Policy:
        """The policy asked for, or the default for the scorer's ``axes`` (`default_policy`)."""
        if self.policy is None:
            axes = axes if axes is not None else self.reward.known_axes()
            if axes is None:
                raise ConfigError(f"give --policy: the axes of scorer {self.reward} are known only once it loads")
            return parse_policy(default_policy(axes), self.minimums)
        return parse_policy(self.policy, self.minimums)

    def request(self) -> dict[str, Any]:
        policy = self.policy if self.policy is not None and self.reward.known_axes() is None \
            else self.selection_policy().spec()
        return {**super().request(), "k": self.k, "policy": policy}


@dataclass
class GenerateResult:
    """The outcome of `run_generate` (``pools``: where each stage's workers ran, `PoolReport`)."""

    out: Path
    counts: JobCounts
    ranking: Ranking
    pools: dict[str, PoolReport] = field(default_factory=dict)


class RunLog:
    """An append-only record log that folds every record it appends into ``views`` (`fold_records`).

    So a job reads its log once and its views stay current. ``fields`` are added to every record;
    ``on_record`` sees each record once it is written and folded. A write that fails is a one-line
    `cmirm_plugin.errors.OutputError` (`ManifestWriter`).
    """

    def __init__(self, path: Path, views: dict[str, CandidateView], on_record: RecordCallback | None = None,
                 fields: dict[str, Any] | None = None) -> None:
        self._path = path
        self._writer = ManifestWriter(path)
        self.views = views
        self._on_record = on_record
        self._fields = dict(fields or {})

    def append(self, record: dict[str, Any]) -> None:
        record = {**record, **self._fields}
        self._writer.append(record)
        fold_records([record], str(self._path), self.views)
        if self._on_record is not None:
            self._on_record(record)

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()


class DiskSink:
    """A run directory as the pipeline's sink (`rerank.stream.Sink`): wavs and records as results come,
    and, with a ``ranking`` writer, each instruction ranked once it is finished."""

    def __init__(self, root: Path, log: RunLog, counts: JobCounts, scorer: str,
                 ranking: RankingWriter | None = None) -> None:
        self.paths, self.log, self.counts, self.scorer, self.ranking = RunPaths(root), log, counts, scorer, ranking
        self.ranks = ranking is not None
        self._members: dict[str, list[str]] = defaultdict(list)   # instruction id -> candidate ids
        for view in log.views.values():
            self._members[view.instruction.id].append(view.id)

    def generated(self, instruction: Instruction, indices: Mapping[int, int], result: GenerationResult
                  ) -> dict[int, str | None]:
        keys: dict[int, str | None] = {}
        for candidate in result:
            wav = save_wav(candidate.audio, self.paths.candidate_wav(candidate.id))
            if candidate.codes is not None and candidate.lineage is not None and candidate.lineage.partial:
                save_codes(candidate.codes, self.paths.candidate_codes(candidate.id))   # what a resumed beam continues
            self._add(candidate.id, instruction.id)
            self.log.append(candidate_record(candidate, instruction, indices[candidate.seed],
                                             wav.relative_to(self.paths.root).as_posix()))
            self.counts.generated += 1
            keys[candidate.seed] = candidate.id
        for failure in result.failures:
            record = failure_record(failure, instruction, indices[failure.seed])
            self._add(record["id"], instruction.id)
            self.log.append(record)
            self.counts.generation_failed += 1
            keys[failure.seed] = None
        return keys

    def _add(self, key: str, instruction_id: str) -> None:
        if key not in self.log.views:
            self._members[instruction_id].append(key)

    def score_item(self, key: str, instruction: Instruction) -> ScoreItem:
        """The candidate's audio, read here (a worker on another machine cannot read this directory); a
        file that cannot be read goes as its path, so the worker records why."""
        path = self.paths.root / self.log.views[key].audio_path
        try:
            return ScoreItem(key, Audio.load(path), instruction)
        except CmirmError:
            return ScoreItem(key, str(path.resolve()), instruction)

    def scored(self, results: Sequence[ScoreResult]) -> None:
        for result in results:
            self.log.append(score_record(result.key, self.scorer, result.scores, result.error, result.seconds))
            if result.scores is None:
                self.counts.score_failed += 1
            else:
                self.counts.scored += 1

    def instruction_done(self, instruction: Instruction) -> None:
        if self.ranking is not None:
            views = sorted((self.log.views[k] for k in self._members[instruction.id]), key=lambda v: (v.index, v.seed))
            self.ranking.rank_instruction(views)


def _check_same_instructions(instructions: Sequence[Instruction], views: Sequence[CandidateView]) -> None:
    """Refuse an instruction whose id the directory already holds with other content (an edited prompts line)."""
    recorded = {v.instruction.id: v.instruction for v in views}
    for inst in instructions:
        old = recorded.get(inst.id)
        if old is not None and old.to_dict() != inst.to_dict():
            raise ConfigError(f"instruction {inst.id!r} was {old.to_dict()} when this directory's candidates were "
                              f"made, now {inst.to_dict()}; give it a new id or use another --out")


def _needs_scores(view: CandidateView, scorer: str, retry_errors: bool) -> bool:
    return view.generated and scorer not in view.scores and (retry_errors or scorer not in view.score_errors)


def seed_ticket(view: CandidateView | None, index: int, seed: int, root: Path, label: str, retry_errors: bool,
                counts: JobCounts, console: Console) -> Ticket | None:
    """What candidate ``seed`` (at ``index``) of a job still needs, given its ``view`` (None: not made yet).

    A new ticket to generate it (missing, failed with ``retry_errors``, or its wav broken: counted in
    ``counts.repaired``), a ticket with its id to score it, or None when it is finished (``counts.reused``).
    """
    if view is None:
        return Ticket(index, seed)
    if not view.generated:
        if retry_errors:
            return Ticket(index, seed)
        counts.reused += 1
        return None
    problem = wav_problem(root / view.audio_path, view.sample_rate, view.duration)
    if problem is not None:
        console.print(f"[yellow]{view.audio_path}: {problem}; regenerating it", highlight=False)
        counts.repaired += 1
        return Ticket(index, seed)
    counts.reused += 1
    return Ticket(view.index, seed, view.id) if _needs_scores(view, label, retry_errors) else None


def plan_job(config: CandidatesConfig, root: Path, views: Sequence[CandidateView], counts: JobCounts,
             console: Console) -> JobPlan:
    """What this job must do in a directory holding ``views`` (see the module docstring's resume rules).

    Every candidate of the directory without reward scores is scored, the job's instructions or not;
    a broken wav of the job's own candidates is regenerated (counted in ``counts.repaired``).
    """
    label = config.reward.label
    existing = views_by_seed(views)
    tickets: dict[str, list[Ticket]] = defaultdict(list)
    wanted = set()
    for inst in config.instructions:
        for index, seed in enumerate(config.candidate_seeds()):
            wanted.add((inst.id, seed))
            ticket = seed_ticket(existing.get((inst.id, seed)), index, seed, root, label, config.retry_errors,
                                 counts, console)
            if ticket is not None:
                tickets[inst.id].append(ticket)
    for view in views:   # the directory's other candidates still lacking scores
        if (view.instruction.id, view.seed) not in wanted and _needs_scores(view, label, config.retry_errors) \
                and wav_problem(root / view.audio_path, view.sample_rate, view.duration) is None:
            tickets[view.instruction.id].append(Ticket(view.index, view.seed, view.id))
    order = {v.instruction.id: v.instruction for v in views}
    for inst in config.instructions:
        order.setdefault(inst.id, inst)
    return JobPlan(list(order.values()), {i: sorted(t, key=lambda t: (t.index, t.seed)) for i, t in tickets.items()},
                   float(config.duration), dict(config.params), config.gen_batch_size, config.pool.score_batch_size)


def _generator_name(config: CandidatesConfig, generator: Generator | None) -> str:
    """The name this job's candidates record (without building the generator)."""
    return generator.name if generator is not None else recorded_name(config.generator)


@contextlib.contextmanager
def _cluster(config: CandidatesConfig, instructions: Sequence[Instruction], has_work: bool) -> Iterator[None]:
    """Ray for the job's pools when it runs on Ray and has work (a finished rerun never starts Ray).

    Reference clips are loaded here once and travel with the instructions, so workers on other
    machines need no access to the files.
    """
    if config.pool.resolved_backend != "ray" or not has_work:
        yield
        return
    from rerank.ray_session import ray_session

    for inst in instructions:
        inst.load_ref()
    with ray_session(config.pool.ray_address, num_cpus=config.pool.reserved_cpus()):
        yield


def _reports(*pools: Any) -> dict[str, PoolReport]:
    """Where each stage's workers ran (for the caller: ``{"generator": ..., "scorer": ...}``)."""
    return {pool.name: pool.report() for pool in pools if pool is not None and pool.infos}


def _run(config: CandidatesConfig, generator: Generator | None, console: Console | None,
         on_record: RecordCallback | None, rank: bool, policy: Callable[[Sequence[str]], Policy] | None = None
         ) -> tuple[JobCounts, dict[str, CandidateView], Ranking | None, dict[str, PoolReport]]:
    """The job under the directory's lock (see the module docstring); ``policy`` (the scorer's axes -> the
    selection policy) is what a search prunes by when the job does not rank."""
    console = console or Console()
    paths = RunPaths(config.out)
    if generator is not None:
        require_generator_name(generator, config.generator)
    require_inputs(generator or config.generator, config.instructions)   # before any file or model
    with RunDirLock(paths.root):
        remove_stale_temps(paths.root, paths.candidates, paths.top)
        views = load_views(paths.root)
        ordered = in_run_order(views.values())
        _check_same_instructions(config.instructions, ordered)
        states = None
        if config.searching:   # a saved search must match before run.json is touched
            from rerank.search_run import resumable_states

            states = resumable_states(config, paths.root)
        name = _generator_name(config, generator) if ordered and not paths.run_config.exists() else None
        save_run_config(paths.root, config.run_config(), ordered, name)
        counts = JobCounts()
        label = config.reward.label
        writer = None
        if rank:
            assert isinstance(config, GenerateConfig)
            writer = RankingWriter(paths.root, label, config.selection_policy, config.k)
            policy = config.selection_policy
        scorers = ScorerPool(config.pool.pool_config(config.reward, config.scoring))
        if config.searching:
            from rerank.search_run import SearchJob

            assert policy is not None, "a search prunes by a policy"
            job = SearchJob(config, paths.root, states or {}, policy, counts, console)
            generators = GeneratorPool(config.pool.generator_config(generator or config.generator, config.device)) \
                if job.has_work() else None
            with RunLog(paths.manifest, views, on_record) as log, \
                    _cluster(config, config.instructions, job.has_work()), job_progress(console) as progress:
                job.run(log, generators, scorers, progress)
        else:
            plan = plan_job(config, paths.root, ordered, counts, console)
            generators = GeneratorPool(config.pool.generator_config(generator or config.generator, config.device)) \
                if plan.to_generate() else None
            with RunLog(paths.manifest, views, on_record) as log, \
                    _cluster(config, plan.instructions, plan.has_work()), job_progress(console) as progress:
                run_pipeline(plan, DiskSink(paths.root, log, counts, label, writer), generators=generators,
                             scorers=scorers, schedule=config.pool.resolved_schedule, progress=progress)
        ranking = writer.finish(in_run_order(views.values())) if writer is not None else None
        return counts, views, ranking, _reports(generators, scorers)


def score_missing(views: Sequence[CandidateView], root: Path, reward: ScorerSpec, options: PoolOptions,
                  scoring: ScoringSettings, log: RunLog, console: Console, counts: JobCounts,
                  retry_errors: bool = False) -> None:
    """Score every generated candidate of ``views`` that lacks scores from ``reward`` and whose wav is whole.

    Audio paths are relative to ``root``; records go to ``log`` as each batch finishes. ``scoring``
    is the run's (`ResultSettings.scoring`), so every scorer of a run scores the same inputs.
    """
    tickets: dict[str, list[Ticket]] = defaultdict(list)
    for view in views:
        if _needs_scores(view, reward.label, retry_errors) \
                and wav_problem(root / view.audio_path, view.sample_rate, view.duration) is None:
            tickets[view.instruction.id].append(Ticket(view.index, view.seed, view.id))
    instructions = list({v.instruction.id: v.instruction for v in views}.values())
    plan = JobPlan(instructions, dict(tickets), 0.0, {}, None, options.score_batch_size)
    with job_progress(console) as progress:
        run_pipeline(plan, DiskSink(root, log, counts, reward.label), generators=None,
                     scorers=ScorerPool(options.pool_config(reward, scoring)), schedule="phased", progress=progress)


@dataclass
class PreparedRun:
    """What `prepare_candidates` leaves: its counts and the run's candidates, every record folded in."""

    counts: JobCounts
    views: dict[str, CandidateView]

    def candidates(self) -> list[CandidateView]:
        """The run's candidates in run order (`rerank.run_records.in_run_order`)."""
        return in_run_order(self.views.values())


def prepare_candidates(config: CandidatesConfig, *, generator: Generator | None = None,
                       console: Console | None = None, on_record: RecordCallback | None = None,
                       policy: Callable[[Sequence[str]], Policy] | None = None) -> PreparedRun:
    """Generate and score: after it returns, every requested candidate is generated (or failed) and scored.

    ``policy`` (the scorer's axes -> a `Policy`) is what a search (``config.search``) prunes by."""
    counts, views, _, _ = _run(config, generator, console, on_record, rank=False, policy=policy)
    return PreparedRun(counts, views)


def run_generate(config: GenerateConfig, *, generator: Generator | None = None, console: Console | None = None,
                 on_record: RecordCallback | None = None) -> GenerateResult:
    """The whole job (see the module docstring): generate, score, rank, write ``top/``.

    ``generator`` replaces building ``config.generator`` by name (its ``name`` must match; on Ray
    it is sent to the actors by pickling); ``on_record`` sees every manifest record as it is appended.
    """
    counts, _, ranking, pools = _run(config, generator, console, on_record, rank=True)
    assert ranking is not None
    return GenerateResult(config.out, counts, ranking, pools)
