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
(what scaling curves need).
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
from generators import Generator, build_generator
from rerank.policies import Policy, parse_policy
from rerank.pool import ScoreItem, ScorerPool
from rerank.pool_options import PoolOptions
from rerank.report import progress_bar
from rerank.rerank_run import Ranking, rank_run
from rerank.run_config import ResultSettings, Reward, RunConfig, save_run_config
from rerank.run_records import CandidateView, RunPaths, candidate_record, failure_record, read_run, score_record

#: The selection policy when none is given.
DEFAULT_POLICY = "axis:musicality"
#: Seconds of each candidate that are scored (CMI-RM's own default crop).
DEFAULT_MAX_DUR = 120.0

RecordCallback = Callable[[dict[str, Any]], None]


@dataclass
class GenerateConfig:
    """One ``cmirm generate`` job (the CLI options, typed).

    Attributes:
        out: the run directory.
        instructions: what to generate for (distinct ids).
        generator: a `generators.registry` name (``musicgen-small``, ``tiny-musicgen``, ``py:mod:fn`` ...).
        reward: the selection reward model (`rerank.run_config.resolve_reward`).
        n: candidates per instruction (ignored when ``seeds`` is given).
        k: candidates kept per instruction.
        policy / minimums: the selection policy and ``--min`` thresholds (`rerank.policies.parse_policy`).
        duration: seconds per candidate; params: the generator's sampling parameters.
        seed_base / seeds: candidate i gets ``seed_base + i``, or ``seeds[i]``.
        gen_batch_size: seeds per generator call; device: where the generator runs (default cuda if available).
        max_dur: seconds of each candidate that are scored.
        pool: the scorer pool's options.
        retry_errors: regenerate failed generations and rescore failed scorings of earlier runs.
    """

    out: Path
    instructions: Sequence[Instruction]
    generator: str
    reward: Reward
    n: int = 8
    k: int = 2
    policy: str = DEFAULT_POLICY
    minimums: Sequence[str] = ()
    duration: float = 10.0
    params: dict[str, Any] = field(default_factory=dict)
    seed_base: int = 0
    seeds: Sequence[int] | None = None
    gen_batch_size: int = 1
    device: str | None = None
    max_dur: float = DEFAULT_MAX_DUR
    pool: PoolOptions = field(default_factory=PoolOptions)
    retry_errors: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("n", "k", "gen_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.seeds is not None:
            seeds = list(self.seeds)
            if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
                raise ConfigError(f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
            if len(set(seeds)) != len(seeds):
                raise ConfigError(f"seeds must be distinct, got {seeds!r}")
        if self.seed_base < 0:
            raise ConfigError(f"seed_base must be >= 0, got {self.seed_base}")
        ids = [inst.id for inst in self.instructions]
        if not ids:
            raise ConfigError("no instructions to generate for")
        if len(set(ids)) != len(ids):
            repeated = sorted(i for i in set(ids) if ids.count(i) > 1)
            raise ConfigError(f"instruction ids must be distinct, got {repeated} more than once")
        self.selection_policy()  # a bad policy fails before any work

    def candidate_seeds(self) -> list[int]:
        """The seed of candidate i, for every i."""
        return list(self.seeds) if self.seeds is not None else [self.seed_base + i for i in range(self.n)]

    def selection_policy(self) -> Policy:
        return parse_policy(self.policy, self.minimums)

    def run_config(self) -> RunConfig:
        """What ``run.json`` records for this job."""
        result = ResultSettings(self.generator, dict(self.params), float(self.duration), self.reward.label,
                                float(self.max_dur))
        request = {"n": len(self.candidate_seeds()), "seed_base": self.seed_base,
                   "seeds": list(self.seeds) if self.seeds is not None else None, "k": self.k,
                   "policy": self.selection_policy().spec(), "instructions": [i.id for i in self.instructions]}
        pool = {**self.pool.to_dict(), "gen_batch_size": self.gen_batch_size, "generator_device": self.device}
        return RunConfig(result, request, pool)


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
    """The manifest writer of a run, plus an optional callback that sees every appended record."""

    def __init__(self, path: Path, on_record: RecordCallback | None = None) -> None:
        self._writer = ManifestWriter(path)
        self._on_record = on_record

    def append(self, record: dict[str, Any]) -> None:
        self._writer.append(record)
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


def generate_missing(config: GenerateConfig, paths: RunPaths, log: RunLog, progress: Progress,
                     generator: Generator | None, counts: JobCounts) -> None:
    """Phase 1 (see the module docstring)."""
    # run.json guarantees one generator per directory, so (instruction, seed) names a candidate (the
    # recorded generator name may differ from the registry name, e.g. a cmd: template's own name).
    views = read_run(paths.root)
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


def score_missing(views: Sequence[CandidateView], root: Path, reward: Reward, options: PoolOptions, max_dur: float,
                  log: RunLog, progress: Progress, counts: JobCounts, retry_errors: bool = False,
                  description: str = "scoring") -> None:
    """Score every generated candidate of ``views`` that lacks scores from ``reward`` (phase 2).

    Audio paths are relative to ``root``; records go to ``log`` as each batch finishes.
    """
    todo = [v for v in views if v.generated and (root / v.audio_path).is_file() and reward.label not in v.scores
            and (retry_errors or reward.label not in v.score_errors)]
    if not todo:
        return
    task = progress.add_task(description, total=len(todo))
    items = [ScoreItem(v.id, str((root / v.audio_path).resolve()), v.instruction) for v in todo]
    with ScorerPool(options.pool_config(reward.source, max_dur)) as pool:
        for done in pool.iter_results(items):
            for _, result in done:
                log.append(score_record(result.key, reward.label, result.scores, result.error))
                if result.scores is None:
                    counts.score_failed += 1
                else:
                    counts.scored += 1
            progress.advance(task, len(done))


def prepare_candidates(config: GenerateConfig, *, generator: Generator | None = None, console: Console | None = None,
                       on_record: RecordCallback | None = None) -> JobCounts:
    """Phases 1 and 2: after it returns, every requested candidate is generated (or failed) and scored."""
    paths = RunPaths(config.out)
    save_run_config(paths.root, config.run_config())
    counts = JobCounts()
    with RunLog(paths.manifest, on_record) as log, progress_bar(console or Console()) as progress:
        generate_missing(config, paths, log, progress, generator, counts)
        score_missing(read_run(paths.root), paths.root, config.reward, config.pool, config.max_dur, log, progress,
                      counts, config.retry_errors)
    return counts


def run_generate(config: GenerateConfig, *, generator: Generator | None = None, console: Console | None = None,
                 on_record: RecordCallback | None = None) -> GenerateResult:
    """The whole job (see the module docstring): generate, score, rank, write ``top/``.

    ``generator`` replaces building ``config.generator`` by name (its ``name`` must match);
    ``on_record`` sees every manifest record as it is appended.
    """
    counts = prepare_candidates(config, generator=generator, console=console, on_record=on_record)
    ranking = rank_run(config.out, read_run(config.out), config.reward.label, config.selection_policy(), config.k)
    return GenerateResult(config.out, counts, ranking)
