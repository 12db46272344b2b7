"""`cmirm score`: score audio files against one instruction, or a JSONL of rows with their own.

Files mode prints a table (or JSON lines), optionally best first by one axis. JSONL mode reads
rows ``{"audio", "text", "lyrics", "ref_audio"}`` (paths relative to the file; an optional ``id``),
scores them in batches and appends one record per row to the output as each batch finishes:
``{"row", "key", "audio", "scorer", "scores": {axis: value}}``, or ``"error"`` for a row that cannot
be scored (bad JSON, a missing field, unreadable audio). A rerun skips rows already in the output
(keyed by line number and content, so an edited line is scored again).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from cmirm_plugin.errors import CmirmError, ConfigError
from cmirm_plugin.manifest import ManifestWriter, iter_records, read_json_lines
from cmirm_plugin.records import Instruction, file_problem, format_score
from cmirm_plugin.scoring.contract import Scorer, score_isolated
from cmirm_plugin.scoring.spec import ScorerSpec

#: Fields of a ``--jsonl`` row.
ROW_FIELDS = ("audio", "text", "lyrics", "ref_audio", "id")


def score_files(scorer: Scorer, spec: ScorerSpec, audio: Sequence[Path], instruction: Instruction,
                as_json: bool, sort: str | None, console: Console | None = None) -> None:
    """Score ``audio`` against ``instruction``; print a table or JSON lines (best first by ``sort``)."""
    console = console or Console()
    if sort is not None and sort not in scorer.axes:
        raise ConfigError(f"--sort {sort!r}: the scorer's axes are {', '.join(scorer.axes)}")
    outcomes = score_isolated(scorer, [str(p) for p in audio], instruction, name=spec.label)
    rows = list(zip(audio, outcomes))
    if sort is not None:
        rows.sort(key=lambda row: -row[1].scores[sort] if row[1].scores else float("inf"))
    if as_json:
        for path, outcome in rows:
            record: dict[str, Any] = {"audio": str(path), "modality": instruction.modality, "scorer": spec.label}
            record.update({"scores": outcome.scores.to_dict()} if outcome.scores else {"error": outcome.error})
            console.print_json(json.dumps(record), indent=None)
        return
    table = Table(title=f"scores of {spec.label} ({instruction.modality})")
    table.add_column("audio", overflow="fold")  # never cut a path
    for axis in scorer.axes:
        table.add_column(axis, justify="right")
    for path, outcome in rows:
        if outcome.scores is None:
            table.add_row(str(path), *([f"[red]{outcome.error}[/red]"] + [""] * (len(scorer.axes) - 1)))
        else:
            table.add_row(str(path), *(format_score(value) for value in outcome.scores.values))
    console.print(table)


@dataclass(frozen=True)
class _Row:
    line: int
    key: str
    audio: str
    instruction: Instruction


def _row(line: int, data: dict[str, Any], base: Path) -> _Row:
    """A JSONL row as (audio path, instruction); raises `CmirmError` naming the field."""
    unknown = sorted(set(data) - set(ROW_FIELDS))
    if unknown:
        raise CmirmError(f"unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(ROW_FIELDS)}")
    for key in ROW_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise CmirmError(f"field '{key}' must be a string, got {data[key]!r}")
    if not data.get("audio"):
        raise CmirmError("field 'audio' is missing")
    ref = data.get("ref_audio") or None
    if ref is not None:
        ref = str((base / ref).resolve())
        problem = file_problem(ref)
        if problem:
            raise CmirmError(f"field 'ref_audio': {problem}: '{ref}' (paths are relative to the JSONL file)")
    return _Row(line, _row_key(line, data), str((base / data["audio"]).resolve()),
                Instruction(text=data.get("text"), lyrics=data.get("lyrics"), ref_audio=ref))


def _row_key(line: int, data: dict[str, Any]) -> str:
    content = json.dumps({k: data.get(k) for k in ROW_FIELDS}, sort_keys=True, ensure_ascii=False)
    return f"{line}:{hashlib.sha1(content.encode()).hexdigest()[:12]}"


def score_jsonl(scorer: Scorer, spec: ScorerSpec, rows_path: Path, out: Path, batch_size: int,
                retry_errors: bool = False, console: Console | None = None) -> tuple[int, int, int]:
    """Score every row of ``rows_path`` not yet in ``out`` (see the module docstring).

    Returns (rows scored now, rows with errors now, rows found done in ``out``).
    """
    console = console or Console()
    if not rows_path.is_file():
        raise ConfigError(f"'{rows_path}': JSONL file not found")
    done = {}
    for record in iter_records(out):
        if record.get("scorer") not in (None, spec.label):
            raise ConfigError(f"'{out}' holds scores of {record['scorer']}, not of {spec.label}; choose another --out")
        done[record.get("key")] = record
    parsed, unreadable = read_json_lines(rows_path)
    scored = failed = 0
    with ManifestWriter(out) as writer, Progress(console=console, transient=True) as progress:
        todo: list[_Row] = []
        for problem in unreadable:      # such a line has no content to key on
            key = f"{problem.line}:unreadable"
            if key not in done or retry_errors:
                writer.append({"row": problem.line, "key": key, "audio": None, "scorer": spec.label,
                               "error": str(problem)})
                failed += 1
        for line, data in parsed:
            key = _row_key(line, data)
            previous = done.get(key)
            if previous is not None and not (retry_errors and "error" in previous):
                continue
            try:
                todo.append(_row(line, data, rows_path.parent))
            except CmirmError as exc:
                writer.append({"row": line, "key": key, "audio": data.get("audio"), "scorer": spec.label,
                               "error": f"{rows_path}:{line}: {exc}"})
                failed += 1
        task = progress.add_task("scoring rows", total=len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            outcomes = score_isolated(scorer, [r.audio for r in batch], [r.instruction for r in batch],
                                      name=spec.label)
            for row, outcome in zip(batch, outcomes):
                record: dict[str, Any] = {"row": row.line, "key": row.key, "audio": row.audio, "scorer": spec.label}
                if outcome.scores is None:
                    record["error"] = outcome.error
                    failed += 1
                else:
                    record["scores"] = outcome.scores.to_dict()
                    scored += 1
                writer.append(record)
            progress.advance(task, len(batch))
    return scored, failed, len(done)
