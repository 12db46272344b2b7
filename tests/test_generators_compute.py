"""Compute accounting and search abilities of the model backends on tiny models: exact work units
(checked against the model calls themselves), MusicGen's codes and continuation, Stable Audio's latents."""

from __future__ import annotations

import pytest
import torch

from cmirm_plugin import ConfigError, Instruction
from generators.sampling import PerRowSampler
from generators.tiny import tiny_generator

TEXT = Instruction(text="upbeat pop with bright piano")
FAST = {"top_k": 32}


class Calls:
    """Counts a module's forward calls and the rows each one evaluated."""

    def __init__(self, module: torch.nn.Module, rows_of) -> None:
        self.rows: list[int] = []
        self.handle = module.register_forward_hook(lambda mod, args, kwargs, out: self.rows.append(rows_of(args, kwargs)),
                                                   with_kwargs=True)

    def __enter__(self) -> "Calls":
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


@pytest.fixture(scope="module")
def musicgen(one_torch_thread):
    return tiny_generator("musicgen")


@pytest.fixture(scope="module")
def stable_audio(one_torch_thread):
    pytest.importorskip("diffusers")
    pytest.importorskip("torchsde")
    return tiny_generator("stable-audio")


class CountingSampler(PerRowSampler):
    """The backend's sampler, remembering the logits rows of every step it sampled."""

    made: list["CountingSampler"] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows: list[int] = []
        CountingSampler.made.append(self)

    def __call__(self, input_ids, scores):
        self.rows.append(scores.shape[0])
        return super().__call__(input_ids, scores)


@pytest.mark.parametrize("guidance, rows", [(3.0, 2), (1.0, 1)])
def test_musicgen_work_units_are_its_decoder_steps(musicgen, guidance, rows, monkeypatch):
    """0.3 s at 50 Hz is 15 frames; the delay pattern of 4 codebooks adds 3 steps: 18 sampled decoder steps.

    (transformers 5 runs MusicGen's prefill forward twice, once in vain; cmirm counts the steps the
    model needs, which is what another transformers version or backend would also run.)
    """
    monkeypatch.setattr("generators.musicgen.PerRowSampler", CountingSampler)
    CountingSampler.made.clear()
    (cand,) = musicgen.sample(TEXT, [1], 0.3, guidance_scale=guidance, **FAST)
    compute = cand.compute
    assert (compute.work_unit, compute.work_units, compute.model_evals) == ("decoder_steps", 18, 18 * rows)
    (sampler,) = CountingSampler.made
    assert sampler.rows == [rows * musicgen.num_codebooks] * 18
    assert compute.audio_seconds == 0.3 and compute.device == "cpu" and compute.generator_seconds > 0
    assert compute.scorer_seconds is None


def test_musicgen_batch_wall_time_is_split_equally(musicgen):
    result = musicgen.sample(TEXT, [1, 2, 3], 0.1, batch_size=3, **FAST)
    assert len({c.compute.generator_seconds for c in result}) == 1
    assert all(c.compute.work_units == 8 for c in result)  # work is per candidate, whatever the batch


def test_musicgen_keeps_its_codes_and_continues_from_them(musicgen, monkeypatch):
    (first,) = musicgen.sample(TEXT, [1], 0.2, **FAST)
    assert first.codes.shape == (4, 10) and first.codes.dtype == torch.long
    with torch.no_grad():
        decoded = musicgen.model.audio_encoder.decode(first.codes[None, None], [None]).audio_values[0]
    torch.testing.assert_close(decoded, first.audio.waveform, atol=1e-6, rtol=0)
    monkeypatch.setattr("generators.musicgen.PerRowSampler", CountingSampler)
    CountingSampler.made.clear()
    result = musicgen.extend(TEXT, first, [5, 6], 0.1, batch_size=1, **FAST)
    assert [len(s.rows) for s in CountingSampler.made] == [5 + 3] * 2  # 5 new frames each, plus the delay
    for cand in result:
        assert cand.codes.shape == (4, 15) and torch.equal(cand.codes[:, :10], first.codes)
        assert cand.audio.num_samples == 0.3 * 32000 and cand.params["duration"] == 0.3
        assert (cand.compute.audio_seconds, cand.compute.work_units, cand.compute.model_evals) == (0.1, 8, 16)
    assert not torch.equal(result[0].codes, result[1].codes)
    (again,) = musicgen.extend(TEXT, first, [6], 0.1, **FAST)
    assert torch.equal(again.audio.waveform, result[1].audio.waveform) and torch.equal(again.codes, result[1].codes)
    (twice,) = musicgen.extend(TEXT, again, [7], 0.1, **FAST)
    assert twice.codes.shape == (4, 20) and torch.equal(twice.codes[:, :15], again.codes)


def test_musicgen_continuation_without_codes_goes_through_the_audio_prompt(musicgen):
    (first,) = musicgen.sample(TEXT, [1], 0.2, **FAST)
    first.codes = None
    (cand,) = musicgen.extend(TEXT, first, [5], 0.1, **FAST)
    assert torch.equal(cand.codes[:, :10], musicgen.encode(first.audio)) and cand.audio.num_samples == 9600
    with pytest.raises(ConfigError, match="continues in whole codec frames of 0.02 s; segment=0.03 s"):
        musicgen.extend(TEXT, first, [5], 0.03, **FAST)


def test_melody_continues_from_codes():
    melody = tiny_generator("musicgen-melody")
    (first,) = melody.sample(TEXT, [2], 0.1, **FAST)
    (cand,) = melody.extend(TEXT, first, [3], 0.1, **FAST)
    assert cand.codes.shape == (4, 10) and torch.equal(cand.codes[:, :5], first.codes)


def _dit_rows(args, kwargs):
    return (kwargs.get("hidden_states", args[0] if args else None)).shape[0]


@pytest.mark.parametrize("guidance, rows", [(7.0, 2), (1.0, 1)])
def test_stable_audio_work_units_are_its_nfes(stable_audio, guidance, rows):
    with Calls(stable_audio.pipeline.transformer, _dit_rows) as calls:
        (cand,) = stable_audio.sample(TEXT, [3], 0.2, steps=3, guidance_scale=guidance)
    assert (cand.compute.work_unit, cand.compute.work_units, cand.compute.model_evals) == ("nfe", 3, 3 * rows)
    assert calls.rows == [rows] * 3


def test_stable_audio_starts_from_given_latents(stable_audio):
    assert stable_audio.capabilities.accepts_latents and stable_audio.latent_shape == (4, 512)
    latents = stable_audio.initial_latents([3, 4])
    assert latents.shape == (2, 4, 512) and latents.dtype == torch.float32
    plain = stable_audio.sample(TEXT, [3, 4], 0.2, steps=2)
    same = stable_audio.sample_from_latents(TEXT, latents, [3, 4], 0.2, steps=2)
    assert all(torch.equal(a.audio.waveform, b.audio.waveform) for a, b in zip(plain, same))
    # Another latent, same sampler seed: another clip; the sampler seed alone names nothing.
    (moved,) = stable_audio.sample_from_latents(TEXT, latents[1:] * -1, [9], 0.2, sampler_seeds=[3], steps=2)
    assert moved.seed == 9 and not torch.equal(moved.audio.waveform, plain[0].audio.waveform)
    with pytest.raises(ConfigError, match=r"latents must be a tensor of shape \(1, 4, 512\)"):
        stable_audio.sample_from_latents(TEXT, latents, [3], 0.2, steps=2)
