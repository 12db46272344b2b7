"""Progress of a job's stages: rich bars on a terminal, plain lines in logs.

`job_progress(console)` gives a rich `Progress` when the console is a terminal, else a
`LogProgress`, which prints one line per stage every ``every`` items (default: a tenth of the
stage) or every ``interval`` seconds, whichever comes first, with the count, the rate and the
remaining time, and a last line when the stage ends::

    generating: 12/64 (19%), 0.41/s, ETA 2m07s

Both take the same calls (``add_task``, ``advance``, ``update(total=...)``, ``refresh``, used as a
context manager), so the pipeline does not care which it has.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

#: Seconds between two lines of a stage in logs, at most.
LOG_INTERVAL_S = 30.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class _Stage:
    description: str
    total: int
    printed_at: float
    started: float | None = None     # the first advance: a stage's rate counts from its own start
    done: int = 0
    printed_done: int = -1


class LogProgress:
    """Plain progress lines for logs (see the module docstring)."""

    def __init__(self, console: Console, every: int | None = None, interval: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.every, self.interval, self.clock = console, every, interval, clock
        self._stages: list[_Stage] = []

    def add_task(self, description: str, total: int, **_: Any) -> int:
        self._stages.append(_Stage(description, int(total), self.clock()))
        return len(self._stages) - 1

    def update(self, task: int, total: int | None = None, **_: Any) -> None:
        if total is not None:
            self._stages[task].total = int(total)
        self._maybe_print(self._stages[task])

    def advance(self, task: int, advance: float = 1) -> None:
        stage = self._stages[task]
        if stage.started is None:
            stage.started = self.clock()
        stage.done += int(advance)
        self._maybe_print(stage)

    def refresh(self) -> None:
        for stage in self._stages:
            self._maybe_print(stage)

    def _maybe_print(self, stage: _Stage) -> None:
        if stage.done == stage.printed_done:
            return
        every = self.every or max(1, math.ceil(stage.total / 10))
        now = self.clock()
        due = stage.done >= stage.total or stage.done // every > max(stage.printed_done, 0) // every \
            or now - stage.printed_at >= self.interval
        if due:
            self._print(stage, now)

    def _print(self, stage: _Stage, now: float) -> None:
        elapsed = now - stage.started if stage.started is not None else 0.0
        share = f" ({100 * stage.done / stage.total:.0f}%)" if stage.total else ""
        left = stage.total - stage.done
        rate = f", {stage.done / elapsed:.2f}/s" if elapsed >= 0.5 else ""
        eta = f", ETA {_duration(left * elapsed / stage.done)}" if rate and left > 0 and stage.done else ""
        took = f", in {_duration(elapsed)}" if left <= 0 else ""
        self.console.print(f"{stage.description}: {stage.done}/{stage.total}{share}{rate}{eta}{took}",
                           highlight=False, soft_wrap=True)
        stage.printed_done, stage.printed_at = stage.done, now

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        now = self.clock()
        for stage in self._stages:
            if stage.done != stage.printed_done:
                self._print(stage, now)


def progress_bar(console: Console) -> Progress:
    """A rich progress display (description, bar, done/total, elapsed, remaining)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


def job_progress(console: Console) -> Progress | LogProgress:
    """Bars on a terminal, `LogProgress` lines otherwise (a log file, a pipe, a batch system)."""
    return progress_bar(console) if console.is_terminal else LogProgress(console)
