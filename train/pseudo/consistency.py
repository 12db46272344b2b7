"""Position consistency: combine a judge's two answers on a pair into labels, or drop them.

Each pair is judged in order ``ab`` (clip A shown first) and ``ba`` (clip B shown first). A
positional choice is mapped back to the pair's clips (`outcome`); an axis is *consistent* when both
orders give the same outcome (the same winner, or a tie twice). The label of an axis then follows
the tie policy:

================================  ==========  ==========  =====================
both orders say                   ``drop``    ``both``    ``keep-if-consistent``
================================  ==========  ==========  =====================
the same winner                   winner      winner      winner
tie, tie                          (none)      both        both
a winner and a tie                (none)      both        (none)
opposite winners                  (none)      (none)      (none)
an error in either order          (none)      (none)      (none)
================================  ==========  ==========  =====================

and the row filter decides what is written: ``per-axis`` keeps each axis's label on its own (a row
is written when at least one axis has a label), ``joint`` writes a row only when every requested
axis has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence, get_args

from cmirm_plugin.errors import ConfigError
from train.data import Label
from train.pseudo.judges.base import Choice

Order = Literal["ab", "ba"]
ORDERS: tuple[Order, ...] = ("ab", "ba")
Outcome = Literal["model_a", "model_b", "tie"]
TiePolicy = Literal["drop", "both", "keep-if-consistent"]
FilterMode = Literal["per-axis", "joint"]
#: Why an axis got no label.
DropReason = Literal["inconsistent", "tie", "error"]

TIE_POLICIES: tuple[str, ...] = get_args(TiePolicy)
FILTER_MODES: tuple[str, ...] = get_args(FilterMode)


def check_policy(ties: str, filter_mode: str) -> None:
    """Raise naming the option when a tie policy or filter mode is unknown."""
    if ties not in TIE_POLICIES:
        raise ConfigError(f"--ties: expected one of {', '.join(TIE_POLICIES)}, got {ties!r}")
    if filter_mode not in FILTER_MODES:
        raise ConfigError(f"--filter: expected one of {', '.join(FILTER_MODES)}, got {filter_mode!r}")


def outcome(order: Order, choice: Choice) -> Outcome:
    """The pair-level meaning of a positional choice: in order ``ba`` the first clip is B."""
    if choice == "tie":
        return "tie"
    first_is_a = order == "ab"
    return "model_a" if (choice == "first") == first_is_a else "model_b"


@dataclass(frozen=True)
class AxisDecision:
    """The verdict on one axis of a pair: ``label`` (None = no label) and, if None, why."""

    consistent: bool | None       # None when an order has no valid verdict (not judged)
    label: Label | None
    dropped: DropReason | None


def decide_axis(ab: Choice | None, ba: Choice | None, ties: TiePolicy) -> AxisDecision:
    """Combine the two orders' choices on one axis (None = that order's answer was an error)."""
    if ab is None or ba is None:
        return AxisDecision(None, None, "error")
    first, second = outcome("ab", ab), outcome("ba", ba)
    consistent = first == second
    if "tie" not in (first, second):
        return AxisDecision(consistent, first if consistent else None, None if consistent else "inconsistent")
    if ties == "both" or (ties == "keep-if-consistent" and consistent):
        return AxisDecision(consistent, "both", None)
    return AxisDecision(consistent, None, "tie" if ties == "drop" else "inconsistent")


def row_labels(decisions: Mapping[str, AxisDecision], axes: Sequence[str],
               filter_mode: FilterMode) -> dict[str, Label | None] | None:
    """The labels a row is written with, or None when the filter drops the row."""
    labels = {axis: decisions[axis].label for axis in axes}
    kept = [label is not None for label in labels.values()]
    if (filter_mode == "joint" and not all(kept)) or not any(kept):
        return None
    return labels
