"""CommandGenerator: templates, argument substitution, per-candidate and per-batch runs, failures."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from cmirm_plugin import Audio, ConfigError, Instruction
from cmirm_plugin.testing import sine
from generators import UnsupportedInputError, build_generator
from generators.command import PLACEHOLDER_INPUT, CommandGenerator, CommandTemplate
from generators.command_checks import InputRuleError

#: A stand-in for a lyrics-to-song CLI: writes deterministic noise derived from its arguments.
TOOL = textwrap.dedent("""
    import argparse, hashlib, json, os, sys, time
    import numpy as np, soundfile as sf

    p = argparse.ArgumentParser()
    for flag in ("--text", "--lyrics-file", "--seeds", "--out", "--out-dir", "--ref", "--behaviour"):
        p.add_argument(flag, default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=1.0)
    p.add_argument("--name", default="")
    a = p.parse_args()
    if os.environ.get("ARGV_LOG"):
        with open(os.environ["ARGV_LOG"], "a") as fh:
            fh.write(json.dumps(sys.argv[1:]) + "\\n")
    behaviour = dict(item.split(":") for item in a.behaviour.split(",") if item)

    def render(seed, path):
        mode = behaviour.get(str(seed), "ok")
        if mode == "fail":
            print("loading model\\nRuntimeError: CUDA out of memory (simulated)", file=sys.stderr)
            sys.exit(3)
        if mode == "sleep":
            time.sleep(60)
        if mode == "nofile":
            return
        lyrics = open(a.lyrics_file).read() if a.lyrics_file else ""
        key = int(hashlib.sha1(f"{a.text}|{lyrics}|{a.ref}".encode()).hexdigest()[:6], 16)
        n = 0 if mode == "empty" else int(a.duration * 16000)
        wave = 0.1 * np.random.default_rng([seed, key]).standard_normal(n)
        if mode == "nan":
            wave[3] = np.nan
        sf.write(path, wave.astype("float32"), 16000, subtype="FLOAT")

    if a.seeds and a.out_dir:
        for s in a.seeds.split(","):
            render(int(s), os.path.join(a.out_dir, f"{s}.wav"))
    else:
        render(a.seed, a.out or os.path.join(a.out_dir, a.name))
""")

SONG = Instruction(text="pop; rm -rf / 'quoted' \"double\" $HOME", lyrics="[verse]\nhello world\n[chorus]\nla la")


@pytest.fixture
def tool(tmp_path) -> Path:
    path = tmp_path / "tool.py"
    path.write_text(TOOL)
    return path


def write_template(tmp_path: Path, tool: Path, name: str = "tpl.yaml", **overrides) -> Path:
    data = {
        "name": "fake-song",
        "command": [sys.executable, str(tool), "--text", "{text}", "--lyrics-file", "{lyrics_file}",
                    "--seed", "{seed}", "--duration", "{duration}", "--out", "{output}", "--behaviour", "{behaviour}"],
        "inputs": ["text", "lyrics"],
        "sample_rate": 22050,
        "timeout": 60,
        "params": {"behaviour": ""},
        **overrides,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_candidates_are_read_back_resampled_and_reproducible(tmp_path, tool):
    gen = CommandGenerator(write_template(tmp_path, tool))
    assert gen.name == "fake-song" and gen.sample_rate == 22050 and gen.inputs == {"text", "lyrics"}
    result = gen.sample(SONG, [1, 2], 0.5)
    assert not result.failures and [c.seed for c in result] == [1, 2]
    assert all(c.audio.sample_rate == 22050 and c.audio.num_samples == 11025 for c in result)
    assert result[0].params == {"duration": 0.5, "behaviour": ""}
    again = gen.sample(SONG, [2], 0.5)
    assert torch.equal(again[0].audio.waveform, result[1].audio.waveform)
    assert not torch.equal(result[0].audio.waveform, result[1].audio.waveform)
    other_lyrics = gen.sample(Instruction(text=SONG.text, lyrics="different words"), [2], 0.5)
    assert not torch.equal(other_lyrics[0].audio.waveform, result[1].audio.waveform)


def test_arguments_are_substituted_one_by_one_without_a_shell(tmp_path, tool, monkeypatch):
    log = tmp_path / "argv.jsonl"
    gen = CommandGenerator(write_template(tmp_path, tool, env={"ARGV_LOG": str(log)}))
    gen.sample(SONG, [9], 0.25)
    (argv,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert argv[argv.index("--text") + 1] == SONG.text  # one argument, verbatim
    assert argv[argv.index("--seed") + 1] == "9" and argv[argv.index("--duration") + 1] == "0.25"
    lyrics_file = argv[argv.index("--lyrics-file") + 1]
    assert lyrics_file.endswith("lyrics.txt") and not Path(lyrics_file).exists()  # the work dir is cleaned up


def test_each_failure_is_reported_with_seed_and_evidence(tmp_path, tool):
    gen = CommandGenerator(write_template(tmp_path, tool))
    result = gen.sample(SONG, [1, 2, 3, 4, 5], 0.2, behaviour="2:fail,3:nofile,4:nan,5:empty")
    assert [c.seed for c in result] == [1]
    kinds = {f.seed: f for f in result.failures}
    assert kinds[2].kind == "nonzero_exit" and "status 3" in kinds[2].message
    assert kinds[2].detail.endswith("CUDA out of memory (simulated)")
    assert kinds[3].kind == "no_output" and "wrote no output file" in kinds[3].message
    assert kinds[4].kind == "invalid_audio" and "NaN" in kinds[4].message
    assert kinds[5].kind == "invalid_audio" and "no samples" in kinds[5].message
    assert all(f.generator == "fake-song" and f.params["behaviour"] for f in result.failures)


def test_timeout_kills_the_run_and_keeps_the_others(tmp_path, tool):
    """Seed 1 sleeps 60 s; the 10 s timeout is generous for seed 2's start-up on a busy machine."""
    gen = CommandGenerator(write_template(tmp_path, tool, timeout=10))
    start = time.monotonic()
    result = gen.sample(SONG, [1, 2], 0.2, behaviour="1:sleep")
    assert time.monotonic() - start < 50                                 # killed, not waited for (60 s)
    assert [c.seed for c in result] == [2]
    (failure,) = result.failures
    assert failure.kind == "timeout" and failure.seed == 1 and "within 10 s" in failure.message


def test_missing_executable_is_a_failure_not_a_crash(tmp_path, tool):
    gen = CommandGenerator(write_template(tmp_path, tool, command=["/nonexistent/tool", "{output}"]))
    (failure,) = gen.sample(SONG, [1], 0.2).failures
    assert failure.kind == "nonzero_exit" and "cannot start" in failure.message


def test_per_batch_mode(tmp_path, tool):
    template = write_template(tmp_path, tool, per_batch=True, command=[
        sys.executable, str(tool), "--text", "{text}", "--lyrics-file", "{lyrics_file}", "--seeds", "{seeds}",
        "--out-dir", "{output_dir}", "--duration", "{duration}", "--behaviour", "{behaviour}"])
    gen = CommandGenerator(template, batch_size=3)
    per_batch = gen.sample(SONG, [1, 2, 3, 4], 0.2, behaviour="2:nofile")
    assert [c.seed for c in per_batch] == [1, 3, 4] and [f.seed for f in per_batch.failures] == [2]
    single = CommandGenerator(write_template(tmp_path, tool)).sample(SONG, [3], 0.2)
    assert torch.equal(per_batch[1].audio.waveform, single[0].audio.waveform)
    crashed = gen.sample(SONG, [1, 2, 3, 4], 0.2, behaviour="1:fail")
    assert [c.seed for c in crashed] == [4] and [f.seed for f in crashed.failures] == [1, 2, 3]


def test_optional_arguments_and_reference_audio(tmp_path, tool):
    log = tmp_path / "argv.jsonl"
    template = write_template(tmp_path, tool, inputs=["text", "lyrics", "ref_audio"],
                              when={"ref_audio": "--ref {ref_audio}"}, env={"ARGV_LOG": str(log)})
    gen = CommandGenerator(template)
    ref_file = sine(seconds=0.2).save(tmp_path / "ref.flac")
    with_ref = gen.sample(Instruction(text="x", lyrics="y", ref_audio=str(ref_file)), [1], 0.2)
    in_memory = gen.sample(Instruction(text="x", lyrics="y", ref_audio=sine(seconds=0.2)), [1], 0.2)
    without = gen.sample(Instruction(text="x", lyrics="y"), [1], 0.2)
    # A path goes to the tool as it is: cmirm never decodes it (this one is not even audio).
    opaque = tmp_path / "take.mid"
    opaque.write_bytes(b"MThd not audio")
    undecoded = gen.sample(Instruction(text="x", lyrics="y", ref_audio=str(opaque)), [1], 0.2)
    loaded = gen.sample(Instruction(text="x", lyrics="y", ref_audio=Audio.load(ref_file)), [1], 0.2)
    assert not (with_ref.failures or in_memory.failures or without.failures or undecoded.failures
                or loaded.failures)
    argvs = [json.loads(line) for line in log.read_text().splitlines()]
    assert argvs[0][-2:] == ["--ref", str(ref_file.resolve())]
    assert argvs[1][-2] == "--ref" and argvs[1][-1].endswith("ref.wav")
    assert "--ref" not in argvs[2]
    assert argvs[3][-2:] == ["--ref", str(opaque.resolve())]
    assert argvs[4][-1].endswith("ref.wav")  # an Audio object is always written out, even one read from a file
    (failure,) = gen.sample(Instruction(text="x", lyrics="y", ref_audio=str(tmp_path / "gone.wav")), [1], 0.2).failures
    assert "gone.wav': reference audio: file not found" in failure.message
    (failure,) = gen.sample(Instruction(text="x", lyrics="y", ref_audio=str(tmp_path)), [1], 0.2).failures
    assert f"'{tmp_path}': reference audio: is a directory, expected a file" in failure.message


def test_output_glob_finds_the_file_the_tool_named(tmp_path, tool):
    args = [sys.executable, str(tool), "--seed", "{seed}", "--out-dir", "{output_dir}", "--name"]
    one = CommandGenerator(write_template(tmp_path, tool, command=args + ["song_{seed}_mixed.wav"],
                                          output="*_mixed.wav", params={}))
    assert not one.sample(Instruction(text="x"), [4], 0.2).failures
    none = CommandGenerator(write_template(tmp_path, tool, command=args + ["other.wav"], output="*_mixed.wav",
                                           params={}))
    (failure,) = none.sample(Instruction(text="x"), [4], 0.2).failures
    assert failure.kind == "no_output" and "found nothing" in failure.message


def test_refusals(tmp_path, tool):
    gen = CommandGenerator(write_template(tmp_path, tool, requires=["lyrics"]))
    with pytest.raises(UnsupportedInputError, match="'fake-song' cannot honour ref_audio"):
        gen.sample(Instruction(text="x", lyrics="y", ref_audio=sine(seconds=0.1)), [1], 0.2)
    with pytest.raises(UnsupportedInputError, match="needs lyrics"):
        gen.sample(Instruction(text="x"), [1], 0.2)


def test_params_are_typed_by_their_defaults(tmp_path, tool):
    gen = CommandGenerator(write_template(tmp_path, tool))
    with pytest.raises(ConfigError, match="'behavior'.*known: behaviour"):
        gen.sample(SONG, [1], 0.2, behavior="x")
    with pytest.raises(ConfigError, match="'behaviour' must be a str"):
        gen.sample(SONG, [1], 0.2, behaviour=3)


@pytest.mark.parametrize("overrides, needle", [
    ({"comand": "x"}, "unknown field(s) ['comand']"),
    ({"command": None}, "missing required field 'command'"),
    ({"command": "run {nope}"}, "unknown placeholder {nope}"),
    ({"inputs": ["text"]}, "uses {lyrics_file} but 'inputs' lacks lyrics"),
    ({"inputs": ["text", "lyrics", "melody"]}, "field 'inputs' must list inputs"),
    ({"command": "run {ref_audio} {lyrics}", "inputs": ["lyrics", "ref_audio"]}, "needs 'requires: [ref_audio]'"),
    ({"sample_rate": "44k"}, "'sample_rate' must be a positive integer"),
    ({"timeout": 0}, "'timeout' must be a positive number"),
    ({"when": {"ref_audio": "--ref {ref_audio}"}}, "'when.ref_audio' uses {ref_audio} but 'inputs' lacks ref_audio"),
    ({"params": {"seed": 3}}, "shadow built-in placeholders"),
    ({"params": {"steps": [1, 2]}}, "field 'params' must map names"),
    ({"per_batch": True}, "a per_batch command gets {seeds}"),
    ({"per_batch": True, "command": "run {seeds} {output_dir}", "output": "out.wav"},
     "field 'output' of a per_batch template must contain {seed}"),
    ({"per_batch": True, "command": "run {seeds} {output_dir}", "output": "*.wav"},
     "field 'output' of a per_batch template must contain {seed}"),
    ({"inputs": 3}, "field 'inputs' must list inputs"),
    ({"cwd": "{repo}/x"}, "field 'cwd' uses {repo}; it may use only the template's params (behaviour)"),
    ({"cwd": "{text}"}, "field 'cwd' uses {text}; it may use only the template's params"),
    ({"env": {"PYTHONPATH": {"extend": "."}}}, "field 'env.PYTHONPATH' must be a string, {append: <text>}"),
    ({"env": {"PYTHONPATH": {"append": ".", "prepend": "x"}}}, "field 'env.PYTHONPATH' must be a string"),
    ({"env": {"PATH": {"append": ""}}}, "field 'env.PATH' must be a string"),
    ({"checks": {"lyric": {}}}, "field 'checks' must be a mapping with keys among"),
    ({"checks": {"lyrics": {"format": "srt"}}}, "field 'checks.lyrics'.format must be one of ['lrc', 'sections']"),
    ({"checks": {"text": {"max_bytes": 0}}}, "field 'checks.text'.max_bytes must be a positive integer"),
    ({"checks": {"text": {"forbid": "/"}}}, "field 'checks.text'.forbid must be a list of non-empty strings"),
    ({"checks": {"ref_audio": {"formats": [".wav"]}}}, "formats must list file suffixes without dots"),
    ({"checks": {"ref_audio": {"min_seconds": -1}}}, "min_seconds must be a positive number"),
    ({"checks": {"seed_range": [5, 1]}}, "field 'checks.seed_range' must be [low, high] with 0 <= low <= high"),
    ({"checks": {"seed_range": [0, 2**64]}}, "field 'checks.seed_range' must be [low, high]"),
    ({"checks": {"ref_audio": {"min_seconds": 10}}}, "field 'checks' has rules for ['ref_audio'], an input missing"),
    ({"requires": {"lyrics": True}}, "field 'requires' must list inputs"),
    ({"requires": ["ref_audio"]}, "'requires' ['ref_audio'] must be within 'inputs'"),
])
def test_template_errors_name_file_and_field(tmp_path, tool, overrides, needle):
    path = write_template(tmp_path, tool, **overrides)
    with pytest.raises(ConfigError) as err:
        CommandTemplate.load(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_json_and_toml_templates_and_the_registry(tmp_path, tool):
    data = {"command": f"{sys.executable} {tool} --seed {{seed}} --out {{output}}", "inputs": ["text"],
            "sample_rate": 16000}
    (tmp_path / "t.json").write_text(json.dumps(data))
    (tmp_path / "t.toml").write_text(f'command = "{data["command"]}"\ninputs = ["text"]\nsample_rate = 16000\n')
    for name in ("t.json", "t.toml"):
        gen = build_generator(f"cmd:{tmp_path / name}")
        assert gen.name == "t" and not gen.sample(Instruction(text="x"), [1], 0.2).failures
    (tmp_path / "bad.yaml").write_text("command: [unclosed\n")
    with pytest.raises(ConfigError, match="not a valid template file"):
        CommandTemplate.load(tmp_path / "bad.yaml")


def test_shipped_templates_use_exactly_what_they_declare():
    """load() checks that every placeholder used is declared; this checks the converse: every
    declared param and input is used by some argument (none is silently ignored by the tool)."""
    root = Path(__file__).resolve().parents[1] / "examples" / "generator_templates"
    templates = sorted(root.glob("*.yaml"))
    assert len(templates) >= 5
    for path in templates:
        template = CommandTemplate.load(path)
        args = template.command + [arg for group in template.when.values() for arg in group] + [template.cwd or ""]
        used = {name for arg in args for name in re.findall(r"\{(\w+)\}", arg)}
        assert set(template.params) <= used, (path.name, sorted(set(template.params) - used))
        used_inputs = {PLACEHOLDER_INPUT[name] for name in used if name in PLACEHOLDER_INPUT}
        assert used_inputs == template.inputs, (path.name, sorted(used_inputs), sorted(template.inputs))


def test_seeding_shim_makes_a_seedless_script_reproducible(tmp_path):
    """examples/generator_templates/seeded.py seeds the global RNGs of a tool that has no --seed flag."""
    script = tmp_path / "seedless.py"
    script.write_text("import sys, numpy as np, soundfile as sf\n"
                      "sf.write(sys.argv[1], (0.1 * np.random.standard_normal(1600)).astype('float32'), 16000)\n")
    shim = Path(__file__).resolve().parents[1] / "examples" / "generator_templates" / "seeded.py"
    template = tmp_path / "seedless.yaml"
    template.write_text(yaml.safe_dump({"command": [sys.executable, str(shim), "{seed}", str(script), "{output}"],
                                        "inputs": ["text"], "sample_rate": 16000}))
    gen = CommandGenerator(template)
    first, second = gen.sample(Instruction(text="x"), [1, 2], 0.1), gen.sample(Instruction(text="x"), [1], 0.1)
    assert not first.failures and torch.equal(first[0].audio.waveform, second[0].audio.waveform)
    assert not torch.equal(first[0].audio.waveform, first[1].audio.waveform)


def test_env_entries_set_or_extend_the_callers_variables(tmp_path, tool, monkeypatch):
    probe = tmp_path / "probe.py"
    probe.write_text("import json, os, sys\n"
                     "json.dump({k: os.environ.get(k) for k in ('A', 'B', 'C', 'D')}, open(sys.argv[1], 'w'))\n"
                     "open(sys.argv[2], 'w').write(os.getcwd())\n"
                     "import numpy, soundfile; soundfile.write(sys.argv[3], numpy.zeros(160, 'float32'), 16000)\n")
    work = tmp_path / "work" / "sub"
    work.mkdir(parents=True)
    template = write_template(tmp_path, tool, command=[sys.executable, str(probe), str(tmp_path / "env.json"),
                                                       str(tmp_path / "cwd.txt"), "{output}"],
                              env={"A": "set", "B": {"append": "."}, "C": {"prepend": "first"}, "D": {"append": "x"}},
                              cwd="{base}/sub", params={"base": "work"})
    monkeypatch.setenv("A", "mine")
    monkeypatch.setenv("B", "/mine")
    monkeypatch.setenv("C", "/mine")
    monkeypatch.delenv("D", raising=False)
    assert not CommandGenerator(template).sample(Instruction(text="x"), [1], 0.1).failures
    assert json.loads((tmp_path / "env.json").read_text()) == {
        "A": "set", "B": f"/mine{os.pathsep}.", "C": f"first{os.pathsep}/mine", "D": "x"}
    assert (tmp_path / "cwd.txt").read_text() == str(work)  # a param in cwd, relative to the template file
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sub").mkdir(parents=True)
    assert not CommandGenerator(template).sample(Instruction(text="x"), [1], 0.1, base=str(elsewhere)).failures
    assert (tmp_path / "cwd.txt").read_text() == str(elsewhere / "sub")  # an absolute one as it is


def test_checks_refuse_up_front_and_name_the_rule(tmp_path, tool):
    log = tmp_path / "argv.jsonl"
    path = write_template(tmp_path, tool, inputs=["text", "lyrics", "ref_audio"], env={"ARGV_LOG": str(log)},
                          when={"ref_audio": "--ref {ref_audio}"},
                          checks={"seed_range": [0, 9], "text": {"max_bytes": 4, "forbid": ["/", ";"]},
                                  "lyrics": {"format": "lrc"}, "ref_audio": {"formats": ["flac"], "min_seconds": 0.5}})
    gen = CommandGenerator(path)
    bad = Instruction(text="a/b;c", lyrics="[00:01.00] ok\nnot timed", ref_audio=sine(seconds=0.2))
    with pytest.raises(InputRuleError) as err:
        gen.require_supported(bad)  # what a job calls for every instruction before generating
    message = str(err.value)
    assert message.startswith(f"generator 'fake-song' refuses instruction {bad.id}: text is 5 bytes (UTF-8), "
                              "more than the 4 the tool takes; shorten it; text contains '/'")
    assert "text contains ';'" in message and "lyrics line 2 'not timed' is not an LRC line" in message
    assert "the in-memory reference (passed as wav) has format 'wav'; the tool reads flac" in message
    assert message.endswith(f"(rules in 'checks' of '{path}')")
    short = sine(seconds=0.2).save(tmp_path / "short.flac")
    with pytest.raises(InputRuleError, match=r"reference '.*short.flac' is 0.20 s long; the tool needs at least 0.5 s"):
        gen.sample(Instruction(text="ok", ref_audio=str(short)), [1], 0.2)
    (tmp_path / "fake.flac").write_bytes(b"not audio")
    with pytest.raises(InputRuleError, match="cannot read the length of reference '.*fake.flac'"):
        gen.sample(Instruction(text="ok", ref_audio=str(tmp_path / "fake.flac")), [1], 0.2)
    with pytest.raises(ConfigError, match=r"seed 10 is out of range for generator 'fake-song': its tool takes seeds "
                                          r"in \[0, 9\]"):
        gen.sample(Instruction(text="ok"), [9, 10], 0.2)
    assert not log.exists()  # nothing ran
    fine = sine(seconds=0.6).save(tmp_path / "fine.flac")
    good = Instruction(text="ok", lyrics="[00:01.00] one\n\n[01:02.50] two", ref_audio=str(fine))
    assert not gen.sample(good, [0, 9], 0.2).failures and len(log.read_text().splitlines()) == 2
