"""What the commands show at the end: the summary table of a ranking (progress: `rerank.progress`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.table import Table

from rerank.rerank_run import Ranking


def _short(text: str | None, width: int = 30) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_ranking_summary(console: Console, ranking: Ranking) -> None:
    """One row per instruction: candidates, failures, the best candidate's scores, the top files."""
    by_instruction: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in ranking.records:
        by_instruction[record["instruction"]["id"]].append(record)
    axes = next((tuple(r["scores"]) for r in ranking.records if r["scores"]), ())
    table = Table(title=f"top-{ranking.k} by {ranking.policy} (scorer {ranking.scorer})")
    for column, justify in (("instruction", "left"), ("modality", "left"), ("scored", "right"), ("failed", "right"),
                            ("kept", "right"), *((f"rank-1 {axis}", "right") for axis in axes)):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for inst_id, records in by_instruction.items():
        scored = [r for r in records if r["rank"] is not None]
        best = min(scored, key=lambda r: r["rank"]) if scored else None
        inst = records[0]["instruction"]
        table.add_row(
            f"{inst_id}\n[dim]{_short(inst['text'] or inst['lyrics'])}[/dim]", inst["modality"],
            f"{len(scored)}/{len(records)}", str(sum(1 for r in records if r["errors"])),
            str(sum(1 for r in records if r["selected"])),
            *(f"{best['scores'][axis]:.4f}" if best else "-" for axis in axes),
        )
    console.print(table)
    console.print(f"ranking: {ranking.ranking_path}\ntop-{ranking.k}: {ranking.top_dir}/<instruction>_rank<r>.wav")
