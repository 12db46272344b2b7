"""The run's metric files: one JSON line per logged step and per epoch, mirrored as CSV.

``OUT/metrics/steps.jsonl`` (+ ``steps.csv``): ``step, epoch``, ``lr`` (the rate that step ran with),
``grad_norm`` (before clipping) and ``pairs_per_s`` (both over the steps since the last line) and the
training metrics of `train.evaluation` under ``train/``, over the epoch's batches so far (the epoch's
last step line has the epoch's values).
``OUT/metrics/epochs.jsonl`` (+ ``epochs.csv``): ``epoch, step`` with the epoch's training metrics
under ``train/`` and the held-out metrics under ``eval/``. JSONL lines are
written and flushed one by one (crash-safe, `cmirm_plugin.manifest`); the CSV files are rewritten
from them at each epoch end, with the union of all keys as columns. On resume, lines past the
checkpoint's step are dropped so the files read as one uninterrupted run.

The same records go to the run's `train.reporters.Reporter` (``--report-to``), if it has one, from
here only, so TensorBoard / W&B show exactly what the files hold.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping

from cmirm_plugin.manifest import ManifestWriter, read_records, rewrite_records
from train.reporters import Reporter, numeric_metrics

STEPS, EPOCHS = "steps", "epochs"


class MetricsLog:
    """Appends step and epoch records under ``directory`` (see the module docstring).

    The JSONL files stay open from the first record to `close` (a context manager closes them).
    ``reporter`` (set once the run knows where it starts) receives every record too; `close`
    closes it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.steps_path = self.directory / f"{STEPS}.jsonl"
        self.epochs_path = self.directory / f"{EPOCHS}.jsonl"
        self._writers: dict[Path, ManifestWriter] = {}
        self.reporter: Reporter | None = None

    def _append(self, path: Path, record: Mapping[str, Any]) -> None:
        if path not in self._writers:
            self._writers[path] = ManifestWriter(path)
        self._writers[path].append(dict(record))

    def _close_files(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def close(self) -> None:
        """Close the JSONL files and the reporter."""
        self._close_files()
        if self.reporter is not None:
            self.reporter.close()
            self.reporter = None

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self) -> None:
        """Remove the metric files (a new run in a folder that holds no resumable run)."""
        self._close_files()
        for path in (self.steps_path, self.epochs_path):
            for file in (path, path.with_suffix(".csv")):
                file.unlink(missing_ok=True)

    def _report(self, stream: str, record: Mapping[str, Any]) -> None:
        if self.reporter is not None:
            self.reporter.log(int(record["step"]), numeric_metrics(stream, record))

    def log_step(self, record: Mapping[str, Any]) -> None:
        self._append(self.steps_path, record)
        self._report(STEPS, record)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self._append(self.epochs_path, record)
        self.write_csv()
        self._report(EPOCHS, record)

    def write_csv(self) -> None:
        """Rewrite ``steps.csv`` and ``epochs.csv`` from the JSONL files."""
        for source in (self.steps_path, self.epochs_path):
            rows = read_records(source)
            columns = list(dict.fromkeys(key for row in rows for key in row))
            tmp = source.with_suffix(".csv.tmp")
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, source.with_suffix(".csv"))

    def truncate(self, step: int, epochs_done: int) -> None:
        """Drop step lines after ``step`` and epoch lines after ``epochs_done`` (resuming from that point)."""
        self._close_files()
        for path, keep in ((self.steps_path, lambda r: r.get("step", 0) <= step),
                           (self.epochs_path, lambda r: r.get("epoch", 0) <= epochs_done)):
            rewrite_records(path, [r for r in read_records(path) if keep(r)])
