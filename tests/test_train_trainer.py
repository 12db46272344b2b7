"""The trainer end to end: resume after a crash, pretrain -> finetune -> from_pretrained, the CLI,
LoRA (merged and unmerged saves) and unfrozen MuQ layers."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from cmirm_plugin.audio import prepare_waveform
from cmirm_plugin.cli import app
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import read_records
from cmirm_plugin.model.reward_model import CMIRewardModel
from cmirm_plugin.model.tiny import build_tiny_towers, tiny_config
from cmirm_plugin.records import Instruction
from cmirm_plugin.scoring import RewardScorer
import train.batching
from train.checkpoint import save_release
from train.config import TrainConfig
from train.data import PairDataError
from train.lora import has_text_lora
from train.model_setup import build_training_model, load_for_training
from train.synthetic import write_synthetic_pairs
from train.trainer import TrainResult, train_reward_model


class Crash(RuntimeError):
    """Stands for the process dying (no chance to save anything)."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trainer")
    towers = build_tiny_towers(root / "towers")
    return {"root": root, "config": tiny_config(towers).to_yaml(root / "config.yaml"), "cache": root / "cache",
            "pairs": write_synthetic_pairs(root / "data", n_train=48, n_test=16, clips_per_split=8, seconds=0.5)}


def config(env: dict[str, Path], out: str, **overrides) -> TrainConfig:
    values = dict(pairs=env["pairs"], out=env["root"] / out, model_config=env["config"], cache_dir=env["cache"],
                  epochs=2, batch_size=8, lr=2e-3, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def trainable(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "trainer" / "trainable.safetensors"))


def steps(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "pairs_per_s"}
            for line in (run / "metrics" / "steps.jsonl").read_text().splitlines()]


def scores(model: CMIRewardModel, env: dict[str, Path]) -> torch.Tensor:
    clips = sorted((env["pairs"].parent / "clips").glob("test*.wav"))[:4]
    inst = Instruction(text="high pitch", lyrics="la la", ref_audio=str(clips[0]))
    return torch.from_numpy(RewardScorer(model, device="cpu").score_batch([str(c) for c in clips], inst))


def epochs(run: Path) -> list[dict]:
    return read_records(run / "metrics" / "epochs.jsonl")


def test_resume_after_a_crash_ends_with_the_same_weights(env):
    # log_steps 3 and save_steps 4: the crash and the resume fall inside a step-log window and an epoch
    full = train_reward_model(config(env, "full", save_steps=4, log_steps=3))
    assert full.state.global_step == 12                                  # 48 pairs / 8, 2 epochs

    def crash_at_step_5(state):
        if state.global_step == 5:
            raise Crash

    with pytest.raises(Crash):
        train_reward_model(config(env, "crashed", save_steps=4, log_steps=3), callbacks=[crash_at_step_5])
    with pytest.raises(ConfigError, match="--resume"):
        train_reward_model(config(env, "crashed", save_steps=4, log_steps=3))
    with pytest.raises(ConfigError, match="lr"):
        train_reward_model(config(env, "crashed", save_steps=4, log_steps=3, lr=1e-3, resume=True))

    seen = []
    resumed = train_reward_model(config(env, "crashed", save_steps=4, log_steps=3, resume=True),
                                 callbacks=[lambda state: seen.append(state.global_step)])
    assert seen[0] == 5                                                  # continued after the step-4 save
    assert resumed.state.global_step == 12
    a, b = trainable(full.out), trainable(resumed.out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert steps(full.out) == steps(resumed.out)                        # the log reads as one run
    assert epochs(full.out) == epochs(resumed.out) and full.state.history == resumed.state.history
    assert resumed.state.history[1]["train/n/musicality"] == 48          # the resumed epoch counts all its pairs
    assert resumed.state.best_epoch == full.state.best_epoch
    assert load_file(str(full.out / "last" / "model.safetensors")).keys() == \
        load_file(str(resumed.out / "last" / "model.safetensors")).keys()


def test_pretrain_then_finetune_then_from_pretrained(env):
    pre = train_reward_model(config(env, "pre"))
    assert pre.best is not None and json.loads((pre.out / "train_config.json").read_text())["stage"] == "pretrain"
    assert TrainConfig(pairs=env["pairs"], out=pre.out).smoothing == 0.1
    best_pre = next(h for h in pre.state.history if h["epoch"] == pre.state.best_epoch)

    # (the same smoothing as pretraining, so that the two runs' held-out losses are comparable)
    fine = train_reward_model(config(env, "fine", stage="finetune", init=str(pre.best), model_config=None,
                                     label_smoothing=0.1))
    assert fine.state.history[0]["epoch"] == 0                           # evaluated before any step:
    assert fine.state.history[0]["eval/loss"] == pytest.approx(best_pre["eval/loss"], abs=1e-5)  # pretrain's best

    loaded = CMIRewardModel.from_pretrained(str(fine.best))
    assert loaded.load_report.clean
    assert (fine.best / "config.yaml").read_text() == (pre.best / "config.yaml").read_text()
    again = load_for_training(fine.best)
    assert torch.equal(scores(loaded, env), scores(again, env))
    assert not torch.allclose(scores(loaded, env), scores(CMIRewardModel.from_pretrained(str(pre.best)), env))


def test_cli_trains_end_to_end(env, monkeypatch, tmp_path):
    monkeypatch.setenv("CMIRM_CACHE", str(tmp_path / "cmirm-cache"))   # where --tiny builds its towers
    out = tmp_path / "cli-run"
    result = CliRunner().invoke(app, ["train", "--pairs", str(env["pairs"]), "--out", str(out), "--tiny",
                                      "--epochs", "1", "--batch-size", "16", "--max-pairs", "32",
                                      "--label-smoothing", "0.05", "--both", "skip", "--confidence-weighting",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "trainable parameters" in result.output and "best checkpoint" in result.output
    assert "32 training (seeded subset of 48)" in result.output
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["label_smoothing"] == 0.05 and saved["both"] == "skip" and saved["confidence_weighting"]
    assert (tmp_path / "cmirm-cache" / "features").is_dir()
    for name in ("steps.jsonl", "steps.csv", "epochs.jsonl", "epochs.csv"):
        assert (out / "metrics" / name).is_file()
    assert CMIRewardModel.from_pretrained(str(out / "best")).load_report.clean
    assert "train" in CliRunner().invoke(app, ["--help"]).output


def test_cli_reports_every_invalid_line(env, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = env["pairs"].read_text().splitlines()[0]
    bad.write_text("\n".join([good, "{oops", good.replace("model_a", "tie").replace("model_b", "tie")]) + "\n")
    args = ["train", "--pairs", str(bad), "--dataset-root", str(env["pairs"].parent), "--out", str(tmp_path / "o"),
            "--model-config", str(env["config"]), "--cache-dir", str(env["cache"]), "--no-progress",
            "--eval-fraction", "0"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, PairDataError)
    assert f"{bad}:2:" in str(result.exception) and f"{bad}:3:" in str(result.exception)
    result = CliRunner().invoke(app, args + ["--skip-invalid", "--epochs", "1"])
    assert result.exit_code == 0, repr(result.exception)
    assert "skipped 2 invalid line(s)" in result.output


def test_lora_counts_merges_and_reloads(env, tmp_path):
    output = io.StringIO()
    run = train_reward_model(config(env, "lora", epochs=1, lora_r=4, lora_alpha=8, merge_lora=False),
                             console=Console(file=output, width=200))
    log = output.getvalue()
    assert "text tower runs live" in log
    lora_count = int(log.split("text-encoder LoRA ")[1].split(",")[0].replace(",", ""))
    assert lora_count > 0
    assert (run.last / "text_lora" / "adapter_model.safetensors").is_file()
    assert not any(".lora_" in k for k in load_file(str(run.last / "model.safetensors")))

    model = load_for_training(run.last, trainable_adapters=False)       # unmerged adapters attached
    assert has_text_lora(model)
    trained = trainable(run.out)
    lora_b = next(k for k in trained if "lora_B" in k)
    assert trained[lora_b].abs().sum() > 0                               # the adapters did train
    assert torch.equal(dict(model.named_parameters())[lora_b], trained[lora_b])

    merged_in_memory = copy.deepcopy(model)
    merged_in_memory.text_module.model = merged_in_memory.text_module.model.merge_and_unload()
    save_release(model, tmp_path / "merged", merge_lora=True, info={})
    reloaded = CMIRewardModel.from_pretrained(str(tmp_path / "merged"))
    assert reloaded.load_report.clean and not has_text_lora(reloaded)
    assert any(k.startswith("text_module.model.encoder") for k in reloaded.load_report.overlaid_tower_keys)
    assert torch.allclose(scores(reloaded, env), scores(merged_in_memory, env), atol=1e-5)
    plain = CMIRewardModel.from_pretrained(str(run.last))               # the same folder without its adapters
    assert not torch.allclose(scores(plain, env), scores(reloaded, env), atol=1e-5)

    # --init with unmerged adapters: --lora-r 0 keeps them frozen, their own settings train them on,
    # other settings are refused with the ones to pass
    def lora_grads(model: CMIRewardModel) -> set[bool]:
        return {p.requires_grad for n, p in model.named_parameters() if ".lora_" in n}

    frozen, source = build_training_model(config(env, "x", init=str(run.last), model_config=None))
    assert has_text_lora(frozen) and lora_grads(frozen) == {False} and "adapters (frozen" in source
    resumed, _ = build_training_model(config(env, "x", init=str(run.last), model_config=None, lora_r=4, lora_alpha=8))
    assert lora_grads(resumed) == {True}
    with pytest.raises(ConfigError, match="r=4, alpha=8.*--lora-r 4 --lora-alpha 8"):
        build_training_model(config(env, "x", init=str(run.last), model_config=None, lora_r=8))


@pytest.fixture(scope="module")
def muq_run(env) -> tuple[TrainResult, str, list[str]]:
    """A run that unfreezes the last MuQ layer: its result, console output and every clip it decoded."""
    output, decoded = io.StringIO(), []
    with pytest.MonkeyPatch.context() as patch:
        def counting(path, *args, **kwargs):
            decoded.append(str(path))
            return prepare_waveform(path, *args, **kwargs)

        patch.setattr(train.batching, "prepare_waveform", counting)
        run = train_reward_model(config(env, "muq", epochs=2, max_pairs=16, train_muq_depth=1, eval_fraction=0.0,
                                        eval_split=None), console=Console(file=output, width=200))
    return run, output.getvalue(), decoded


def test_unfrozen_muq_layers_train_live_and_are_saved(muq_run):
    run, output, decoded = muq_run
    assert "audio tower runs live" in output
    assert decoded and len(decoded) == len(set(decoded))                 # each clip decoded once for both epochs
    assert run.best is None                                              # no held-out pairs: last/ only
    saved = load_file(str(run.last / "model.safetensors"))
    layer = "audio_module.model.model.conformer.layers.1."
    assert any(k.startswith(layer) for k in saved) and not any(k.startswith("audio_module.model.model.conformer"
                                                                              ".layers.0.") for k in saved)
    model = CMIRewardModel.from_pretrained(str(run.last))
    assert model.config.train_muq_depth == 1 and model.load_report.clean
    key = next(k for k in saved if k.startswith(layer) and k.endswith("weight"))
    assert torch.equal(model.state_dict()[key], saved[key])


def test_frozen_parts_of_a_partly_trainable_tower_run_as_at_inference(muq_run):
    model = CMIRewardModel.from_pretrained(str(muq_run[0].last))          # train_muq_depth = 1
    model.train()
    conformer = model.audio_module.model.model.conformer
    assert model.training and conformer.layers[1].training and conformer.layers[1].self_attn_dropout.training
    assert conformer.config.layerdrop == 0.0                             # no layer is ever skipped at random
    assert not conformer.layers[0].training and not model.audio_module.model.model.conv.training
    before = {k: v.clone() for k, v in model.audio_module.state_dict().items() if "running" in k}
    assert any("conformer.layers.1" in k for k in before)               # the unfrozen layer has a BatchNorm too
    for _ in range(3):
        model.encode_audio([torch.randn(12000)])[0].sum().backward()
    after = model.audio_module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
