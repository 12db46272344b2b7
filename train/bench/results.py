"""results.jsonl records: what the runner writes per row (§5.4) and how they are read back.

A record is the benchmark row's own fields plus the predictions, validity flags and ``|``-joined
errors of the official runner, plus ``bench_row_id`` / ``bench_line`` (resume key) and
``bench_duration_a`` / ``bench_duration_b`` (clip lengths for the duration bins). Predictions that
are NaN or infinite are written as null (strict JSON), which the metrics treat as missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from train.bench import schema as S
from train.bench.dataset import BenchRow
from train.bench.labels import predicted_label

#: File names in the output folder.
RESULTS_FILE = "results.jsonl"
METADATA_FILE = "metadata.json"


@dataclass
class SideResult:
    """The outcome of scoring one clip of a row: (alignment, musicality), or why it was not scored."""

    alignment: float | None = None
    musicality: float | None = None
    valid: bool = False
    errors: list[str] = field(default_factory=list)
    duration: float | None = None

    @classmethod
    def scored(cls, alignment: float, musicality: float, duration: float | None) -> "SideResult":
        return cls(_finite(alignment), _finite(musicality), True, [], duration)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def build_record(row: BenchRow, a: SideResult, b: SideResult | None, ref_missing: Path | None) -> dict[str, Any]:
    """The results.jsonl record of a finished row (``b`` is None for single-clip rows)."""
    errors = list(a.errors) + (list(b.errors) if b else [])
    if ref_missing is not None:
        errors.append(f"ref_audio_not_found:{ref_missing}")
    record = dict(row.data)
    record.update({S.DATASET: row.subset, S.ROW_ID: row.id, S.LINE: row.line,
                   S.PRED_ALIGNMENT: a.alignment, S.PRED_MUSICALITY: a.musicality,
                   S.VALID_A: a.valid, S.DURATION_A: a.duration})
    if b is not None:
        record.update({
            S.PRED_ALIGNMENT_B: b.alignment, S.PRED_MUSICALITY_B: b.musicality,
            S.PRED_PREFERENCE: predicted_label(a.musicality, b.musicality),
            S.PRED_PREF_MUSICALITY: predicted_label(a.musicality, b.musicality),
            S.PRED_PREF_ALIGNMENT: predicted_label(a.alignment, b.alignment),
            S.VALID_B: b.valid, S.DURATION_B: b.duration,
        })
    record[S.ERROR] = "|".join(errors)
    return record


def latest_by_row_id(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Records keyed by ``bench_row_id``; a later record of the same row replaces an earlier one."""
    return {r[S.ROW_ID]: r for r in records if S.ROW_ID in r}


def result_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows to evaluate: the latest record of each keyed row, and every record without a key
    (e.g. a results.jsonl written by the official runner), in file order."""
    records = list(records)
    latest = latest_by_row_id(records)
    return [r for r in records if S.ROW_ID not in r or latest[r[S.ROW_ID]] is r]
