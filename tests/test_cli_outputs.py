"""The console script's one-line refusals about outputs and requests (exit 2, no traceback, nothing left behind):
an --out of the wrong kind, a file the system refuses, k above N, inputs the generator cannot honour."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest

from cmirm_plugin import ManifestWriter
from cmirm_plugin.cli import main
from cmirm_plugin.errors import OutputError
from cmirm_plugin.records import format_score
from cmirm_plugin.testing import sine
from generators.python_fn import generation_function
from test_rerank_rerank import _make_run   # a scored run written with the record helpers


@generation_function(sample_rate=16000)
def text_only(instruction, seed, duration):
    """A generator that honours text only (and must never run in these tests)."""
    raise AssertionError("the generator ran")


@pytest.fixture
def cmirm(monkeypatch, capsys, tmp_path):
    """Run ``cmirm ARGS`` through the console-script entry point: (exit code, stdout, stderr).

    Looking for or building a model fails the test: every refusal here comes before any model.
    """
    monkeypatch.setenv("CMIRM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")

    def refuse(*args, **kwargs):
        raise AssertionError("a model was looked for or built")

    monkeypatch.setattr("rerank.cli.check_available", refuse)
    monkeypatch.setattr("rerank.gen_pool.build_generator", refuse)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["cmirm", *args])
        with pytest.raises(SystemExit) as stop:
            main()
        captured = capsys.readouterr()
        return stop.value.code, captured.out, captured.err

    return run


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _prompts(tmp_path: Path, **fields: str) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"text": "calm piano", **fields}) + "\n")
    return path


def test_an_out_of_the_wrong_kind_is_one_line_for_every_command(tmp_path, cmirm):
    file = tmp_path / "taken.txt"
    file.write_text("not a folder")
    prompts = _prompts(tmp_path)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"audio": "a.wav", "text": "pop"}) + "\n")
    before = _files(tmp_path)
    is_a_file = f"error: --out '{file}' is a file: give a directory\n"
    under = f"error: --out '{file / 'sub'}' lies under '{file}', which is a file: give another path\n"
    cases = [
        (["generate", "pop", "--tiny", "--out", str(file)], is_a_file),
        (["generate", "pop", "--tiny", "--out", str(file / "sub")], under),
        (["scaling", "--prompts", str(prompts), "--n-max", "2", "--tiny", "--out", str(file)], is_a_file),
        (["score", "--jsonl", str(rows), "--tiny", "--out", str(tmp_path)],
         f"error: --out '{tmp_path}' is a directory: give a file path\n"),
        (["score", "--jsonl", str(rows), "--tiny", "--out", str(file / "s.jsonl")],
         f"error: --out '{file / 's.jsonl'}' lies under '{file}', which is a file: give another path\n"),
    ]
    for args, expected in cases:
        assert cmirm(*args) == (2, "", expected), args
    assert _files(tmp_path) == before


def test_rerank_into_a_file_is_one_line(tmp_path, cmirm):
    paths = _make_run(tmp_path / "run")
    file = tmp_path / "taken.txt"
    file.write_text("x")
    assert cmirm("rerank", str(paths.root), "--out", str(file)) == (
        2, "", f"error: --out '{file}' is a file: give a directory\n")
    assert not paths.ranking.exists() and not paths.top.exists()


def test_a_failed_write_is_one_line_naming_the_file(tmp_path, cmirm, monkeypatch):
    """Disk full while writing the scaling curves; an OSError no boundary named is still one line."""
    paths = _make_run(tmp_path / "run")
    curve = tmp_path / "curves" / "curve.csv"

    def full(curves, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("rerank.scaling_run.write_curve_csv", full)
    monkeypatch.setattr("rerank.cli.check_available", lambda *args, **kwargs: None)   # a --from run: no model
    assert cmirm("scaling", "--from", str(paths.root), "--n-boot", "10", "--out", str(curve.parent))[::2] == (
        2, f"error: cannot write '{curve}': No space left on device; free some space, then rerun the same command "
           "to resume\n")

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/ranking.jsonl")

    monkeypatch.setattr("rerank.rerank_run.rank_run", refused)
    assert cmirm("rerank", str(paths.root)) == (2, "", "error: '/somewhere/ranking.jsonl': Permission denied\n")


def test_a_jsonl_writer_that_cannot_write_says_so_in_one_line(tmp_path):
    file = tmp_path / "taken.txt"
    file.write_text("x")
    with pytest.raises(OutputError) as err, ManifestWriter(file / "scores.jsonl") as writer:
        writer.append({"a": 1})
    assert str(err.value) == f"cannot write '{file / 'scores.jsonl'}': File exists"


def test_k_above_n_is_refused_up_front_by_every_command(tmp_path, cmirm):
    prompts = _prompts(tmp_path)
    paths = _make_run(tmp_path / "run")
    before = _files(tmp_path)
    assert cmirm("generate", "pop", "-n", "2", "-k", "4", "--tiny", "--out", str(tmp_path / "g")) == (
        2, "", "error: -k 4 exceeds the 2 candidate(s) per instruction (-n): nothing can keep more than it has; "
               "give -k <= 2 or more candidates\n")
    assert cmirm("generate", "pop", "--seeds", "3,5", "-k", "3", "--tiny", "--out", str(tmp_path / "g")) == (
        2, "", "error: -k 3 exceeds the 2 candidate(s) per instruction (--seeds): nothing can keep more than it has; "
               "give -k <= 2 or more candidates\n")
    assert cmirm("scaling", "--prompts", str(prompts), "--n-max", "2", "--ks", "1,4", "--tiny",
                 "--out", str(tmp_path / "s")) == (
        2, "", "error: --ks 4 exceeds the 2 candidate(s) per instruction (--n-max): nothing can keep more than it "
               "has; give --ks <= 2 or more candidates\n")
    assert cmirm("rerank", str(paths.root), "-k", "6") == (   # 5 candidates, one of them failed
        2, "", f"error: -k 6 exceeds the 5 candidate(s) per instruction (the most any instruction has in "
               f"{paths.root}): nothing can keep more than it has; give -k <= 5 or more candidates\n")
    assert _files(tmp_path) == before


def test_without_k_a_job_keeps_two_or_all_when_fewer(tmp_path):
    from cmirm_plugin import Instruction
    from cmirm_plugin.scoring.spec import ScorerSpec
    from rerank.generate import GenerateConfig

    def k(**options) -> int:
        return GenerateConfig(out=tmp_path / "g", instructions=[Instruction(text="x")], generator="g",
                              reward=ScorerSpec("hub", "rm"), **options).k

    assert (k(n=1), k(n=3), k(seeds=[7]), k(n=3, k=3)) == (1, 2, 1, 3)


def test_inputs_the_generator_cannot_honour_are_refused_before_it_loads(tmp_path, cmirm):
    ref = sine(330, 0.5, 16000).save(tmp_path / "ref.wav")
    prompts = _prompts(tmp_path, lyrics="la la la", id="sung")
    before = _files(tmp_path)
    lyrics = ("error: generator 'tiny-musicgen' cannot honour lyrics (instruction {id}); it honours: text, ref_audio. "
              "Choose a generator that does, or drop that input.\n")
    code, out, err = cmirm("generate", "pop", "--lyrics", "la la", "--tiny", "--out", str(tmp_path / "g"))
    assert (code, out) == (2, "") and err == lyrics.format(id=err.split("(instruction ")[1].split(")")[0])
    assert cmirm("scaling", "--prompts", str(prompts), "--n-max", "2", "--tiny", "--out", str(tmp_path / "s")) == (
        2, "", lyrics.format(id="sung"))
    generator = f"py:{__name__}:text_only"
    code, out, err = cmirm("generate", "pop", "--ref-audio", str(ref), "--generator", generator, "--tiny",
                           "--out", str(tmp_path / "g"))
    assert (code, out) == (2, "") and err.startswith(f"error: generator '{generator}' cannot honour ref_audio (")
    assert err.endswith("it honours: text. Choose a generator that does, or drop that input.\n")
    assert _files(tmp_path) == before        # no manifest, no run.json, no out folder


def test_a_reference_that_is_a_directory_is_one_line(tmp_path, cmirm):
    assert cmirm("generate", "pop", "--ref-audio", str(tmp_path), "--tiny", "--out", str(tmp_path / "g")) == (
        2, "", f"error: '{tmp_path}': reference audio: is a directory, expected a file\n")
    assert not (tmp_path / "g").exists()


def test_scores_never_print_as_minus_zero():
    assert [format_score(v) for v in (-0.00004, -0.0, 0.0, 0.00004, -0.00005001, 1.23456, -2.5)] == \
        ["0.0000", "0.0000", "0.0000", "0.0000", "-0.0001", "1.2346", "-2.5000"]
    assert format_score(-0.004, 2) == "0.00"
