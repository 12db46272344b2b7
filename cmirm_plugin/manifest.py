"""Append-only JSONL manifests that survive a crash.

Each record is one JSON object on one line, written and flushed on its own, so a reader (or a
second process) sees every finished record while the job runs. After a crash the last line may
be cut in half: readers skip it with a warning, and the writer cuts it off before appending, so a
resumed job continues cleanly (a last record that is complete but lost only its newline is kept: the
writer ends its line instead). A broken line anywhere else is an error naming file and line.
Writers open their file on the first append, so a job that has nothing to add never writes (a
finished run directory may be read-only).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

from cmirm_plugin.errors import ManifestError, output_errors


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the complete records of ``path`` (missing file = no records)."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as fh:
        lines = fh.read().split(b"\n")
    # A file written by us ends with "\n", so the last element is b"" unless the last write was cut.
    last = len(lines) - 1
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if lineno - 1 == last:
                warnings.warn(f"{path}:{lineno}: skipping a truncated last record (interrupted write)")
                continue
            raise ManifestError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise ManifestError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        yield record


class LineProblem(str):
    """A bad line of an input file: the text ``file:line: problem``, with the line number as ``line``."""

    line: int

    def __new__(cls, path: Path, line: int, message: str) -> "LineProblem":
        problem = super().__new__(cls, f"{path}:{line}: {message}")
        problem.line = line
        return problem


def read_json_lines(path: str | Path, nan_as_null: bool = False
                    ) -> tuple[list[tuple[int, dict[str, Any]]], list[LineProblem]]:
    """Every JSON object of an input file with its line number, and a `LineProblem` for each other line.

    For validating user-supplied JSONL (pairs, prompts, benchmark rows) where every bad line must be
    reported at once. ``nan_as_null`` reads NaN/Infinity literals as null.
    """
    path = Path(path)
    rows, problems = [], []
    parse_constant = (lambda _: None) if nan_as_null else None
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(LineProblem(path, lineno, f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
                continue
            if not text.strip():
                continue
            try:
                value = json.loads(text, parse_constant=parse_constant)
            except json.JSONDecodeError as exc:
                problems.append(LineProblem(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})"))
                continue
            if not isinstance(value, dict):
                problems.append(LineProblem(path, lineno, f"expected a JSON object, got {type(value).__name__}"))
                continue
            rows.append((lineno, value))
    return rows, problems


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of ``path`` as a list."""
    return list(iter_records(path))


def rewrite_records(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Replace ``path`` by ``records`` atomically (written next to it, then renamed over it).

    For the few files that are rewritten rather than appended to (a log cut back to a resume
    point, an output re-derived from its journal): a crash leaves the old or the new file, never half.
    The temporary file has a name of its own (two writers never share one) and is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with ManifestWriter(tmp) as writer:
            for record in records:
                writer.append(record)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _is_record(line: bytes) -> bool:
    """Whether ``line`` is one complete JSON object (a last record that only lost its newline)."""
    try:
        return isinstance(json.loads(line), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _end_last_line(path: Path) -> None:
    """Make the next append start on a fresh line: end a complete last record that lacks its newline,
    cut an interrupted (partial) one."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return  # the usual case: nothing to read
        fh.seek(0)
        data = fh.read()
        start = data.rfind(b"\n") + 1  # 0 when the file holds one line
        if _is_record(data[start:]):
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
            return
        fh.seek(start)
        fh.truncate()


class ManifestWriter:
    """Append records to a JSONL file, one flushed line per record.

    Use as a context manager. The file (and its folder) is opened on the first `append`, after
    its last line is made whole (see `_end_last_line`). ``fsync=True`` also forces each line to
    disk (slower; for jobs whose machine may lose power, not just the process).
    """

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._fh: Any = None

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line; an ``OSError`` (disk full, read-only) is a one-line `OutputError`."""
        line = json.dumps(record, ensure_ascii=False, allow_nan=False, default=_json_default)
        with output_errors(self.path):
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _end_last_line(self.path)
                self._fh = self.path.open("a", encoding="utf-8")
            self._fh.write(line + "\n")
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_default(value: Any) -> Any:
    """Serialise numpy scalars/arrays and paths, which records often carry."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to a JSON manifest: {value!r}")
