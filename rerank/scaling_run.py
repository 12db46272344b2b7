"""``cmirm scaling``: best-of-N curves from one pool of M candidates per instruction.

The pool comes from a run directory: one made here with the generate machinery (same records,
same resume), or an existing one (``--from DIR``, nothing generated and nothing rescored by the
selection model). `load_run` turns its records into the arrays `rerank.scaling.scaling_curves`
takes; the exact order-statistics estimator then gives every N = 1, 2, 4, ..., M from that one
pool.

With an evaluation model (``--eval-reward``) the same candidates are also scored by it; those
score records go to ``OUT/eval_scores.jsonl`` (append-only, resumed like the manifest), so the
source run directory is never written. Outputs in ``OUT``:

* ``curve.csv`` / ``curve.json`` / ``curve.png`` (+ ``curve_k<k>.png`` for each further k): the
  selected candidates' scores under the evaluation model (the selection model's when there is none);
* with an evaluation model, ``curve_selection.*``: the same selections scored by the selection
  model, so the gap between the two (reward over-optimisation) is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from cmirm_plugin.errors import ConfigError
from generators import Generator
from rerank.generate import DEFAULT_MAX_DUR, GenerateConfig, JobCounts, RunLog, prepare_candidates, score_missing
from rerank.plots import plot_curves
from rerank.policies import parse_policy
from rerank.pool_options import PoolOptions
from rerank.report import progress_bar
from rerank.run_config import Reward, load_run_config
from rerank.run_records import CandidateView, RunPaths, read_run
from rerank.scaling import ALL, CURVE_AXES, ScalingCurves, scaling_curves, write_curve_csv, write_curve_json

EVAL_SCORES = "eval_scores.jsonl"


@dataclass(frozen=True)
class RunScores:
    """The scored candidates of a run, as flat arrays (candidate i: ``instruction_ids[i]``, ``scores[i]``)."""

    candidate_ids: list[str]
    instruction_ids: list[str]
    modalities: dict[str, str]
    scores: np.ndarray
    evaluation: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)


def selection_scorer(run_dir: str | Path, views: Sequence[CandidateView]) -> str:
    """The run's reward model label (``run.json``), or the only scorer its records name."""
    config = load_run_config(run_dir)
    if config is not None:
        return config.result.reward
    scorers = sorted({s for v in views for s in v.scores})
    if len(scorers) != 1:
        raise ConfigError(f"{run_dir}: no run.json and {len(scorers)} scorers in the manifest "
                          f"({', '.join(scorers) or 'none'}); cannot tell which one selected")
    return scorers[0]


def load_run(run_dir: str | Path, scorer: str | None = None, *, evaluation_scorer: str | None = None,
             score_files: Sequence[str | Path] = (), n_max: int | None = None) -> RunScores:
    """The candidates of a run directory that have scores from ``scorer`` (and ``evaluation_scorer``).

    ``scorer`` defaults to the run's reward model. ``n_max`` keeps candidates 0..n_max-1 of each
    instruction. Candidates left out (failed generation or scoring) are listed in ``skipped``.
    """
    views = read_run(run_dir, score_files)
    if not views:
        raise ConfigError(f"{RunPaths(Path(run_dir)).manifest}: no candidates")
    scorer = scorer or selection_scorer(run_dir, views)
    wanted = [scorer] + ([evaluation_scorer] if evaluation_scorer else [])
    kept, skipped = [], []
    for view in views:
        if n_max is not None and view.index >= n_max:
            continue
        missing = [s for s in wanted if s not in view.scores]
        if view.generated and not missing:
            kept.append(view)
        else:
            skipped.append(f"{view.id}: " + ("; ".join(view.errors()) or f"no scores from {', '.join(missing)}"))
    if not kept:
        raise ConfigError(f"{run_dir}: no candidate has scores from {' and '.join(wanted)}")
    return RunScores(
        [v.id for v in kept], [v.instruction.id for v in kept],
        {v.instruction.id: v.instruction.modality for v in kept},
        np.array([v.scores[scorer].as_tuple() for v in kept]),
        np.array([v.scores[evaluation_scorer].as_tuple() for v in kept]) if evaluation_scorer else None, skipped)


@dataclass
class ScalingConfig:
    """One ``cmirm scaling`` job.

    Exactly one of ``generate`` (make the pool in ``out``; its ``n`` is M) and ``source`` (an existing
    run directory) is given. ``eval_reward`` scores the pool with a second model. ``eval_axis`` is
    the axis the terminal summary reports (every axis is in the files).
    """

    out: Path
    policy: str
    minimums: Sequence[str] = ()
    ks: Sequence[int] = (1,)
    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0
    n_max: int | None = None
    generate: GenerateConfig | None = None
    source: Path | None = None
    eval_reward: Reward | None = None
    eval_axis: str = "composite"
    pool: PoolOptions = field(default_factory=PoolOptions)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if (self.generate is None) == (self.source is None):
            raise ConfigError("give either a pool to generate (--prompts) or an existing run (--from DIR), not both")
        if self.eval_axis not in CURVE_AXES:
            raise ConfigError(f"--eval-axis must be one of {', '.join(CURVE_AXES)}, got {self.eval_axis!r}")
        parse_policy(self.policy, self.minimums)


@dataclass(frozen=True)
class ScalingResult:
    """The curves computed and the files written."""

    curves: ScalingCurves
    selection_curves: ScalingCurves | None
    files: list[Path]
    skipped: list[str]


def _write(curves: ScalingCurves, out: Path, stem: str) -> list[Path]:
    files = [write_curve_csv(curves, out / f"{stem}.csv"), write_curve_json(curves, out / f"{stem}.json")]
    for k in curves.ks:
        name = f"{stem}.png" if k == curves.ks[0] else f"{stem}_k{k}.png"
        files.append(plot_curves(curves, out / name, k=k))
    return files


def _print_summary(console: Console, columns: Sequence[ScalingCurves], axis: str) -> None:
    """N against the mean (and band) of ``axis`` over all instructions, one column per evaluation model."""
    k = columns[0].ks[0]
    title = f"{axis} of {'best' if k == 1 else f'top-{k}'}-of-N ({columns[0].policy}; all instructions)"
    table = Table(title=title, min_width=len(title))
    table.add_column("N", justify="right")
    for curves in columns:
        table.add_column(f"evaluated by {curves.evaluation_scorer}", justify="right")
    for n in columns[0].ns:
        if n >= k:
            rows = [next(r for r in c.where(k=k, axis=axis, modality=ALL) if r.n == n) for c in columns]
            table.add_row(str(n), *(f"{r.mean:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}]" for r in rows))
    console.print(table)


def run_scaling(config: ScalingConfig, *, generator: Generator | None = None,
                console: Console | None = None) -> ScalingResult:
    """Make or reuse the pool, score it with the evaluation model if any, and write the curves."""
    console = console or Console()
    if config.generate is not None:
        prepare_candidates(config.generate, generator=generator, console=console)
        run_dir, max_dur = config.generate.out, config.generate.max_dur
    else:
        run_dir = config.source
        saved = load_run_config(run_dir)
        max_dur = saved.result.max_dur if saved else DEFAULT_MAX_DUR
    score_files: list[Path] = []
    views = read_run(run_dir)
    scorer = selection_scorer(run_dir, views)
    if config.eval_reward is not None:
        if config.eval_reward.label == scorer:
            raise ConfigError(f"--eval-reward is the selection model ({scorer}); give a different model")
        score_files = [config.out / EVAL_SCORES]
        config.out.mkdir(parents=True, exist_ok=True)
        with RunLog(score_files[0]) as log, progress_bar(console) as progress:
            score_missing(read_run(run_dir, score_files), Path(run_dir), config.eval_reward, config.pool, max_dur,
                          log, progress, JobCounts(), description="scoring (evaluation model)")
    eval_label = config.eval_reward.label if config.eval_reward else None
    data = load_run(run_dir, scorer, evaluation_scorer=eval_label, score_files=score_files, n_max=config.n_max)
    policy = parse_policy(config.policy, config.minimums)
    common = dict(ks=config.ks, n_boot=config.n_boot, ci=config.ci, seed=config.seed, selection_scorer=scorer)
    own = scaling_curves(data.scores, data.instruction_ids, data.modalities, policy, **common)
    if data.evaluation is not None:
        curves = scaling_curves(data.scores, data.instruction_ids, data.modalities, policy,
                                evaluation_scores=data.evaluation, evaluation_scorer=eval_label, **common)
        files = _write(curves, config.out, "curve") + _write(own, config.out, "curve_selection")
        selection: ScalingCurves | None = own
        _print_summary(console, [own, curves], config.eval_axis)
    else:
        curves, selection = own, None
        files = _write(curves, config.out, "curve")
        _print_summary(console, [curves], config.eval_axis)
    if data.skipped:
        console.print(f"[yellow]{len(data.skipped)} candidate(s) left out (no scores): {data.skipped[0]} ...")
    return ScalingResult(curves, selection, files, data.skipped)
