"""Scorer-pool scaling: the same scoring workload in-process, on 1 Ray actor, and on 2 Ray actors.

Workload: the tiny random CMI-RM (built offline), C candidates of S seconds each (written as wav
files, so workers read them as `cmirm generate`'s pool does), under 4 instructions, batches of B.
Every mode uses one torch thread per worker, so the comparison is about the pool, not threads:

  (a) in-process: `ScorerPool(backend="local")`;
  (b) Ray, 1 actor: the same work through Ray (the overhead of actors and the object store);
  (c) Ray, 2 actors: the speed-up of a second worker on a second core.

Models are loaded and one batch is scored before timing (start-up is reported apart). The modes
run in turn, R rounds each, interleaved (a, b, c, a, b, c, ...) so that load from other processes
hits all of them alike; the table shows the median seconds per workload and the ratios.
Targets on a 2-core machine: (b)/(a) <= 1.10, (b)/(c) >= 1.6. Two actors can only be faster than one
when both cores are free: on a machine shared with busy jobs, give the benchmark their share first
(Linux with autogroup scheduling, as root: ``echo -10 > /proc/self/autogroup`` in its shell).

Usage: python benchmarks/rerank_scaling.py [--candidates 32] [--seconds 10] [--batch-size 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def _workload(root: Path, candidates: int, seconds: float):
    from cmirm_plugin import Instruction
    from cmirm_plugin.testing import noise, sine
    from rerank.pool import ScoreItem

    instructions = [Instruction(text=f"instruction {i}: upbeat pop with bright piano") for i in range(4)]
    items = []
    for c in range(candidates):
        clip = sine(110.0 * (c % 7 + 2), seconds, 24000, harmonics=3) if c % 2 else noise(seconds, 24000, seed=c)
        path = clip.save(root / f"c{c}.wav")
        items.append(ScoreItem(f"c{c}", str(path), instructions[c % len(instructions)]))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from rich.console import Console
    from rich.table import Table

    from cmirm_plugin.model.tiny import default_tiny_checkpoint
    from rerank.pool import PoolConfig, ScorerPool

    model = str(default_tiny_checkpoint())
    items = _workload(Path(tempfile.mkdtemp()), args.candidates, args.seconds)
    # Both Ray pools stay up (3 actors, one logical CPU each) but only one pool works at a time.
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    modes = {
        "(a) in-process, 1 thread": PoolConfig(model, backend="local", threads_per_actor=1, device="cpu",
                                                batch_size=args.batch_size),
        "(b) Ray, 1 actor x 1 thread": PoolConfig(model, backend="ray", num_actors=1, threads_per_actor=1,
                                                   device="cpu", batch_size=args.batch_size),
        "(c) Ray, 2 actors x 1 thread": PoolConfig(model, backend="ray", num_actors=2, threads_per_actor=1,
                                                    device="cpu", batch_size=args.batch_size),
    }
    pools, startup = {}, {}
    for name, config in modes.items():
        start = time.perf_counter()
        pools[name] = ScorerPool(config).__enter__()
        pools[name].score(items[: config.num_actors * args.batch_size])      # load models, warm kernels
        startup[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, pool in pools.items():
            start = time.perf_counter()
            results = pool.score(items)
            times[name].append(time.perf_counter() - start)
            assert all(r.error is None for r in results), [r.error for r in results if r.error]
    for pool in pools.values():
        pool.close()
    ray.shutdown()

    median = {name: statistics.median(values) for name, values in times.items()}
    a, b, c = median.values()
    table = Table(title=f"scoring {args.candidates} x {args.seconds:g} s clips, tiny CMI-RM, batches of "
                        f"{args.batch_size}, median of {args.rounds} rounds ({os.cpu_count()} CPUs)")
    for column in ("mode", "start-up s", "s / workload", "candidates / s", "min-max s"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for name in modes:
        table.add_row(name, f"{startup[name]:.1f}", f"{median[name]:.2f}", f"{args.candidates / median[name]:.1f}",
                      f"{min(times[name]):.2f}-{max(times[name]):.2f}")
    console = Console()
    console.print(table)
    console.print(f"Ray overhead, 1 actor vs in-process: (b)/(a) = {b / a:.3f}  (target <= 1.10)")
    console.print(f"speed-up of 2 actors over 1:        (b)/(c) = {b / c:.2f}x  (target >= 1.6x)")


if __name__ == "__main__":
    main()
