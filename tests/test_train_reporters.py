"""``--report-to``: TensorBoard events and the W&B (offline) history hold exactly what the metric files hold."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import train.reporters
from cmirm_plugin.cli import app
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import read_records
from cmirm_plugin.model.tiny import build_tiny_towers, tiny_config
from train.config import TrainConfig
from train.reporters import open_reporter
from train.synthetic import write_synthetic_pairs
from train.trainer import train_reward_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Crash(RuntimeError):
    """Stands for the process dying."""


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reporters")
    towers = build_tiny_towers(root / "towers")
    return {"root": root, "config": tiny_config(towers).to_yaml(root / "config.yaml"), "cache": root / "cache",
            "pairs": write_synthetic_pairs(root / "data", n_train=24, n_test=8, clips_per_split=4, seconds=0.5)}


def config(env: dict[str, Path], out: Path, **overrides) -> TrainConfig:
    values = dict(pairs=env["pairs"], out=out, model_config=env["config"], cache_dir=env["cache"], epochs=2,
                  batch_size=4, lr=2e-3, log_steps=4, save_steps=4, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def expected(run: Path) -> dict[str, dict[int, float]]:
    """Every numeric column of the metric files as ``{reported name: {step: value}}``."""
    out: dict[str, dict[int, float]] = {}
    for stream in ("steps", "epochs"):
        for record in read_records(run / "metrics" / f"{stream}.jsonl"):
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    out.setdefault(f"{stream}/{key}", {})[record["step"]] = float(value)
    return out


def tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    scalars = {}
    for tag in events.Tags()["scalars"]:
        points = events.Scalars(tag)
        assert len({p.step for p in points}) == len(points), f"{tag}: a step logged twice"
        scalars[tag] = {p.step: p.value for p in points}
    return scalars


def as_float32(series: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
    """Event files store float32: the files' values rounded the same way."""
    return {tag: {step: float(np.float32(v)) for step, v in points.items()} for tag, points in series.items()}


def test_cli_reports_to_tensorboard_exactly_the_metric_files(env, monkeypatch, tmp_path):
    monkeypatch.setenv("CMIRM_CACHE", str(tmp_path / "cmirm-cache"))   # where --tiny builds its towers
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--pairs", str(env["pairs"]), "--out", str(out), "--tiny",
                                      "--epochs", "2", "--batch-size", "4", "--log-steps", "4", "--no-progress",
                                      "--report-to", "tensorboard"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"tensorboard --logdir {out / 'tensorboard'}" in result.output.replace("\n", "")
    files = expected(out)
    assert {"epochs/eval/acc/alignment", "epochs/eval/acc/musicality/text+lyrics", "steps/train/loss", "steps/lr",
            "epochs/train/acc"} <= set(files)
    assert files["epochs/eval/acc/alignment"].keys() == {0, 6, 12}      # epoch 0 (before training), 1, 2
    assert tensorboard_scalars(out / "tensorboard") == as_float32(files)


def test_a_resumed_run_shows_one_history(env, tmp_path):
    # log every 3 steps, save every 4: the crash at step 10 comes after the step-9 line and the step-8 save
    def crash_at_step_10(state):
        if state.global_step == 10:
            raise Crash

    out, full = tmp_path / "crashed", tmp_path / "full"
    with pytest.raises(Crash):
        train_reward_model(config(env, out, log_steps=3, report_to="tensorboard"), callbacks=[crash_at_step_10])
    before = tensorboard_scalars(out / "tensorboard")
    assert 9 in before["steps/train/loss"] and 6 in before["epochs/eval/acc"]      # past the checkpoint (step 8)
    train_reward_model(config(env, out, log_steps=3, report_to="tensorboard", resume=True))
    train_reward_model(config(env, full, log_steps=3, report_to="tensorboard"))
    scalars = tensorboard_scalars(out / "tensorboard")                   # (no step logged twice: checked there)
    assert scalars == as_float32(expected(out))
    assert scalars["steps/train/loss"].keys() == {3, 6, 9, 12}
    timing = "steps/pairs_per_s"
    assert {k: v for k, v in scalars.items() if k != timing} == \
        {k: v for k, v in tensorboard_scalars(full / "tensorboard").items() if k != timing}


def _wandb_history(run_file: Path) -> tuple[dict[str, dict[int, float]], bool]:
    """The history rows of an offline W&B run file (LevelDB-log records of W&B protobuf ``Record``s), and
    whether the file is complete (its ``exit`` record is written)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, pending, rows, complete = run_file.read_bytes(), 7, 32768, b"", {}, False
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:                                       # block trailer
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):                                                # a full record, or its last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            complete = complete or record.WhichOneof("record_type") == "exit"
            if record.WhichOneof("record_type") == "history":
                items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item}
                for key, value in items.items():
                    if not key.startswith("_"):
                        rows.setdefault(key, {})[items["_step"]] = float(value)
    return rows, complete


def test_wandb_offline_writes_its_run_folder_with_the_metrics(env, monkeypatch, tmp_path):
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb"), "WANDB_SILENT": "true",
                        "WANDB_CONFIG_DIR": str(tmp_path / "wb-config"), "WANDB_CACHE_DIR": str(tmp_path / "wb-cache"),
                        "WANDB_DATA_DIR": str(tmp_path / "wb-data")}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "wb").mkdir()
    out = tmp_path / "run"
    train_reward_model(config(env, out, epochs=1, report_to="wandb"))
    run_id = json.loads((out / "metrics" / "wandb_run.json").read_text())["id"]
    [folder] = (tmp_path / "wb" / "wandb").glob(f"offline-run-*-{run_id}")
    run_file = folder / f"run-{run_id}.wandb"
    assert run_file.is_file() and (folder / "logs").is_dir()
    deadline = time.monotonic() + 60
    history, complete = _wandb_history(run_file)
    while not complete and time.monotonic() < deadline:                # W&B's service may still be writing it
        time.sleep(0.2)
        history, complete = _wandb_history(run_file)
    assert complete
    files = expected(out)
    assert set(history) == set(files)
    for name, points in files.items():
        assert history[name] == pytest.approx(points, rel=1e-12), name


def test_a_missing_package_stops_before_anything_runs(env, monkeypatch, tmp_path):
    monkeypatch.setattr(train.reporters.importlib.util, "find_spec", lambda name: None)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--pairs", str(env["pairs"]), "--out", str(out), "--tiny",
                                      "--report-to", "wandb"])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == ("--report-to wandb needs the 'wandb' package: pip install wandb "
                                     "(or the extra: pip install -e \".[wandb]\")")
    assert not out.exists()
    with pytest.raises(ConfigError, match="report_to"):
        config(env, out, report_to="mlflow")


def test_a_wandb_run_that_cannot_start_is_one_line(monkeypatch, tmp_path):
    import wandb

    def no_login(**kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty). call wandb.login(key=[your_api_key])\nmore")

    monkeypatch.setattr(wandb, "init", no_login)
    (tmp_path / "metrics").mkdir()
    with pytest.raises(ConfigError) as error:
        open_reporter("wandb", tmp_path, {}, None)
    assert str(error.value) == ("--report-to wandb: could not start a W&B run (UsageError: api_key not configured "
                                "(no-tty). call wandb.login(key=[your_api_key])); log in (`wandb login` or "
                                "WANDB_API_KEY), or set WANDB_MODE=offline")
