"""A slow generator and a slow scorer that sleep instead of computing: stand-ins for GPU time.

They make pipeline timings meaningful on any machine (a sleeping worker uses no CPU) and runs
exactly comparable (their output depends only on the seed, the instruction and the audio), for
`benchmarks/pipeline_overlap.py` and the tests of the pipeline. They live in the package, not in
the tests, so Ray workers on every node can import them:

- ``--generator py:rerank.synthetic:sleepy_tone`` (parameter ``seconds``: time per candidate);
- ``--reward rerank.synthetic:SleepScorer`` (``init_kwargs={"seconds": ...}``: time per clip);
- ``--reward rerank.synthetic:BatchedSleepScorer``: a GPU's cost shape, where a batched call costs
  about what one clip does (`benchmarks/reward_server.py`).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any, Sequence

import numpy as np
import torch

from cmirm_plugin.audio import Audio
from cmirm_plugin.records import Instruction
from cmirm_plugin.scoring.contract import as_clips, as_instructions
from generators.python_fn import generation_function

SAMPLE_RATE = 16000


@generation_function(sample_rate=SAMPLE_RATE, inputs=("text", "lyrics", "ref_audio"))
def sleepy_tone(instruction: Instruction, seed: int, duration: float, seconds: float = 0.0):
    """A seeded tone with noise, after sleeping ``seconds`` (the stand-in for a generator's GPU time)."""
    time.sleep(seconds)
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 110.0 * 2 ** (torch.randint(0, 24, (1,), generator=gen).item() / 12)
    wave = 0.3 * torch.sin(2 * math.pi * pitch * t) + 0.05 * torch.randn(len(t), generator=gen)
    return wave, SAMPLE_RATE


class SleepScorer:
    """A contract scorer that sleeps ``seconds`` per clip, then scores loudness (musicality) and how
    well the clip's pitch matches a pitch derived from the instruction (alignment)."""

    sr = SAMPLE_RATE
    axes = ("alignment", "musicality")

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = float(seconds)

    def score_batch(self, audios: Sequence[Any], instructions: Instruction | Sequence[Instruction],
                    sample_rate: int | None = None) -> np.ndarray:
        clips = [Audio.coerce(clip, sample_rate).to_mono().resample(self.sr) for clip in as_clips(audios)]
        rows = []
        for clip, instruction in zip(clips, as_instructions(instructions, len(clips))):
            time.sleep(self.seconds)
            wave = clip.waveform[0].double()
            target = 100 + int(hashlib.sha1(instruction.id.encode()).hexdigest(), 16) % 400
            spectrum = torch.fft.rfft(wave).abs()
            peak = float(spectrum.argmax()) * self.sr / len(wave)
            rows.append([-abs(math.log2(max(peak, 1.0) / target)), float(wave.pow(2).mean().sqrt())])
        return np.array(rows, dtype=np.float64)


class BatchedSleepScorer(SleepScorer):
    """`SleepScorer` with a GPU's cost shape: each call sleeps ``call_seconds`` once plus ``seconds`` per
    clip, so a batch of 16 costs little more than one clip. It shows what dynamic batching buys where
    the model, not the CPU, is the limit (a reward server on a GPU)."""

    def __init__(self, seconds: float = 0.001, call_seconds: float = 0.05) -> None:
        super().__init__(seconds)
        self.call_seconds = float(call_seconds)

    def score_batch(self, audios: Sequence[Any], instructions: Instruction | Sequence[Instruction],
                    sample_rate: int | None = None) -> np.ndarray:
        time.sleep(self.call_seconds)
        return super().score_batch(audios, instructions, sample_rate)
