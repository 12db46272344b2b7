"""Contract tests of examples/generator_templates/: each template runs through the real `cmd:` backend
against a stand-in of its tool (tests/fixtures/tools/: the tool's command line at the commit the
template names, parsed exactly like the tool does, output written under the tool's own file name),
and every rule a template declares is refused before anything runs."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from typer.testing import CliRunner

from cmirm_plugin import ConfigError, Instruction, read_records
from cmirm_plugin.cli import app
from cmirm_plugin.testing import sine
from generators.command import CommandGenerator, CommandTemplate
from generators.command_checks import InputChecks, InputRuleError

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "examples" / "generator_templates"
TOOLS = Path(__file__).resolve().parent / "fixtures" / "tools"
STANDIN = TOOLS / "standin.py"
_spec = importlib.util.spec_from_file_location("standin", STANDIN)
standin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(standin)

pytestmark = pytest.mark.timeout(300)  # the templates allow the real tools an hour

NAMES = ("yue", "yue-icl", "diffrhythm", "diffrhythm-ref", "ace-step")
#: Which fake checkout (and which tool's entry script) a template runs in.
CHECKOUT = {"yue": "yue", "yue-icl": "yue", "diffrhythm": "diffrhythm", "diffrhythm-ref": "diffrhythm"}
ENTRY = {"yue": "inference/infer.py", "diffrhythm": "infer/infer.py"}
SHIM = ("import runpy, sys\nsys.argv = [{standin!r}, {tool!r}, *sys.argv[1:]]\n"
        "runpy.run_path({standin!r}, run_name='__main__')\n")

LRC = "[00:01.00] first line\n[00:04.50] second line\n\n[00:09.25] third line\n"
SECTIONS = "[verse]\nhello world\nsecond line\n\n[chorus]\nla la la\n\n[outro]\nbye\n"
GENRE = "inspiring female uplifting pop 2.0 airy vocal"


@pytest.fixture
def checkouts(tmp_path: Path) -> dict[str, Path]:
    """Fake DiffRhythm and YuE clones: the files each tool opens from its working directory, and its
    entry script replaced by a shim that runs the stand-in with the same arguments."""
    roots = {}
    for tool, entry in ENTRY.items():
        root = roots[tool] = tmp_path / f"checkout-{tool}"
        for rel in standin.describe(tool)["cwd_contains"]:
            path = root / ("inference" if tool == "yue" else "") / rel
            if "." in path.name:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("")
            else:
                path.mkdir(parents=True)
        (root / entry).parent.mkdir(parents=True, exist_ok=True)
        (root / entry).write_text(SHIM.format(standin=str(STANDIN), tool=tool))
    return roots


@pytest.fixture
def log(tmp_path: Path, monkeypatch) -> Path:
    """The stand-ins' log; the caller's PYTHONPATH holds the stand-in package for ACE-Step."""
    path = tmp_path / "standin.jsonl"
    monkeypatch.setenv("STANDIN_LOG", str(path))
    monkeypatch.setenv("PYTHONPATH", str(TOOLS))
    return path


def entries(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def params(name: str, checkouts: dict[str, Path]) -> dict[str, str]:
    """The parameters that point a template at this machine's Python and the fake checkout."""
    found = {"python": sys.executable}
    if name in CHECKOUT:
        found["repo"] = str(checkouts[CHECKOUT[name]])
    return found


def ref_file(tmp_path: Path, seconds: float, suffix: str = ".wav") -> Path:
    return sine(seconds=seconds, sample_rate=16000).save(tmp_path / f"ref-{seconds:g}s{suffix}")


def good_instruction(name: str, tmp_path: Path) -> Instruction:
    """An instruction each template's tool accepts."""
    ref = str(ref_file(tmp_path, 12.0))
    return {"yue": Instruction(text=GENRE, lyrics=SECTIONS),
            "yue-icl": Instruction(text=GENRE, lyrics=SECTIONS, ref_audio=ref),
            "diffrhythm": Instruction(text="-folk,acoustic-guitar", lyrics=LRC),  # argparse: a flag unless --x=...
            "diffrhythm-ref": Instruction(lyrics=LRC, ref_audio=ref),
            "ace-step": Instruction(text="-pop,female-vocals", lyrics=SECTIONS)}[name]


def samples(seconds: float, rate: int) -> int:
    return round(seconds * standin.TIME_SCALE * rate)


# ------------------------------------------------------------------ end to end, per template
def test_diffrhythm_runs_against_its_tool(checkouts, log, tmp_path):
    gen = CommandGenerator(TEMPLATES / "diffrhythm.yaml")
    inst = good_instruction("diffrhythm", tmp_path)  # text starting with '-' stays one value
    result = gen.sample(inst, [1, 2], 10.0, **params("diffrhythm", checkouts))
    assert not result.failures, result.failures
    assert all(c.audio.sample_rate == 44100 and c.audio.num_channels == 2 for c in result)
    assert [c.audio.num_samples for c in result] == [samples(95, 44100)] * 2  # audio_length, not duration
    again = gen.sample(inst, [2], 10.0, **params("diffrhythm", checkouts))
    assert torch.equal(again[0].audio.waveform, result[1].audio.waveform)  # seeded.py seeds the tool's RNG
    assert not torch.equal(result[0].audio.waveform, result[1].audio.waveform)
    first = entries(log)[0]
    assert first["argv"][first["argv"].index("--lrc-path") + 1].endswith("lyrics.txt")
    assert f"--ref-prompt={inst.text}" in first["argv"] and not any("repo-id" in a for a in first["argv"])
    assert first["cwd"] == str(checkouts["diffrhythm"]) and Path(first["wrote"]).name == "output.wav"
    assert first["pythonpath"] == f"{TOOLS}{os.pathsep}."  # extended, not replaced


def test_diffrhythm_ref_runs_against_its_tool(checkouts, log, tmp_path):
    gen = CommandGenerator(TEMPLATES / "diffrhythm-ref.yaml")
    refs = [ref_file(tmp_path, 10.5, suffix) for suffix in (".wav", ".mp3")]  # flac is read as wav is
    for ref in [str(path) for path in refs] + [sine(seconds=10.0)]:
        result = gen.sample(Instruction(lyrics=LRC, ref_audio=ref), [3], 5.0, audio_length=285,
                            **params("diffrhythm-ref", checkouts))
        assert not result.failures, result.failures
        assert result[0].audio.num_samples == samples(285, 44100)
    logged = entries(log)
    for path, entry in zip(refs, logged):
        assert f"--ref-audio-path={path.resolve()}" in entry["argv"]
        assert not any(a.startswith("--ref-prompt") for a in entry["argv"])
    assert any(a.startswith("--ref-audio-path=") and a.endswith("ref.wav") for a in logged[2]["argv"])


def test_yue_runs_against_its_tool(checkouts, log, tmp_path):
    gen = CommandGenerator(TEMPLATES / "yue.yaml")
    inst = good_instruction("yue", tmp_path)
    result = gen.sample(inst, [0, 2**32 - 1], 10.0, **params("yue", checkouts))
    assert not result.failures, result.failures
    assert all(c.audio.sample_rate == 44100 for c in result)
    # Three sections with run_n_segments=2: two are sung (the stand-in makes 30 s each).
    assert abs(result[0].audio.num_samples - samples(60, 44100)) < 2000  # mp3 frames pad a little
    again = gen.sample(inst, [0], 10.0, **params("yue", checkouts))
    assert torch.equal(again[0].audio.waveform, result[0].audio.waveform)
    first = entries(log)[0]
    assert first["cwd"] == str(checkouts["yue"] / "inference")
    assert first["argv"][first["argv"].index("--seed") + 1] == "0"
    name = Path(first["wrote"]).name
    assert re.fullmatch(r"inspiring-female-uplifting-pop-2@0-airy-vocal_tp0@93_T1@0_rp1@1_maxtk3000_"
                        r"[0-9a-f-]{36}_mixed\.mp3", name), name
    assert Path(first["wrote"]).parent == Path(first["argv"][first["argv"].index("--output_dir") + 1])


def test_yue_icl_runs_against_its_tool(checkouts, log, tmp_path):
    gen = CommandGenerator(TEMPLATES / "yue-icl.yaml")
    inst = good_instruction("yue-icl", tmp_path)
    result = gen.sample(inst, [5], 10.0, prompt_end_time=20, **params("yue-icl", checkouts))
    assert not result.failures, result.failures
    argv = entries(log)[0]["argv"]
    assert "--use_audio_prompt" in argv and argv[argv.index("--audio_prompt_path") + 1] == inst.ref_audio
    assert argv[argv.index("--prompt_end_time") + 1] == "20" and "m-a-p/YuE-s1-7B-anneal-en-icl" in argv


def test_ace_step_runs_against_its_pipeline(log, tmp_path):
    gen = CommandGenerator(TEMPLATES / "ace-step.yaml")
    inst = good_instruction("ace-step", tmp_path)
    result = gen.sample(inst, [3], 20.0, python=sys.executable, checkpoint_dir="~/ace-ckpt")
    assert not result.failures, result.failures
    assert result[0].audio.sample_rate == 48000 and result[0].audio.num_samples == samples(20, 48000)
    ref = ref_file(tmp_path, 12.0)
    with_ref = gen.sample(Instruction(text=inst.text, lyrics=inst.lyrics, ref_audio=str(ref)), [3], 20.0,
                          python=sys.executable)
    assert not with_ref.failures, with_ref.failures
    assert with_ref[0].audio.num_samples == samples(12, 48000)  # the reference's length, not duration
    plain, audio2audio = entries(log)
    assert plain["init"]["checkpoint_dir"] == os.path.expanduser("~/ace-ckpt") and plain["init"]["dtype"] == "bfloat16"
    assert plain["call"]["prompt"] == inst.text and plain["call"]["lyrics"] == inst.lyrics.strip()
    assert plain["call"]["manual_seeds"] == [3] and plain["call"]["audio_duration"] == 20.0
    assert Path(plain["wrote"]).name == "output.wav" and plain["call"]["audio2audio_enable"] is False
    assert audio2audio["init"]["checkpoint_dir"] is None  # the default: ACE-Step's own cache
    assert audio2audio["call"]["ref_audio_input"] == str(ref.resolve()) and audio2audio["call"]["audio2audio_enable"]


# ------------------------------------------------------------------ the contracts have teeth
@pytest.mark.parametrize("name", NAMES)
def test_a_flag_the_tool_does_not_take_fails_the_contract(name, checkouts, log, tmp_path):
    template = CommandTemplate.load(TEMPLATES / f"{name}.yaml")
    broken = CommandGenerator(dataclasses.replace(template, command=template.command + ["--no-such-flag"]))
    (failure,) = broken.sample(good_instruction(name, tmp_path), [1], 10.0, **params(name, checkouts)).failures
    assert failure.kind == "nonzero_exit" and "unrecognized arguments: --no-such-flag" in failure.detail


@pytest.mark.parametrize("name", NAMES)
def test_looking_for_the_output_elsewhere_fails_the_contract(name, checkouts, log, tmp_path):
    template = CommandTemplate.load(TEMPLATES / f"{name}.yaml")
    if "{output}" in " ".join(template.command):  # the tool is told the file: give it the folder instead
        command = [arg.replace("{output}", "{output_dir}") for arg in template.command]
        broken = CommandGenerator(dataclasses.replace(template, command=command))
    else:  # the tool names the file itself: expect another name
        broken = CommandGenerator(dataclasses.replace(template, output="song.wav"))
    (failure,) = broken.sample(good_instruction(name, tmp_path), [1], 10.0, **params(name, checkouts)).failures
    assert failure.kind == "no_output"


def test_the_pipeline_stand_in_binds_like_the_real_signatures():
    pipeline_class = standin.api_class("ace-step")
    pipeline = pipeline_class(checkpoint_dir=None, dtype="float32", anything_else=1)  # __init__ has **kwargs
    with pytest.raises(TypeError, match="unexpected keyword argument 'seed'"):
        pipeline(prompt="x", lyrics="", seed=3)
    with pytest.raises(TypeError, match="audio_duration='30'"):
        pipeline(prompt="x", lyrics="", audio_duration="30")


# ------------------------------------------------------------------ rules refused before anything runs
def _lyrics(name: str, lyrics: str) -> Callable[[Path], Instruction]:
    text = None if name == "diffrhythm-ref" else ("pop" if name.startswith("diffrhythm") else GENRE)
    return lambda tmp: Instruction(text=text, lyrics=lyrics, ref_audio=str(ref_file(tmp, 12.0))
                                   if name in ("yue-icl", "diffrhythm-ref") else None)


REFUSALS = [
    ("diffrhythm", _lyrics("diffrhythm", "[verse]\nhello\n[chorus]\nla"),
     "lyrics line 1 '[verse]' is not an LRC line '[mm:ss.xx] text'"),
    ("diffrhythm", _lyrics("diffrhythm", "[00:01.00] one\n[00:05] two"), "lyrics line 2 '[00:05] two' is not an LRC"),
    ("diffrhythm-ref", _lyrics("diffrhythm-ref", "plain words"), "lyrics line 1 'plain words' is not an LRC"),
    ("diffrhythm-ref", lambda tmp: Instruction(lyrics=LRC, ref_audio=str(ref_file(tmp, 12.0, ".ogg"))),
     "has format 'ogg'; the tool reads wav, mp3, flac"),
    ("diffrhythm-ref", lambda tmp: Instruction(lyrics=LRC, ref_audio=str(ref_file(tmp, 9.5))),
     "s.wav' is 9.50 s long; the tool needs at least 10 s"),
    ("diffrhythm-ref", lambda tmp: Instruction(lyrics=LRC, ref_audio=sine(seconds=4.0)),
     "the in-memory reference (passed as wav) is 4.00 s long; the tool needs at least 10 s"),
    ("yue", _lyrics("yue", "hello world\nno tags at all"), "lyrics has 0 [word] section tag(s)"),
    ("yue", _lyrics("yue", "[verse]\nonly one section"), "lyrics has 1 [word] section tag(s)"),
    ("yue-icl", _lyrics("yue-icl", "[verse]\nonly one section"), "lyrics has 1 [word] section tag(s)"),
    ("yue", _lyrics("yue", "[verse]\na\n[pre-chorus]\nb\n[chorus]\nc"),
     "lyrics line 3 tag [pre-chorus] is not a [word] tag (letters, digits, _): the tool drops it"),
    ("yue", lambda tmp: Instruction(text="rock/metal", lyrics=SECTIONS), "text contains '/'"),
    ("yue-icl", lambda tmp: Instruction(text="é" * 90, lyrics=SECTIONS, ref_audio=sine(seconds=1.0)),
     "text is 180 bytes (UTF-8), more than the 179 the tool takes"),
]


@pytest.mark.parametrize("name, make, needle", REFUSALS)
def test_each_rule_is_refused_before_the_tool_runs(name, make, needle, checkouts, log, tmp_path):
    gen = CommandGenerator(TEMPLATES / f"{name}.yaml")
    with pytest.raises(InputRuleError) as err:
        gen.sample(make(tmp_path), [1], 10.0, **params(name, checkouts))
    assert needle in str(err.value) and f"generator '{name}' refuses instruction" in str(err.value)
    assert str(TEMPLATES / f"{name}.yaml") in str(err.value) and not entries(log)


@pytest.mark.parametrize("name", ["yue", "yue-icl"])
def test_seeds_outside_the_tools_range_are_refused(name, checkouts, log, tmp_path):
    gen = CommandGenerator(TEMPLATES / f"{name}.yaml")
    with pytest.raises(ConfigError, match=rf"seed 4294967296 is out of range for generator '{name}': its tool "
                                          r"takes seeds in \[0, 4294967295\]"):
        gen.sample(good_instruction(name, tmp_path), [1, 2**32], 10.0, **params(name, checkouts))
    assert not entries(log)


UNCHECKED = [  # what the tool does when a rule is not checked first: the rules match the tools
    ("yue", Instruction(text="rock/metal", lyrics=SECTIONS), [1], "No such file or directory"),
    ("yue", Instruction(text=GENRE, lyrics="[verse]\nonly one"), [1], "NameError: name 'raw_output'"),
    ("yue", Instruction(text=GENRE, lyrics=SECTIONS), [2**32], "seed 4294967296 is not in [0, 4294967295]"),
    ("diffrhythm-ref", "short ref", [1], "is 9.50 s, shorter than 10 s"),
    ("diffrhythm-ref", "ogg ref", [1], "Unsupported file format: .ogg"),
]


@pytest.mark.parametrize("name, inst, seeds, needle", UNCHECKED)
def test_without_its_checks_the_tool_fails_late(name, inst, seeds, needle, checkouts, log, tmp_path):
    if isinstance(inst, str):
        ref = ref_file(tmp_path, 9.5) if inst == "short ref" else ref_file(tmp_path, 12.0, ".ogg")
        inst = Instruction(lyrics=LRC, ref_audio=str(ref))
    template = CommandTemplate.load(TEMPLATES / f"{name}.yaml")
    unchecked = CommandGenerator(dataclasses.replace(template, checks=InputChecks()))
    (failure,) = unchecked.sample(inst, seeds, 10.0, **params(name, checkouts)).failures
    assert failure.kind == "nonzero_exit" and needle in failure.detail


@pytest.mark.parametrize("name", ["yue", "yue-icl"])
def test_the_genre_limit_is_the_longest_text_whose_file_names_fit(name, checkouts, log, tmp_path):
    template = CommandTemplate.load(TEMPLATES / f"{name}.yaml")
    limit = template.checks.text.max_bytes
    ref = sine(seconds=1.0) if name == "yue-icl" else None
    fits, too_long = (Instruction(text="a" * n, lyrics=SECTIONS, ref_audio=ref) for n in (limit, limit + 1))
    assert not CommandGenerator(template).sample(fits, [1], 10.0, **params(name, checkouts)).failures
    with pytest.raises(InputRuleError, match=f"text is {limit + 1} bytes"):
        CommandGenerator(template).sample(too_long, [1], 10.0, **params(name, checkouts))
    unchecked = CommandGenerator(dataclasses.replace(template, checks=InputChecks()))
    (failure,) = unchecked.sample(too_long, [1], 10.0, **params(name, checkouts)).failures
    assert "File name too long" in failure.detail


# ------------------------------------------------------------------ the README's command lines
def readme_commands() -> list[list[str]]:
    """The `cmirm generate` lines of the lyrics-to-song section of examples/README.md."""
    text = (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    section = text.split("### External lyrics-to-song tools")[1].split("\n### ")[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.startswith("cmirm generate")]


def test_the_readme_shows_one_tested_command_per_template(checkouts, log, tmp_path, monkeypatch):
    commands = readme_commands()
    names = [re.search(r"generator_templates/(.+)\.yaml", " ".join(c)).group(1) for c in commands]
    assert sorted(names) == sorted(NAMES)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "lyrics.txt").write_text(SECTIONS)
    (tmp_path / "song.lrc").write_text(LRC)
    sine(seconds=12.0, sample_rate=16000).save(tmp_path / "ref.mp3")
    runner = CliRunner(env={"CMIRM_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"})
    for name, command in zip(names, commands):
        args = command[1:] + ["--tiny"]
        for i, arg in enumerate(args):
            key = arg.split("=")[0]
            if args[i - 1] == "--param" and key in ("python", "repo"):
                args[i] = f"{key}={params(name, checkouts)[key]}"
            if args[i - 1] == "-n":
                args[i] = "1"
            if args[i - 1] == "--out":
                args[i] = str(tmp_path / arg)
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (name, result.output, result.exception)
        out = Path(args[args.index("--out") + 1])
        records = read_records(out / "manifest.jsonl")
        generated = [r for r in records if r["record"] == "candidate"]
        assert len(generated) == 1, (name, records)  # -n is set to 1 above, to keep the test short
        assert all(r["generator"] == name for r in generated)
