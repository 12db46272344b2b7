"""``cmirm scaling``: best-of-N curves from one pool of M candidates per instruction.

The pool comes from a run directory: one made here with the generate machinery (same records,
same resume), or an existing one (``--from DIR``, nothing generated and nothing rescored by the
selection model). `run_scores` turns its candidates into the arrays `rerank.scaling.scaling_curves`
takes (`load_run` reads a directory first); the exact order-statistics estimator then gives every
N = 1, 2, 4, ..., M from that one pool. The run's ``run.json`` and manifest are read once.

With an evaluation model (``--eval-reward``) the candidates the curves use (the first ``n_max`` of
each instruction that have selection scores) are also scored by it; those score records go to
``OUT/eval_scores.jsonl`` (append-only, resumed like the manifest, each record naming the source
run, so an ``OUT`` made for another run is refused), and the source run directory is never
written. Outputs in ``OUT``:

* ``curve.csv`` / ``curve.json`` / ``curve.png`` (+ ``curve_k<k>.png`` for each further k): the
  selected candidates' scores under the evaluation model (the selection model's when there is none);
* with an evaluation model, ``curve_selection.*``: the same selections scored by the selection
  model, so the gap between the two (reward over-optimisation) is visible.

With ``--methods`` (and ``--budgets``) every search method runs at every budget
(`rerank.search_scaling`, run directories under ``OUT/runs/``), and so does ``--from`` a run of a
search other than best-of-N: ``curve.csv`` / ``curve.json`` then hold `ComputeRow`s (``method``,
``budget``, scorer, axis, mean and band, and the mean compute per instruction: generated audio
seconds, work units, model evaluations, generator and total seconds), and ``compute.png`` overlays
the methods' reward against each compute axis (the evaluation model's when there is one; then
``compute_selection.png`` is the selection model's).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from cmirm_plugin.errors import ConfigError, check_count, check_output_path
from cmirm_plugin.manifest import iter_records
from cmirm_plugin.records import format_score
from cmirm_plugin.scoring.settings import ScoringSettings
from cmirm_plugin.scoring.spec import ScorerSpec
from generators import Generator
from rerank import defaults
from rerank.generate import CandidatesConfig, RunLog, prepare_candidates, score_missing
from rerank.plots import plot_compute_curves, plot_curves
from rerank.policies import Policy, check_k_of_n, default_policy, parse_policy
from rerank.pool_options import PoolOptions
from rerank.run_config import load_run_config, selection_scorer
from rerank.run_dir import disk_errors, make_dir
from rerank.run_records import CandidateView, fold_records, in_run_order, load_views, require_run_dir, score_axes
from rerank.stream import JobCounts
from rerank.search import BestOfNSearch, SearchMethod, parse_search
from rerank.search.curves import ComputeRow, mean_compute, write_compute_csv, write_compute_json
from rerank.search_scaling import (
    MethodRun,
    Reported,
    best_of_n_rows,
    check_methods_budgets,
    finished_run,
    plan_runs,
    reported_scorers,
    rows_for_plot,
    search_rows,
)
from rerank.scaling import (
    ALL,
    COMPOSITE,
    ScalingCurves,
    check_bootstrap,
    check_ks,
    check_seed,
    scaling_curves,
    write_curve_csv,
    write_curve_json,
)

EVAL_SCORES = "eval_scores.jsonl"


@dataclass(frozen=True)
class RunScores:
    """The scored candidates of a run, as flat arrays (candidate i: ``instruction_ids[i]``, ``scores[i]``).

    ``axes`` name the columns of ``scores``, ``evaluation_axes`` those of ``evaluation``; ``compute``
    is a candidate's mean compute (generation plus the selection scorer, `mean_compute`).
    """

    instruction_ids: list[str]
    modalities: dict[str, str]
    scores: np.ndarray
    axes: tuple[str, ...]
    evaluation: np.ndarray | None = None
    evaluation_axes: tuple[str, ...] | None = None
    skipped: list[str] = field(default_factory=list)
    compute: dict[str, float | None] = field(default_factory=dict)


def _within(view: CandidateView, n_max: int | None) -> bool:
    """Whether ``view`` is one of the first ``n_max`` candidates of its instruction."""
    return n_max is None or view.index < n_max


def run_scores(views: Sequence[CandidateView], scorer: str, *, evaluation_scorer: str | None = None,
               n_max: int | None = None, where: str | Path = "run") -> RunScores:
    """The candidates of ``views`` (in run order) that have scores from ``scorer`` (and ``evaluation_scorer``).

    ``n_max`` keeps candidates 0..n_max-1 of each instruction. Candidates left out (failed
    generation or scoring) are listed in ``skipped``. ``where`` names the run in errors.
    """
    if not views:
        raise ConfigError(f"{where}: no candidates")
    wanted = [scorer] + ([evaluation_scorer] if evaluation_scorer else [])
    kept, skipped = [], []
    for view in views:
        if not _within(view, n_max) or view.partial:
            continue
        missing = [s for s in wanted if s not in view.scores]
        if view.selectable(*wanted):
            kept.append(view)
        else:
            skipped.append(f"{view.id}: " + ("; ".join(view.errors()) or f"no scores from {', '.join(missing)}"))
    if not kept:
        known = sorted({s for v in views for s in v.scores})
        raise ConfigError(f"{where}: no candidate has scores from {' and '.join(wanted)} (scorers with scores: "
                          f"{', '.join(known) or 'none'}); check --scorer, or rerun `cmirm generate` into it")
    return RunScores(
        [v.instruction.id for v in kept], {v.instruction.id: v.instruction.modality for v in kept},
        np.array([v.scores[scorer].as_tuple() for v in kept]), score_axes(kept, scorer),
        np.array([v.scores[evaluation_scorer].as_tuple() for v in kept]) if evaluation_scorer else None,
        score_axes(kept, evaluation_scorer) if evaluation_scorer else None, skipped,
        mean_compute([v.compute_with(scorer) for v in kept]))


def load_run(run_dir: str | Path, scorer: str | None = None, *, evaluation_scorer: str | None = None,
             score_files: Sequence[str | Path] = (), n_max: int | None = None) -> RunScores:
    """`run_scores` of a run directory (plus ``score_files``); ``scorer`` defaults to the run's reward model."""
    views = load_views(run_dir, score_files)
    scorer = scorer or selection_scorer(run_dir, views.values(), load_run_config(run_dir))
    return run_scores(in_run_order(views.values()), scorer, evaluation_scorer=evaluation_scorer, n_max=n_max,
                      where=run_dir)


@dataclass
class ScalingConfig:
    """One ``cmirm scaling`` job, validated before any work (errors name the command-line options).

    Exactly one of ``generate`` (make the pool in ``out``; its ``n`` is M) and ``source`` (an existing
    run directory, or its manifest) is given. ``scorer`` is the selection model's label for a
    ``source`` run (default: its reward model). ``policy`` defaults to the ``source`` run's own
    (its ``run.json``), else to `default_policy` of the selection scorer's axes. ``eval_reward``
    scores the pool with a second model, on the scorer pool ``pool``. ``eval_axis`` is the axis the
    terminal summary reports (default the composite, or the evaluation model's first axis when the
    policy does not apply to its axes; every axis is in the files).
    """

    out: Path
    policy: str | None = None
    minimums: Sequence[str] = ()
    ks: Sequence[int] = defaults.KS
    n_boot: int = defaults.N_BOOT
    ci: float = defaults.CI
    seed: int = defaults.SCALING_SEED
    n_max: int | None = None
    generate: CandidatesConfig | None = None
    source: Path | None = None
    scorer: str | None = None
    eval_reward: ScorerSpec | None = None
    eval_axis: str | None = None
    pool: PoolOptions = field(default_factory=PoolOptions)
    methods: Sequence[SearchMethod] = ()
    budgets: Sequence[int] = ()

    def __post_init__(self) -> None:
        self.out = check_output_path(self.out, "--out", directory=True)
        check_methods_budgets(self.methods, self.budgets, from_run=self.generate is None)
        if self.methods:
            assert self.generate is not None
            plan_runs(self.methods, self.budgets, self.out)   # a budget a method cannot spend fails now
            for method in self.methods:
                method.for_budget(max(self.budgets)).check_named(self.generate.generator, self.generate.duration)
        if (self.generate is None) == (self.source is None):
            raise ConfigError("give either a pool to generate (--prompts) or an existing run (--from DIR), not both")
        if self.source is not None:
            self.source = require_run_dir(self.source, "--from")
        if self.policy is not None:
            parse_policy(self.policy, self.minimums)
        self.ks = tuple(check_ks(self.ks))
        check_bootstrap(self.n_boot, self.ci)
        check_seed(self.seed)
        if self.n_max is not None:
            check_count("--n-max", self.n_max)
        pool_size = self.n_max
        if self.generate is not None:
            generated = len(self.generate.candidate_seeds())
            pool_size = generated if pool_size is None else min(pool_size, generated)
            if self.scorer is not None:
                raise ConfigError(f"--scorer {self.scorer!r} picks the selection model of a --from run; a pool made "
                                  "here is selected by its --reward: drop --scorer")
        if pool_size is not None:
            check_k_of_n(self.ks[-1], pool_size, "--ks", "--n-max")
        selection = self.generate.reward.label if self.generate is not None else self.scorer
        if self.eval_reward is not None and self.eval_reward.label == selection:
            raise ConfigError(f"--eval-reward is the selection model ({selection}); give a different model")


@dataclass(frozen=True)
class ScalingResult:
    """The curves computed and the files written (``compute_rows``: a methods run's rows, else empty)."""

    curves: ScalingCurves | None
    selection_curves: ScalingCurves | None
    files: list[Path]
    skipped: list[str]
    compute_rows: list[ComputeRow] = field(default_factory=list)


def _write_files(out: Path, writers: Sequence[tuple[Path, Callable[[Path], Path]]]) -> list[Path]:
    """Create ``out`` and run each ``(path, write)``; an ``OSError`` is one line naming the file
    (`rerank.run_dir.disk_errors`)."""
    make_dir(out)
    files = []
    for path, write in writers:
        with disk_errors(path):
            files.append(write(path))
    return files


def _write(curves: ScalingCurves, out: Path, stem: str) -> list[Path]:
    """The curve files of ``curves``: CSV, JSON and a plot per k."""
    writers = [(out / f"{stem}.csv", lambda path: write_curve_csv(curves, path)),
               (out / f"{stem}.json", lambda path: write_curve_json(curves, path))]
    for k in curves.ks:
        name = f"{stem}.png" if k == curves.ks[0] else f"{stem}_k{k}.png"
        writers.append((out / name, lambda path, k=k: plot_curves(curves, path, k=k)))
    return _write_files(out, writers)


def _band(mean: float, low: float, high: float) -> str:
    """``mean [low, high]`` as every scaling table prints it (`format_score`: never ``-0.0000``)."""
    return f"{format_score(mean)} [{format_score(low)}, {format_score(high)}]"


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
            table.add_row(str(n), *(_band(r.mean, r.ci_low, r.ci_high) for r in rows))
    console.print(table)
    for warning in dict.fromkeys(w for curves in columns for w in curves.warnings()):
        console.print(f"[yellow]warning: {warning}", highlight=False)


def _fold_eval_scores(path: Path, source: str, views: dict[str, CandidateView]) -> None:
    """Fold the evaluation scores of ``path`` into ``views``, after checking they are scores of run ``source``."""
    records = list(iter_records(path))
    others = sorted({str(r.get("run") or "an unrecorded run") for r in records} - {source})
    if others:
        raise ConfigError(f"{path}: holds evaluation scores of another run ({', '.join(others)}), not of "
                          f"'{source}'; use a fresh --out for each source run (or delete {path.name})")
    fold_records(records, str(path), views)


def _score_evaluation(config: ScalingConfig, run_dir: Path, views: dict[str, CandidateView], scorer: str,
                      scoring: ScoringSettings, console: Console, path: Path | None = None) -> None:
    """Score with ``config.eval_reward`` every candidate the curves use that it has not scored yet.

    Those are the first ``n_max`` candidates of each instruction with scores from ``scorer``; the
    records go to ``OUT/eval_scores.jsonl``, each naming the source run, and into ``views``.
    """
    assert config.eval_reward is not None
    path, source = path or config.out / EVAL_SCORES, str(run_dir.resolve())
    _fold_eval_scores(path, source, views)
    used = [v for v in in_run_order(views.values())
            if _within(v, config.n_max) and v.selectable(scorer)]
    make_dir(config.out)
    with RunLog(path, views, fields={"run": source}) as log:
        score_missing(used, run_dir, config.eval_reward, config.pool, scoring, log, console, JobCounts())


def _check_pools(config: ScalingConfig, views: Iterable[CandidateView], scorer: str, run_dir: Path) -> None:
    """The largest k against the fewest candidates an instruction has scores for (`check_k_of_n`), before any
    evaluation scoring: a run's pools are known only once it is read (or made)."""
    pools = Counter(v.instruction.id for v in views
                    if _within(v, config.n_max) and v.selectable(scorer))
    if pools:
        check_k_of_n(config.ks[-1], min(pools.values()), "--ks", f"the fewest scored for an instruction in {run_dir}")


def _policy(config: ScalingConfig, saved_policy: str | None, axes: tuple[str, ...]) -> Policy:
    """``--policy``, else the source run's saved policy, else the default for the selection axes."""
    spec = config.policy or saved_policy or default_policy(axes)
    policy = parse_policy(spec, config.minimums)
    policy.check_axes(axes)
    return policy


def _summary_axis(asked: str | None, curves: ScalingCurves) -> str:
    """The axis the terminal table reports: ``--eval-axis``, else the composite, else the first axis."""
    if asked is None:
        return COMPOSITE if COMPOSITE in curves.axes else curves.axes[0]
    if asked not in curves.axes:
        raise ConfigError(f"--eval-axis must be one of {', '.join(curves.axes)}, got {asked!r}")
    return asked


def _write_compute(config: ScalingConfig, rows: list[ComputeRow], reported: list[Reported], policy: Policy,
                   console: Console) -> list[Path]:
    """curve.csv / curve.json of ``rows``, compute.png (+ compute_selection.png), and the terminal table."""
    settings = {"policy": policy.spec(), "scorers": [r.label for r in reported], "ci": config.ci,
                "n_boot": config.n_boot, "seed": config.seed, "budgets": sorted({r.budget for r in rows})}
    shown = rows_for_plot(rows, reported[-1].label)
    writers = [(config.out / "curve.csv", lambda path: write_compute_csv(rows, path)),
               (config.out / "curve.json", lambda path: write_compute_json(rows, settings, path)),
               (config.out / "compute.png", lambda path: plot_compute_curves(shown, path))]
    if len(reported) > 1:
        writers.append((config.out / "compute_selection.png",
                        lambda path: plot_compute_curves(rows_for_plot(rows, reported[0].label), path)))
    files = _write_files(config.out, writers)
    table = Table(title=f"{shown[0].axis} of the selected candidate by {shown[0].reward} ({policy.spec()})")
    for name in ("method", "budget", "audio s / instruction", "mean [band]"):
        table.add_column(name, justify="left" if name == "method" else "right")
    for row in shown:
        table.add_row(row.method, str(row.budget), f"{row.audio_seconds:g}" if row.audio_seconds is not None else "-",
                      _band(row.mean, row.ci_low, row.ci_high))
    console.print(table)
    return files


def _selection_axes(views: dict[str, CandidateView], scorer: str, where: Path) -> tuple[str, ...]:
    """The axes of ``scorer`` in a search run, or an error naming the run, the scorers it has, and what to do."""
    axes = score_axes(views.values(), scorer)
    if axes is None:
        known = sorted({s for v in views.values() for s in v.scores})
        raise ConfigError(f"{where}: no candidate has scores from {scorer} (scorers with scores: "
                          f"{', '.join(known) or 'none'}); check --scorer, or rerun the same command to finish it")
    return axes


def _method_rows(config: ScalingConfig, run: MethodRun, views: dict[str, CandidateView], scorer: str,
                 scoring: ScoringSettings, policy: Policy, console: Console, eval_path: Path | None
                 ) -> tuple[list[ComputeRow], list[Reported]]:
    """One run's rows (scored by the evaluation model first, when there is one)."""
    axes = _selection_axes(views, scorer, run.out)
    evaluation = None
    if config.eval_reward is not None:
        _score_evaluation(config, run.out, views, scorer, scoring, console, eval_path)
        eval_axes = score_axes(views.values(), config.eval_reward.label)
        evaluation = (config.eval_reward.label, eval_axes) if eval_axes is not None else None
    reported = reported_scorers(policy, (scorer, axes), evaluation)
    common = dict(n_boot=config.n_boot, ci=config.ci, seed=config.seed)
    if isinstance(run.method, BestOfNSearch):
        rows = best_of_n_rows(list(views.values()), scorer, axes, policy, reported, run.budgets, **common)
    else:
        rows = search_rows(run, list(views.values()), scorer, axes, policy, reported, **common)
    return rows, reported


def _run_methods(config: ScalingConfig, generator: Generator | None, console: Console) -> ScalingResult:
    """Every method at every budget (`rerank.search_scaling`), then the compute curves."""
    assert config.generate is not None
    base = config.generate
    scorer = base.reward.label
    policies: dict[str, Policy] = {}

    def policy_for(axes: Sequence[str]) -> Policy:
        if "policy" not in policies:
            policies["policy"] = _policy(config, None, tuple(axes))
        return policies["policy"]

    rows: list[ComputeRow] = []
    reported: list[Reported] = []
    for run in plan_runs(config.methods, config.budgets, config.out):
        console.print(f"[bold]{run.label}[/] at budget(s) {', '.join(map(str, run.budgets))}: {run.out}")
        job = dataclasses.replace(base, out=run.out, search=run.method, seeds=None)
        views = prepare_candidates(job, generator=generator, console=console, policy=policy_for).views
        axes = _selection_axes(views, scorer, run.out)
        more, reported = _method_rows(config, run, views, scorer, base.scoring, policy_for(axes), console,
                                      run.out.parent / f"{run.out.name}.{EVAL_SCORES}")
        rows += more
    files = _write_compute(config, rows, reported, policies["policy"], console)
    return ScalingResult(None, None, files, [], rows)


def _run_from_search(config: ScalingConfig, run_dir: Path, method: SearchMethod, views: dict[str, CandidateView],
                     scorer: str, scoring: ScoringSettings, saved_policy: str | None,
                     console: Console) -> ScalingResult:
    """``--from`` a finished search run: its compute curve (noise: every whole round's budget)."""
    policy = _policy(config, saved_policy, _selection_axes(views, scorer, run_dir))
    rows, reported = _method_rows(config, finished_run(method, run_dir), views, scorer, scoring, policy, console,
                                  None)
    return ScalingResult(None, None, _write_compute(config, rows, reported, policy, console), [], rows)


def run_scaling(config: ScalingConfig, *, generator: Generator | None = None,
                console: Console | None = None) -> ScalingResult:
    """Make or reuse the pool, score it with the evaluation model if any, and write the curves."""
    console = console or Console()
    if config.methods:
        return _run_methods(config, generator, console)
    saved_policy = None
    if config.generate is not None:
        run_dir = config.generate.out
        views = prepare_candidates(config.generate, generator=generator, console=console).views
        scoring, scorer = config.generate.scoring, config.generate.reward.label
    else:
        assert config.source is not None
        run_dir = config.source
        saved = load_run_config(run_dir)
        views = load_views(run_dir)
        scoring = saved.result.scoring() if saved is not None else ScoringSettings()
        scorer = config.scorer or selection_scorer(run_dir, views.values(), saved)
        saved_policy = saved.request.get("policy") if saved is not None else None
        if saved is not None and saved.result.search not in (None, BestOfNSearch.name):
            return _run_from_search(config, run_dir, parse_search(saved.result.search), views, scorer, scoring,
                                    saved_policy, console)
    _check_pools(config, views.values(), scorer, run_dir)
    eval_label = config.eval_reward.label if config.eval_reward else None
    if config.eval_reward is not None:
        if eval_label == scorer:
            raise ConfigError(f"--eval-reward is the selection model ({scorer}); give a different model")
        _score_evaluation(config, run_dir, views, scorer, scoring, console)
    data = run_scores(in_run_order(views.values()), scorer, evaluation_scorer=eval_label, n_max=config.n_max,
                      where=run_dir)
    policy = _policy(config, saved_policy, data.axes)
    common = dict(ks=config.ks, n_boot=config.n_boot, ci=config.ci, seed=config.seed, selection_scorer=scorer,
                  selection_axes=data.axes)
    own = scaling_curves(data.scores, data.instruction_ids, data.modalities, policy,
                         **common).with_compute(data.compute)
    if data.evaluation is not None:
        curves = scaling_curves(data.scores, data.instruction_ids, data.modalities, policy,
                                evaluation_scores=data.evaluation, evaluation_scorer=eval_label,
                                evaluation_axes=data.evaluation_axes, **common).with_compute(data.compute)
        files = _write(curves, config.out, "curve") + _write(own, config.out, "curve_selection")
        selection: ScalingCurves | None = own
        axis = _summary_axis(config.eval_axis, curves)
        _print_summary(console, [own, curves] if axis in own.axes else [curves], axis)
    else:
        curves, selection = own, None
        files = _write(curves, config.out, "curve")
        _print_summary(console, [curves], _summary_axis(config.eval_axis, curves))
    if data.skipped:
        console.print(f"[yellow]{len(data.skipped)} candidate(s) left out (no scores): {data.skipped[0]} ...")
    return ScalingResult(curves, selection, files, data.skipped)
