"""audiocraft backend on a tiny random MusicGen saved in audiocraft's export layout.

Tests marked ``audiocraft`` are skipped (with the reason) where the optional audiocraft package does
not import, and fail instead under ``CMIRM_REQUIRE_AUDIOCRAFT=1`` (CI sets it after installing it with
``scripts/install_audiocraft.sh``; see tests/conftest.py). The missing-package message is tested either way.
"""

from __future__ import annotations

import sys
import warnings
from types import SimpleNamespace

import pytest
import torch

from cmirm_plugin import ConfigError, Instruction
from cmirm_plugin.testing import sine
from generators import UnsupportedInputError, build_generator
from generators.audiocraft_backend import AudiocraftGenerator, MagnetParams, checkpoint_is_magnet, import_audiocraft

TEXT = Instruction(text="lofi beat")
FAST = {"top_k": 32}


def test_missing_package_message_says_how_to_install(monkeypatch, audiocraft_missing):
    if audiocraft_missing is None:
        monkeypatch.setitem(sys.modules, "audiocraft.models", None)
    with pytest.raises(ConfigError, match="scripts/install_audiocraft.sh"):
        import_audiocraft()


def test_dtype_is_refused_before_anything_loads():
    with pytest.raises(ConfigError, match="picks its own dtype"):
        AudiocraftGenerator.from_pretrained("unused", dtype=torch.float16)
    with pytest.raises(ConfigError, match="use batch_size=1"):
        AudiocraftGenerator.from_pretrained("unused", batch_size=2)


def _save_config(directory, lm_model: str):
    """A ``state_dict.bin`` as audiocraft exports it (the training config as a YAML string)."""
    directory.mkdir(parents=True)
    torch.save({"xp.cfg": f"lm_model: {lm_model}\ndataset:\n  segment_duration: 10\n", "best_state": {},
                "version": "1.3.0", "exported": True}, directory / "state_dict.bin")
    return directory


def test_the_saved_config_not_the_path_says_magnet(tmp_path):
    assert checkpoint_is_magnet(_save_config(tmp_path / "my-magnet-finetune", "transformer_lm")) is False
    assert checkpoint_is_magnet(_save_config(tmp_path / "plain", "transformer_lm_magnet")) is True
    # Hub names (and directories whose config cannot be read) follow audiocraft's naming.
    assert checkpoint_is_magnet("facebook/magnet-small-10secs") and checkpoint_is_magnet("facebook/audio-magnet-small")
    assert not checkpoint_is_magnet("facebook/musicgen-small")
    (tmp_path / "old-magnet").mkdir()
    (tmp_path / "old-magnet" / "state_dict.bin").write_bytes(b"not a torch file")
    assert checkpoint_is_magnet(tmp_path / "old-magnet")


class MAGNeT:
    """Just enough of audiocraft's MAGNeT (a 10 s model) for `AudiocraftGenerator`; never samples."""

    sample_rate, max_duration = 32000, 10.0
    lm = SimpleNamespace(condition_provider=SimpleNamespace(conditioners={"description": None}))

    def set_generation_params(self, **params):
        raise AssertionError("sampling started")


def test_magnet_duration_is_checked_before_sampling():
    gen = AudiocraftGenerator(MAGNeT(), name="audiocraft:fake-magnet")
    assert gen.inputs == {"text"} and gen.params_type is MagnetParams
    with pytest.raises(ConfigError, match="makes exactly 10 s clips; use duration=10, got 5"):
        gen.sample(TEXT, [1, 2], 5.0)


def test_magnet_params_validation():
    assert MagnetParams().to_dict()["decoding_steps"] == [20, 10, 10, 10]
    with pytest.raises(ConfigError, match="'decoding_steps'"):
        MagnetParams(decoding_steps=[0])
    with pytest.raises(ConfigError, match="'span_arrangement'"):
        MagnetParams(span_arrangement="random")


@pytest.fixture(scope="module")
def tiny_audiocraft(tmp_path_factory) -> AudiocraftGenerator:
    from generators.tiny import save_tiny_audiocraft_musicgen

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = save_tiny_audiocraft_musicgen(tmp_path_factory.mktemp("audiocraft") / "tiny")
    return build_generator(f"audiocraft:{path}")


@pytest.mark.audiocraft
def test_loads_by_path_and_generates(tiny_audiocraft):
    gen = tiny_audiocraft
    assert gen.name.startswith("audiocraft:") and gen.sample_rate == 32000 and gen.inputs == {"text", "ref_audio"}
    result = gen.sample(TEXT, [1, 2], 0.4, **FAST)
    assert not result.failures and [tuple(c.audio.waveform.shape) for c in result] == [(1, 12800)] * 2
    assert result[0].params["top_k"] == 32


@pytest.mark.audiocraft
def test_each_seed_reproduces_alone_and_the_global_rng_is_untouched(tiny_audiocraft):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    job = tiny_audiocraft.sample(TEXT, [4, 5], 0.3, **FAST)
    assert torch.equal(torch.rand(1), expected_next)
    alone = tiny_audiocraft.sample(TEXT, [5], 0.3, **FAST)
    assert torch.equal(job[1].audio.waveform, alone[0].audio.waveform)
    assert not torch.equal(job[0].audio.waveform, job[1].audio.waveform)


@pytest.mark.audiocraft
def test_continuation_and_refusals(tiny_audiocraft):
    ref = Instruction(text="lofi", ref_audio=sine(seconds=1.0, sample_rate=16000))
    result = tiny_audiocraft.sample(ref, [1], 0.4, prompt_seconds=0.5, **FAST)
    assert not result.failures and tuple(result[0].audio.waveform.shape) == (1, 12800)
    with pytest.raises(ConfigError, match="use batch_size=1"):
        tiny_audiocraft.sample(TEXT, [1, 2], 0.3, batch_size=2)
    with pytest.raises(UnsupportedInputError, match="cannot honour lyrics"):
        tiny_audiocraft.sample(Instruction(text="x", lyrics="y"), [1], 0.3)


@pytest.mark.audiocraft
def test_a_musicgen_in_a_directory_named_magnet_loads_as_musicgen(tmp_path):
    from generators.tiny import save_tiny_audiocraft_musicgen

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = save_tiny_audiocraft_musicgen(tmp_path / "musicgen-not-magnet")
        gen = build_generator(f"audiocraft:{path}")
    assert not gen.is_magnet and gen.params_type is not MagnetParams
