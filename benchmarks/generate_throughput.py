"""Generation throughput: N candidates one at a time (batch_size=1) vs in one batch, side by side.

Random weights, nothing downloaded. Configurations:

- ``tiny-musicgen``, ``tiny-musicgen-melody``, ``tiny-stable-audio``: the test models (overhead-bound);
- ``small-musicgen``: a MusicGen whose decoder and EnCodec have musicgen-small's real sizes (the
  part that dominates generation), with a tiny text encoder (encoded once per call, negligible).

For each configuration: warm-up calls, then the same N seeds one at a time and batched, in the
same process, interleaved ``--repeats`` times (the fastest run of each mode counts). The table
gives candidates/second, the speed-up, and the largest absolute sample
difference between a batched candidate and the same seed generated alone (0 means bit-identical;
see generators/musicgen.py for why batched CPU kernels round differently).

Usage: python benchmarks/generate_throughput.py [--configs tiny-musicgen small-musicgen]
       [--candidates 8] [--seconds 1.0] [--device cpu] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from cmirm_plugin import Instruction
from cmirm_plugin.testing import sine
from generators.base import Generator
from generators.tiny import MusicGenSizes, tiny_musicgen

CONFIGS = ("tiny-musicgen", "tiny-musicgen-melody", "tiny-stable-audio", "small-musicgen")


#: musicgen-small's decoder (1024 wide, 24 layers, 4 x 2048 codes) and 32 kHz EnCodec; a tiny text encoder.
SMALL_MUSICGEN = MusicGenSizes(text_width=64, codec_hidden=128, codec_filters=64, codec_lstm_layers=2,
                               codebook_size=2048, width=1024, layers=24, ffn_dim=4096, heads=16)


def small_musicgen(device: str) -> Generator:
    """A MusicGen at `SMALL_MUSICGEN` sizes with random weights."""
    from generators.musicgen import MusicGenGenerator

    model, processor = tiny_musicgen(0, sizes=SMALL_MUSICGEN)
    return MusicGenGenerator(model.to(device), processor, name="small-musicgen")


def build(config: str, device: str) -> tuple[Generator, dict, Instruction]:
    """The generator, its sampling parameters and the instruction to time."""
    from generators import build_generator

    text = Instruction(text="upbeat pop with bright piano")
    if config == "small-musicgen":
        return small_musicgen(device), {"top_k": 250}, text
    params = {"steps": 8} if config == "tiny-stable-audio" else {"top_k": 32}
    inst = Instruction(text=text.text, ref_audio=sine(330.0, 2.0, 32000)) if config == "tiny-musicgen-melody" else text
    return build_generator(config, device=device), params, inst


def measure(config: str, n: int, seconds: float, device: str, repeats: int) -> dict:
    gen, params, inst = build(config, device)
    seeds = list(range(n))
    # Warm-up at both batch sizes: the first calls pay one-off kernel/thread-pool initialisation.
    for size in (1, n):
        gen.sample(inst, list(range(1000, 1000 + size)), min(seconds, 0.2), batch_size=size, **params)
    timings: dict[str, float] = {}
    outputs: dict[str, list[torch.Tensor]] = {}
    for _ in range(repeats):  # interleaved; the best of each mode (other load on the machine only adds time)
        for label, size in (("one at a time", 1), ("batched", n)):
            start = time.perf_counter()
            result = gen.sample(inst, seeds, seconds, batch_size=size, **params).raise_for_failures()
            timings[label] = min(timings.get(label, float("inf")), time.perf_counter() - start)
            outputs[label] = [c.audio.waveform for c in result]
    diff = max(float((a - b).abs().max()) for a, b in zip(outputs["one at a time"], outputs["batched"], strict=True))
    return {"config": config, "single": n / timings["one at a time"], "batched": n / timings["batched"],
            "max_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0, help="clip length (tiny Stable Audio: at most 1.48)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per mode; the fastest counts")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is steadier on a busy machine: idle threads spin-wait)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"N={args.candidates} candidates of {args.seconds:g} s on {args.device} "
          f"({torch.get_num_threads()} torch threads)")
    header = f"{'config':<22}{'one-at-a-time cand/s':>22}{'batched cand/s':>16}{'speed-up':>10}{'max |diff|':>12}"
    print(header + "\n" + "-" * len(header))
    for config in args.configs:
        row = measure(config, args.candidates, args.seconds, args.device, args.repeats)
        print(f"{row['config']:<22}{row['single']:>22.2f}{row['batched']:>16.2f}"
              f"{row['batched'] / row['single']:>9.2f}x{row['max_diff']:>12.1e}", flush=True)


if __name__ == "__main__":
    main()
