"""Stable Audio Open through diffusers, on a tiny random pipeline saved to disk and loaded by path."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers", reason="Stable Audio needs the diffusers extra")
pytest.importorskip("torchsde", reason="Stable Audio's scheduler needs torchsde")

from cmirm_plugin import ConfigError, Instruction  # noqa: E402
from cmirm_plugin.testing import sine  # noqa: E402
from generators import UnsupportedInputError  # noqa: E402
from generators.stable_audio import StableAudioGenerator  # noqa: E402
from generators.tiny import save_tiny  # noqa: E402

TEXT = Instruction(text="ambient synth pad")
REF = Instruction(text="ambient synth pad", ref_audio=sine(220.0, seconds=1.0, sample_rate=22050))
FAST = {"steps": 4}


@pytest.fixture(scope="module")
def stable_audio(tmp_path_factory) -> StableAudioGenerator:
    path = save_tiny("stable-audio", tmp_path_factory.mktemp("sa") / "tiny")
    return StableAudioGenerator.from_pretrained(path, device="cpu", name="tiny-sa")


def waves(result):
    return [c.audio.waveform for c in result]


def test_shapes_rate_duration_and_params(stable_audio):
    assert stable_audio.sample_rate == 44100 and stable_audio.max_duration(None) == pytest.approx(65536 / 44100)
    result = stable_audio.sample(TEXT, [0, 1], 0.5, **FAST)
    assert not result.failures
    assert [tuple(w.shape) for w in waves(result)] == [(2, 22050), (2, 22050)]
    assert result[0].params == {"duration": 0.5, "steps": 4, "guidance_scale": 7.0, "negative_prompt": None}


def test_same_seed_is_bit_identical_and_regenerates_alone(stable_audio):
    job = waves(stable_audio.sample(TEXT, [5, 6, 7], 0.3, **FAST))
    again = waves(stable_audio.sample(TEXT, [6], 0.3, **FAST))
    assert torch.equal(job[1], again[0])
    assert not torch.equal(job[0], job[1])


def test_batched_rows_use_their_own_noise(stable_audio):
    batched = waves(stable_audio.sample(TEXT, [5, 6], 0.3, batch_size=2, **FAST))
    alone = waves(stable_audio.sample(TEXT, [6], 0.3, **FAST))
    torch.testing.assert_close(batched[1], alone[0], atol=1e-4, rtol=0)


def test_reference_as_initial_audio_is_per_candidate(stable_audio):
    """The reference is encoded per row, so a batched candidate still matches its lone run."""
    batched = stable_audio.sample(REF, [1, 2], 0.4, batch_size=2, **FAST)
    alone = stable_audio.sample(REF, [2], 0.4, **FAST)
    assert not batched.failures and tuple(alone[0].audio.waveform.shape) == (2, 17640)
    torch.testing.assert_close(batched[1].audio.waveform, alone[0].audio.waveform, atol=1e-4, rtol=0)
    plain = stable_audio.sample(TEXT, [2], 0.4, **FAST)
    assert not torch.equal(plain[0].audio.waveform, alone[0].audio.waveform)


@pytest.mark.parametrize("name, value", [("negative_prompt", "noise"), ("guidance_scale", 1.0)])
def test_negative_prompt_and_guidance_change_the_clip_and_are_recorded(stable_audio, name, value):
    """Same seed, one parameter changed from its default: a different clip, and the value on record."""
    (default,) = stable_audio.sample(TEXT, [3], 0.3, **FAST)
    (changed,) = stable_audio.sample(TEXT, [3], 0.3, **{name: value}, **FAST)
    assert changed.params[name] == value and default.params[name] != value
    assert not torch.equal(changed.audio.waveform, default.audio.waveform)


def test_refusals_and_limits(stable_audio):
    with pytest.raises(UnsupportedInputError, match="cannot honour lyrics"):
        stable_audio.sample(Instruction(text="x", lyrics="la"), [1], 0.3)
    with pytest.raises(ConfigError, match="'duration' must be a number > 0.0 and <= 1.48"):
        stable_audio.sample(TEXT, [1], 2.0, **FAST)
    with pytest.raises(ConfigError, match="'steps'"):
        stable_audio.sample(TEXT, [1], 0.3, steps=0)
