"""transformers MusicGen and MusicGen-Melody on tiny random checkpoints loaded from disk by path."""

from __future__ import annotations

import math

import pytest
import torch

from cmirm_plugin import ConfigError, Instruction
from cmirm_plugin.testing import sine
from generators import UnsupportedInputError, build_generator
from generators.musicgen import MusicGenGenerator, MusicGenMelodyGenerator
from generators.params import LMParams
from generators.tiny import save_tiny

TEXT = Instruction(text="upbeat pop with bright piano")
REF = Instruction(text="upbeat pop", ref_audio=sine(330.0, seconds=1.5, sample_rate=24000, harmonics=3))
FAST = {"top_k": 32}


@pytest.fixture(scope="module")
def musicgen(tmp_path_factory) -> MusicGenGenerator:
    path = save_tiny("musicgen", tmp_path_factory.mktemp("musicgen") / "tiny")
    return MusicGenGenerator.from_pretrained(path, device="cpu")


@pytest.fixture(scope="module")
def melody(tmp_path_factory) -> MusicGenMelodyGenerator:
    path = save_tiny("musicgen-melody", tmp_path_factory.mktemp("melody") / "tiny")
    return MusicGenMelodyGenerator.from_pretrained(str(path), name="tiny-melody")


def waves(result):
    return [c.audio.waveform for c in result]


def test_loads_from_a_directory_and_reports_its_shape(musicgen):
    assert musicgen.sample_rate == 32000 and musicgen.frame_rate == 50 and musicgen.num_codebooks == 4
    assert musicgen.name.endswith("tiny") and musicgen.inputs == {"text", "ref_audio"}
    result = musicgen.sample(TEXT, [0, 1], 0.5, **FAST)
    assert not result.failures
    for cand in result:
        assert cand.audio.sample_rate == 32000 and tuple(cand.audio.waveform.shape) == (1, 16000)
        assert cand.params["top_k"] == 32 and cand.params["duration"] == 0.5


def test_same_seed_is_bit_identical_and_seeds_differ(musicgen):
    first, second = waves(musicgen.sample(TEXT, [7, 8], 0.4, **FAST)), waves(musicgen.sample(TEXT, [7, 8], 0.4, **FAST))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], first[1])


def test_candidate_regenerated_alone_equals_it_in_the_job(musicgen):
    job = waves(musicgen.sample(TEXT, [3, 4, 5], 0.4, **FAST))  # batch_size=1: the exact mode
    alone = waves(musicgen.sample(TEXT, [4], 0.4, **FAST))
    assert torch.equal(job[1], alone[0])


def test_batched_candidates_keep_their_own_random_streams(musicgen):
    """Batched: same tokens per seed; audio differs from a lone run only by float rounding."""
    batched = waves(musicgen.sample(TEXT, [3, 4, 5], 0.4, batch_size=3, **FAST))
    reordered = waves(musicgen.sample(TEXT, [5, 4], 0.4, batch_size=2, **FAST))
    alone = waves(musicgen.sample(TEXT, [4], 0.4, **FAST))
    torch.testing.assert_close(batched[1], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(reordered[1], alone[0], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def greedy(musicgen) -> dict[float, torch.Tensor]:
    """transformers' own greedy decode of TEXT (argmax, no sampler of ours), 0.3 s, by guidance scale."""
    inputs = musicgen.processor(text=[TEXT.text], padding=True, return_tensors="pt")
    frames = math.ceil(0.3 * musicgen.frame_rate)
    out = {}
    for guidance in (1.0, 3.0):
        with torch.inference_mode():
            audio = musicgen.model.generate(**inputs, do_sample=False, guidance_scale=guidance,
                                            max_new_tokens=frames + musicgen.num_codebooks - 1)
        out[guidance] = audio[0, :, : round(0.3 * musicgen.sample_rate)].float()
    assert not torch.equal(out[1.0], out[3.0])                          # guidance changes the greedy clip
    (default,) = musicgen.sample(TEXT, [1], 0.3)
    assert not torch.equal(default.audio.waveform, out[3.0])            # the default settings sample
    return out


@pytest.mark.parametrize("name, value", [("top_k", 1), ("top_p", 1e-9), ("temperature", 1e-6)])
def test_each_sampling_parameter_at_its_limit_gives_the_greedy_clip_and_is_recorded(musicgen, greedy, name, value):
    """top_k=1, top_p -> 0 and temperature -> 0 each leave only the most likely token: whatever the
    seed, the clip is the greedy decode at the guidance scale given (3 by default, 1 = unguided),
    and the value is on record.
    """
    (guided,) = musicgen.sample(TEXT, [2], 0.3, **{name: value})
    assert guided.params[name] == value and guided.params[name] != getattr(LMParams(), name)
    assert torch.equal(guided.audio.waveform, greedy[3.0])
    (unguided,) = musicgen.sample(TEXT, [3], 0.3, guidance_scale=1.0, **{name: value})
    assert unguided.params["guidance_scale"] == 1.0 and torch.equal(unguided.audio.waveform, greedy[1.0])


def test_audio_prompt_continuation(musicgen):
    result = musicgen.sample(REF, [1, 2], 0.5, prompt_seconds=0.5, **FAST)
    assert not result.failures
    assert [tuple(w.shape) for w in waves(result)] == [(1, 16000), (1, 16000)]
    again = musicgen.sample(REF, [2], 0.5, prompt_seconds=0.5, **FAST)
    assert torch.equal(again[0].audio.waveform, result[1].audio.waveform)
    # A prompt longer than the reference uses the whole reference.
    assert not musicgen.sample(REF, [1], 0.2, prompt_seconds=10.0, **FAST).failures


def test_too_short_reference_fails_with_a_clear_message(musicgen):
    blip = Instruction(text="x", ref_audio=sine(seconds=0.01, sample_rate=32000))
    (failure,) = musicgen.sample(blip, [1], 0.2, **FAST).failures
    assert "shorter than one codec frame" in failure.message and failure.seed == 1


def test_lyrics_are_refused_not_ignored(musicgen):
    with pytest.raises(UnsupportedInputError, match="cannot honour lyrics"):
        musicgen.sample(Instruction(text="pop", lyrics="hello world"), [1], 0.2)


def test_duration_beyond_the_position_table_is_refused(musicgen):
    with pytest.raises(ConfigError, match="'duration'"):
        musicgen.sample(TEXT, [1], 1000.0)


def test_melody_conditioning(melody):
    assert melody.name == "tiny-melody" and melody.sample_rate == 32000
    result = melody.sample(REF, [1, 2], 0.4, **FAST)
    assert not result.failures and [tuple(w.shape) for w in waves(result)] == [(1, 12800)] * 2
    again = melody.sample(REF, [2], 0.4, **FAST)
    assert torch.equal(again[0].audio.waveform, result[1].audio.waveform)
    text_only = melody.sample(TEXT, [2], 0.4, **FAST)
    assert not torch.equal(text_only[0].audio.waveform, result[1].audio.waveform)


def test_registry_builds_the_tiny_model_offline():
    gen = build_generator("tiny-musicgen", batch_size=2)
    assert isinstance(gen, MusicGenGenerator) and gen.name == "tiny-musicgen" and gen.batch_size == 2
    assert len(gen.sample(TEXT, [1, 2], 0.2, **FAST)) == 2


def test_registry_honours_dtype_for_the_tiny_model():
    gen = build_generator("tiny-musicgen", dtype=torch.bfloat16)
    assert gen.model.dtype == torch.bfloat16
    (cand,) = gen.sample(TEXT, [1], 0.1, **FAST)
    assert cand.audio.waveform.dtype == torch.float32  # candidates are float32 whatever the model runs in


def test_a_generator_that_cannot_be_fetched_says_how_to_provide_it(monkeypatch):
    import huggingface_hub.constants as constants

    from cmirm_plugin.errors import CheckpointError
    from generators import build_generator

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the hub is never contacted
    with pytest.raises(CheckpointError, match=r"could not load generator 'example-org/no-such-musicgen'.*"
                                              r"`hf download example-org/no-such-musicgen`.*HF_HUB_OFFLINE=1.*"
                                              r"`hf download example-org/no-such-musicgen --local-dir DIR` there and "
                                              r"pass --generator musicgen:DIR\.$"):
        build_generator("musicgen:example-org/no-such-musicgen")
