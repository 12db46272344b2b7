"""Inference-time scaling curves: the exact expected score of best-of-N and top-k-of-N.

Given a pool of ``M`` scored candidates per instruction, what would a user have got by generating
only ``N <= M`` of them and keeping the best? Instead of subsampling at random, the expectation
over all ``C(M, N)`` subsets is computed exactly from order statistics.

Rank the pool by the *selection* scorer S, best first: position ``p = 0 .. M-1`` (ties in S are
broken by the lower candidate index, the rule of `rerank.policies.order_desc`). A uniformly random
N-subset contains candidate ``p`` among its top ``k`` exactly when the subset contains ``p`` and
at most ``k - 1`` of the ``p`` candidates ranked above it, so::

    w_k(p) = sum_{i=0}^{k-1} C(p, i) * C(M-1-p, N-1-i) / C(M, N)        (sum_p w_k(p) = k)

For ``k = 1`` this is the classical order-statistics weight: with ``j = M - p`` the rank from
the bottom, ``P(the j-th smallest is the max of a random N-subset) = C(j-1, N-1) / C(M, N)``.
The reported value is the *evaluation* scorer E of the selected candidates::

    E[mean of E over the top k of N] = (1/k) * sum_p w_k(p) * E[candidate at position p]

S and E may differ (select by alignment and report musicality, or select with one model and
evaluate with another), which is how reward over-optimisation shows up. The binomials are
evaluated in log space (``scipy.special.gammaln``), so pools of thousands are stable.

`scaling_curves` applies this per instruction for ``N = 1, 2, 4, ...`` and averages over
instructions with a percentile bootstrap band, overall and per modality. The API takes arrays
and returns dataclasses; `write_curve_csv` / `write_curve_json` write them (plots: `rerank.plots`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.special import gammaln

from cmirm_plugin.errors import CmirmError, check_count
from cmirm_plugin.records import AXES, MODALITIES
from rerank.policies import Policy, check_scores, group_by_instruction, order_desc

#: The curve "axis" of the policy's composite (reported next to each score axis of the evaluation scorer).
COMPOSITE = "composite"

#: The pseudo-modality that pools every instruction.
ALL = "all"

#: Columns of `curve.csv` (and keys of each row in `curve.json`), in order.
CURVE_COLUMNS = (
    "n", "k", "axis", "modality", "mean", "ci_low", "ci_high", "n_instructions",
    "selection_scorer", "evaluation_scorer", "policy",
    "method", "audio_seconds", "work_units", "model_evals", "generator_seconds", "total_seconds",
)
#: The compute columns of a row: what making its N candidates costs per instruction (`ScalingCurves.with_compute`).
COMPUTE_COLUMNS = CURVE_COLUMNS[-5:]


# ----------------------------------------------------------------------------------------------
# Exact order-statistics estimators


def n_grid(m: int) -> list[int]:
    """The N values of a curve over a pool of ``m``: powers of two up to ``m``, plus ``m`` itself."""
    m = check_count("pool size m", m)
    grid = [2**e for e in range(m.bit_length()) if 2**e <= m]
    return grid if grid[-1] == m else [*grid, m]


def _log_comb(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log C(a, b) elementwise; -inf where the binomial is 0 (b < 0 or b > a)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    valid = (b >= 0) & (b <= a)
    a_, b_ = np.where(valid, a, 0.0), np.where(valid, b, 0.0)
    return np.where(valid, gammaln(a_ + 1) - gammaln(b_ + 1) - gammaln(a_ - b_ + 1), -np.inf)


@lru_cache(maxsize=256)
def _inclusion_weights(m: int, n: int, k: int) -> np.ndarray:
    p = np.arange(m)
    log_total = _log_comb(m, n)
    weights = np.zeros(m)
    for i in range(k):  # k positive terms, so summing them cannot cancel
        weights += np.exp(_log_comb(p, i) + _log_comb(m - 1 - p, n - 1 - i) - log_total)
    weights.flags.writeable = False
    return weights


def inclusion_weights(m: int, n: int, k: int = 1) -> np.ndarray:
    """``w_k(p)`` for ``p = 0 .. m-1``: the probability that the candidate ranked ``p``-th (0 = best)
    of an ``m``-pool is among the top ``k`` of a uniformly random ``n``-subset.

    ``w_k(p) = sum_{i<k} C(p, i) C(m-1-p, n-1-i) / C(m, n)``; for ``k = 1``, ``C(m-1-p, n-1) / C(m, n)``.
    Requires ``1 <= k <= n <= m``. The returned array is read-only (results are cached).
    """
    m, n, k = check_count("m", m), check_count("n", n), check_count("k", k)
    if n > m:
        raise CmirmError(f"n={n} exceeds the pool size m={m}")
    if k > n:
        raise CmirmError(f"k={k} exceeds n={n}: cannot keep more candidates than were drawn")
    return _inclusion_weights(m, n, k)


def _expected_from_ranking(ranking: np.ndarray, evaluate: np.ndarray, n: int, k: int) -> np.ndarray:
    """Expected mean of ``evaluate`` over the top ``k`` of a random ``n``-subset, given the pool ranking."""
    return inclusion_weights(len(ranking), n, k) @ evaluate[ranking] / k


def expected_top_k_of_n(select: np.ndarray, evaluate: np.ndarray, n: int, k: int = 1) -> float | np.ndarray:
    """Exact expected mean of E over the top ``k`` (by S) of a random ``n``-subset of the pool.

    ``select`` is S, one value per candidate ``[M]`` (higher is better; ties go to the lower
    index); ``evaluate`` is E, ``[M]`` or ``[M, d]`` (then the result is ``[d]``). Computed as
    ``(1/k) sum_p w_k(p) E[p]`` with the weights of `inclusion_weights`.
    """
    select = np.asarray(select, dtype=np.float64)
    evaluate = np.asarray(evaluate, dtype=np.float64)
    if select.ndim != 1 or len(select) == 0:
        raise CmirmError(f"select must be a non-empty 1-D array (one value per candidate), got shape {select.shape}")
    if evaluate.ndim not in (1, 2) or len(evaluate) != len(select):
        raise CmirmError(f"evaluate must have shape [{len(select)}] or [{len(select)}, d], got {evaluate.shape}")
    for name, array in (("select", select), ("evaluate", evaluate)):
        bad = np.argwhere(~np.isfinite(array))
        if len(bad):
            raise CmirmError(f"{name} has a non-finite value at candidate {int(bad[0][0])}")
    result = _expected_from_ranking(order_desc(select), evaluate, n, k)
    return float(result) if result.ndim == 0 else result


def expected_best_of_n(select: np.ndarray, evaluate: np.ndarray, n: int) -> float | np.ndarray:
    """Exact expected E of the best-by-S candidate of a random ``n``-subset: `expected_top_k_of_n` with k = 1.

    The weight of the ``j``-th smallest by S is ``C(j-1, n-1) / C(M, n)``.
    """
    return expected_top_k_of_n(select, evaluate, n, 1)


# ----------------------------------------------------------------------------------------------
# Bootstrap over instructions


def check_bootstrap(n_boot: int, ci: float) -> int:
    """``n_boot`` after checking it is >= 1 and that ``ci`` is a level strictly between 0 and 1."""
    if isinstance(ci, bool) or not isinstance(ci, (int, float, np.floating)) or not 0 < ci < 1:
        raise CmirmError(f"ci must be a level strictly between 0 and 1 (e.g. 0.95), got ci={ci}")
    return check_count("n_boot", n_boot)


def bootstrap_ci(
    values: np.ndarray, *, n_boot: int, ci: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over rows of ``values [n, F]`` and its percentile bootstrap interval per column.

    Rows (instructions) are resampled with replacement ``n_boot`` times; the same resamples are
    used for every column, so bands of different N and axes are paired. Returns
    ``(mean, low, high)``, each ``[F]``, with ``low``/``high`` the ``(1 -/+ ci) / 2`` percentiles.
    """
    n_boot = check_bootstrap(n_boot, ci)
    n = len(values)
    draws = rng.integers(0, n, size=(n_boot, n))
    counts = np.bincount((draws + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n)
    means = counts.reshape(n_boot, n) @ values / n
    low, high = np.percentile(means, [50 * (1 - ci), 50 * (1 + ci)], axis=0)
    return values.mean(axis=0), low, high


# ----------------------------------------------------------------------------------------------
# Curves


@dataclass(frozen=True)
class CurveRow:
    """One point of a curve: the mean over ``n_instructions`` instructions and its bootstrap band.

    ``method`` is the search that made the candidates (these curves are best-of-N's); the compute
    columns (`COMPUTE_COLUMNS`) are N times a candidate's mean compute, None until
    `ScalingCurves.with_compute` fills them or where some candidate's compute lacks the field.
    """

    n: int
    k: int
    axis: str
    modality: str
    mean: float
    ci_low: float
    ci_high: float
    n_instructions: int
    selection_scorer: str
    evaluation_scorer: str
    policy: str
    method: str = "best-of-n"
    audio_seconds: float | None = None
    work_units: float | None = None
    model_evals: float | None = None
    generator_seconds: float | None = None
    total_seconds: float | None = None


@dataclass(frozen=True)
class ScalingCurves:
    """All rows of a scaling analysis plus the settings that produced them."""

    rows: tuple[CurveRow, ...]
    policy: str
    selection_scorer: str
    evaluation_scorer: str
    ns: tuple[int, ...]
    ks: tuple[int, ...]
    ci: float
    n_boot: int
    seed: int
    axes: tuple[str, ...] = (*AXES, COMPOSITE)

    def where(self, *, k: int | None = None, axis: str | None = None, modality: str | None = None) -> list[CurveRow]:
        """The rows matching every given field, in stored order (modality, k, axis, then N)."""
        return [row for row in self.rows
                if (k is None or row.k == k) and (axis is None or row.axis == axis)
                and (modality is None or row.modality == modality)]

    @property
    def modalities(self) -> list[str]:
        """Modalities with rows, ``all`` first."""
        return list(dict.fromkeys(row.modality for row in self.rows))

    def warnings(self) -> list[str]:
        """What a reader must know about these curves: a bootstrap band over fewer than 2 instructions has
        zero width (resampling one instruction always gives it back), so it says nothing about spread."""
        thin = {row.modality: row.n_instructions for row in self.rows if row.n_instructions < 2}
        if not thin:
            return []
        groups = ", ".join(f"{modality} ({count} instruction)" for modality, count in thin.items())
        return [f"bootstrap bands need >= 2 instructions; zero-width band for {groups}: add instructions for a real "
                "interval"]

    def with_compute(self, per_candidate: Mapping[str, float | None]) -> "ScalingCurves":
        """These curves with every row's compute columns set to N times ``per_candidate`` (a candidate's mean
        compute, keyed by `COMPUTE_COLUMNS`; None stays None): best-of-N at N spends N candidates."""
        unknown = set(per_candidate) - set(COMPUTE_COLUMNS)
        if unknown:
            raise CmirmError(f"unknown compute column(s) {sorted(unknown)}; expected {list(COMPUTE_COLUMNS)}")
        rows = tuple(replace(row, **{name: None if value is None else value * row.n
                                     for name, value in per_candidate.items()}) for row in self.rows)
        return replace(self, rows=rows)

    def to_dict(self) -> dict[str, Any]:
        """The `curve.json` document: settings (with `warnings`), column names and rows."""
        settings = {key: value for key, value in asdict(self).items() if key != "rows"}
        settings["warnings"] = self.warnings()
        return {"settings": settings, "columns": list(CURVE_COLUMNS), "rows": [asdict(row) for row in self.rows]}


def _instruction_modalities(groups: Mapping[str, np.ndarray], modalities: Mapping[str, str]) -> dict[str, str]:
    result = {}
    for instruction_id in groups:
        if instruction_id not in modalities:
            raise CmirmError(f"no modality given for instruction {instruction_id!r}")
        modality = modalities[instruction_id]
        if modality not in MODALITIES:
            raise CmirmError(
                f"instruction {instruction_id!r} has modality {modality!r}; valid: {', '.join(MODALITIES)}"
            )
        result[instruction_id] = modality
    return result


def check_ks(ks: Sequence[int]) -> list[int]:
    """The distinct k values of top-k-of-N curves, sorted; each must be an integer >= 1."""
    checked = sorted({check_count("k", k) for k in ks})
    if not checked:
        raise CmirmError("ks is empty: give at least one k")
    return checked


def check_seed(seed: int) -> int:
    """The bootstrap seed, after checking it is a non-negative integer."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise CmirmError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_grid(
    ns: Sequence[int] | None, ks: Sequence[int], groups: Mapping[str, np.ndarray]
) -> tuple[list[int], list[int]]:
    """Sorted, validated N and k values; the default N grid follows the smallest pool."""
    smallest = min(groups, key=lambda key: len(groups[key]))
    m_min = len(groups[smallest])
    if ns is None:
        ns = n_grid(m_min)
    ns = sorted({check_count("N", n) for n in ns})
    if not ns:
        raise CmirmError("ns is empty: give at least one N")
    if ns[-1] > m_min:
        raise CmirmError(f"N={ns[-1]} exceeds the pool of instruction {smallest!r} ({m_min} candidates); "
                         f"every instruction needs N <= its pool size")
    ks = check_ks(ks)
    if ks[-1] > ns[-1]:
        raise CmirmError(f"k={ks[-1]} exceeds the largest N={ns[-1]}")
    return ns, ks


def curve_axes(policy: Policy, evaluation_axes: Sequence[str]) -> tuple[str, ...]:
    """What the curves report: each evaluation axis, and the policy's composite of the evaluation
    scores when the policy applies to them (it names no axis the evaluation scorer lacks)."""
    evaluation_axes = tuple(evaluation_axes)
    applies = all(axis in evaluation_axes for axis in policy.axes_used())
    return evaluation_axes + ((COMPOSITE,) if applies else ())


def _instruction_values(
    selection: np.ndarray, evaluation: np.ndarray, groups: Mapping[str, np.ndarray],
    policy: Policy, ns: Sequence[int], ks: Sequence[int], selection_axes: tuple[str, ...],
    evaluation_axes: tuple[str, ...], reported_axes: tuple[str, ...],
) -> np.ndarray:
    """``values[i, n, k, axis]``: instruction i's exact expected value (0 where k > N, never reported)."""
    values = np.zeros((len(groups), len(ns), len(ks), len(reported_axes)))
    for i, positions in enumerate(groups.values()):
        ranking = policy.order(selection[positions], selection_axes)
        pool = evaluation[positions]
        columns = [pool] + ([policy.composite(pool, evaluation_axes)] if COMPOSITE in reported_axes else [])
        reported = np.column_stack(columns)
        for a, n in enumerate(ns):
            for b, k in enumerate(ks):
                if k <= n:
                    values[i, a, b] = _expected_from_ranking(ranking, reported, n, k)
    return values


def scaling_curves(
    selection_scores: np.ndarray,
    instruction_ids: Sequence[str],
    modalities: Mapping[str, str],
    policy: Policy,
    *,
    evaluation_scores: np.ndarray | None = None,
    selection_scorer: str = "cmirm",
    evaluation_scorer: str | None = None,
    selection_axes: Sequence[str] = AXES,
    evaluation_axes: Sequence[str] | None = None,
    ns: Sequence[int] | None = None,
    ks: Sequence[int] = (1,),
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> ScalingCurves:
    """Exact best-of-N / top-k-of-N curves, overall and per modality, with bootstrap bands.

    ``selection_scores [C, len(selection_axes)]`` and ``instruction_ids [C]`` describe a flat list
    of candidates; each instruction's candidates form its pool (ties go to the earlier candidate).
    ``policy`` ranks each pool by the selection scores; the reported values are the
    ``evaluation_scores`` (columns ``evaluation_axes``; default: the selection scores) of the
    selected candidates, per axis and for the policy's composite of the evaluation scores when the
    policy applies to them (`curve_axes`). ``modalities`` maps each instruction id to one of
    `MODALITIES`. Name the scorers for the output; ``evaluation_scorer`` is required when
    ``evaluation_scores`` is given.

    The selection in a subset is the full pool's ranking restricted to that subset. For
    ``axis`` and ``weighted`` policies this is exactly what the policy would do on the subset;
    ``zsum`` and ``pareto`` standardise (and ``lex`` forms tiers) over the whole pool instead of
    per subset, and a thresholded policy falls back to ineligible candidates when a subset has
    no eligible one. Policies' thresholds therefore act as a preference here, not a filter.

    ``ns`` defaults to `n_grid` of the smallest pool, so every instruction contributes to every
    point; an explicit N above some pool's size is an error. Rows with k > N are omitted.
    Bootstrap: ``n_boot`` resamples of the instructions of each modality, percentile interval at
    level ``ci``, from a generator seeded by ``(seed, modality)`` (same seed, same bands).
    """
    selection_axes = policy.check_axes(selection_axes)
    selection = check_scores(selection_scores, "selection_scores", selection_axes)
    if evaluation_scores is None:
        if evaluation_scorer not in (None, selection_scorer):
            raise CmirmError(f"evaluation_scorer={evaluation_scorer!r} given without evaluation_scores")
        evaluation, evaluation_scorer, evaluation_axes = selection, selection_scorer, selection_axes
    else:
        evaluation_axes = tuple(evaluation_axes if evaluation_axes is not None else selection_axes)
        evaluation = check_scores(evaluation_scores, "evaluation_scores", evaluation_axes)
        if len(evaluation) != len(selection):
            raise CmirmError(f"evaluation_scores has {len(evaluation)} rows, selection_scores {len(selection)}")
        if evaluation_scorer is None:
            raise CmirmError("name the evaluation_scorer that produced evaluation_scores (it goes into every row)")
    if len(instruction_ids) != len(selection):
        raise CmirmError(f"got {len(instruction_ids)} instruction ids for {len(selection)} score rows")
    check_seed(seed)
    check_bootstrap(n_boot, ci)
    groups = group_by_instruction(instruction_ids)
    modality_of = _instruction_modalities(groups, modalities)
    ns, ks = _check_grid(ns, ks, groups)

    reported_axes = curve_axes(policy, evaluation_axes)
    values = _instruction_values(selection, evaluation, groups, policy, ns, ks, selection_axes,
                                 tuple(evaluation_axes), reported_axes)
    modality_array = np.array([modality_of[key] for key in groups])
    spec = policy.spec()
    rows = []
    for group_number, modality in enumerate((ALL, *MODALITIES)):
        members = np.ones(len(groups), bool) if modality == ALL else modality_array == modality
        if not members.any():
            continue
        rng = np.random.default_rng([seed, group_number])
        flat = values[members].reshape(int(members.sum()), -1)
        mean, low, high = (part.reshape(values.shape[1:]) for part in bootstrap_ci(flat, n_boot=n_boot, ci=ci, rng=rng))
        for b, k in enumerate(ks):
            for c, axis in enumerate(reported_axes):
                for a, n in enumerate(ns):
                    if k <= n:
                        rows.append(CurveRow(
                            n, k, axis, modality, float(mean[a, b, c]), float(low[a, b, c]), float(high[a, b, c]),
                            int(members.sum()), selection_scorer, evaluation_scorer, spec,
                        ))
    return ScalingCurves(tuple(rows), spec, selection_scorer, evaluation_scorer, tuple(ns), tuple(ks),
                         float(ci), int(n_boot), int(seed), reported_axes)


# ----------------------------------------------------------------------------------------------
# Writers


def write_curve_csv(curves: ScalingCurves, path: str | Path) -> Path:
    """Write ``curves.rows`` as CSV with the header `CURVE_COLUMNS` (floats round-trip exactly)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(asdict(row) for row in curves.rows)
    return path


def write_curve_json(curves: ScalingCurves, path: str | Path) -> Path:
    """Write `ScalingCurves.to_dict` (settings, columns, rows) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(curves.to_dict(), indent=2) + "\n")
    return path
