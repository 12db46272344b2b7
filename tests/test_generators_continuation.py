"""`Generator.extend` through an audio prefix: Python functions, command templates, audiocraft, refusals."""

from __future__ import annotations

import json
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
import yaml

from cmirm_plugin import Audio, Candidate, ConfigError, Instruction
from cmirm_plugin.testing import sine
from generators.audiocraft_backend import AudiocraftGenerator
from generators.base import Capabilities
from generators.command import CommandGenerator
from generators.python_fn import CallableGenerator

TEXT = Instruction(text="slow strings")


def level_fn(instruction, seed, duration, level=0.1, prefix=None):
    """Seeded noise; a continuation starts from the prefix's last sample and records what it got."""
    n = int(duration * 8000)
    wave = level * torch.randn(n, generator=torch.Generator().manual_seed(seed))
    if prefix is not None:
        waveform, rate = prefix
        level_fn.prefixes.append((tuple(waveform.shape), rate, duration))
        wave = wave + waveform[0, -1]
    return wave, 8000


level_fn.prefixes = []


def test_a_function_taking_prefix_continues_clips():
    gen = CallableGenerator(level_fn, sample_rate=8000, name="level")
    assert gen.capabilities == Capabilities(can_continue=True)
    (first,) = gen.sample(TEXT, [1], 0.25, level=0.2)
    assert first.params == {"duration": 0.25, "level": 0.2}  # prefix is not a parameter
    level_fn.prefixes.clear()
    result = gen.extend(TEXT, first, [5, 6], 0.125, level=0.2)
    assert not result.failures and [c.seed for c in result] == [5, 6]
    assert level_fn.prefixes == [((1, 2000), 8000, 0.125)] * 2  # the clip so far, and the segment to add
    for cand in result:
        assert cand.audio.num_samples == 3000 and cand.params["duration"] == 0.375
        assert torch.equal(cand.audio.waveform[:, :2000], first.audio.waveform)
        assert cand.compute.audio_seconds == 0.125 and cand.compute.work_units is None
    new, _ = level_fn(TEXT, 6, 0.125, level=0.2, prefix=(first.audio.waveform, 8000))
    assert torch.equal(result[1].audio.waveform[0, 2000:], new.float())


def test_generators_that_cannot_continue_say_so():
    def plain(instruction, seed, duration):
        return torch.zeros(int(duration * 8000)), 8000

    gen = CallableGenerator(plain, sample_rate=8000, name="plain")
    (clip,) = gen.sample(TEXT, [1], 0.1)
    with pytest.raises(ConfigError, match="generator 'plain' cannot continue a clip.*prefix=\\(waveform, sr\\)"):
        gen.extend(TEXT, clip, [2], 0.1)
    with pytest.raises(ConfigError, match="generator 'plain' cannot start from given initial latents"):
        gen.sample_from_latents(TEXT, torch.zeros(1, 4), [1], 0.1)

    def required(instruction, seed, duration, prefix):
        return torch.zeros(10), 8000

    with pytest.raises(ConfigError, match="takes 'prefix', so it must default to None.*got no default"):
        CallableGenerator(required, sample_rate=8000)
    with pytest.raises(ConfigError, match="belongs to instruction"):
        CallableGenerator(level_fn, sample_rate=8000).extend(Instruction(text="other"), clip, [2], 0.1)


#: A stand-in tool that continues a clip: the new audio is a constant at the prefix's peak plus the seed / 100.
TOOL = textwrap.dedent("""
    import argparse, json, os, sys
    import numpy as np, soundfile as sf
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int)
    p.add_argument("--duration", type=float)
    p.add_argument("--out")
    p.add_argument("--prefix", default="")
    a = p.parse_args()
    with open(os.environ["ARGV_LOG"], "a") as fh:
        fh.write(json.dumps(sys.argv[1:]) + "\\n")
    level = a.seed / 100
    if a.prefix:
        prefix, rate = sf.read(a.prefix, dtype="float32")
        level += float(np.abs(prefix).max())
    sf.write(a.out, np.full(int(a.duration * 16000), level, dtype="float32"), 16000, subtype="FLOAT")
""")


def _template(tmp_path, **fields):
    tool = tmp_path / "tool.py"
    tool.write_text(TOOL)
    data = {"name": "cont", "command": [sys.executable, str(tool), "--seed", "{seed}", "--duration", "{duration}",
                                        "--out", "{output}"],
            "inputs": ["text"], "sample_rate": 16000, "env": {"ARGV_LOG": str(tmp_path / "argv.jsonl")}, **fields}
    path = tmp_path / "cont.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_command_template_with_a_continuation_field(tmp_path):
    gen = CommandGenerator(_template(tmp_path, continuation="--prefix {prefix_audio}"))
    assert gen.capabilities.can_continue
    (first,) = gen.sample(TEXT, [10], 0.25)
    (longer,) = gen.extend(TEXT, first, [20], 0.5)
    argvs = [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]
    assert "--prefix" not in argvs[0]
    assert argvs[1][argvs[1].index("--duration") + 1] == "0.5" and argvs[1][-2] == "--prefix"
    assert longer.audio.num_samples == 12000 and torch.equal(longer.audio.waveform[:, :4000], first.audio.waveform)
    assert torch.allclose(longer.audio.waveform[:, 4000:], torch.tensor(0.1 + 0.2))
    assert longer.compute.audio_seconds == 0.5 and longer.compute.device is None
    assert not CommandGenerator(_template(tmp_path)).capabilities.can_continue


@pytest.mark.parametrize("fields, needle", [
    ({"continuation": "--prefix {output}"}, "field 'continuation' must pass the clip to continue as {prefix_audio}"),
    ({"command": [sys.executable, "x.py", "--p", "{prefix_audio}"]}, "field 'command' uses unknown placeholder "
                                                                     "{prefix_audio}"),
])
def test_continuation_template_errors(tmp_path, fields, needle):
    with pytest.raises(ConfigError, match=needle.replace("{", r"\{").replace("}", r"\}")):
        CommandGenerator(_template(tmp_path, **fields))


class MusicGen:
    """The slice of audiocraft's MusicGen API the backend uses (audiocraft itself is optional)."""

    sample_rate, frame_rate, audio_channels, device = 16000, 50, 1, "cpu"

    def __init__(self) -> None:
        delays = SimpleNamespace(delays=[0, 1, 2, 3])
        self.lm = SimpleNamespace(condition_provider=SimpleNamespace(conditioners={"description": None}),
                                  pattern_provider=delays, num_codebooks=4)
        self.calls = []

    def set_generation_params(self, **params):
        self.params = params

    def generate_continuation(self, prompt, prompt_sample_rate, descriptions, progress=False):
        self.calls.append((tuple(prompt.shape), prompt_sample_rate, descriptions, self.params["duration"]))
        new = torch.full((1, 1, round((self.params["duration"] * 16000)) - prompt.shape[-1]), torch.rand(()).item())
        return torch.cat([prompt, new], dim=-1)


def test_audiocraft_continues_through_generate_continuation():
    model = MusicGen()
    gen = AudiocraftGenerator(model, name="audiocraft:stub")
    assert gen.capabilities.can_continue and gen.device_label == "cpu"
    prefix_audio = Audio(sine(seconds=0.5, sample_rate=16000).waveform, 16000)
    prefix = Candidate(prefix_audio, TEXT.id, gen.name, 1)
    first = gen.extend(TEXT, prefix, [7], 0.25, top_k=10)
    again = gen.extend(TEXT, prefix, [7], 0.25, top_k=10)
    (cand,) = first
    assert model.calls[0] == ((1, 1, 8000), 16000, ["slow strings"], 0.75)  # the clip so far as the prompt
    assert cand.audio.num_samples == 12000 and torch.equal(cand.audio.waveform, again[0].audio.waveform)
    # 13 new frames (12.5 rounded up) plus the delay pattern's 3; audiocraft always runs guidance rows.
    assert (cand.compute.work_units, cand.compute.model_evals) == (16, 32)
