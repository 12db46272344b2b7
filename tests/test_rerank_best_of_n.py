"""`best_of_n` and `@best_of`: plain functions and generators, scorers and pools, failures left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cmirm_plugin import CmirmError, Instruction, Scores
from cmirm_plugin.scoring import RewardScorer, ScorerSpec
from generators.python_fn import CallableGenerator
from rerank.best_of_n import BestOfN, RankedCandidate, best_of, best_of_n
from rerank.policies import AxisPolicy
from rerank.pool import PoolConfig, ScorerPool

pytestmark = pytest.mark.timeout(180)


def tone(instruction, seed, duration, gain=1.0):
    """A seeded tone whose loudness grows with the seed (so a loudness scorer prefers high seeds)."""
    t = torch.arange(int(duration * 16000)) / 16000
    phase = torch.rand(1, generator=torch.Generator().manual_seed(seed))
    return gain * 0.05 * (seed + 1) * torch.sin(2 * np.pi * 220 * t + phase), 16000


class LoudnessScorer:
    """A stand-in reward: alignment = RMS, musicality = -RMS; rejects any batch holding a short clip."""

    sr = 16000
    axes = ("alignment", "musicality")

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score_batch(self, audios, instructions, sample_rate=None):
        self.batches.append(len(audios))
        rows = []
        for audio in audios:
            if audio.num_samples < 100:
                raise CmirmError("too short to score")
            rms = float(audio.waveform.pow(2).mean().sqrt())
            rows.append([rms, -rms])
        return np.array(rows, dtype=np.float32)


def test_plain_function_top_k_by_policy():
    scorer = LoudnessScorer()
    best = best_of_n(tone, "calm pad", n=5, k=2, scorer=scorer, policy="axis:alignment", duration=0.25,
                     sample_rate=16000)
    assert isinstance(best, BestOfN) and all(isinstance(r, RankedCandidate) for r in best)
    assert [r.candidate.seed for r in best] == [4, 3] and [r.rank for r in best] == [1, 2]
    assert best[0].scores.alignment > best[1].scores.alignment and best[0].composite == best[0].scores.alignment
    assert best[0].candidate.instruction_id == Instruction(text="calm pad").id
    assert scorer.batches == [5]                                # one batch: the prompt is encoded once
    quiet = best_of_n(tone, Instruction(text="calm pad"), seeds=[10, 3, 7], k=1, scorer=scorer,
                      policy=AxisPolicy("musicality"), duration=0.25, sample_rate=16000, gain=0.5)
    assert [r.candidate.seed for r in quiet] == [3] and quiet[0].candidate.params == {"duration": 0.25, "gain": 0.5}


def test_decorator_returns_the_best_candidates():
    scorer = LoudnessScorer()

    @best_of(n=4, k=1, scorer=scorer, policy="axis:alignment", duration=0.25, sample_rate=16000)
    def compose(instruction, seed, duration, gain=1.0):
        return tone(instruction, seed, duration, gain)

    (best,) = compose("bright synth", gain=2.0)
    assert best.candidate.seed == 3 and best.candidate.params["gain"] == 2.0
    assert best.candidate.audio.duration == 0.25
    assert compose("bright synth", duration=0.5)[0].candidate.audio.duration == 0.5
    assert isinstance(compose.generator, CallableGenerator) and compose.__name__ == "compose"


def test_failures_and_unscorable_clips_are_left_out_and_reported():
    def flaky(instruction, seed, duration):
        if seed == 1:
            raise RuntimeError("out of memory")
        n = 50 if seed == 2 else int(duration * 16000)
        return 0.1 * (seed + 1) * torch.ones(n), 16000

    scorer = LoudnessScorer()
    best = best_of_n(flaky, "x", n=4, k=3, scorer=scorer, policy="axis:alignment", duration=0.1, sample_rate=16000)
    assert [r.candidate.seed for r in best] == [3, 0]          # fewer than k survive: not an error
    assert [f.seed for f in best.generation_failures] == [1]
    (bad,) = best.score_errors
    assert bad.endswith("_s2") and "too short" in best.score_errors[bad]
    assert scorer.batches == [3, 1, 1, 1]                       # batch rejected, then clip by clip

    def broken(instruction, seed, duration):
        raise RuntimeError("no GPU")

    with pytest.raises(CmirmError, match="(?s)none of the 2 candidates.*no GPU"):
        best_of_n(broken, "x", n=2, k=1, scorer=scorer, duration=0.1, sample_rate=16000)


def test_with_the_tiny_reward_model_and_a_pool(tiny_checkpoint: Path):
    scorer = RewardScorer.from_pretrained(str(tiny_checkpoint), device="cpu")
    generator = CallableGenerator(tone, sample_rate=16000, name="tone")
    direct = best_of_n(generator, "calm pad", n=3, k=3, scorer=scorer, policy="zsum", duration=0.5)
    with ScorerPool(PoolConfig(spec=ScorerSpec.parse(str(tiny_checkpoint)), backend="local", device="cpu")) as pool:
        pooled = best_of_n(generator, "calm pad", n=3, k=3, scorer=pool, policy="zsum", duration=0.5)
    assert [r.candidate.seed for r in direct] == [r.candidate.seed for r in pooled]
    for a, b in zip(direct, pooled):
        np.testing.assert_allclose(a.scores.as_tuple(), b.scores.as_tuple(), atol=1e-5)
    assert all(isinstance(r.scores, Scores) for r in direct)
