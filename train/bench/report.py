"""The summary tables printed after a run, laid out as the paper's two tables (spec §9, §13).

Our row sits below the published rows, with a row of differences to the published CMI-RM and a
row of sample counts, so a partial or subset run is visibly partial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from rich.console import Console
from rich.table import Table

Cell = float | None


@dataclass(frozen=True)
class Column:
    """One table column: where our value comes from in the metrics, and how it is shown."""

    header: str
    dataset: str
    task: str
    metric: str  # "SRCC" or "ACC"
    modality: str | None = None  # a CMI-Pref modality group (detail row), else the summary row


MUSICALITY_COLUMNS = (
    Column("PAM SRCC", "PAM", "musicality", "SRCC"),
    Column("MusicEval SRCC", "MusicEval", "musicality", "SRCC"),
    Column("Music Arena ACC", "MusicArena", "preference", "ACC"),
    Column("CMI-Pref ACC", "CMI-Pref", "musicality", "ACC"),
)
ALIGNMENT_COLUMNS = (
    Column("PAM SRCC", "PAM", "alignment", "SRCC"),
    Column("CMI-Pref T", "CMI-Pref", "alignment", "ACC", "text"),
    Column("T+L", "CMI-Pref", "alignment", "ACC", "text+lyrics"),
    Column("T+A", "CMI-Pref", "alignment", "ACC", "text+ref"),
    Column("T+L+A", "CMI-Pref", "alignment", "ACC", "text+lyrics+ref"),
)

#: Published CMI-RewardBench test-set numbers (spec §13), accuracies as fractions.
PUBLISHED_MUSICALITY: dict[str, tuple[Cell, ...]] = {
    "CMI-RM (published)": (0.6606, 0.8266, 0.7343, 0.7820),
    "SongEval-RM": (0.6977, 0.6949, 0.7388, 0.7240),
    "Gemini 3 Pro": (0.5967, 0.6018, 0.6885, 0.6580),
}
PUBLISHED_ALIGNMENT: dict[str, tuple[Cell, ...]] = {
    "CMI-RM (published)": (0.4321, 0.6760, 0.7280, 0.7640, 0.7920),
    "CLAP score (music)": (0.2881, 0.6720, 0.7360, None, None),
    "Gemini 3 Pro": (0.5373, 0.6720, 0.6080, 0.6880, 0.6480),
}
_REFERENCE_ROW = "CMI-RM (published)"


def lookup(metrics: Mapping[str, Any], column: Column) -> tuple[Cell, int]:
    """Our value and its sample count for ``column`` (None, 0 when the run has no such rows)."""
    if column.modality is None:
        rows = [r for r in metrics["summary"] if (r["dataset"], r["task"]) == (column.dataset, column.task)]
    else:
        rows = [r for r in metrics["detail"] if (r["dataset"], r["task"], r["group_key"], r["group_value"])
                == (column.dataset, column.task, "modality", column.modality)]
    return (rows[0].get(column.metric), rows[0]["n"]) if rows else (None, 0)


def _format(value: Cell, metric: str, signed: bool = False) -> str:
    """Correlations with 4 decimals, accuracies in % (differences of accuracies in points)."""
    if value is None:
        return "–"
    if metric != "ACC":
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return f"{value * 100:+.2f} pp" if signed else f"{value * 100:.2f}%"


def _table(title: str, columns: tuple[Column, ...], published: Mapping[str, tuple[Cell, ...]],
           metrics: Mapping[str, Any], label: str) -> Table:
    table = Table(title=title)
    table.add_column("Model", overflow="fold")
    for column in columns:
        table.add_column(column.header, justify="right")
    for name, values in published.items():
        table.add_row(name, *(_format(v, c.metric) for v, c in zip(values, columns)))
    ours = [lookup(metrics, c) for c in columns]
    table.add_row(f"[bold]{label}[/bold]", *(f"[bold]{_format(v, c.metric)}[/bold]" for (v, _), c in zip(ours, columns)),
                  end_section=True)
    reference = published[_REFERENCE_ROW]
    table.add_row("Δ vs CMI-RM (published)", *(
        _format(None if v is None or r is None else v - r, c.metric, signed=True)
        for (v, _), r, c in zip(ours, reference, columns)))
    table.add_row("n (ours)", *(str(n) for _, n in ours))
    return table


def summary_tables(metrics: Mapping[str, Any], label: str = "ours") -> tuple[Table, Table]:
    """The musicality and alignment tables of the paper, with ``label``'s row from ``metrics``."""
    return (_table("Musicality", MUSICALITY_COLUMNS, PUBLISHED_MUSICALITY, metrics, label),
            _table("Alignment (CMI-Pref: T text, L lyrics, A reference audio)", ALIGNMENT_COLUMNS,
                   PUBLISHED_ALIGNMENT, metrics, label))


def print_summary(metrics: Mapping[str, Any], label: str = "ours", console: Console | None = None) -> None:
    """Print `summary_tables` to ``console`` (stdout by default)."""
    console = console or Console()
    for table in summary_tables(metrics, label):
        console.print(table)
