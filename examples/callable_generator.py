"""Plug an existing generation function into cmirm with `CallableGenerator` (runs offline, in seconds).

    python examples/callable_generator.py --out out/callable

Any function ``fn(instruction, seed, duration, **params) -> (waveform, sample_rate)`` works: wrap
it, and it gets cmirm's seeds, parameter records and failure handling. Draw all randomness from
``seed`` so that each candidate can be regenerated alone. From the command line / registry the
same function is ``py:examples.callable_generator:additive_synth`` (run from the repository root).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from cmirm_plugin import Instruction
from generators.python_fn import CallableGenerator, generation_function


@generation_function(sample_rate=22050, inputs=("text",))
def additive_synth(instruction: Instruction, seed: int, duration: float, brightness: float = 0.5):
    """A stand-in for your model: a chord of random partials whose colour follows ``brightness``."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(duration * 22050)) / 22050
    root = 110.0 * 2 ** (torch.randint(0, 12, (1,), generator=gen).item() / 12)
    wave = torch.zeros_like(t)
    for k in range(1, 9):
        wave += brightness ** (k - 1) * torch.sin(2 * math.pi * root * k * t + 6.28 * torch.rand(1, generator=gen))
    return 0.3 * wave / wave.abs().max(), 22050


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/callable"))
    parser.add_argument("--n", type=int, default=4, help="number of candidates")
    args = parser.parse_args()

    generator = CallableGenerator(additive_synth, name="additive-synth")
    instruction = Instruction(text="warm ambient chord")
    result = generator.sample(instruction, seeds=list(range(args.n)), duration=2.0, brightness=0.7)
    for candidate in result:
        path = candidate.audio.save(args.out / f"{candidate.id}.wav")
        print(f"seed {candidate.seed}: {path} {candidate.params}")
    for failure in result.failures:
        print(f"failed: {failure}")


if __name__ == "__main__":
    main()
