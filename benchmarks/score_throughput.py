"""Scoring throughput of the full-size CMI-RM, loaded and fed the way users run it.

A released-layout folder is built once with random weights at the real sizes (MuQ-large,
XLM-R-base, the 768-d CMI-RM part; the tiny tokenizer; nothing is downloaded) and loaded through
``RewardScorer.from_pretrained`` as any checkpoint; the candidates and the reference are WAV files.
One text + lyrics + reference instruction, N candidates of S seconds:

  (a)        one candidate at a time, the prompt (text, lyrics, reference) re-encoded for each, as
             the reference implementation does with batch_size=1 (fp32);
  (b)        ``score_batch`` on all candidates: prompt encoded once, chunks batched (fp32, defaults);
  (b) bf16   the same under bf16 autocast (``--dtype bf16``; CPUs with native bf16, or CUDA).

Optional rows: ``--sweep`` times (b) at encode batch sizes 1, 2, 8 (how `ENCODE_BATCH_SIZE` in
`cmirm_plugin/scoring/settings.py` was chosen), ``--nchw`` times (b) with the conv front end in the
plain NCHW layout (what ``channels_last`` buys). The rows run interleaved, one round after another,
in one process over one loaded model, after one warm-up each; the median of ``--repeats`` rounds is
reported, with the machine's load average and torch's thread count (only a quiet machine gives
figures worth comparing). Also printed: the largest |bf16 - fp32| score difference.

Measured on this project's machine kind (2 cores, AVX-512 BF16; see the README for the table),
(b) seconds at encode batch 1 / 2 / 8: 17.3 / 17.3 / 19.4 (the issue's quiet run) and 25.30 / 24.17 /
24.85 (``--sweep --nchw --repeats 3``, quiet, 2026-12-04). Two chunks per call were never slower and
once 4.5 % faster, and 8 clips of chunks through the 512-channel conv front end overflow the cache,
so the CPU default is 2; CUDA keeps 8. The same run timed the conv front end in NCHW at 25.19 s,
equal to ``channels_last`` (25.19 s): on this AMD CPU the layout buys nothing end to end.

Usage: python benchmarks/score_throughput.py [--device cpu|cuda] [--candidates 8] [--seconds 10]
       [--repeats 3] [--sweep] [--nchw] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path


def build_checkpoint(root: Path) -> Path:
    """A released-layout CMI-RM folder over full-size random towers under ``root`` (built once)."""
    from cmirm_plugin.model.loading import build_model, save_pretrained
    from cmirm_plugin.model.config import CMIRMConfig
    from cmirm_plugin.model.tiny import build_tiny_towers

    folder = root / "cmi-rm-full"
    if (folder / "model.safetensors").is_file():
        return folder
    mulan = build_tiny_towers(root, seed=0, size="full")
    model, _ = build_model(CMIRMConfig(model_name=str(mulan)), seed=1)
    return save_pretrained(model, folder)


def write_inputs(root: Path, n: int, seconds: float, ref_seconds: float) -> tuple[list[str], str]:
    from cmirm_plugin.testing import noise, sine

    clips = [str(sine(110.0 * (i + 2), seconds, 32000, harmonics=4).save(root / f"cand{i}.wav")) for i in range(n)]
    return clips, str(noise(ref_seconds, 44100, seed=99).save(root / "ref.wav"))


def machine() -> str:
    import torch

    from cmirm_plugin.scoring.settings import cpu_has_native_bf16

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{model}; {os.cpu_count()} cores; native bf16: {cpu_has_native_bf16()}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; load average (1, 5, 15 min): {load}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ref-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--sweep", action="store_true", help="also (b) at encode batch sizes 1, 2, 8")
    parser.add_argument("--nchw", action="store_true", help="also (b) with the conv front end in NCHW layout")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the built checkpoint here (reused)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from cmirm_plugin import Instruction
    from cmirm_plugin.scoring import RewardScorer, ScoringSettings
    from cmirm_plugin.scoring.settings import cpu_has_native_bf16

    root = args.workdir or Path(tempfile.mkdtemp(prefix="cmirm-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"building / loading the full-size checkpoint in {root} ...", flush=True)
    base = RewardScorer.from_pretrained(str(build_checkpoint(root)), ScoringSettings(), device=args.device)
    clips, ref = write_inputs(root, args.candidates, args.seconds, args.ref_seconds)
    inst = Instruction(text="Upbeat pop song with bright piano and drums, female vocal",
                       lyrics="I walk alone tonight\nunder the silver moon\noh my heart, oh my love", ref_audio=ref)

    rows: dict[str, tuple[RewardScorer, bool]] = {"(a) one at a time, prompt re-encoded": (base, True),
                                                  "(b) batched + prompt cache": (base, False)}
    bf16_ok = args.device.startswith("cuda") or cpu_has_native_bf16()
    if bf16_ok:
        rows["(b) + bf16 autocast"] = (base.with_settings(ScoringSettings(dtype="bf16")), False)
    if args.sweep:
        for size in (1, 2, 8):
            rows[f"(b) encode batch {size}"] = (base.with_settings(ScoringSettings(encode_batch_size=size)), False)
    nchw = None
    if args.nchw:   # a second model whose conv front end runs in the plain layout
        nchw = RewardScorer.from_pretrained(str(root / "cmi-rm-full"), ScoringSettings(), device=args.device)
        nchw.model.audio_module.model.model.conv.set_memory_format(torch.contiguous_format)
        rows["(b) conv front end NCHW"] = (nchw, False)

    def run(scorer: RewardScorer, one_at_a_time: bool) -> np.ndarray:
        if one_at_a_time:
            out = []
            for clip in clips:
                scorer.clear_cache()                  # re-encode the prompt for every candidate
                out.append(scorer.score_batch([clip], inst))
            return np.concatenate(out)
        scorer.clear_cache()
        return scorer.score_batch(clips, inst)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    scores, times = {}, {name: [] for name in rows}
    for name, (scorer, single) in rows.items():   # warm-up (kernel choice on CUDA, allocator on CPU)
        scores[name] = run(scorer, single)
    for _ in range(args.repeats):
        for name, (scorer, single) in rows.items():
            sync()
            start = time.perf_counter()
            run(scorer, single)
            sync()
            times[name].append(time.perf_counter() - start)

    peak = (torch.cuda.max_memory_allocated() if args.device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
    print(f"\nCMI-RM full size, random weights, loaded from a released-layout folder; device={args.device}; "
          f"{args.candidates} candidates x {args.seconds:g} s WAV, reference {args.ref_seconds:g} s, text + lyrics; "
          f"median of {args.repeats} interleaved rounds\n{machine()}\n")
    print("| path | seconds | candidates/s | vs (a) |")
    print("|---|---:|---:|---:|")
    medians = {name: statistics.median(values) for name, values in times.items()}
    first = medians["(a) one at a time, prompt re-encoded"]
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} | {args.candidates / seconds:.3f} | {first / seconds:.2f}x |")
    fp32 = scores["(b) batched + prompt cache"]
    print(f"\npeak {'GPU' if args.device.startswith('cuda') else 'RSS'} memory: {peak:.2f} GiB")
    print(f"speed-up (b)/(a): {first / medians['(b) batched + prompt cache']:.2f}x (target >= 1.8x)")
    print(f"(a) vs (b) scores: max |diff| {np.abs(scores['(a) one at a time, prompt re-encoded'] - fp32).max():.1e}")
    if bf16_ok:
        print(f"bf16 vs fp32 scores: max |diff| {np.abs(scores['(b) + bf16 autocast'] - fp32).max():.1e} "
              f"(score spread across candidates: {np.ptp(fp32, axis=0).max():.1e})")
    if nchw is not None:
        print(f"NCHW vs channels_last scores: max |diff| {np.abs(scores['(b) conv front end NCHW'] - fp32).max():.1e}")


if __name__ == "__main__":
    main()
