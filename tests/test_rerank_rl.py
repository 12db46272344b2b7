"""`rerank.rl.make_reward_fn`: any scorer as an RL reward: one float per clip (the policy's composite),
per-axis components, prompt groups for pool-relative policies, failures, TRL's signature, and the
GRPO example loop."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from cmirm_plugin import Audio, Instruction
from cmirm_plugin.errors import CmirmError, ConfigError
from cmirm_plugin.scoring import RewardScorer
from cmirm_plugin.scoring.contract import as_clips, as_instructions
from cmirm_plugin.testing import noise
from rerank.policies import zscores
from rerank.rl import make_reward_fn

pytestmark = pytest.mark.timeout(300)
EXAMPLE = Path(__file__).parents[1] / "examples" / "rl" / "grpo_tiny.py"


class Known:
    """loudness = rms (+ 1 when the prompt has lyrics), peak = max |x|; too-short clips are refused."""

    axes = ("loudness", "peak")
    sr = 8000

    def __init__(self):
        self.calls = 0

    def score_batch(self, audios, instructions, sample_rate=None):
        self.calls += 1
        clips = [Audio.coerce(a, sample_rate) for a in as_clips(audios)]
        rows = []
        for clip, inst in zip(clips, as_instructions(instructions, len(clips))):
            if clip.num_samples < 10:
                raise CmirmError("too short")
            wave = clip.waveform
            rows.append([float(wave.pow(2).mean().sqrt()) + (1.0 if inst.lyrics else 0.0), float(wave.abs().max())])
        return np.array(rows)


def _expected(clips) -> np.ndarray:
    return Known().score_batch(list(clips), Instruction(), 8000)


def test_an_axis_reward_on_a_tensor_batch():
    batch = torch.randn(6, 400) * torch.linspace(0.1, 0.6, 6)[:, None]
    reward_fn = make_reward_fn(Known(), policy="axis:loudness", sample_rate=8000)
    rewards = reward_fn(batch, [f"prompt {i % 2}" for i in range(6)])
    expected = _expected(batch)
    assert rewards == pytest.approx(expected[:, 0].tolist()) and isinstance(rewards[0], float)
    assert reward_fn.last.components() == {"loudness": pytest.approx(expected[:, 0].tolist()),
                                           "peak": pytest.approx(expected[:, 1].tolist())}
    assert reward_fn.scorer.calls == 1                                   # one batched call
    with pytest.raises(ConfigError, match="give --policy"):             # two axes, no musicality: say which
        make_reward_fn(Known())


def test_prompts_may_be_text_instructions_or_mappings():
    clips = [torch.full((100,), 0.5)] * 3
    reward_fn = make_reward_fn(Known(), "axis:loudness", sample_rate=8000)
    rewards = reward_fn(clips, ["x", Instruction(text="x", lyrics="la"), {"text": "x", "lyrics": "la"}])
    assert rewards == pytest.approx([0.5, 1.5, 1.5])
    assert reward_fn(clips, "one prompt for all") == pytest.approx([0.5] * 3)
    with pytest.raises(CmirmError, match="got 3 clips but 2 prompts"):
        reward_fn(clips, ["a", "b"])


def test_pool_relative_policies_standardise_within_each_prompt_group():
    gen = torch.Generator().manual_seed(0)
    batch = torch.randn(6, 300, generator=gen) * torch.rand(6, 1, generator=gen)
    prompts = ["a", "b", "a", "b", "a", "b"]                              # groups need not be contiguous
    reward_fn = make_reward_fn(Known(), "zsum", sample_rate=8000)
    rewards = np.array(reward_fn(batch, prompts))
    scores = _expected(batch)
    for group in ([0, 2, 4], [1, 3, 5]):
        np.testing.assert_allclose(rewards[group], zscores(scores[group]).sum(axis=1), atol=1e-9)
        assert abs(rewards[group].sum()) < 1e-9                        # group-relative: sums to zero
    assert not np.allclose(rewards, zscores(scores).sum(axis=1))          # not standardised over the whole batch
    with pytest.raises(CmirmError, match="prompt 'b' has one clip in this call"):
        reward_fn(batch[:3], ["a", "a", "b"])
    with pytest.raises(ConfigError, match="thresholds select candidates and are not a reward"):
        make_reward_fn(Known(), "zsum;min:peak=0.1")


def test_unscorable_clips_fail_or_get_the_failure_reward():
    clips = [torch.full((100,), 0.3), torch.zeros(5), torch.full((100,), 0.2)]
    with pytest.raises(CmirmError, match="clip 1 cannot be scored: CmirmError: too short"):
        make_reward_fn(Known(), "axis:peak", sample_rate=8000)(clips, "x")
    reward_fn = make_reward_fn(Known(), "axis:peak", sample_rate=8000, failure_reward=-1.0)
    assert reward_fn(clips, "x") == pytest.approx([0.3, -1.0, 0.2])
    assert np.isnan(reward_fn.last.scores[1]).all() and reward_fn.last.errors[1].endswith("too short")


def test_trl_signature():
    reward_fn = make_reward_fn(Known(), "axis:peak", sample_rate=8000)
    func = reward_fn.for_trl(to_audio=lambda completions, gain, **kw: [torch.full((50,), c * gain) for c in completions])
    assert func.__name__ == "cmirm_axis_peak"
    assert func(prompts=["a", "b"], completions=[0.1, 0.2], gain=2.0, completion_ids=None) == pytest.approx([0.2, 0.4])
    waves = reward_fn.for_trl()
    assert waves(["a"], [torch.full((50,), 0.25)]) == pytest.approx([0.25])


def test_cmi_rm_rewards_equal_its_musicality(tiny_model):
    scorer = RewardScorer(tiny_model, device="cpu")
    batch = torch.stack([noise(0.6, 16000, seed=i).waveform[0] for i in range(4)])
    prompts = ["calm", "calm", "rock", "rock"]
    rewards = make_reward_fn(scorer, sample_rate=16000)(batch, prompts)           # default: axis:musicality
    expected = scorer.score_batch(batch, [Instruction(text=p) for p in prompts], sample_rate=16000)
    np.testing.assert_allclose(rewards, expected[:, 1], atol=1e-6)


def test_the_grpo_example_takes_policy_gradient_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("CMIRM_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("grpo_tiny", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    torch.manual_seed(0)
    history = example.train("tiny", steps=2, group=3)
    assert [h["step"] for h in history] == [1, 2]
    assert all(np.isfinite(h["loss"]) and len(h["reward"]) == 2 and "musicality" in h for h in history)
    assert np.abs(np.array(history[0]["controls"])).max() > 0.01          # the step moved the policy (from zeros)
    assert history[1]["controls"] != history[0]["controls"]
    advantages = example.group_advantages(torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 40.0]), 3)
    np.testing.assert_allclose(advantages.view(2, 3).sum(dim=1), [0, 0], atol=1e-5)
    np.testing.assert_allclose(advantages[:3], [-1, 0, 1], atol=1e-5)
