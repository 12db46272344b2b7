"""Scoring throughput of the full-size CMI-RM architecture: reference-style vs batched + prompt cache.

Random weights at the real size (MuQ-large + XLM-R-base + the 33M CMI-RM part; nothing is
downloaded), N candidates of S seconds under ONE text+lyrics+reference instruction:

  (a) one candidate at a time, the prompt (text, lyrics, reference audio) re-encoded for every
      candidate, as the reference implementation does with batch_size=1;
  (b) `RewardScorer.score_batch` on all candidates: prompt encoded once, chunks batched.

Each mode runs in its own process (peak memory is its own), is warmed up once with the measured
shapes, then timed ``--repeats`` times (median). Prints a table and the ratio.
Usage: python benchmarks/score_throughput.py [--device cpu|cuda] [--candidates 8] [--seconds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path


def _build(device: str):
    import torch

    from cmirm_plugin.model.config import CMIRMConfig
    from cmirm_plugin.model.reward_model import CMIRewardModel, TowerConfigs
    from cmirm_plugin.model.tiny import train_tiny_tokenizer
    from transformers import AutoTokenizer

    tok_dir = Path(tempfile.mkdtemp())
    train_tiny_tokenizer(tok_dir)  # ids stay far below the real vocabulary; only speed is measured
    torch.manual_seed(0)
    model = CMIRewardModel(CMIRMConfig(), TowerConfigs.default(), AutoTokenizer.from_pretrained(str(tok_dir)))
    return model.to(device).eval()


def _run(mode: str, device: str, n: int, seconds: float, ref_seconds: float, repeats: int, out: mp.Queue) -> None:
    import torch

    from cmirm_plugin import Instruction
    from cmirm_plugin.scoring import RewardScorer, ScoringSettings
    from cmirm_plugin.testing import noise, sine

    scorer = RewardScorer(_build(device), ScoringSettings(batch_size=n, encode_batch_size=n), device=device)
    ref = noise(ref_seconds, 24000, seed=99)
    inst = Instruction(text="Upbeat pop song with bright piano and drums, female vocal",
                       lyrics="I walk alone tonight\nunder the silver moon\noh my heart, oh my love", ref_audio=ref)
    clips = [sine(110.0 * (i + 2), seconds, 24000, harmonics=4) for i in range(n)]
    cuda = device.startswith("cuda")

    def workload() -> None:
        if mode == "a":
            for clip in clips:
                scorer.clear_cache()                  # re-encode the prompt for every candidate
                scorer.score_batch([clip], inst)
        else:
            scorer.clear_cache()
            scorer.score_batch(clips, inst)

    # Warm-up: on CUDA the whole workload (kernel selection for the measured shapes); on CPU, where
    # there is none, one candidate is enough.
    if cuda:
        workload()
    else:
        scorer.score_batch(clips[:1], inst)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        workload()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
    elapsed = sorted(times)[len(times) // 2]
    out.put({"mode": mode, "seconds": elapsed, "cand_per_s": n / elapsed, "peak_gib": peak})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ref-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after one warm-up; the median is reported")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    results = {}
    for mode in ("a", "b"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(mode, args.device, args.candidates, args.seconds, args.ref_seconds, args.repeats, queue))
        proc.start()
        results[mode] = queue.get()
        proc.join()
    a, b = results["a"], results["b"]
    mem = "peak GPU GiB" if args.device.startswith("cuda") else "peak RSS GiB"
    print(f"\nCMI-RM full size, random weights, device={args.device}, {args.candidates} candidates x "
          f"{args.seconds:g} s, reference {args.ref_seconds:g} s, text + lyrics, median of {args.repeats}\n")
    print(f"| path | seconds | candidates/s | {mem} |")
    print("|---|---:|---:|---:|")
    print(f"| (a) one at a time, prompt re-encoded | {a['seconds']:.2f} | {a['cand_per_s']:.3f} | {a['peak_gib']:.2f} |")
    print(f"| (b) batched + prompt cache | {b['seconds']:.2f} | {b['cand_per_s']:.3f} | {b['peak_gib']:.2f} |")
    print(f"\nspeed-up (b)/(a): {b['cand_per_s'] / a['cand_per_s']:.2f}x (target >= 1.8x)")


if __name__ == "__main__":
    main()
