"""End to end on the command line: ``cmirm pseudo-label`` on unlabeled synthetic pairs, then
``cmirm train --stage pretrain --tiny`` on its output; the local judge's --tiny smoke run; option errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmirm_plugin.cli import app
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import read_records
from train.pseudo.judges.local import LocalAudioLLMJudge
from train.pseudo.judges.tiny import default_tiny_audio_llm
from train.pseudo.pairs import load_unlabeled_pairs
from train.pseudo.prompt import build_prompt
from train.pseudo.runner import judgments_path
from train.synthetic import write_synthetic_pairs


@pytest.fixture(scope="module")
def unlabeled(tmp_path_factory) -> Path:
    """Synthetic pairs (train + test split) with every preference and confidence field removed."""
    root = tmp_path_factory.mktemp("e2e")
    labelled = write_synthetic_pairs(root / "data", n_train=24, n_test=8, clips_per_split=8, seconds=0.5)
    rows = [{k: v for k, v in json.loads(line).items() if "preference" not in k}
            for line in labelled.read_text().splitlines()]
    path = root / "unlabeled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("CMIRM_CACHE", str(tmp_path_factory.getbasetemp() / "cmirm-cache"))   # --tiny builds here


def test_pseudo_label_then_pretrain(unlabeled, tmp_path):
    root = unlabeled.parent / "data"
    out = tmp_path / "pseudo" / "pairs.jsonl"
    result = CliRunner().invoke(app, ["pseudo-label", "--pairs", str(unlabeled), "--dataset-root", str(root),
                                      "--out", str(out), "--judge", "reward", "--tiny", "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    # The synthetic set draws a few pairs twice: they are judged once.
    printed = " ".join(result.output.split())
    assert "agreement (consistent)" in printed and "first-clip rate" in printed
    assert "30 pairs, 30 judged" in printed and "2 duplicate line(s) judged once" in printed
    report = json.loads((tmp_path / "pseudo" / "pairs.report.json").read_text())
    assert report["judge"] == "reward:tiny-v2:margin=0:max_dur=120" and report["rows_written"] == 30
    assert report["per_axis"]["musicality"]["agreement"] == 1.0
    rows = read_records(out)
    assert {r["split"] for r in rows} == {"train", "test"}
    assert all(r["preference-alignment"] in ("model_a", "model_b") for r in rows)

    rerun = CliRunner().invoke(app, ["pseudo-label", "--pairs", str(unlabeled), "--dataset-root", str(root),
                                     "--out", str(out), "--judge", "reward", "--tiny", "--no-progress"])
    assert rerun.exit_code == 0 and "30 judged (30 from an earlier run)" in " ".join(rerun.output.split())

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--stage", "pretrain", "--tiny", "--pairs", str(out),
                                      "--dataset-root", str(root), "--out", str(run), "--epochs", "1",
                                      "--batch-size", "8", "--cache-dir", str(tmp_path / "features"),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (run / "best" / "model.safetensors").is_file() and (run / "last" / "config.yaml").is_file()
    assert json.loads((run / "train_config.json").read_text())["stage"] == "pretrain"


def test_local_tiny_judge_smoke_run(unlabeled, tmp_path, greedy_reply):
    pairs = tmp_path / "two.jsonl"
    pairs.write_text("".join(unlabeled.read_text().splitlines(keepends=True)[:2]))
    out, root = tmp_path / "local.jsonl", unlabeled.parent / "data"
    result = CliRunner().invoke(app, ["pseudo-label", "--pairs", str(pairs), "--dataset-root", str(root),
                                      "--out", str(out), "--judge", "local",
                                      "--tiny", "--axes", "musicality", "--max-new-tokens", "4", "--device", "cpu",
                                      "--no-progress", "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["judge"] == "local:tiny-qwen2-audio:prompt-v1:sr=16000:max_dur=30:max_new_tokens=4"
    assert report["judged"] == 2
    assert report["per_axis"]["musicality"]["error_pairs"] == 2 and read_records(out) == []
    # Each recorded answer is exactly the judge's continuation (argmax by hand), without the prompt.
    judge = LocalAudioLLMJudge.from_pretrained(default_tiny_audio_llm(), "cpu", max_new_tokens=4)
    records = {r["pair_id"]: r for r in read_records(judgments_path(out))}
    expected = load_unlabeled_pairs(pairs, root).pairs
    assert sorted(records) == sorted(p.id for p in expected)
    for pair in expected:
        for order in ("ab", "ba"):
            raw = records[pair.id]["orders"][order]["raw"]
            assert raw == greedy_reply(judge, build_prompt(pair.view(order), ["musicality"]))


@pytest.mark.parametrize("args, message", [
    (["--judge", "http"], "--judge http needs --url"),
    (["--judge", "http", "--url", "ftp://x"], "--url must be an http(s) URL"),
    (["--judge", "http", "--url", "http://127.0.0.1:9/v1"], "--model-name is required"),
    (["--judge", "http", "--tiny"], "--tiny applies to"),
    (["--judge", "local"], "--judge local needs --judge-model"),
    (["--judge", "oracle"], "--judge: expected reward, http or local"),
    (["--judge", "reward", "--ties", "sometimes"], "--ties: expected one of drop, both, keep-if-consistent"),
    (["--judge", "reward", "--filter", "all"], "--filter: expected one of per-axis, joint"),
])
def test_option_errors(unlabeled, tmp_path, args, message):
    result = CliRunner().invoke(app, ["pseudo-label", "--pairs", str(unlabeled), "--out", str(tmp_path / "o.jsonl"),
                                      *args])
    assert isinstance(result.exception, ConfigError) and message in str(result.exception)
