"""`cmirm scaling`: curves from a tiny run, `--from` without generating, evaluation scorers and axes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import pytest
from typer.testing import CliRunner

from cmirm_plugin.cli import app
from cmirm_plugin.model.tiny import build_tiny_checkpoint
from cmirm_plugin.testing import sine
from rerank.plots import PNG_SIZE
from rerank.scaling import CURVE_COLUMNS
from rerank.scaling_run import load_run

pytestmark = pytest.mark.timeout(300)


def _invoke(args: list[str], env: dict[str, str]):
    result = CliRunner(env={"COLUMNS": "200", **env}).invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return {"CMIRM_CACHE": str(tmp_path_factory.mktemp("cmirm-cache"))}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, env) -> Path:
    """`cmirm scaling --tiny` on two instructions (text, text+ref), M = 4, k = 1 and 2."""
    root = tmp_path_factory.mktemp("scaling")
    sine(330, 1.0, 32000).save(root / "ref.wav")
    prompts = root / "prompts.jsonl"
    prompts.write_text('{"text": "calm piano", "id": "calm"}\n'
                       '{"text": "rock song", "ref_audio": "ref.wav", "id": "rock"}\n')
    out = root / "out"
    result = _invoke(["scaling", "--prompts", str(prompts), "--n-max", "4", "--tiny", "--duration", "0.3",
                      "--gen-batch-size", "4", "--ks", "1,2", "--n-boot", "200", "--out", str(out)], env)
    assert "composite of best-of-N" in result.output
    return out


def test_tiny_scaling_writes_csv_json_and_pngs(tiny_run: Path):
    rows = _rows(tiny_run / "curve.csv")
    assert list(rows[0]) == list(CURVE_COLUMNS)
    assert {(r["n"], r["k"]) for r in rows} == {("1", "1"), ("2", "1"), ("4", "1"), ("2", "2"), ("4", "2")}
    assert {r["modality"] for r in rows} == {"all", "text", "text+ref"}
    assert {r["axis"] for r in rows} == {"alignment", "musicality", "composite"}
    assert {(r["selection_scorer"], r["evaluation_scorer"], r["policy"]) for r in rows} == {
        ("tiny-v1", "tiny-v1", "axis:musicality")}
    all_n = [r for r in rows if r["modality"] == "all" and r["k"] == "1" and r["axis"] == "musicality"]
    means = [float(r["mean"]) for r in sorted(all_n, key=lambda r: int(r["n"]))]
    assert means == sorted(means)                   # selecting by musicality never lowers expected musicality
    assert all(float(r["ci_low"]) <= float(r["mean"]) <= float(r["ci_high"]) for r in rows)
    document = json.loads((tiny_run / "curve.json").read_text())
    assert document["settings"]["ns"] == [1, 2, 4] and document["settings"]["ks"] == [1, 2]
    assert len(document["rows"]) == len(rows)
    for name in ("curve.png", "curve_k2.png"):
        image = matplotlib.image.imread(tiny_run / name)
        assert image.shape[:2] == (PNG_SIZE[1], PNG_SIZE[0])
    assert len(list((tiny_run / "candidates").iterdir())) == 8 and (tiny_run / "run.json").is_file()


def test_load_run_gives_the_arrays_of_the_pool(tiny_run: Path):
    data = load_run(tiny_run)
    assert data.scores.shape == (8, 2) and data.evaluation is None and not data.skipped
    assert data.instruction_ids == ["calm"] * 4 + ["rock"] * 4
    assert data.modalities == {"calm": "text", "rock": "text+ref"}
    assert load_run(tiny_run, n_max=2).scores.shape == (4, 2)


@pytest.fixture
def no_generation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("--from must not build a generator")

    monkeypatch.setattr("rerank.generate.build_generator", refuse)
    monkeypatch.setattr("generators.registry.build_generator", refuse)


def test_from_reuses_the_run_without_generating_or_rescoring(tiny_run: Path, tmp_path: Path, env, no_generation,
                                                              monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("--from must not rescore with the selection model")

    monkeypatch.setattr("rerank.pool.ScorerWorker.__init__", refuse)
    manifest = (tiny_run / "manifest.jsonl").read_bytes()
    out = tmp_path / "curves"
    result = _invoke(["scaling", "--from", str(tiny_run), "--n-max", "2", "--policy", "axis:alignment",
                      "--eval-axis", "musicality", "--n-boot", "100", "--out", str(out)], env)
    assert "musicality of best-of-N (axis:alignment" in result.output
    rows = _rows(out / "curve.csv")
    assert {r["n"] for r in rows} == {"1", "2"} and {r["policy"] for r in rows} == {"axis:alignment"}
    # Selecting by alignment and reporting the other axis: the musicality rows are the evaluation rows.
    assert {r["modality"] for r in rows if r["axis"] == "musicality"} == {"all", "text", "text+ref"}
    assert (out / "curve.png").is_file() and not (out / "candidates").exists()
    assert (tiny_run / "manifest.jsonl").read_bytes() == manifest


def test_evaluation_scorer_scores_the_same_candidates(tiny_run: Path, tmp_path: Path, env, no_generation):
    evaluator = build_tiny_checkpoint(tmp_path / "eval-model", seed=7)
    out = tmp_path / "curves"
    args = ["scaling", "--from", str(tiny_run), "--eval-reward", str(evaluator), "--n-boot", "100", "--out", str(out)]
    result = _invoke(args, env)
    label = str(evaluator.resolve())
    rows = _rows(out / "curve.csv")
    assert {(r["selection_scorer"], r["evaluation_scorer"]) for r in rows} == {("tiny-v1", label)}
    own = _rows(out / "curve_selection.csv")
    assert {(r["selection_scorer"], r["evaluation_scorer"]) for r in own} == {("tiny-v1", "tiny-v1")}
    assert [r["mean"] for r in rows] != [r["mean"] for r in own]
    assert f"evaluated by {label}" in result.output and "evaluated by tiny-v1" in result.output
    assert (out / "curve_selection.png").is_file()
    eval_records = [json.loads(line) for line in (out / "eval_scores.jsonl").read_text().splitlines()]
    assert len(eval_records) == 8 and {r["scorer"] for r in eval_records} == {label}

    # A rerun reuses the evaluation scores too.
    _invoke(args, env)
    assert len((out / "eval_scores.jsonl").read_text().splitlines()) == 8


def test_scaling_option_errors(tiny_run: Path, tmp_path: Path, env):
    runner = CliRunner(env=env)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "a"}\n')
    out = ["--out", str(tmp_path / "o")]
    cases = [
        ([], "give --prompts FILE.jsonl and --n-max M"),
        (["--prompts", str(prompts), "--from", str(tiny_run)], "drop --prompts"),
        (["--from", str(tmp_path)], "not a `cmirm generate` output directory"),
        (["--from", str(tiny_run), "--eval-axis", "loudness"], "--eval-axis"),
        (["--from", str(tiny_run), "--ks", "8"], "k=8 exceeds the largest N=4"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, ["scaling", *args, *out])
        assert result.exit_code != 0, args
        assert expected in str(result.exception), (args, result.exception)
