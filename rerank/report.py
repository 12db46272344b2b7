"""What the commands show at the end: the summary table of a ranking (progress: `rerank.progress`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from cmirm_plugin.records import format_score
from rerank.rerank_run import Ranking

#: How many instructions the summary lists (a long run's others are counted, and all are in ranking.csv).
SHOWN_INSTRUCTIONS = 10
#: How many kept candidates the summary lists per instruction.
SHOWN_PER_INSTRUCTION = 3


def _short(text: str | None, width: int = 30) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_ranking_summary(console: Console, ranking: Ranking) -> None:
    """Per instruction: candidates scored and failed, each kept candidate's rank, seed and scores; then the
    ``top/`` files written, the ranking files and which ranking ``top/`` holds.

    A long run lists its first `SHOWN_INSTRUCTIONS` instructions and `SHOWN_PER_INSTRUCTION` kept
    candidates of each, and says how many it left out (every candidate is in ``ranking.csv``).
    """
    by_instruction: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in ranking.records:
        by_instruction[record["instruction"]["id"]].append(record)
    shown = list(by_instruction.items())[:SHOWN_INSTRUCTIONS]
    axes = list(dict.fromkeys(axis for r in ranking.records if r["scores"] for axis in r["scores"]))
    table = Table(title=f"top-{ranking.k} by {ranking.policy} (scorer {ranking.scorer})", box=box.SIMPLE_HEAD)
    for column in ("instruction", "scored", "failed", "rank", "seed", *axes):
        table.add_column(column, justify="left" if column == "instruction" else "right")
    files: list[str] = []
    for inst_id, records in shown:
        inst = records[0]["instruction"]
        head = [f"{inst_id} [dim]{inst['modality']}\n{_short(inst['text'] or inst['lyrics'])}[/dim]",
                f"{sum(1 for r in records if r['rank'] is not None)}/{len(records)}",
                str(sum(1 for r in records if r["errors"]))]
        kept = sorted((r for r in records if r["selected"]), key=lambda r: r["rank"])
        rows = [[str(r["rank"]), str(r["seed"]),
                 *(format_score(r["scores"][axis]) if axis in r["scores"] else "-" for axis in axes)]
                for r in kept[:SHOWN_PER_INSTRUCTION]]
        if len(kept) > SHOWN_PER_INSTRUCTION:
            rows.append([f"[dim]+{len(kept) - SHOWN_PER_INSTRUCTION}[/dim]", "", *("" for _ in axes)])
        for i, row in enumerate(rows or [["-", "-", *("-" for _ in axes)]]):
            table.add_row(*(head if i == 0 else ["", "", ""]), *row, end_section=i == max(len(rows), 1) - 1)
        files += [r["top_path"] for r in kept[:SHOWN_PER_INSTRUCTION]]
        if len(kept) > SHOWN_PER_INSTRUCTION:
            files.append(f"… {len(kept) - SHOWN_PER_INSTRUCTION} more of {inst_id}")
    console.print(table)
    hidden = len(by_instruction) - len(shown)
    if hidden > 0:
        console.print(f"… and {hidden} more instruction(s): every candidate is in {ranking.csv_path}",
                      highlight=False, soft_wrap=True)
    root = ranking.ranking_path.parent
    written = sum(1 for r in ranking.records if r["selected"])
    console.print(f"top: {ranking.top_dir}/ holds {written} file(s), the top-{ranking.k} of ranking "
                  f"{ranking.kept_dir.relative_to(root).as_posix()}", highlight=False, soft_wrap=True)
    for name in files:
        console.print(f"  {root / name if not name.startswith('…') else name}", highlight=False, soft_wrap=True)
    if hidden > 0:
        console.print(f"  … and the files of {hidden} more instruction(s)", highlight=False, soft_wrap=True)
    console.print(f"ranking: {ranking.csv_path} and {ranking.ranking_path.name} (a copy of each ranking stays in "
                  f"{ranking.kept_dir.parent}/)", highlight=False, soft_wrap=True)
