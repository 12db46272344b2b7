"""CallableGenerator: wrapping a Python generation function, its failures, the ``py:`` registry name."""

from __future__ import annotations

import runpy
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from cmirm_plugin import Audio, ConfigError, Instruction
from generators import UnsupportedInputError, build_generator
from generators.python_fn import CallableGenerator, generation_function

TEXT = Instruction(text="soft pad")
ROOT = Path(__file__).resolve().parents[1]


def noise_fn(instruction, seed, duration, level=0.1, mode="ok"):
    """Seeded noise at 16 kHz; ``mode`` makes it misbehave."""
    if mode == "raise":
        raise RuntimeError(f"model crashed on seed {seed}")
    n = 0 if mode == "empty" else int(duration * 16000)
    wave = level * torch.randn(n, generator=torch.Generator().manual_seed(seed))
    if mode == "nan":
        wave[1] = float("nan")
    if mode == "junk":
        return "not audio"
    return wave, 16000


def test_wraps_a_function_with_seeds_params_and_resampling():
    gen = CallableGenerator(noise_fn, sample_rate=8000, name="noise")
    result = gen.sample(TEXT, [1, 2], 0.5, level=0.2)
    assert not result.failures and [c.seed for c in result] == [1, 2]
    assert all(c.audio.sample_rate == 8000 and c.audio.num_samples == 4000 for c in result)
    assert result[0].params == {"duration": 0.5, "level": 0.2}  # what was given; not the function's defaults
    again = gen.sample(TEXT, [2], 0.5, level=0.2)
    assert torch.equal(again[0].audio.waveform, result[1].audio.waveform)


@pytest.mark.parametrize("mode, kind, needle", [
    ("raise", "exception", "RuntimeError: model crashed on seed 3"),
    ("nan", "invalid_audio", "NaN"),
    ("empty", "invalid_audio", "no samples"),
    ("junk", "invalid_audio", "expected (waveform, sample_rate) or Audio, got str"),
])
def test_a_failing_seed_keeps_the_others(mode, kind, needle):
    def flaky(instruction, seed, duration, **params):
        return noise_fn(instruction, seed, duration, mode=mode if seed == 3 else "ok")

    result = CallableGenerator(flaky, sample_rate=16000, name="flaky").sample(TEXT, [1, 3, 5], 0.2)
    assert [c.seed for c in result] == [1, 5]
    (failure,) = result.failures
    assert failure.seed == 3 and failure.kind == kind and needle in failure.message
    if kind == "exception":
        assert "Traceback" in failure.detail and "noise_fn" in failure.detail


def test_audio_return_and_inputs():
    def sung(instruction, seed, duration):
        assert instruction.lyrics == "la la"
        return Audio(torch.zeros(2, int(duration * 8000)), 8000)

    gen = CallableGenerator(sung, sample_rate=8000, inputs=["text", "lyrics"], name="sung")
    (cand,) = gen.sample(Instruction(text="x", lyrics="la la"), [0], 0.25)
    assert cand.audio.num_channels == 2 and cand.audio.num_samples == 2000  # silence is valid
    with pytest.raises(UnsupportedInputError, match="'noise' cannot honour lyrics"):
        CallableGenerator(noise_fn, sample_rate=16000, name="noise").sample(Instruction(text="x", lyrics="y"), [0], 0.2)


def test_configuration_errors():
    with pytest.raises(ConfigError, match="decorate the function with @generation_function\\(sample_rate=...\\)"):
        CallableGenerator(noise_fn)
    with pytest.raises(ConfigError, match="must accept a 'duration' keyword"):
        CallableGenerator(lambda instruction, seed: None, sample_rate=8000)
    with pytest.raises(ConfigError, match="inputs must be among"):
        CallableGenerator(noise_fn, sample_rate=8000, inputs=["melody"])
    with pytest.raises(ConfigError, match="needs a callable"):
        CallableGenerator(3, sample_rate=8000)
    gen = CallableGenerator(noise_fn, sample_rate=16000, name="noise")
    with pytest.raises(ConfigError, match="'lvl'.*known: level, mode"):
        gen.sample(TEXT, [0], 0.2, lvl=1)

    def needs_steps(instruction, seed, duration, steps):
        return noise_fn(instruction, seed, duration)

    with pytest.raises(ConfigError, match="'needs' needs parameter\\(s\\) 'steps'"):
        CallableGenerator(needs_steps, sample_rate=16000, name="needs").sample(TEXT, [0], 0.2)
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        CallableGenerator(lambda i, s, duration, **kw: None, sample_rate=8000).sample(TEXT, [0], 0.2, obj=object())


def test_decorated_function_by_registry_name(tmp_path, monkeypatch):
    (tmp_path / "my_music.py").write_text(textwrap.dedent("""
        import numpy as np
        from generators.python_fn import CallableGenerator, generation_function

        @generation_function(sample_rate=12000, inputs=("text", "lyrics"))
        def song(instruction, seed, duration, **params):
            rng = np.random.default_rng(seed)
            return rng.standard_normal(int(duration * 12000)).astype("float32") * 0.1, 12000

        READY = CallableGenerator(song, name="ready-made")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    gen = build_generator("py:my_music:song")
    assert gen.name == "py:my_music:song" and gen.sample_rate == 12000 and gen.inputs == {"text", "lyrics"}
    assert gen.sample(Instruction(text="x", lyrics="y"), [4], 0.1)[0].audio.num_samples == 1200
    assert build_generator("py:my_music:READY").name == "ready-made"
    assert build_generator("py:my_music:song", sample_rate=24000).sample_rate == 24000


def test_decorator_sets_metadata():
    @generation_function(sample_rate=44100)
    def fn(instruction, seed, duration):
        return np.zeros(10, dtype="float32"), 44100

    assert fn.sample_rate == 44100 and fn.inputs == ("text",)


def test_the_example_script_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["callable_generator.py", "--out", str(tmp_path), "--n", "2"])
    runpy.run_path(str(ROOT / "examples" / "callable_generator.py"), run_name="__main__")
    written = sorted(tmp_path.glob("*.wav"))
    assert len(written) == 2 and Audio.load(written[0]).sample_rate == 22050
