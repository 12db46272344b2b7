"""Stable Audio Open through diffusers, on a tiny random pipeline saved to disk and loaded by path."""

from __future__ import annotations

import functools

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


class Spy:
    """Records what the denoiser is given and returns, and the prediction each scheduler step gets."""

    def __init__(self, generator: StableAudioGenerator, monkeypatch) -> None:
        self.generator = generator
        self.inputs: list[torch.Tensor] = []      # encoder_hidden_states: [uncond rows; cond rows] under CFG
        self.outputs: list[torch.Tensor] = []     # the denoiser's predictions, same rows
        self.steps: list[torch.Tensor] = []       # the (guided) prediction handed to the scheduler
        pipeline = generator.pipeline
        self.handle = pipeline.transformer.register_forward_hook(self._record, with_kwargs=True)
        real_step = pipeline.scheduler.step

        @functools.wraps(real_step)               # keeps the signature: diffusers passes `generator` by it
        def step(model_output, *args, **kwargs):
            self.steps.append(model_output.detach().clone())
            return real_step(model_output, *args, **kwargs)

        monkeypatch.setattr(pipeline.scheduler, "step", step)

    def _record(self, module, args, kwargs, output) -> None:
        self.inputs.append(kwargs["encoder_hidden_states"].detach().clone())
        self.outputs.append(output[0].detach().clone())

    def sample(self, text: str, **params):
        for record in (self.inputs, self.outputs, self.steps):
            record.clear()
        (candidate,) = self.generator.sample(Instruction(text=text), [3], 0.3, **params, **FAST)
        return candidate


@pytest.fixture
def spy(stable_audio, monkeypatch):
    spy = Spy(stable_audio, monkeypatch)
    yield spy
    spy.handle.remove()


def test_negative_prompt_is_the_unconditional_input_and_is_recorded(spy):
    """Under guidance, the unconditional half of the denoiser's text input is zeros without a
    negative prompt, and with one it is exactly what that text is as a prompt."""
    default = spy.sample(TEXT.text)
    plain_inputs = list(spy.inputs)
    assert len(plain_inputs) == 4 and all(x.shape[0] == 2 for x in plain_inputs)     # 4 steps, uncond + cond
    assert all(bool((x[:1] == 0).all()) and bool(x[1:].any()) for x in plain_inputs)

    negative = spy.sample(TEXT.text, negative_prompt="noise")
    assert negative.params["negative_prompt"] == "noise" and default.params["negative_prompt"] is None
    negative_inputs = list(spy.inputs)
    spy.sample("noise")                                                  # "noise" as the prompt
    assert all(torch.equal(n[:1], p[1:]) for n, p in zip(negative_inputs, spy.inputs))
    assert all(torch.equal(n[1:], p[1:]) for n, p in zip(negative_inputs, plain_inputs))   # the prompt's half
    assert not torch.equal(negative.audio.waveform, default.audio.waveform)


def test_guidance_scale_weighs_the_two_predictions_and_1_turns_guidance_off(spy):
    for scale in (7.0, 2.5):
        assert spy.sample(TEXT.text, guidance_scale=scale).params["guidance_scale"] == scale
        for out, step in zip(spy.outputs, spy.steps, strict=True):
            uncond, cond = out.chunk(2)
            torch.testing.assert_close(step, uncond + scale * (cond - uncond), rtol=0, atol=1e-6)

    off = spy.sample(TEXT.text, guidance_scale=1.0)
    assert off.params["guidance_scale"] == 1.0
    assert all(x.shape[0] == 1 for x in spy.inputs)                     # no unconditional pass at all
    assert all(torch.equal(step, out) for out, step in zip(spy.outputs, spy.steps, strict=True))
    ignored = spy.sample(TEXT.text, guidance_scale=1.0, negative_prompt="noise")
    assert torch.equal(ignored.audio.waveform, off.audio.waveform)      # nothing to steer away from


def test_refusals_and_limits(stable_audio):
    with pytest.raises(UnsupportedInputError, match="cannot honour lyrics"):
        stable_audio.sample(Instruction(text="x", lyrics="la"), [1], 0.3)
    with pytest.raises(ConfigError, match="'duration' must be a number > 0.0 and <= 1.48"):
        stable_audio.sample(TEXT, [1], 2.0, **FAST)
    with pytest.raises(ConfigError, match="'steps'"):
        stable_audio.sample(TEXT, [1], 0.3, steps=0)
