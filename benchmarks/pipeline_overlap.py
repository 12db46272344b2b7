"""Does the pipeline overlap its stages and spread generation over actors? (sleep-based, so any machine will do)

    python benchmarks/pipeline_overlap.py [--candidates 32] [--gen-seconds 0.25] [--score-seconds 0.25]
                                          [--slow-gen-seconds 0.5] [--fast-score-seconds 0.05] [--rounds 1]

A synthetic generator (`rerank.synthetic.sleepy_tone`) sleeps G seconds per candidate and a
synthetic scorer (`rerank.synthetic.SleepScorer`) S seconds per candidate, standing for GPU time:
a sleeping actor uses no CPU, so the timings measure the pipeline's scheduling, not the machine.
The real pipeline runs (`rerank.stream.run_pipeline`, the code of ``cmirm generate`` and
``best_of_n``) on Ray actors that are started and warm before timing (actor start-up is not the
pipeline's business), with generation items and scoring batches of one candidate, results in memory.

1. G = S, one generator and one scorer actor: ``--schedule phased`` (generate all, then score) vs
   ``stream``. Targets: stream wall <= 1.15 x max(total G, total S), so stream >= 1.7x faster.
2. Generation dominates (G >> S), stream: one generator actor vs two. Target: two >= 1.8x faster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--gen-seconds", type=float, default=0.25, help="G of the balanced case")
    parser.add_argument("--score-seconds", type=float, default=0.25, help="S of the balanced case")
    parser.add_argument("--slow-gen-seconds", type=float, default=0.5, help="G when generation dominates")
    parser.add_argument("--fast-score-seconds", type=float, default=0.05, help="S when generation dominates")
    parser.add_argument("--rounds", type=int, default=1, help="repeats of each timing (the median is kept)")
    args = parser.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from rich.console import Console
    from rich.table import Table

    from cmirm_plugin.records import Instruction
    from cmirm_plugin.scoring.spec import ScorerSpec
    from rerank.best_of_n import MemorySink
    from rerank.gen_pool import GeneratorPool, GeneratorPoolConfig
    from rerank.pool import PoolConfig, ScorerPool
    from rerank.stream import JobPlan, run_pipeline

    n = args.candidates
    instructions = [Instruction(text=f"instruction {i}", id=f"i{i}") for i in range(4)]
    seeds = list(range(n // len(instructions)))
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)

    def pools(gen_actors: int, score_seconds: float) -> tuple[GeneratorPool, ScorerPool]:
        generators = GeneratorPool(GeneratorPoolConfig("py:rerank.synthetic:sleepy_tone", backend="ray",
                                                       num_actors=gen_actors, num_cpus_per_actor=0.5,
                                                       threads_per_actor=1, device="cpu"))
        scorers = ScorerPool(PoolConfig(spec=ScorerSpec.parse("rerank.synthetic:SleepScorer"), backend="ray",
                                        num_actors=1, num_cpus_per_actor=0.5, threads_per_actor=1, batch_size=1,
                                        init_kwargs={"seconds": score_seconds}, device="cpu"))
        for pool in (generators, scorers):
            pool.start()
            pool.wait_ready(timeout=300, every=True)
        return generators, scorers

    def timed(generators: GeneratorPool, scorers: ScorerPool, gen_seconds: float, schedule: str) -> float:
        walls = []
        for _ in range(args.rounds):
            plan = JobPlan.fresh(instructions, seeds, 0.1, {"seconds": gen_seconds}, gen_batch_size=1,
                                 score_batch_size=1)
            sink = MemorySink()
            start = time.perf_counter()
            run_pipeline(plan, sink, generators=generators, scorers=scorers, schedule=schedule)  # type: ignore[arg-type]
            walls.append(time.perf_counter() - start)
            assert len(sink.scores) == n, (len(sink.scores), sink.errors)
        return statistics.median(walls)

    g, s = args.gen_seconds, args.score_seconds
    generators, scorers = pools(1, s)
    phased = timed(generators, scorers, g, "phased")
    stream = timed(generators, scorers, g, "stream")
    generators.close(), scorers.close()

    slow_g, fast_s = args.slow_gen_seconds, args.fast_score_seconds
    walls = {}
    for actors in (1, 2):
        generators, scorers = pools(actors, fast_s)
        walls[actors] = timed(generators, scorers, slow_g, "stream")
        generators.close(), scorers.close()
    ray.shutdown()

    bound = max(n * g, n * s)
    table = Table(title=f"{n} candidates, warm Ray actors, items and batches of 1, median of {args.rounds} "
                        f"({os.cpu_count()} CPUs)")
    for column in ("case", "G s", "S s", "total G s", "total S s", "wall s", "ratio", "target"):
        table.add_column(column, justify="left" if column in ("case", "target") else "right")
    table.add_row("phased, 1 generator + 1 scorer", f"{g:g}", f"{s:g}", f"{n * g:.1f}", f"{n * s:.1f}",
                  f"{phased:.2f}", f"{phased / bound:.2f} x max", "")
    table.add_row("stream, 1 generator + 1 scorer", f"{g:g}", f"{s:g}", f"{n * g:.1f}", f"{n * s:.1f}",
                  f"{stream:.2f}", f"{stream / bound:.2f} x max", "<= 1.15 x max")
    table.add_row("  phased / stream", "", "", "", "", "", f"{phased / stream:.2f}x", ">= 1.7x")
    table.add_row("stream, 1 generator actor", f"{slow_g:g}", f"{fast_s:g}", f"{n * slow_g:.1f}",
                  f"{n * fast_s:.1f}", f"{walls[1]:.2f}", "", "")
    table.add_row("stream, 2 generator actors", f"{slow_g:g}", f"{fast_s:g}", f"{n * slow_g:.1f}",
                  f"{n * fast_s:.1f}", f"{walls[2]:.2f}", "", "")
    table.add_row("  1 actor / 2 actors", "", "", "", "", "", f"{walls[1] / walls[2]:.2f}x", ">= 1.8x")
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
