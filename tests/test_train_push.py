"""``cmirm push``: the model card written from a tiny two-stage run, the exact upload, and refused inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

import train.push
from cmirm_plugin.cli import app
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.licences import MODEL_LICENCES
from cmirm_plugin.model.config import CMIRMConfig
from cmirm_plugin.model.tiny import build_tiny_towers, tiny_config
from train.bench.outputs import write_metrics
from train.config import TrainConfig
from train.push import ModelFolder, Stage, model_card, push_model, read_model_folder
from train.synthetic import write_synthetic_pairs
from train.trainer import TrainResult, train_reward_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SUMMARY = [{"dataset": "PAM", "task": "musicality", "n": 20, "SRCC": 0.41234, "LCC": 0.5, "K-Tau": 0.3, "ACC": None},
           {"dataset": "CMI-Pref", "task": "alignment", "n": 12, "SRCC": None, "LCC": None, "K-Tau": None, "ACC": 0.75}]


class FakeHub:
    """Stands for `HfApi`: records what would have been sent."""

    instances: list["FakeHub"] = []

    def __init__(self, token=None):
        self.token, self.calls = token, []
        FakeHub.instances.append(self)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", repo_id, list(operations), kwargs))


@pytest.fixture
def hub(monkeypatch):
    FakeHub.instances = []
    monkeypatch.setattr(train.push, "HfApi", FakeHub)
    return FakeHub


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, TrainResult]:
    """Pretrain (2 epochs) then finetune from its best/ (1 epoch) on tiny towers."""
    root = tmp_path_factory.mktemp("push")
    towers = build_tiny_towers(root / "towers")
    common = dict(pairs=write_synthetic_pairs(root / "data", n_train=24, n_test=8, clips_per_split=4, seconds=0.5),
                  cache_dir=root / "cache", batch_size=8, lr=2e-3, progress=False)
    pre = train_reward_model(TrainConfig(out=root / "pre", model_config=tiny_config(towers).to_yaml(root / "c.yaml"),
                                         epochs=2, **common))
    fine = train_reward_model(TrainConfig(out=root / "fine", stage="finetune", init=str(pre.best), epochs=1,
                                          **{**common, "lr": 5e-5}))
    return {"pre": pre, "fine": fine, "root": root}


def table_row(card: str, first_cell: str) -> list[str]:
    line = next(line for line in card.splitlines() if line.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def bench_folder(path: Path, model: Path) -> Path:
    write_metrics({"config": {}, "summary": SUMMARY, "detail": []}, path)
    (path / "metadata.json").write_text(json.dumps({"scoring": {"model": str(model)}, "split": "test",
                                                    "subset": "all"}))
    return path


def test_card_is_written_from_the_run(runs, tmp_path):
    best = runs["fine"].best
    folder = read_model_folder(best)
    card = str(model_card(folder, "me/tiny-rm", train.push.read_bench(bench_folder(tmp_path / "b", best), best)))
    headings = [line for line in card.splitlines() if line.startswith("#")]
    assert headings == ["# tiny-rm", "## Model", "## Licences", "## Training", "## Held-out accuracy",
                        "## CMI-RewardBench", "## Use with cmirm"]
    assert card.startswith("---\n") and "library_name: cmirm" in card and "- reward-model" in card
    assert "license: other" in card                                      # local tiny towers: licence unknown
    assert runs["root"].as_posix() not in card and str(tmp_path) not in card   # no local paths

    weights = load_file(str(best / "model.safetensors"))
    assert f"{len(weights)} tensors, {sum(t.numel() for t in weights.values()):,} parameters" in card
    assert "mode `concat_text_late`" in card and "joint transformer depth 2" in card

    info = json.loads((best / "train_info.json").read_text())
    metrics = info["metrics"]
    assert metrics == runs["fine"].state.history[-1]                     # the epoch these weights come from
    header = table_row(card, "axis")
    assert header[:3] == ["axis", "decisive pairs", "all"] and set(header[3:]) <= {"text", "text+lyrics", "text+ref",
                                                                                  "text+lyrics+ref"}
    for axis in ("alignment", "musicality"):
        row = dict(zip(header, table_row(card, axis)))
        assert row["decisive pairs"] == str(metrics[f"eval/n/{axis}"]) == "8"
        assert row["all"] == f"{metrics[f'eval/acc/{axis}']:.4f}"
        for modality in header[3:]:
            assert row[modality] == f"{metrics[f'eval/acc/{axis}/{modality}']:.4f}"
    assert f"epoch {metrics['epoch']} (step {metrics['step']})" in card

    assert table_row(card, "1")[1:9] == ["pretrain", "`pairs.jsonl`", "24 / 8", "2", "8", "0.002", "0.1", "0"]
    stage2 = table_row(card, "2")
    assert stage2[1:9] == ["finetune", "`pairs.jsonl`", "24 / 8", "1", "8", "5e-05", "0", "0"]
    assert stage2[9] == "local folder 'pre/best'"
    assert "stage 1: 8 pairs with split == 'test' held out" in card

    assert table_row(card, "PAM") == ["PAM", "musicality", "20", "0.4123", "0.5000", "0.3000", "-"]
    assert table_row(card, "CMI-Pref") == ["CMI-Pref", "alignment", "12", "-", "-", "-", "0.7500"]
    assert 'RewardScorer.from_pretrained("me/tiny-rm")' in card and "cmirm score song.wav" in card
    assert "--reward me/tiny-rm" in card


def test_card_licences_come_from_the_licence_table(tmp_path):
    folder = ModelFolder(tmp_path, CMIRMConfig(model_name="OpenMuQ/MuQ-MuLan-large"), parameters=10, tensors=1,
                         info=None, stages=[Stage(options={"stage": "finetune", "init": "HaiwenXia/CMI-RM", "lr": 1e-5,
                                                           "epochs": 1}, info=None, init="HaiwenXia/CMI-RM")])
    card = model_card(folder, "me/rm")
    assert card.data.license == MODEL_LICENCES["HaiwenXia/CMI-RM"].id == "cc-by-nc-sa-4.0"
    assert card.data.base_model == "HaiwenXia/CMI-RM"
    text = str(card)
    for role, repo in (("initial weights", "HaiwenXia/CMI-RM"), ("MuQ-MuLan towers", "OpenMuQ/MuQ-MuLan-large"),
                       ("audio backbone", "OpenMuQ/MuQ-large-msd-iter"),
                       ("text backbone", "FacebookAI/xlm-roberta-base")):
        shown = "xlm-roberta-base" if repo.startswith("FacebookAI") else repo      # the id the config uses
        assert table_row(text, role) == [role, f"`{shown}`", MODEL_LICENCES[repo].id, MODEL_LICENCES[repo].note]
    assert "No held-out evaluation was recorded" in text
    no_base = ModelFolder(tmp_path, CMIRMConfig(model_name="OpenMuQ/MuQ-MuLan-large"), 1, 1, None, [])
    assert model_card(no_base, "me/rm").data.license == "cc-by-nc-4.0"      # the towers' licence


def test_upload_sends_exactly_the_model_files_and_the_card(runs, hub, tmp_path):
    best = runs["fine"].best
    result = push_model(best, "me/tiny-rm", private=True, token="hf_x")
    [api] = hub.instances
    assert api.token == "hf_x"
    assert api.calls[0] == ("create_repo", "me/tiny-rm", {"private": True, "repo_type": "model", "exist_ok": True})
    kind, repo, operations, kwargs = api.calls[1]
    assert (kind, repo, kwargs["repo_type"]) == ("create_commit", "me/tiny-rm", "model")
    sent = {op.path_in_repo: op.path_or_fileobj for op in operations}
    assert list(sent) == ["config.yaml", "model.safetensors", "train_info.json", "README.md"] == result.files
    assert sent["model.safetensors"] == str(best / "model.safetensors")
    assert sent["README.md"].decode() == str(model_card(read_model_folder(best), "me/tiny-rm"))
    assert result.url == "https://huggingface.co/me/tiny-rm" and result.skipped == []
    assert result.warnings and "names local towers" in result.warnings[0]

    # last/ keeps its resume state at home; unmerged LoRA adapters travel with the weights
    last = tmp_path / "last"
    shutil.copytree(runs["fine"].last, last)
    (last / "text_lora").mkdir()
    (last / "text_lora" / "adapter_config.json").write_text("{}")
    result = push_model(last, "me/tiny-rm")
    assert result.files == ["config.yaml", "model.safetensors", "train_info.json", "text_lora/adapter_config.json",
                            "README.md"]
    assert result.skipped == ["trainer/"] and hub.instances[-1].calls[0][2]["private"] is False


def test_cli_push(runs, hub, tmp_path):
    best = runs["fine"].best
    result = CliRunner().invoke(app, ["push", str(best), "--repo", "me/tiny-rm", "--private", "--bench",
                                      str(bench_folder(tmp_path / "bench", best))])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "pushed config.yaml, model.safetensors, train_info.json, README.md to https://huggingface.co/me/tiny-rm" \
        in result.output.replace("\n", "")
    operations = hub.instances[0].calls[1][2]
    assert "## CMI-RewardBench" in operations[-1].path_or_fileobj.decode()


def test_bad_inputs_are_refused_before_any_upload(runs, hub, tmp_path):
    best = runs["fine"].best
    (tmp_path / "file").write_text("x")
    (tmp_path / "half").mkdir()
    shutil.copy(best / "config.yaml", tmp_path / "half" / "config.yaml")
    (tmp_path / "empty").mkdir()
    (tmp_path / "nobench").mkdir()
    cases = [
        ((tmp_path / "missing", "me/rm"), f"'{tmp_path / 'missing'}': no such folder"),
        ((tmp_path / "file", "me/rm"), f"'{tmp_path / 'file'}': not a folder"),
        ((tmp_path / "half", "me/rm"), f"'{tmp_path / 'half'}': missing model.safetensors;"),
        ((tmp_path / "empty", "me/rm"), f"'{tmp_path / 'empty'}': missing config.yaml and model.safetensors;"),
        ((best, "not a repo"), "--repo: 'not a repo' is not a valid hub repo id (expected user/name)"),
        ((best, "tiny-rm"), "--repo: expected user/name (or org/name), got 'tiny-rm'"),
    ]
    for args, message in cases:
        with pytest.raises(ConfigError) as error:
            push_model(*args)
        assert str(error.value).startswith(message) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="no metrics.json with a summary"):
        push_model(best, "me/rm", bench_dir=tmp_path / "nobench")
    other = bench_folder(tmp_path / "other", runs["pre"].best)
    with pytest.raises(ConfigError, match="benchmark results are of model .*pre/best"):
        push_model(best, "me/rm", bench_dir=other)
    hub_model = bench_folder(tmp_path / "hubmodel", best)
    (hub_model / "metadata.json").write_text(json.dumps({"scoring": {"model": "HaiwenXia/CMI-RM"}}))
    with pytest.raises(ConfigError, match="of model 'HaiwenXia/CMI-RM'"):
        push_model(best, "me/rm", bench_dir=hub_model)
    assert hub.instances == []                                            # nothing reached the hub
    result = CliRunner().invoke(app, ["push", str(tmp_path / "file"), "--repo", "me/rm"])
    assert isinstance(result.exception, ConfigError)


def test_hub_failures_are_one_line(runs, monkeypatch):
    class Offline(FakeHub):
        def create_repo(self, repo_id, **kwargs):
            raise OSError("[Errno -2] Name or service not known\nTraceback details")

    monkeypatch.setattr(train.push, "HfApi", Offline)
    with pytest.raises(ConfigError) as error:
        push_model(runs["fine"].best, "me/rm")
    assert str(error.value) == ("could not push to 'me/rm' (OSError: [Errno -2] Name or service not known); check the "
                                "network and the token (--token, HF_TOKEN or `hf auth login`)")
