"""Best-of-N from Python: `best_of_n` on a plain generation function, and the `@best_of` decorator.

    python examples/reranking/best_of_n.py                      # offline: tiny random reward model (scores are noise)
    python examples/reranking/best_of_n.py --reward HaiwenXia/CMI-RM --device cuda
    python examples/reranking/best_of_n.py --reward my_pkg.scorers:Aesthetics   # any contract scorer

Your generation function only has to draw its randomness from ``seed`` and return
``(waveform, sample_rate)``; `best_of_n` samples N seeds, scores every clip with the scorer
(`cmirm_plugin.scoring.load_scorer`: CMI-RM by default) and returns the top k (`RankedCandidate`: ``.candidate`` with its audio and recipe, ``.scores``,
``.rank``). With the tiny model the ranking is meaningless; the plumbing is the real one.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from cmirm_plugin import Instruction
from cmirm_plugin.scoring import load_scorer
from rerank.best_of_n import best_of, best_of_n

SAMPLE_RATE = 22050


def pluck(instruction: Instruction, seed: int, duration: float, brightness: float = 0.5):
    """A stand-in for your model: a seeded plucked chord (decaying partials)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE
    root = 110.0 * 2 ** (torch.randint(0, 12, (1,), generator=gen).item() / 12)
    wave = torch.zeros_like(t)
    for interval in (1.0, 1.25, 1.5):
        for k in range(1, 6):
            decay = torch.exp(-t * (1 + k) * (1.5 + torch.rand(1, generator=gen)))
            wave += brightness ** (k - 1) * decay * torch.sin(2 * math.pi * root * interval * k * t)
    return 0.3 * wave / wave.abs().max(), SAMPLE_RATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward", default="tiny", help="scorer spec: tiny, a CMI-RM folder or hub id, "
                                                         "package.module:Name [default: tiny, the random model]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("out/best_of_n"))
    args = parser.parse_args()

    scorer = load_scorer(args.reward, device=args.device)
    instruction = Instruction(text="warm plucked guitar chords, gentle and bright")

    # 1. The function form: any Generator, or a plain function (then give its sample rate).
    best = best_of_n(pluck, instruction, n=8, k=2, scorer=scorer, policy="zsum", duration=3.0,
                     sample_rate=SAMPLE_RATE, brightness=0.6)
    for ranked in best:
        path = ranked.candidate.audio.save(args.out / f"best_of_n_rank{ranked.rank}.wav")
        print(f"rank {ranked.rank}: seed {ranked.candidate.seed}, alignment {ranked.scores.alignment:.3f}, "
              f"musicality {ranked.scores.musicality:.3f} -> {path}")

    # 2. The decorator form: the function now returns its best candidate(s).
    @best_of(n=4, k=1, scorer=scorer, policy="axis:musicality", duration=3.0, sample_rate=SAMPLE_RATE)
    def compose(instruction: Instruction, seed: int, duration: float, brightness: float = 0.5):
        return pluck(instruction, seed, duration, brightness)

    (winner,) = compose("soft lullaby on a music box", brightness=0.3)
    path = winner.candidate.audio.save(args.out / "decorated_best.wav")
    print(f"@best_of: seed {winner.candidate.seed} won with musicality {winner.scores.musicality:.3f} -> {path}")


if __name__ == "__main__":
    main()
