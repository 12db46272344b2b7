"""Top-k selection policies: pure functions of a pool's score matrix.

A pool is the set of candidates generated for one instruction; its scores are an array
``[N, n_axes]`` whose columns are the scorer's ``axes`` (CMI-RM: ``AXES = (alignment,
musicality)``; higher is better on every axis). Policies name axes, and every method takes the
``axes`` of the matrix (default CMI-RM's); a policy naming an axis the scorer lacks is refused
(`Policy.check_axes`). A policy turns that matrix into

* ``order(scores)``: every candidate index, best first (a strict total order);
* ``composite(scores)``: one scalar per candidate (what scaling curves report as "composite",
  and what `rerank.rl.make_reward_fn` returns as the reward). ``pool_relative`` policies (zsum,
  pareto) standardise within the pool, so a candidate's composite depends on the other candidates;
  the others' composite is a function of its own scores alone;
* ``select(scores, k)`` (also ``policy(scores, k)``): the top ``k`` eligible candidates.

Tie-breaking is the same everywhere: candidates that the policy cannot tell apart keep their
input order, so the lower candidate index wins. Pass each pool in seed order and ties go to the
lower seed; the result never depends on hashing, sorting stability or a random draw.

Policies are small frozen dataclasses, so they compare by value and can be written to a manifest
through ``spec()`` and read back with `parse_policy` (the syntax of the CLI's ``--policy`` and
``--min`` options; see `parse_policy`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from cmirm_plugin.errors import CmirmError, ConfigError, check_count
from cmirm_plugin.records import AXES
from rerank import defaults

#: Policy names accepted by `parse_policy`, with an example of each.
POLICY_EXAMPLES = {
    "axis": "axis:musicality",
    "weighted": "weighted:alignment=0.5,musicality=0.5",
    "zsum": "zsum",
    "lex": "lex:alignment,musicality,tol=0.1",
    "pareto": "pareto",
}


# ----------------------------------------------------------------------------------------------
# Validation and ordering helpers


def default_policy(axes: Sequence[str]) -> str:
    """The policy used when none is given: `rerank.defaults.POLICY` for scorers with a ``musicality`` axis,
    the one axis of a single-axis scorer; other scorers need an explicit ``--policy``."""
    axes = tuple(axes)
    if "musicality" in axes:
        return defaults.POLICY
    if len(axes) == 1:
        return f"axis:{axes[0]}"
    raise ConfigError(f"give --policy: the scorer's axes are {', '.join(axes)} (e.g. 'axis:{axes[0]}' or 'zsum')")


def check_scores(scores: np.ndarray | Sequence[Sequence[float]], name: str = "scores",
                 axes: Sequence[str] = AXES) -> np.ndarray:
    """Return ``scores`` as a float64 array ``[N, len(axes)]`` after checking shape and finiteness.

    A pool needs at least one candidate, and every score must be finite: a NaN or infinite score
    would silently sort first or last, so it is rejected with the candidate index and axis named.
    """
    axes = tuple(axes)
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != len(axes):
        raise CmirmError(
            f"{name} must have shape [N, {len(axes)}] (columns {', '.join(axes)}); got shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise CmirmError(f"{name} is empty: a pool needs at least one candidate")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        row, col = (int(v) for v in bad[0])
        raise CmirmError(
            f"{name}[{row}, {axes[col]}] is {array[row, col]}: every candidate needs finite scores "
            f"({len(bad)} non-finite value(s) in all); re-score candidate {row} or drop it"
        )
    return array


def check_k(k: int, n: int, *, allow_fewer: bool = False) -> int:
    """Validate a top-k request against a pool of ``n`` candidates and return ``k`` as an int.

    ``k`` must be an integer >= 1. ``k > n`` is an error (asking for more candidates than were
    generated is usually a mistake) unless ``allow_fewer`` is set, in which case the selection
    simply returns all ``n``.
    """
    k = check_count("k", k)
    if k > n and not allow_fewer:
        raise CmirmError(f"k={k} exceeds the pool size N={n}; use k <= {n} or allow_fewer=True to take all {n}")
    return k


def check_k_of_n(k: int | None, n: int, k_option: str, n_source: str) -> int:
    """The one rule of the commands that keep k of N candidates per instruction (``generate``,
    ``rerank``, ``scaling``): ``k <= N``, refused before any work with a line naming both options.
    No ``k`` (none given) is `rerank.defaults.K`, or N when that is fewer.

    ``k_option`` is k's option (``-k``, ``--ks``), ``n_source`` where N comes from (``-n``, ``--n-max``, a run).
    """
    if k is None:
        return min(defaults.K, n)
    if k > n:
        raise ConfigError(f"{k_option} {k} exceeds the {n} candidate(s) per instruction ({n_source}): nothing can "
                          f"keep more than it has; give {k_option} <= {n} or more candidates")
    return k


def order_desc(*keys: np.ndarray) -> np.ndarray:
    """Indices sorted by ``keys[0]`` descending, then ``keys[1]`` descending, ..., then index ascending.

    This is the one tie-breaking rule of the package: among candidates equal on every key, the
    lower index comes first.
    """
    index = np.arange(len(keys[0]))
    # np.lexsort sorts by its *last* key first, ascending.
    return np.lexsort((index, *(-np.asarray(key, dtype=np.float64) for key in reversed(keys))))


def top_eligible(order: np.ndarray, eligible: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` eligible indices of ``order`` (a best-first ranking): what a policy selects."""
    return order[eligible[order]][:k]


def axis_index(axis: str, axes: Sequence[str] = AXES) -> int:
    """Column of ``axis`` in a score array with columns ``axes``; an unknown name lists the valid ones."""
    axes = tuple(axes)
    if axis not in axes:
        raise CmirmError(f"unknown axis {axis!r}; the scorer's axes are {', '.join(axes)}")
    return axes.index(axis)


def check_axis_name(axis: str) -> str:
    """``axis`` when it can name a score column (a non-empty word), else an error naming it."""
    if not isinstance(axis, str) or not axis or not all(c.isalnum() or c in "_-." for c in axis):
        raise CmirmError(f"axis names are words of letters, digits, '_', '-' or '.', got {axis!r}")
    return axis


def zscores(scores: np.ndarray) -> np.ndarray:
    """Each column of ``scores`` standardised within the pool: ``(x - mean) / std`` (ddof=0).

    A column whose values are all equal (including a pool of one) carries no information to rank
    by, so its z-scores are 0 rather than 0/0.
    """
    mean = scores.mean(axis=0)
    std = scores.std(axis=0)
    constant = scores.max(axis=0) == scores.min(axis=0)
    return np.where(constant, 0.0, (scores - mean) / np.where(constant, 1.0, std))


def pareto_fronts(scores: np.ndarray) -> np.ndarray:
    """Front index per candidate (0 = non-dominated), maximising every axis.

    Candidate a dominates b when a >= b on every axis and a > b on at least one. Front 0 is the
    non-dominated set; front t is non-dominated once fronts 0..t-1 are removed. Identical score
    rows never dominate each other, so they share a front.
    """
    ge = (scores[:, None, :] >= scores[None, :, :]).all(axis=2)
    gt = (scores[:, None, :] > scores[None, :, :]).any(axis=2)
    dominates = ge & gt  # dominates[a, b]: a dominates b
    n_dominators = dominates.sum(axis=0)
    front = np.full(len(scores), -1)
    remaining = np.ones(len(scores), dtype=bool)
    level = 0
    while remaining.any():
        current = remaining & (n_dominators == 0)
        front[current] = level
        remaining &= ~current
        n_dominators = n_dominators - dominates[current].sum(axis=0)
        n_dominators[~remaining] = -1  # never picked again
        level += 1
    return front


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CmirmError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise CmirmError(f"{what} must be finite, got {text!r}")
    return value


def _fmt(value: float) -> str:
    return repr(float(value))


# ----------------------------------------------------------------------------------------------
# Selection result


@dataclass(frozen=True)
class Selection:
    """The outcome of `Policy.select` on one pool.

    ``indices`` are the selected candidates, best first, and ``composite`` their composite values.
    ``len(indices) < k`` happens only when fewer than ``k`` candidates pass the thresholds (or
    with ``allow_fewer`` and ``k > N``); ``complete`` says whether it happened.
    """

    indices: np.ndarray
    composite: np.ndarray
    k: int
    n_eligible: int

    @property
    def complete(self) -> bool:
        """Whether ``k`` candidates were selected."""
        return len(self.indices) == self.k


# ----------------------------------------------------------------------------------------------
# Policies


class Policy(ABC):
    """A ranking of a pool's candidates; see the module docstring for the contract.

    Every method takes the ``axes`` (column names) of ``scores``; the default is CMI-RM's.
    """

    #: Whether the composite of a candidate depends on the rest of its pool (a within-pool statistic).
    pool_relative: ClassVar[bool] = False

    def axes_used(self) -> tuple[str, ...]:
        """The axes the policy names (none for policies that use every axis)."""
        return ()

    def check_axes(self, axes: Sequence[str]) -> tuple[str, ...]:
        """``axes`` as a tuple, after checking the policy names none that the scorer lacks."""
        axes = tuple(axes)
        unknown = [axis for axis in self.axes_used() if axis not in axes]
        if unknown:
            raise CmirmError(f"policy {self.spec()!r} names {', '.join(map(repr, unknown))} but the scorer's axes "
                             f"are {', '.join(axes)}")
        return axes

    def _checked(self, scores: np.ndarray, axes: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
        axes = self.check_axes(axes)
        return check_scores(scores, axes=axes), axes

    def order(self, scores: np.ndarray, axes: Sequence[str] = AXES) -> np.ndarray:
        """Every candidate index, best first (eligible candidates before ineligible ones)."""
        return self._order(*self._checked(scores, axes))

    def composite(self, scores: np.ndarray, axes: Sequence[str] = AXES) -> np.ndarray:
        """One scalar per candidate summarising the policy (reported by scaling curves)."""
        return self._composite(*self._checked(scores, axes))

    def eligible(self, scores: np.ndarray, axes: Sequence[str] = AXES) -> np.ndarray:
        """Which candidates may be selected (all of them unless the policy has thresholds)."""
        return self._eligible(*self._checked(scores, axes))

    def select(self, scores: np.ndarray, k: int, *, axes: Sequence[str] = AXES, allow_fewer: bool = False) -> Selection:
        """The top ``k`` eligible candidates, best first.

        Errors: non-finite or mis-shaped scores, ``k < 1``, ``k > N`` (unless ``allow_fewer``), an
        axis the scorer lacks. Fewer than ``k`` eligible candidates is not an error: the
        `Selection` holds all of them and ``complete`` is False.
        """
        scores, axes = self._checked(scores, axes)
        k = check_k(k, len(scores), allow_fewer=allow_fewer)
        eligible = self._eligible(scores, axes)
        chosen = top_eligible(self._order(scores, axes), eligible, k)
        return Selection(chosen, self._composite(scores, axes)[chosen], k, int(eligible.sum()))

    __call__ = select

    @abstractmethod
    def spec(self) -> str:
        """The policy string that `parse_policy` turns back into this policy."""

    def _eligible(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        return np.ones(len(scores), dtype=bool)

    @abstractmethod
    def _order(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray: ...

    @abstractmethod
    def _composite(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray: ...


@dataclass(frozen=True)
class AxisPolicy(Policy):
    """Rank by one axis. Composite: that axis."""

    axis: str

    def __post_init__(self) -> None:
        check_axis_name(self.axis)

    def axes_used(self) -> tuple[str, ...]:
        return (self.axis,)

    def spec(self) -> str:
        return f"axis:{self.axis}"

    def _composite(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        return scores[:, axis_index(self.axis, axes)]

    def _order(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        return order_desc(self._composite(scores, axes))


@dataclass(frozen=True)
class WeightedPolicy(Policy):
    """Rank by ``sum_a weights[a] * score[a]`` (raw scores, so the axes' scales matter).

    ``weights`` holds ``(axis, weight)`` pairs; an axis not listed has weight 0. Weights must be
    finite, >= 0 and not all zero. Composite: the weighted sum.
    """

    weights: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        pairs = []
        for axis, weight in self.weights:
            check_axis_name(axis)
            weight = float(weight)
            if not math.isfinite(weight) or weight < 0:
                raise CmirmError(f"weight of {axis} must be finite and >= 0, got {weight}")
            pairs.append((axis, weight))
        names = [axis for axis, _ in pairs]
        if len(set(names)) != len(names):
            raise CmirmError(f"weighted: an axis is given twice in {names}")
        if not any(weight for _, weight in pairs):
            raise CmirmError("weights are all zero: give at least one axis a positive weight")
        object.__setattr__(self, "weights", tuple(pairs))

    def axes_used(self) -> tuple[str, ...]:
        return tuple(axis for axis, _ in self.weights)

    def spec(self) -> str:
        return "weighted:" + ",".join(f"{axis}={_fmt(w)}" for axis, w in self.weights)

    def _composite(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        vector = np.zeros(len(axes))
        for axis, weight in self.weights:
            vector[axis_index(axis, axes)] = weight
        return scores @ vector

    def _order(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        return order_desc(self._composite(scores, axes))


@dataclass(frozen=True)
class ZSumPolicy(Policy):
    """Rank by the sum of per-pool z-scores of every axis, so no axis' scale or offset matters.

    Each axis is standardised within the pool (`zscores`: population std; a constant axis,
    e.g. any axis of a pool of one, contributes 0). Composite: the z-sum.
    """

    pool_relative: ClassVar[bool] = True

    def spec(self) -> str:
        return "zsum"

    def _composite(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        return zscores(scores).sum(axis=1)

    def _order(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        return order_desc(self._composite(scores, axes))


@dataclass(frozen=True)
class LexPolicy(Policy):
    """Lexicographic with a tolerance: the primary axis first, near-ties settled by the next axes.

    The order is built in tiers: tier 1 holds every candidate whose primary score is within
    ``tol`` of the best primary score (``primary >= best - tol``); those are ordered by the
    ``secondary`` axis (default: the scorer's other axes, in their order), then primary, then
    index. Tier 2 repeats this on the rest, and so on. ``tol`` is in raw primary-score units;
    ``tol=0`` is plain lexicographic order. Composite: the primary axis.
    """

    primary: str
    tol: float = 0.0
    secondary: str | None = None

    def __post_init__(self) -> None:
        check_axis_name(self.primary)
        if self.secondary is not None:
            check_axis_name(self.secondary)
            if self.secondary == self.primary:
                raise CmirmError(f"lex: the secondary axis repeats the primary {self.primary!r}")
        tol = float(self.tol)
        if not math.isfinite(tol) or tol < 0:
            raise CmirmError(f"lex tolerance must be finite and >= 0, got tol={self.tol}")
        object.__setattr__(self, "tol", tol)

    def axes_used(self) -> tuple[str, ...]:
        return (self.primary,) + ((self.secondary,) if self.secondary else ())

    def tie_breakers(self, axes: Sequence[str]) -> tuple[str, ...]:
        """The axes that order candidates within a tier."""
        return (self.secondary,) if self.secondary else tuple(a for a in axes if a != self.primary)

    def spec(self) -> str:
        second = f"{self.secondary}," if self.secondary else ""
        return f"lex:{self.primary},{second}tol={_fmt(self.tol)}"

    def _composite(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        return scores[:, axis_index(self.primary, axes)]

    def _order(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        primary = scores[:, axis_index(self.primary, axes)]
        others = [scores[:, axis_index(axis, axes)] for axis in self.tie_breakers(axes)]
        remaining = np.arange(len(scores))
        tiers = []
        while len(remaining):
            in_tier = primary[remaining] >= primary[remaining].max() - self.tol
            tier = remaining[in_tier]
            tiers.append(tier[order_desc(*(key[tier] for key in others), primary[tier])])
            remaining = remaining[~in_tier]
        return np.concatenate(tiers)


@dataclass(frozen=True)
class ParetoPolicy(Policy):
    """Non-dominated candidates first (`pareto_fronts`), then the next front, and so on.

    Within a front, candidates are ordered by the z-sum (see `ZSumPolicy`), then by index.
    Composite: the z-sum, the same scalar that breaks ties within a front.
    """

    pool_relative: ClassVar[bool] = True

    def spec(self) -> str:
        return "pareto"

    def _composite(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        return zscores(scores).sum(axis=1)

    def _order(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        return order_desc(-pareto_fronts(scores), self._composite(scores, axes))


@dataclass(frozen=True)
class Thresholded(Policy):
    """Another policy restricted to candidates with ``score[axis] >= minimum`` on given axes.

    ``minimums`` holds ``(axis, minimum)`` pairs. Candidates below a threshold are never selected;
    if fewer than ``k`` pass, `select` returns only those that pass. ``order`` still ranks every
    candidate (eligible ones first, each group in the base policy's order), so ranks stay defined
    for the whole pool. Composite: the base policy's.
    """

    base: Policy
    minimums: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        if isinstance(self.base, Thresholded):
            raise CmirmError("nest thresholds by listing all minimums in one Thresholded policy")
        if not self.minimums:
            raise CmirmError("Thresholded needs at least one (axis, minimum) pair")
        pairs = []
        for axis, minimum in self.minimums:
            check_axis_name(axis)
            minimum = float(minimum)
            if not math.isfinite(minimum):
                raise CmirmError(f"minimum for {axis} must be finite, got {minimum}")
            pairs.append((axis, minimum))
        axes = [axis for axis, _ in pairs]
        duplicated = sorted({axis for axis in axes if axes.count(axis) > 1})
        if duplicated:
            raise CmirmError(f"minimum for {', '.join(duplicated)} given more than once")
        order = {axis: i for i, axis in enumerate(AXES)}   # CMI-RM's axes first, the rest by name
        object.__setattr__(self, "minimums", tuple(sorted(pairs, key=lambda p: (order.get(p[0], len(order)), p[0]))))

    @property
    def pool_relative(self) -> bool:  # type: ignore[override]
        return self.base.pool_relative

    def axes_used(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.base.axes_used() + tuple(axis for axis, _ in self.minimums)))

    def spec(self) -> str:
        return self.base.spec() + ";min:" + ",".join(f"{axis}={_fmt(m)}" for axis, m in self.minimums)

    def _eligible(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        passes = np.ones(len(scores), dtype=bool)
        for axis, minimum in self.minimums:
            passes &= scores[:, axis_index(axis, axes)] >= minimum
        return passes

    def _composite(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        return self.base._composite(scores, axes)

    def _order(self, scores: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
        ranked = self.base._order(scores, axes)
        passes = self._eligible(scores, axes)[ranked]
        return np.concatenate([ranked[passes], ranked[~passes]])


# ----------------------------------------------------------------------------------------------
# Per-instruction application


def group_by_instruction(instruction_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Map each instruction id to the positions of its candidates, in input order.

    Instructions appear in order of first occurrence, so the grouping is deterministic.
    """
    groups: dict[str, list[int]] = {}
    for position, instruction_id in enumerate(instruction_ids):
        groups.setdefault(instruction_id, []).append(position)
    return {key: np.asarray(positions) for key, positions in groups.items()}


@dataclass(frozen=True)
class GroupRanking:
    """Per-candidate results of `rank_per_instruction`, aligned with its input.

    ``rank`` is 1-based within the candidate's instruction (1 = best; ineligible candidates rank
    after all eligible ones), ``eligible`` says whether the candidate passes the policy's
    thresholds, ``selected`` whether it is among the instruction's top ``k`` eligible candidates,
    and ``composite`` is the policy's composite (`Policy.composite`) within the candidate's pool.
    """

    rank: np.ndarray
    eligible: np.ndarray
    selected: np.ndarray
    composite: np.ndarray


def rank_per_instruction(
    instruction_ids: Sequence[str],
    scores: np.ndarray,
    policy: Policy,
    k: int,
    *,
    axes: Sequence[str] = AXES,
    allow_fewer: bool = False,
) -> GroupRanking:
    """Apply ``policy`` to each instruction's pool of a flat candidate list.

    ``instruction_ids[i]`` and ``scores[i]`` describe candidate ``i`` (columns ``axes``); the pools
    need not be contiguous. Ties within a pool go to the candidate that comes first in the input. A
    pool smaller than ``k`` is an error naming the instruction unless ``allow_fewer`` is set.
    """
    scores, axes = policy._checked(scores, axes)
    if len(instruction_ids) != len(scores):
        raise CmirmError(f"got {len(instruction_ids)} instruction ids for {len(scores)} score rows")
    rank = np.zeros(len(scores), dtype=np.int64)
    eligible = np.zeros(len(scores), dtype=bool)
    selected = np.zeros(len(scores), dtype=bool)
    composite = np.zeros(len(scores), dtype=np.float64)
    for instruction_id, positions in group_by_instruction(instruction_ids).items():
        pool = scores[positions]
        try:
            pool_k = check_k(k, len(pool), allow_fewer=allow_fewer)
        except CmirmError as exc:
            raise CmirmError(f"instruction {instruction_id!r}: {exc}") from None
        order, passes = policy._order(pool, axes), policy._eligible(pool, axes)
        rank[positions[order]] = np.arange(1, len(positions) + 1)
        eligible[positions] = passes
        selected[positions[top_eligible(order, passes, pool_k)]] = True
        composite[positions] = policy._composite(pool, axes)
    return GroupRanking(rank, eligible, selected, composite)


# ----------------------------------------------------------------------------------------------
# Parsing the CLI syntax


def _pairs(text: str, what: str) -> list[tuple[str, float]]:
    """Parse ``axis=value,axis=value`` (each axis at most once)."""
    pairs: list[tuple[str, float]] = []
    for item in text.split(","):
        axis, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not axis:
            raise CmirmError(f"{what}: expected 'axis=value' pairs separated by ',', got {item.strip()!r}")
        check_axis_name(axis)
        if axis in dict(pairs):
            raise CmirmError(f"{what}: axis {axis!r} given twice")
        pairs.append((axis, _number(value, f"{what} value for {axis}")))
    return pairs


def _parse_lex(args: str) -> LexPolicy:
    axes: list[str] = []
    tol = 0.0
    for item in (part.strip() for part in args.split(",")):
        if item.startswith("tol="):
            tol = _number(item[len("tol="):], "lex tol")
        else:
            axes.append(check_axis_name(item))
    if not axes or len(axes) > 2 or len(set(axes)) != len(axes):
        raise CmirmError(f"lex needs the primary axis, optionally followed by a secondary one; got {args!r} "
                         f"(e.g. {POLICY_EXAMPLES['lex']!r})")
    return LexPolicy(axes[0], tol, axes[1] if len(axes) == 2 else None)


def _parse_base(name: str, args: str | None) -> Policy:
    if name not in POLICY_EXAMPLES:
        valid = ", ".join(f"{key} (e.g. {example!r})" for key, example in POLICY_EXAMPLES.items())
        raise CmirmError(f"unknown policy {name!r}; valid policies: {valid}")
    takes_args = name in ("axis", "weighted", "lex")
    if takes_args and not args:
        raise CmirmError(f"policy {name!r} needs arguments, e.g. {POLICY_EXAMPLES[name]!r}")
    if not takes_args and args:
        raise CmirmError(f"policy {name!r} takes no arguments, got {args!r}")
    if name == "axis":
        return AxisPolicy(args)
    if name == "weighted":
        return WeightedPolicy(tuple(_pairs(args, "weighted")))
    if name == "lex":
        return _parse_lex(args)
    return ZSumPolicy() if name == "zsum" else ParetoPolicy()


def parse_policy(spec: str, minimums: Sequence[str] = ()) -> Policy:
    """Build a policy from the CLI syntax.

    ``spec`` is one base policy, optionally followed by ``;min:`` thresholds::

        axis:musicality
        weighted:alignment=0.5,musicality=0.5      (an axis not listed has weight 0)
        zsum
        lex:alignment,musicality,tol=0.1           (the secondary axis and tol are optional)
        pareto
        zsum;min:alignment=0.2,musicality=-1

    ``minimums`` are the values of repeated ``--min`` options (``"alignment=0.2"``); they are
    merged with the embedded ones, and an axis given twice is an error. Whitespace around tokens
    is ignored. Errors name the offending token and list the valid choices. Axis names are checked
    against a scorer's axes when the policy is used (`Policy.check_axes`).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise CmirmError(f"policy must be a non-empty string, e.g. {POLICY_EXAMPLES['zsum']!r}; got {spec!r}")
    base: Policy | None = None
    pairs: list[tuple[str, float]] = []
    for segment in (part.strip() for part in spec.split(";") if part.strip()):
        name, _, args = (part.strip() for part in segment.partition(":"))
        if name == "min":
            pairs += _pairs(args, "min")
        elif base is None:
            base = _parse_base(name, args or None)
        else:
            raise CmirmError(f"policy {spec!r} names more than one base policy; combine with ';min:' only")
    if base is None:
        raise CmirmError(f"policy {spec!r} has thresholds but no base policy, e.g. 'zsum;min:alignment=0.2'")
    for text in minimums:
        pairs += _pairs(text, "--min")
    return Thresholded(base, tuple(pairs)) if pairs else base
