"""Writing metrics to disk: metrics_summary.csv, metrics_detail.csv and metrics.json (§5.5).

CSV cells of metrics that could not be computed are empty; metrics.json holds
``{config, summary, detail}`` with nulls.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

SUMMARY_COLUMNS = ("dataset", "task", "n", "SRCC", "LCC", "K-Tau", "ACC")
DETAIL_COLUMNS = ("dataset", "task", "group_key", "group_value", "ref_category", "n", "ACC", "SRCC")


@dataclass(frozen=True)
class MetricsFiles:
    """Where `write_metrics` put the three files."""

    summary_csv: Path
    detail_csv: Path
    json: Path

    def as_dict(self) -> dict[str, str]:
        return {"summary_csv": str(self.summary_csv), "detail_csv": str(self.detail_csv), "json": str(self.json)}


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})


def write_metrics(metrics: dict[str, Any], out_dir: str | Path) -> MetricsFiles:
    """Write the output of `compute_metrics` into ``out_dir`` (created if needed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = MetricsFiles(out_dir / "metrics_summary.csv", out_dir / "metrics_detail.csv", out_dir / "metrics.json")
    _write_csv(files.summary_csv, SUMMARY_COLUMNS, metrics["summary"])
    _write_csv(files.detail_csv, DETAIL_COLUMNS, metrics["detail"])
    files.json.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return files
