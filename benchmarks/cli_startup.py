"""How long the command line takes to answer ``--help``: the target is under 1.5 s each.

Runs ``cmirm --help`` and ``cmirm <command> --help`` as fresh subprocesses (what a user waits
for: interpreter start, imports, help rendering) ``--repeats`` times each after one warm-up run
(so the OS file cache is warm, as on a second call), and prints the median, min and max.
Usage: python benchmarks/cli_startup.py [--repeats 5] [--commands generate train score]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 1.5


def _cmirm() -> list[str]:
    """The installed console script next to this interpreter, else the one on PATH."""
    script = Path(sys.executable).parent / "cmirm"
    found = str(script) if script.is_file() else shutil.which("cmirm")
    if found is None:
        sys.exit("cmirm is not installed in this environment (pip install -e .)")
    return [found]


def time_command(args: list[str], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` runs of ``args`` (after one untimed warm-up run)."""
    subprocess.run(args, capture_output=True, check=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--commands", nargs="*", default=["generate"],
                        help="Commands whose --help is timed besides `cmirm --help`.")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cmirm --help start-up ({args.repeats} runs each, after a warm-up; target < {TARGET_S} s)")
    for column in ("command", "median s", "min s", "max s", "< target"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for command in [None, *args.commands]:
        argv = _cmirm() + ([command] if command else []) + ["--help"]
        times = time_command(argv, args.repeats)
        median = statistics.median(times)
        table.add_row(" ".join(["cmirm", *([command] if command else []), "--help"]), f"{median:.2f}",
                      f"{min(times):.2f}", f"{max(times):.2f}", "yes" if median < TARGET_S else "NO")
    Console().print(table)


if __name__ == "__main__":
    main()
