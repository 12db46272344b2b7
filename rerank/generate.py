"""The main job: sample N candidates per instruction, score them on the pool, keep the top k.

`run_generate` runs three resumable phases over one run directory (layout and records:
`rerank.run_records`):

1. **generate**: candidate i of an instruction uses seed ``seed_base + i`` (or the i-th explicit
   seed), so a rerun asks for the same candidates. A candidate whose record is in the manifest
   and whose wav exists is reused; every new candidate's wav is written (atomically) and its
   record appended as soon as its generation batch returns. Failed generations are records too,
   and are not retried unless ``retry_errors``. The generator is built only if something is
   missing, and released before scoring so both models never share the device.
2. **score**: every generated candidate without scores from the reward model is scored on the
   `ScorerPool`; each finished batch's records are appended at once. Bad audio gets a
   ``score_failed`` record (retried only with ``retry_errors``).
3. **rank**: `rerank.rerank_run.rank_run` writes ``ranking.jsonl`` and ``top/``.

``run.json`` is checked first (`rerank.run_config`): a rerun with another generator, parameters,
duration or reward model is refused before any work. `prepare_candidates` runs phases 1-2 only
(what scaling curves need), from a `CandidatesConfig` (no k, no policy); `GenerateConfig` adds
the selection. The manifest is read once per job: records appended later are folded into the
same views (`RunLog`).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.progress import Progress

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import ManifestWriter
from cmirm_plugin.records import Instruction
from cmirm_plugin.scoring.settings import ScoringSettings
from cmirm_plugin.scoring.spec import ScorerSpec
from generators import Generator, build_generator
from generators.base import MAX_SEED, validate_seeds
from rerank.policies import Policy, default_policy, parse_policy
from rerank.pool import ScoreItem, ScorerPool
from rerank.pool_options import PoolOptions, check_count
from rerank.report import progress_bar
from rerank.rerank_run import Ranking, rank_run
from rerank.run_config import ResultSettings, RunConfig, save_run_config
from rerank.run_records import (
    CandidateView,
    RunPaths,
    candidate_record,
    failure_record,
    fold_records,
    in_run_order,
    load_views,
    score_axes,
    score_record,
)

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
        gen_batch_size: seeds per generator call; device: where the generator runs (default cuda if available).
        scoring: how the scorers score (`ScoringSettings`; what changes scores is recorded in ``run.json``).
        pool: the scorer pool's options.
        retry_errors: regenerate failed generations and rescore failed scorings of earlier runs.
    """

    out: Path
    instructions: Sequence[Instruction]
    generator: str
    reward: ScorerSpec
    n: int = 8
    duration: float = 10.0
    params: dict[str, Any] = field(default_factory=dict)
    seed_base: int = 0
    seeds: Sequence[int] | None = None
    gen_batch_size: int = 1
    device: str | None = None
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    pool: PoolOptions = field(default_factory=PoolOptions)
    retry_errors: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        check_count("n", self.n)
        check_count("gen_batch_size", self.gen_batch_size)
        if self.seeds is not None:
            self.seeds = validate_seeds(self.seeds)
        else:
            if isinstance(self.seed_base, bool) or not isinstance(self.seed_base, int) or self.seed_base < 0:
                raise ConfigError(f"seed_base must be an integer >= 0, got {self.seed_base!r}")
            if self.seed_base + self.n - 1 > MAX_SEED:
                raise ConfigError(f"seed_base + n - 1 = {self.seed_base + self.n - 1} exceeds the largest seed "
                                  f"{MAX_SEED}; lower seed_base")
        ids = [inst.id for inst in self.instructions]
        if not ids:
            raise ConfigError("no instructions to generate for")
        if len(set(ids)) != len(ids):
            repeated = sorted(i for i in set(ids) if ids.count(i) > 1)
            raise ConfigError(f"instruction ids must be distinct, got {repeated} more than once")

    def candidate_seeds(self) -> list[int]:
        """The seed of candidate i, for every i."""
        return list(self.seeds) if self.seeds is not None else [self.seed_base + i for i in range(self.n)]

    def result_settings(self) -> ResultSettings:
        """The settings that determine candidates' audio and scores (``run.json``'s ``result``)."""
        return ResultSettings(self.generator, dict(self.params), float(self.duration), self.reward.label,
                              **self.scoring.score_identity(self.pool.scorer_device()))

    def request(self) -> dict[str, Any]:
        """What this job asks for (``run.json``'s ``request``)."""
        return {"n": len(self.candidate_seeds()), "seed_base": self.seed_base,
                "seeds": list(self.seeds) if self.seeds is not None else None,
                "instructions": [i.id for i in self.instructions]}

    def run_config(self) -> RunConfig:
        """What ``run.json`` records for this job."""
        pool = {**self.pool.to_dict(), "gen_batch_size": self.gen_batch_size, "generator_device": self.device}
        return RunConfig(self.result_settings(), self.request(), pool)


@dataclass
class GenerateConfig(CandidatesConfig):
    """One ``cmirm generate`` job (the CLI options, typed): a `CandidatesConfig` plus the selection.

    Attributes (besides `CandidatesConfig`'s):
        k: candidates kept per instruction.
        policy / minimums: the selection policy and ``--min`` thresholds (`rerank.policies.parse_policy`).
    """

    k: int = 2
    policy: str | None = None
    minimums: Sequence[str] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("k", self.k)
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
class JobCounts:
    """What one invocation did (reused = found finished in the manifest)."""

    generated: int = 0
    generation_failed: int = 0
    reused: int = 0
    scored: int = 0
    score_failed: int = 0


@dataclass
class GenerateResult:
    """The outcome of `run_generate`."""

    out: Path
    counts: JobCounts
    ranking: Ranking


class RunLog:
    """An append-only record log that folds every record it appends into ``views`` (`fold_records`).

    So a job reads its log once and its views stay current. ``fields`` are added to every record;
    ``on_record`` sees each record once it is written and folded.
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


def _finished(view: CandidateView, root: Path, retry_errors: bool) -> bool:
    if view.generated:
        return (root / view.audio_path).is_file()
    return not retry_errors


def _save_wav(audio: Audio, path: Path) -> None:
    """Write a wav so that it either exists complete or not at all (what resuming checks)."""
    tmp = path.with_name(f".{path.stem}.tmp.wav")
    audio.save(tmp)
    os.replace(tmp, path)


def _free_memory() -> None:
    """Return a released generator's memory before the scorers load."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _check_same_instructions(instructions: Sequence[Instruction], views: Sequence[CandidateView]) -> None:
    """Refuse an instruction whose id the directory already holds with other content (an edited prompts line)."""
    recorded = {v.instruction.id: v.instruction for v in views}
    for inst in instructions:
        old = recorded.get(inst.id)
        if old is not None and old.to_dict() != inst.to_dict():
            raise ConfigError(f"instruction {inst.id!r} was {old.to_dict()} when this directory's candidates were "
                              f"made, now {inst.to_dict()}; give it a new id or use another --out")


def generate_missing(config: CandidatesConfig, paths: RunPaths, views: Sequence[CandidateView], log: RunLog,
                     progress: Progress, generator: Generator | None, counts: JobCounts) -> None:
    """Phase 1 (see the module docstring); ``views`` are the run's candidates before it."""
    # run.json guarantees one generator per directory, so (instruction, seed) names a candidate (the
    # recorded generator name may differ from the registry name, e.g. a cmd: template's own name).
    existing = {(v.instruction.id, v.seed): v for v in views}
    _check_same_instructions(config.instructions, views)
    seeds = config.candidate_seeds()
    todo: list[tuple[Instruction, list[tuple[int, int]]]] = []
    for inst in config.instructions:
        missing = [(i, s) for i, s in enumerate(seeds)
                   if not ((v := existing.get((inst.id, s))) and _finished(v, paths.root, config.retry_errors))]
        counts.reused += len(seeds) - len(missing)
        if missing:
            todo.append((inst, missing))
    if not todo:
        return
    built = generator is None
    if built:
        import torch

        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        generator = build_generator(config.generator, device=device)
    elif generator.name != config.generator:
        raise ConfigError(f"the generator given is named {generator.name!r} but the job says {config.generator!r}")
    for inst, _ in todo:
        generator.require_supported(inst)
    task = progress.add_task("generating", total=sum(len(m) for _, m in todo))
    paths.candidates.mkdir(parents=True, exist_ok=True)
    for inst, missing in todo:
        for start in range(0, len(missing), config.gen_batch_size):
            chunk = missing[start:start + config.gen_batch_size]
            index_of = {s: i for i, s in chunk}
            result = generator.sample(inst, [s for _, s in chunk], config.duration,
                                      batch_size=config.gen_batch_size, **config.params)
            for candidate in result:
                wav = paths.candidate_wav(candidate.id)
                _save_wav(candidate.audio, wav)
                relative = wav.relative_to(paths.root).as_posix()
                log.append(candidate_record(candidate, inst, index_of[candidate.seed], relative))
                counts.generated += 1
            for failure in result.failures:
                log.append(failure_record(failure, inst, index_of[failure.seed]))
                counts.generation_failed += 1
            progress.advance(task, len(chunk))
    if built:
        generator = None
        _free_memory()


def score_missing(views: Sequence[CandidateView], root: Path, reward: ScorerSpec, options: PoolOptions,
                  scoring: ScoringSettings, log: RunLog, progress: Progress, counts: JobCounts,
                  retry_errors: bool = False, description: str = "scoring") -> None:
    """Score every generated candidate of ``views`` that lacks scores from ``reward`` (phase 2).

    Audio paths are relative to ``root``; records go to ``log`` as each batch finishes. ``scoring``
    is the run's (`ResultSettings.scoring`), so every scorer of a run scores the same inputs.
    """
    todo = [v for v in views if v.generated and (root / v.audio_path).is_file() and reward.label not in v.scores
            and (retry_errors or reward.label not in v.score_errors)]
    if not todo:
        return
    task = progress.add_task(description, total=len(todo))
    items = [ScoreItem(v.id, str((root / v.audio_path).resolve()), v.instruction) for v in todo]
    with ScorerPool(options.pool_config(reward, scoring)) as pool:
        for done in pool.iter_results(items):
            for _, result in done:
                log.append(score_record(result.key, reward.label, result.scores, result.error))
                if result.scores is None:
                    counts.score_failed += 1
                else:
                    counts.scored += 1
            progress.advance(task, len(done))


@dataclass
class PreparedRun:
    """What `prepare_candidates` leaves: its counts and the run's candidates, every record folded in."""

    counts: JobCounts
    views: dict[str, CandidateView]

    def candidates(self) -> list[CandidateView]:
        """The run's candidates in run order (`rerank.run_records.in_run_order`)."""
        return in_run_order(self.views.values())


def prepare_candidates(config: CandidatesConfig, *, generator: Generator | None = None,
                       console: Console | None = None, on_record: RecordCallback | None = None) -> PreparedRun:
    """Phases 1 and 2: after it returns, every requested candidate is generated (or failed) and scored."""
    paths = RunPaths(config.out)
    views = load_views(paths.root)
    run_config = config.run_config()
    save_run_config(paths.root, run_config, holds_candidates=bool(views))
    counts = JobCounts()
    with RunLog(paths.manifest, views, on_record) as log, progress_bar(console or Console()) as progress:
        generate_missing(config, paths, in_run_order(views.values()), log, progress, generator, counts)
        score_missing(in_run_order(views.values()), paths.root, config.reward, config.pool, config.scoring, log,
                      progress, counts, config.retry_errors)
    return PreparedRun(counts, views)


def run_generate(config: GenerateConfig, *, generator: Generator | None = None, console: Console | None = None,
                 on_record: RecordCallback | None = None) -> GenerateResult:
    """The whole job (see the module docstring): generate, score, rank, write ``top/``.

    ``generator`` replaces building ``config.generator`` by name (its ``name`` must match);
    ``on_record`` sees every manifest record as it is appended.
    """
    prepared = prepare_candidates(config, generator=generator, console=console, on_record=on_record)
    candidates = prepared.candidates()
    policy = config.selection_policy(score_axes(candidates, config.reward.label))
    ranking = rank_run(config.out, candidates, config.reward.label, policy, config.k)
    return GenerateResult(config.out, prepared.counts, ranking)
