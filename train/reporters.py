"""Where a run's metrics go besides its own files: TensorBoard event files or a W&B run (``--report-to``).

`train.metrics_log.MetricsLog` is the one place that logs metrics: every record it appends to
``steps.jsonl`` / ``epochs.jsonl`` it also hands to the run's `Reporter`, as ``steps/<column>`` /
``epochs/<column>`` (e.g. ``epochs/eval/acc/alignment``) at x = the record's ``step``; columns whose
value is not a number (None: nothing counted) are left out. So the curves are exactly the files.

* ``tensorboard``: event files in ``OUT/tensorboard`` (``tensorboard --logdir OUT/tensorboard``).
  A resumed run drops the events logged after its checkpoint (``purge_step``), as the JSONL does.
* ``wandb``: a W&B run (project ``$WANDB_PROJECT`` or ``cmirm``, files under ``$WANDB_DIR`` or
  ``OUT``); W&B's own variables apply (``WANDB_MODE=offline`` needs no network or account). The run
  id is kept in ``OUT/metrics/wandb_run.json``, so a resumed run continues the same W&B run.

Both packages are optional extras (``pip install -e ".[tensorboard]"`` / ``".[wandb]"``);
`require_reporter` fails with that hint before anything runs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol

from cmirm_plugin.errors import ConfigError

ReportTo = Literal["none", "tensorboard", "wandb"]
#: ``--report-to`` value -> (module to import, pyproject extra that installs it).
PACKAGES: dict[str, tuple[str, str]] = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
TENSORBOARD_DIR = "tensorboard"
WANDB_RUN_FILE = "wandb_run.json"


class Reporter(Protocol):
    """Receives every metric record of a run; `close` once at the end."""

    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


def require_reporter(report_to: str) -> None:
    """Raise a one-line `ConfigError` when ``report_to`` is unknown or its package is not installed."""
    if report_to == "none":
        return
    if report_to not in PACKAGES:
        raise ConfigError(f"--report-to: unknown value {report_to!r}; expected one of none, {', '.join(PACKAGES)}")
    module, extra = PACKAGES[report_to]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"--report-to {report_to} needs the '{module}' package: pip install {module} "
                          f"(or the extra: pip install -e \".[{extra}]\")")


def report_name(stream: str, column: str) -> str:
    """The name a metric column of ``steps.jsonl`` / ``epochs.jsonl`` (``stream``) has in the reporter."""
    return f"{stream}/{column}"


def numeric_metrics(stream: str, record: Mapping[str, Any]) -> dict[str, float]:
    """The record's numeric columns (``step`` is the x axis, not a metric) under their reported names."""
    return {report_name(stream, k): float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardReporter:
    """Scalars in TensorBoard event files under ``log_dir``."""

    def __init__(self, log_dir: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events at steps >= it, left by the interrupted run, are hidden from now on.
        self.writer = SummaryWriter(str(log_dir), purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbReporter:
    """One W&B run; its id is stored in ``id_file`` so that a resumed training continues it."""

    def __init__(self, out: Path, id_file: Path, run_config: Mapping[str, Any], resume_step: int | None) -> None:
        import wandb

        run_id = None      # a new run: W&B picks the id
        if resume_step is not None and id_file.is_file():
            run_id = json.loads(id_file.read_text()).get("id")
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "cmirm"), name=out.name, id=run_id,
                                  resume="allow", dir=os.environ.get("WANDB_DIR", str(out)), config=dict(run_config))
        except Exception as exc:  # wandb raises its own error types (no API key, unreachable server, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"--report-to wandb: could not start a W&B run ({type(exc).__name__}: {first}); log in "
                              f"(`wandb login` or WANDB_API_KEY), or set WANDB_MODE=offline") from exc
        id_file.write_text(json.dumps({"id": self.run.id, "dir": self.run.dir}))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


def open_reporter(report_to: str, out: Path, run_config: Mapping[str, Any],
                  resume_step: int | None) -> Reporter | None:
    """The run's reporter (None for ``none``); ``resume_step`` is the checkpoint's step, None for a new run.

    A new run removes the TensorBoard events an earlier, never-checkpointed run left in ``OUT``.
    """
    require_reporter(report_to)
    if report_to == "tensorboard":
        log_dir = out / TENSORBOARD_DIR
        if resume_step is None and log_dir.exists():
            shutil.rmtree(log_dir)
        return TensorBoardReporter(log_dir, resume_step)
    if report_to == "wandb":
        return WandbReporter(out, out / "metrics" / WANDB_RUN_FILE, run_config, resume_step)
    return None
