"""CMI-RewardBench metrics over result rows, as the official evaluator computes them (spec §5.5).

`compute_metrics` takes plain dicts (results.jsonl records, or rows a trainer builds in memory)
and touches no file, so training and ``cmirm bench-metrics`` share it. Correlations drop rows whose
truth or prediction is not numeric (SRCC = Spearman with average ranks, LCC = Pearson, K-Tau =
Kendall tau-b); accuracies drop rows whose truth or predicted label is unknown and give 0.5
credit when either side is ``both``. A metric over fewer than 2 (correlation) or 0 (accuracy)
rows is None.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import numpy as np
from scipy import stats

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.records import MODALITIES
from train.bench import schema as S
from train.bench.labels import credit, normalise_label
from train.bench.schema import to_number

Row = Mapping[str, Any]
Metric = dict[str, Any]


@dataclass(frozen=True)
class MetricsConfig:
    """What `compute_metrics` reports; the fields mirror the official ``eval_benchmark.yaml`` (§5.6).

    ``split`` keeps only rows whose ``split`` equals it (None keeps every row). Duration bins are
    half-open ``[l, r)`` except the last, which is closed; they need the ``bench_duration_a/_b``
    fields the runner records.
    """

    split: str | None = "test"
    include_lcc: bool = True
    include_k_tau: bool = True
    musicarena_by_month: bool = True
    cmi_by_confidence: bool = True
    cmi_by_modality: bool = True
    by_duration: bool = False
    duration_bins: tuple[float, ...] = (10.0, 30.0, 60.0, 120.0, 500.0)

    def __post_init__(self) -> None:
        bins = tuple(float(b) for b in self.duration_bins)
        if len(bins) < 2 or any(lo >= hi for lo, hi in zip(bins, bins[1:])):
            raise ConfigError(f"duration_bins must be at least two increasing edges, got {list(self.duration_bins)}")
        object.__setattr__(self, "duration_bins", bins)

    def to_dict(self) -> dict[str, Any]:
        """The config in the layout of the official YAML (stored in metrics.json)."""
        return {
            "filter": {"split": self.split},
            "metrics": {"include_lcc": self.include_lcc, "include_k_tau": self.include_k_tau},
            "groups": {"musicarena_by_month": self.musicarena_by_month,
                       "cmi_by_confidence": self.cmi_by_confidence,
                       "cmi_by_modality": self.cmi_by_modality,
                       "by_duration": self.by_duration, "duration_bin": list(self.duration_bins)},
        }


@dataclass(frozen=True)
class Task:
    """One summary metric: a truth column against a prediction column within one subset."""

    dataset: str
    task: str
    truth: str
    prediction: str
    kind: Literal["correlation", "accuracy"]

    @property
    def confidence(self) -> str:
        """The CMI-Pref confidence column of this task's label."""
        return S.CONFIDENCE_PREFIX + self.truth


#: The summary table (§5.5). MusicEval's alignment MOS is not evaluated, as in the official code.
SUMMARY_TASKS = (
    Task("PAM", "musicality", S.MUSICALITY, S.PRED_MUSICALITY, "correlation"),
    Task("PAM", "alignment", S.ALIGNMENT, S.PRED_ALIGNMENT, "correlation"),
    Task("MusicEval", "musicality", S.MUSICALITY, S.PRED_MUSICALITY, "correlation"),
    Task("MusicArena", "preference", S.PREFERENCE, S.PRED_PREFERENCE, "accuracy"),
    Task("CMI-Pref", "alignment", S.PREF_ALIGNMENT, S.PRED_PREF_ALIGNMENT, "accuracy"),
    Task("CMI-Pref", "musicality", S.PREF_MUSICALITY, S.PRED_PREF_MUSICALITY, "accuracy"),
)
_CMI_TASKS = tuple(t for t in SUMMARY_TASKS if t.dataset == "CMI-Pref")
_ARENA = next(t for t in SUMMARY_TASKS if t.dataset == "MusicArena")


def correlations(truth: Sequence[Any], prediction: Sequence[Any], *, lcc: bool = True,
                 k_tau: bool = True) -> Metric:
    """``{n, SRCC[, LCC][, K-Tau]}`` over the pairs where both values are numeric."""
    x = np.array([to_number(v) for v in truth], dtype=np.float64)
    y = np.array([to_number(v) for v in prediction], dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    wanted: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {"SRCC": stats.spearmanr}
    if lcc:
        wanted["LCC"] = stats.pearsonr
    if k_tau:
        wanted["K-Tau"] = stats.kendalltau  # tau-b, what pandas' Series.corr uses
    out: Metric = {"n": int(x.size)}
    for name, fn in wanted.items():
        out[name] = None
        if x.size >= 2:
            with warnings.catch_warnings():  # constant input -> NaN, reported as None
                warnings.simplefilter("ignore", stats.ConstantInputWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                value = float(fn(x, y).statistic)
            out[name] = None if math.isnan(value) else value
    return out


def accuracy(truth: Sequence[Any], prediction: Sequence[Any]) -> Metric:
    """``{n, ACC}`` over the pairs whose two labels both normalise to a known label."""
    credits = []
    for t, p in zip(truth, prediction):
        t, p = normalise_label(t), normalise_label(p)
        if t is not None and p is not None:
            credits.append(credit(t, p))
    return {"n": len(credits), "ACC": float(np.mean(credits)) if credits else None}


def evaluate(task: Task, rows: Sequence[Row], config: MetricsConfig, *, full: bool = True) -> Metric:
    """The task's metric over ``rows``; ``full=False`` leaves out LCC and K-Tau (duration bins)."""
    truth = [r.get(task.truth) for r in rows]
    prediction = [r.get(task.prediction) for r in rows]
    if task.kind == "accuracy":
        return accuracy(truth, prediction)
    return correlations(truth, prediction, lcc=full and config.include_lcc, k_tau=full and config.include_k_tau)


def _grouped(rows: Iterable[Row], key: Callable[[Row], Any], order: Sequence[Any] = ()) -> list[tuple[Any, list[Row]]]:
    """Rows by ``key`` (None keys dropped): the values of ``order`` first, then the others sorted."""
    groups: dict[Any, list[Row]] = {}
    for row in rows:
        value = key(row)
        if value is not None:
            groups.setdefault(value, []).append(row)
    extra = sorted((v for v in groups if v not in order), key=str)
    return [(v, groups[v]) for v in (*order, *extra) if v in groups]


def _detail(task: Task, group_key: str, group_value: Any, metric: Metric, ref: str | None = None) -> Metric:
    row: Metric = {"dataset": task.dataset, "task": task.task, "group_key": group_key,
                   "group_value": group_value, "ref_category": ref, "n": metric["n"]}
    row.update({k: v for k, v in metric.items() if k in ("ACC", "SRCC")})
    return row


def _confidence_group(value: Any) -> str | None:
    number = to_number(value)
    if math.isnan(number):
        return None
    return "<3" if number < 3 else "=3" if number == 3 else ">3"


def _row_duration(row: Row) -> float | None:
    """Mean of the A and B clip lengths (A alone for single-clip rows); None if one is unknown."""
    names = (S.DURATION_A, S.DURATION_B) if row.get(S.AUDIO_B) else (S.DURATION_A,)
    values = [to_number(row.get(name)) for name in names]
    return None if any(math.isnan(v) for v in values) else float(np.mean(values))


def _bin_labels(edges: tuple[float, ...]) -> list[str]:
    """``[l, r)`` for every bin but the last, which is closed: ``[l, r]``."""
    last = len(edges) - 2
    return [f"[{lo:g}, {hi:g}" + ("]" if i == last else ")") for i, (lo, hi) in enumerate(zip(edges, edges[1:]))]


def _duration_bin(seconds: float | None, edges: tuple[float, ...]) -> str | None:
    if seconds is None:
        return None
    labels = _bin_labels(edges)
    for i, (lo, hi) in enumerate(zip(edges, edges[1:])):
        if lo <= seconds < hi or (i == len(labels) - 1 and seconds == hi):
            return labels[i]
    return None


def _modality(row: Row) -> str:
    return row["_modality"]


def _ref(row: Row) -> str | None:
    return S.ref_category(row["_modality"])


def _type(row: Row) -> str | None:
    return S.modality_type(row["_modality"])


def _cmi_details(cmi: list[Row], config: MetricsConfig) -> list[Metric]:
    """The CMI-Pref groups: by modality, by confidence x ref category, by ref subset, by modality type."""
    detail: list[Metric] = []
    for task in _CMI_TASKS:
        if config.cmi_by_modality:
            for value, group in _grouped(cmi, _modality, MODALITIES):
                detail.append(_detail(task, "modality", value, evaluate(task, group, config)))
        if config.cmi_by_confidence:
            by_conf = _grouped(cmi, lambda r, t=task: _confidence_group(r.get(t.confidence)), ("<3", "=3", ">3"))
            for value, group in by_conf:
                for ref, sub in _grouped(group, _ref, ("no_ref", "ref")):
                    detail.append(_detail(task, "confidence", value, evaluate(task, sub, config), ref))
                detail.append(_detail(task, "confidence", value, evaluate(task, group, config), "all"))
        for value, group in _grouped(cmi, _ref, ("no_ref", "ref")):
            detail.append(_detail(task, "ref_subset", value, evaluate(task, group, config)))
        for value, group in _grouped(cmi, _type, ("instru", "vocal")):
            detail.append(_detail(task, "modality_type", value, evaluate(task, group, config)))
    return detail


def compute_metrics(rows: Iterable[Row], config: MetricsConfig = MetricsConfig()) -> dict[str, Any]:
    """``{config, summary, detail}`` for result rows (the layout of the official metrics.json).

    Each row's subset is recomputed from ``source`` (§5.2) and rows of other splits are dropped.
    ``summary`` has one entry per task of a subset present in the rows: ``dataset, task, n`` and
    SRCC/LCC/K-Tau or ACC. ``detail`` entries add ``group_key`` (``month``, ``modality``,
    ``confidence``, ``ref_subset``, ``modality_type``, ``duration``), ``group_value`` and
    ``ref_category`` (confidence groups only).
    """
    kept = [{**row, "_subset": S.subset_of(row)} for row in rows
            if config.split is None or row.get(S.SPLIT) == config.split]
    by_subset = {name: [r for r in kept if r["_subset"] == name] for name in S.SUBSETS}
    for row in by_subset["CMI-Pref"]:
        row["_modality"] = S.modality_group(row)

    summary = []
    for task in SUMMARY_TASKS:
        if by_subset[task.dataset]:
            summary.append({"dataset": task.dataset, "task": task.task,
                            **evaluate(task, by_subset[task.dataset], config)})

    detail: list[Metric] = []
    if config.musicarena_by_month:
        for month, group in _grouped(by_subset["MusicArena"], lambda r: S.musicarena_month(r.get(S.AUDIO_A))):
            detail.append(_detail(_ARENA, "month", month, evaluate(_ARENA, group, config)))
    detail.extend(_cmi_details(by_subset["CMI-Pref"], config))
    if config.by_duration:
        bins = _bin_labels(config.duration_bins)

        def duration_bin(row: Row) -> str | None:
            return _duration_bin(_row_duration(row), config.duration_bins)

        for task in SUMMARY_TASKS:
            for value, group in _grouped(by_subset[task.dataset], duration_bin, bins):
                detail.append(_detail(task, "duration", value, evaluate(task, group, config, full=False)))
    return {"config": config.to_dict(), "summary": summary, "detail": detail}
