"""``cmirm scaling --methods ... --budgets ...``: reward against compute, per search method.

Each method runs into resumable run directories under ``OUT/runs/`` (`rerank.generate.prepare_candidates`,
the same machinery as ``cmirm generate --search``), reusing candidates across budgets where the
method allows:

- ``best-of-n``: one run of max(budgets) candidates per instruction; the point at budget N is the
  exact expected best-of-N (`rerank.scaling.scaling_curves`, order statistics), its compute N times
  the mean candidate's;
- ``noise`` with ``rounds`` left open: one run at the largest budget. Its first b candidates are
  exactly the search at budget b (``ask`` is deterministic and a round's pivot depends on earlier
  rounds only), so budget b selects among them and is charged their compute;
- anything else (``beam``: ``expand`` changes every step): one run per budget.

Per (method, budget) every instruction contributes the selected candidate's reward (each axis of
the selection scorer and the policy's composite; with an evaluation scorer, its axes too) and the
compute its search spent (pruned candidates included, with the selection scorer's seconds). The
rows are `rerank.search.curves.ComputeRow`s with bootstrap bands over instructions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cmirm_plugin.errors import ConfigError, check_count
from cmirm_plugin.records import Compute
from rerank.policies import Policy
from rerank.run_dir import folder_name_part
from rerank.run_records import CandidateView, in_run_order
from rerank.scaling import ALL, COMPOSITE, curve_axes, scaling_curves
from rerank.search import BestOfNSearch, NoiseSearch, SearchMethod, parse_search
from rerank.search.curves import ComputeRow, compute_curves, mean_compute


@dataclass(frozen=True)
class MethodRun:
    """One run directory of a method: the method as it runs there, and the budgets it answers."""

    label: str
    method: SearchMethod
    budgets: tuple[int, ...]
    out: Path


#: Longest folder name of a method's run under ``OUT/runs/`` (a longer spec is cut and ends in its hash).
RUN_NAME_CHARS = 80


def check_methods_budgets(methods: Sequence[SearchMethod], budgets: Sequence[int], *, from_run: bool) -> None:
    """The rule of ``scaling --methods``: it comes with ``--budgets`` (counts), and runs each method itself,
    so not ``--from`` a finished run. One-line `ConfigError`s naming the options."""
    if bool(methods) != bool(budgets):
        raise ConfigError("--methods and --budgets go together: give both (e.g. --methods best-of-n,beam:width=2,"
                          "segment=5 --budgets 4,8,16)")
    if methods and from_run:
        raise ConfigError("--methods runs each method: give --prompts, not --from (--from reads one finished run of "
                          "any method without --methods)")
    for budget in budgets:
        check_count("--budgets", budget)


def parse_methods(text: str) -> list[SearchMethod]:
    """``--methods``: comma-separated search specs, whose own settings are comma-separated too
    (``best-of-n,beam:width=2,segment=5,noise:neighbors=4``: a new spec starts at a method name)."""
    from rerank.search.spec import METHODS

    names = "|".join(re.escape(name) for name in METHODS)
    parts = [p for p in re.split(rf",\s*(?=(?:{names})(?::|,|$))", text.strip()) if p.strip()]
    if not parts:
        raise ConfigError(f"--methods expects search specs such as best-of-n,beam:width=2,segment=5, got {text!r}")
    methods = [parse_search(part) for part in parts]
    labels = [m.spec() for m in methods]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--methods names a method twice: {text!r}")
    return methods


def plan_runs(methods: Sequence[SearchMethod], budgets: Sequence[int], root: Path) -> list[MethodRun]:
    """The run directories under ``root/runs`` (see the module docstring); a budget a method cannot spend
    is a `ConfigError` naming both."""
    budgets = tuple(sorted(set(budgets)))
    runs = []
    for method in methods:
        label = method.spec()
        if isinstance(method, BestOfNSearch) or (isinstance(method, NoiseSearch) and method.rounds is None):
            for budget in budgets:
                method.for_budget(budget)    # each must fit (noise: a multiple of neighbors)
            runs.append(MethodRun(label, method.for_budget(budgets[-1]), budgets, root / "runs" / folder_name_part(label, RUN_NAME_CHARS)))
        else:
            runs += [MethodRun(label, method.for_budget(b), (b,), root / "runs" / f"{folder_name_part(label, RUN_NAME_CHARS)}_b{b}")
                     for b in budgets]
    return runs


def finished_run(method: SearchMethod, out: Path) -> MethodRun:
    """A finished run of ``method`` (``--from``) as a `MethodRun`: noise answers every whole round's budget."""
    budget = method.budget()
    budgets = tuple(range(method.neighbors, budget + 1, method.neighbors)) if isinstance(method, NoiseSearch) \
        else (budget,)
    return MethodRun(method.spec(), method, budgets, out)


def _values(views: Sequence[CandidateView], scorer: str, axes: tuple[str, ...], policy: Policy | None) -> np.ndarray:
    """``[candidates, axes (+ composite)]`` of ``scorer``'s scores (the composite when ``policy`` is given)."""
    matrix = np.array([v.scores[scorer].as_tuple() for v in views], dtype=np.float64)
    return matrix if policy is None else np.column_stack([matrix, policy.composite(matrix, axes)])


@dataclass
class Reported:
    """A scorer whose rewards the rows report: its label, axes, and the columns (axes, maybe the composite)."""

    label: str
    axes: tuple[str, ...]
    columns: tuple[str, ...]


def reported_scorers(policy: Policy, selection: tuple[str, tuple[str, ...]],
                     evaluation: tuple[str, tuple[str, ...]] | None) -> list[Reported]:
    """The selection scorer (its axes and the composite), then the evaluation scorer (`curve_axes`)."""
    out = [Reported(selection[0], selection[1], (*selection[1], COMPOSITE))]
    if evaluation is not None:
        out.append(Reported(evaluation[0], evaluation[1], curve_axes(policy, evaluation[1])))
    return out


def search_rows(run: MethodRun, views: Sequence[CandidateView], scorer: str, axes: tuple[str, ...], policy: Policy,
                reported: Sequence[Reported], *, n_boot: int, ci: float, seed: int) -> list[ComputeRow]:
    """Rows of a search run at each of its budgets: per instruction, the best of its first ``budget``
    candidates (every one, for a run at one budget) under ``policy``, and what they cost."""
    by_instruction: dict[str, list[CandidateView]] = {}
    for view in in_run_order(views):
        by_instruction.setdefault(view.instruction.id, []).append(view)
    rows = []
    for report in reported:
        for c, column in enumerate(report.columns):
            outcomes: dict[tuple[str, int], list[tuple[float, Compute]]] = {}
            for budget in run.budgets:
                limit = budget if len(run.budgets) > 1 else None
                results = []
                for members in by_instruction.values():
                    spent = [v for v in members if limit is None or v.index < limit]
                    pool = [v for v in spent if v.selectable(scorer, report.label)]
                    if not pool:
                        continue
                    best = pool[int(policy.order(_values(pool, scorer, axes, None), axes)[0])]
                    value = _values([best], report.label, report.axes, policy if column == COMPOSITE else None)[0]
                    spend = Compute.sum([v.compute_with(scorer) for v in spent if v.compute is not None])
                    results.append((float(value[c if column != COMPOSITE else -1]), spend))
                if not results:
                    raise ConfigError(f"{run.out}: no instruction has a scored candidate at budget {budget}")
                outcomes[(run.label, budget)] = results
            rows += compute_curves(outcomes, reward=report.label, axis=column, n_boot=n_boot, ci=ci, seed=seed)
    return rows


def best_of_n_rows(views: Sequence[CandidateView], scorer: str, axes: tuple[str, ...], policy: Policy,
                   reported: Sequence[Reported], budgets: Sequence[int], *, n_boot: int, ci: float,
                   seed: int) -> list[ComputeRow]:
    """Best-of-N rows: exact expected reward at each budget N, compute N times the mean candidate's."""
    pool = [v for v in in_run_order(views)
            if v.selectable(*(r.label for r in reported))]
    if not pool:
        raise ConfigError("best-of-n: no candidate has scores from every reported scorer")
    ids = [v.instruction.id for v in pool]
    selection = _values(pool, scorer, axes, None)
    mean = mean_compute([v.compute_with(scorer) for v in pool])
    rows = []
    for report in reported:
        evaluation = _values(pool, report.label, report.axes, None)
        curves = scaling_curves(selection, ids, {v.instruction.id: v.instruction.modality for v in pool}, policy,
                                evaluation_scores=evaluation, selection_scorer=scorer, evaluation_scorer=report.label,
                                selection_axes=axes, evaluation_axes=report.axes, ns=budgets, n_boot=n_boot, ci=ci,
                                seed=seed)
        for row in curves.where(k=1, modality=ALL):
            spent = {name: None if value is None else value * row.n for name, value in mean.items()}
            rows.append(ComputeRow("best-of-n", row.n, report.label, row.mean, row.ci_low, row.ci_high,
                                   row.n_instructions, **spent, axis=row.axis))
    return rows


def rows_for_plot(rows: Sequence[ComputeRow], scorer: str) -> list[ComputeRow]:
    """The rows ``compute.png`` draws for ``scorer``: its composite (else its first axis)."""
    mine = [r for r in rows if r.reward == scorer]
    axis = COMPOSITE if any(r.axis == COMPOSITE for r in mine) else mine[0].axis
    return [r for r in mine if r.axis == axis]

