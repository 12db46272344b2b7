"""Reward-server throughput and latency: batched vs unbatched serving, C concurrent clients, loopback.

Workload: a scorer served by `cmirm serve` on Ray Serve (one replica): the tiny random CMI-RM (built
offline; ``--reward tiny``, the default) or ``--reward rerank.synthetic:BatchedSleepScorer``, a stand-in
with a GPU's cost shape (50 ms per call plus 1 ms per clip, sleeping, so no CPU). C client threads
each send R requests of one clip of S seconds (float32 PCM, a prompt of their own, as RL trainers
score rollouts), back to back on a keep-alive connection, each body
encoded once beforehand so that the measurement is the server's.
Two servers run in turn:

  (a) unbatched: ``--max-batch-size 1`` (each request scored alone);
  (b) batched: ``--max-batch-size B --batch-wait-ms W`` (clips of concurrent requests scored together).

Each server is started and warmed up (one round of every client) before timing; the table shows
requests/s, the median and 99th-percentile latency, the mean batch the server formed and the share
of the wall time its model was busy (from its ``GET /info`` stats: a low share means the HTTP path,
not the model, limits throughput). Before the servers, the scorer alone (in this process, the
replica's threads) scores one clip per call and then B clips per call: their per-clip time ratio is
the most batching can buy for this model on this device (the "model alone" line).
Target: (b) >= 3x (a) in requests/s at 16 concurrent clients.

Usage: python benchmarks/reward_server.py [--reward tiny] [--clients 16] [--requests 20] [--seconds 1.0] [--max-batch-size 16]
       [--batch-wait-ms 10] [--device cpu] [--cpus-per-replica 1] [--port 8765]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time


def _run_clients(url: str, clients: int, requests: int, seconds: float) -> tuple[float, list[float]]:
    """Wall seconds for ``clients`` threads x ``requests`` one-clip requests, and every request's latency.

    Bodies are encoded once (`cmirm_plugin.scoring.wire`) and posted on one keep-alive connection per
    client, so the client's own work (JSON, base64, connecting) stays out of what is measured.
    """
    import http.client
    import json
    import urllib.parse

    from cmirm_plugin import Instruction
    from cmirm_plugin.scoring.wire import encode_request
    from cmirm_plugin.testing import noise

    bodies = [json.dumps(encode_request([noise(seconds, 24000, seed=i)],
                                        Instruction(text=f"prompt {i}: upbeat pop with bright piano"))).encode()
              for i in range(clients)]
    where = urllib.parse.urlsplit(url)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start_line = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        connection = http.client.HTTPConnection(where.hostname, where.port, timeout=300)
        start_line.wait()
        for _ in range(requests):
            began = time.perf_counter()
            connection.request("POST", "/score", bodies[i], {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {answer[:200]!r}")
            latencies[i].append(time.perf_counter() - began)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start_line.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, [t for per_client in latencies for t in per_client]


def _model_ceiling(config, batch: int, seconds: float, repeats: int = 5) -> tuple[float, float]:
    """Median seconds per clip of the scorer alone, scoring one clip per call and ``batch`` clips per call.

    The two are interleaved over ``repeats`` rounds, so load from other jobs hits both alike.
    """
    import torch

    from cmirm_plugin import Instruction
    from cmirm_plugin.scoring.loader import load_scorer
    from cmirm_plugin.testing import noise

    torch.set_num_threads(config.threads)
    scorer = load_scorer(config.reward, config.settings, config.device)
    clips = [noise(seconds, 24000, seed=i) for i in range(batch)]
    prompts = [Instruction(text=f"prompt {i}: upbeat pop with bright piano") for i in range(batch)]
    scorer.score_batch(clips[:2], prompts[:2])                                            # warm-up
    alone, together = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        for clip, prompt in zip(clips, prompts):
            scorer.score_batch([clip], [prompt])
        alone.append((time.perf_counter() - began) / batch)
        began = time.perf_counter()
        scorer.score_batch(clips, prompts)
        together.append((time.perf_counter() - began) / batch)
    return statistics.median(alone), statistics.median(together)


def _mean_batch(before: dict, after: dict) -> float:
    counts = {int(size): count - before.get(size, 0) for size, count in after.items()}
    batches = sum(counts.values())
    return sum(size * count for size, count in counts.items()) / batches if batches else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward", default="tiny", help="scorer spec (tiny, or rerank.synthetic:BatchedSleepScorer)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20, help="requests per client (timed)")
    parser.add_argument("--seconds", type=float, default=1.0, help="clip length")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0)
    parser.add_argument("--gpus-per-replica", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from rich.console import Console
    from rich.table import Table

    from cmirm_plugin.scoring.http_client import HttpClient
    from rerank.serve.config import ServeConfig
    from rerank.serve.server import start_server

    def config_of(batch: int) -> ServeConfig:
        return ServeConfig(args.reward, device=args.device, port=args.port, max_batch_size=batch,
                           batch_wait_ms=args.batch_wait_ms, cpus_per_replica=args.cpus_per_replica,
                           gpus_per_replica=args.gpus_per_replica)

    alone, together = _model_ceiling(config_of(args.max_batch_size), args.max_batch_size, args.seconds)
    rows = []
    for name, batch in (("(a) unbatched", 1), ("(b) batched", args.max_batch_size)):
        config = config_of(batch)
        began = time.perf_counter()
        server = start_server(config, quiet=True)
        startup = time.perf_counter() - began
        try:
            _run_clients(server.url, args.clients, 1, args.seconds)                       # warm-up
            stats = HttpClient(server.url).request("GET", "/info")["stats"]
            wall, latencies = _run_clients(server.url, args.clients, args.requests, args.seconds)
            after = HttpClient(server.url).request("GET", "/info")["stats"]
        finally:
            server.stop()
        latencies.sort()
        rows.append((name, batch, len(latencies) / wall, statistics.median(latencies),
                     latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
                     _mean_batch(stats["batches"], after["batches"]), (after["scoring_s"] - stats["scoring_s"]) / wall,
                     startup))

    table = Table(title=f"reward server, {args.reward} on {args.device}, {args.clients} clients x {args.requests} "
                        f"requests of one {args.seconds:g} s clip (batch wait {args.batch_wait_ms:g} ms)")
    for column in ("mode", "max batch", "requests/s", "p50 ms", "p99 ms", "mean batch", "model busy", "start-up s"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for name, batch, rate, p50, p99, mean_batch, busy, startup in rows:
        table.add_row(name, str(batch), f"{rate:.1f}", f"{p50 * 1000:.1f}", f"{p99 * 1000:.1f}", f"{mean_batch:.2f}",
                      f"{busy:.0%}", f"{startup:.1f}")
    console = Console()
    console.print(table)
    console.print(f"model alone: {alone * 1000:.1f} ms per clip one at a time, {together * 1000:.1f} ms in batches of "
                  f"{args.max_batch_size}: batching can buy at most {alone / together:.2f}x here")
    console.print(f"(b)/(a) throughput: {rows[1][2] / rows[0][2]:.2f}x (target >= 3x at 16 clients)")


if __name__ == "__main__":
    main()
