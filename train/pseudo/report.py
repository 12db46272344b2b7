"""What a pseudo-labelling run measured: agreement between orders and position bias, per axis.

Per axis, over the pairs of the input that have a judgment:

* ``agreement`` = ``consistent / judged``: *judged* pairs have a valid verdict in both orders;
  *consistent* ones got the same outcome both times (same winner, or tie twice). It describes the
  judge, whatever the tie policy.
* ``first_rate`` = ``first / (first + second)`` over the decisive verdicts of both orders: how often
  the judge picks the clip it heard first. 0.5 means no position bias (each pair is heard both
  ways, so an unbiased judge picks first and second equally often); ``first``, ``second``, ``tie``
  and ``errors`` give the counts behind it.
* ``labels`` counts the labels in written rows; ``dropped`` counts axes left without a label
  (``inconsistent``, ``tie`` or ``error``), before the row filter.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.table import Table

from train.data import Label
from train.pseudo.consistency import ORDERS, AxisDecision
from train.pseudo.judgment import Judgment


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass
class AxisStats:
    """Counts for one axis (module docstring)."""

    judged: int = 0
    consistent: int = 0
    error_pairs: int = 0
    verdicts: Counter = field(default_factory=Counter)      # first / second / tie / error, both orders
    labels: Counter = field(default_factory=Counter)        # model_a / model_b / both, written rows
    dropped: Counter = field(default_factory=Counter)       # inconsistent / tie / error

    @property
    def agreement(self) -> float | None:
        return _rate(self.consistent, self.judged)

    @property
    def first_rate(self) -> float | None:
        return _rate(self.verdicts["first"], self.verdicts["first"] + self.verdicts["second"])

    def to_dict(self) -> dict[str, Any]:
        return {"judged": self.judged, "consistent": self.consistent, "agreement": self.agreement,
                "first_rate": self.first_rate, "error_pairs": self.error_pairs,
                "verdicts": {k: self.verdicts[k] for k in ("first", "second", "tie", "error")},
                "labels": {k: self.labels[k] for k in ("model_a", "model_b", "both")},
                "dropped": {k: self.dropped[k] for k in ("inconsistent", "tie", "error")}}


@dataclass
class PseudoLabelReport:
    """The run's totals and `AxisStats`; ``to_dict`` is what ``pseudo_label_report.json`` holds."""

    judge: str
    axes: tuple[str, ...]
    ties: str
    filter: str
    pairs: int
    duplicate_lines: int
    judged_before: int = 0
    judged_now: int = 0
    rows_written: int = 0
    axis: dict[str, AxisStats] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.axis = {a: self.axis.get(a, AxisStats()) for a in self.axes}

    @property
    def judged(self) -> int:
        return self.judged_before + self.judged_now

    def add(self, judgment: Judgment, decisions: Mapping[str, AxisDecision],
            labels: Mapping[str, Label | None] | None) -> None:
        """Count one judged pair: its decisions and the labels it was written with (None = row dropped)."""
        for axis, stats in self.axis.items():
            choices = [judgment.choice(order, axis) for order in ORDERS]
            stats.verdicts.update(c or "error" for c in choices)
            decision = decisions[axis]
            if decision.consistent is None:
                stats.error_pairs += 1
            else:
                stats.judged += 1
                stats.consistent += decision.consistent
            if decision.dropped is not None:
                stats.dropped[decision.dropped] += 1
            if labels is not None and labels[axis] is not None:
                stats.labels[labels[axis]] += 1
        self.rows_written += labels is not None

    def to_dict(self) -> dict[str, Any]:
        return {"judge": self.judge, "axes": list(self.axes), "ties": self.ties, "filter": self.filter,
                "pairs": self.pairs, "duplicate_lines": self.duplicate_lines, "judged": self.judged,
                "judged_before": self.judged_before, "judged_now": self.judged_now,
                "rows_written": self.rows_written, "rows_dropped": self.judged - self.rows_written,
                "per_axis": {a: s.to_dict() for a, s in self.axis.items()}}

    def write(self, path: str | Path) -> Path:
        """Write the JSON report atomically (a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    def print(self, console: Console) -> None:
        """A table with one column per axis (fits a narrow terminal), then the totals."""
        pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        table = Table(title=f"pseudo-labels by {self.judge} (ties: {self.ties}, filter: {self.filter})")
        table.add_column("")
        for axis in self.axis:
            table.add_column(axis, justify="right")
        stats = list(self.axis.values())
        rows = {
            "judged (both orders valid)": [str(s.judged) for s in stats],
            "agreement (consistent)": [f"{pct(s.agreement)} ({s.consistent})" for s in stats],
            "first-clip rate (0.5 = unbiased)": [pct(s.first_rate) for s in stats],
            "verdicts first/second/tie/error": ["/".join(str(s.verdicts[k]) for k in ("first", "second", "tie", "error"))
                                                for s in stats],
            "labels model_a/model_b/both": ["/".join(str(s.labels[k]) for k in ("model_a", "model_b", "both"))
                                            for s in stats],
            "no label: inconsistent/tie/error": ["/".join(str(s.dropped[k]) for k in ("inconsistent", "tie", "error"))
                                                 for s in stats],
        }
        for name, cells in rows.items():
            table.add_row(name, *cells)
        console.print(table)
        console.print(f"{self.pairs} pairs, {self.judged} judged ({self.judged_before} from an earlier run), "
                      f"{self.rows_written} rows written, {self.judged - self.rows_written} dropped"
                      + (f"; {self.duplicate_lines} duplicate line(s) judged once" if self.duplicate_lines else ""))
