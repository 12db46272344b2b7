"""Saving and loading the released layout, tower loading from MuQ-MuLan keys, and bad checkpoints."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cmirm_plugin import Instruction
from cmirm_plugin.errors import CheckpointError
from cmirm_plugin.model import CMIRewardModel
from cmirm_plugin.model.loading import resolve_file
from cmirm_plugin.scoring import RewardScorer
from cmirm_plugin.testing import sine


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_save_and_reload_gives_identical_scores(tiny_model, tmp_path: Path):
    clips = [sine(330, 1.5), sine(660, 2.5, harmonics=3)]
    inst = Instruction(text="bright piano", lyrics="la la")
    before = RewardScorer(tiny_model, device="cpu").score_batch(clips, inst)
    tiny_model.save_pretrained(str(tmp_path / "saved"))
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["config.yaml", "model.safetensors"]
    saved = load_file(str(tmp_path / "saved/model.safetensors"))
    assert not any(k.startswith(("audio_module.", "text_module.")) for k in saved)  # frozen towers stay on the hub
    reloaded = CMIRewardModel.from_pretrained(str(tmp_path / "saved"))
    after = RewardScorer(reloaded, device="cpu").score_batch(clips, inst)
    np.testing.assert_array_equal(before, after)
    assert reloaded.load_report.clean


def test_towers_come_from_the_mulan_checkpoint(tiny_model):
    mulan = tiny_model.config.model_name
    hub = load_file(str(resolve_file(mulan, "model.safetensors")))
    sd = tiny_model.state_dict()
    assert torch.equal(sd["audio_module.proj.weight"], hub["mulan.audio.proj.weight"])
    assert torch.equal(sd["audio_module.model.model.conformer.layers.1.ffn2.output_dense.weight"],
                       hub["mulan.audio.model.model.conformer.layers.1.ffn2.output_dense.weight"])
    assert torch.equal(sd["text_module.transformer.layers.1.0.q_scale"], hub["mulan.text.transformer.layers.1.0.q_scale"])
    assert torch.equal(sd["text_module.model.embeddings.word_embeddings.weight"],
                       hub["mulan.text.model.embeddings.word_embeddings.weight"])
    assert tiny_model.load_report.unexpected_hub == []  # latent projections are known-unused, not unexpected


def test_tower_keys_in_the_checkpoint_override_the_hub(tiny_checkpoint, tmp_path: Path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ck")
    state = load_file(str(ckpt / "model.safetensors"))
    state["audio_module.proj.bias"] = torch.full((32,), 0.25)
    save_file(state, str(ckpt / "model.safetensors"))
    model = CMIRewardModel.from_pretrained(str(ckpt))
    assert torch.equal(model.audio_module.proj.bias, torch.full((32,), 0.25))
    assert model.load_report.overlaid_tower_keys == ["audio_module.proj.bias"]


def test_missing_unexpected_and_bf16_are_reported(tiny_checkpoint, tmp_path: Path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ck")
    state = load_file(str(ckpt / "model.safetensors"))
    del state["quality_head.3.bias"]
    state["some_new_head.weight"] = torch.zeros(3)
    state["score_projector.3.weight"] = state["score_projector.3.weight"].to(torch.bfloat16)
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.warns(UserWarning, match="MISSING"):
        model = CMIRewardModel.from_pretrained(str(ckpt))
    report = model.load_report
    assert report.missing == ["quality_head.3.bias"]
    assert report.unexpected == ["some_new_head.weight"]
    assert report.upcast == {"score_projector.3.weight": "bfloat16"}
    assert model.score_projector[3].weight.dtype == torch.float32
    summary = report.summary()
    assert "quality_head.3.bias" in summary and "some_new_head.weight" in summary and "bfloat16" in summary


def test_shape_mismatch_names_key_and_shapes(tiny_checkpoint, tmp_path: Path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ck")
    state = load_file(str(ckpt / "model.safetensors"))
    state["null_text_embedding"] = torch.zeros(1, 7, 32)
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"shape mismatch for 'null_text_embedding': checkpoint \(1, 7, 32\) "
                                              r"vs model \(1, 10, 32\)"):
        CMIRewardModel.from_pretrained(str(ckpt))


def test_missing_config(tiny_checkpoint, tmp_path: Path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ck")
    (ckpt / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match=r"ck': missing config.yaml \(folder holds: \['model.safetensors'\]\)"):
        CMIRewardModel.from_pretrained(str(ckpt))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt"])
def test_cmirm_pickle_checkpoints_are_refused(tiny_checkpoint, tmp_path: Path, name):
    """Only the towers fall back to pytorch_model.bin; a CMI-RM checkpoint itself is safetensors only."""
    ckpt = _copy(tiny_checkpoint, tmp_path / "ck")
    (ckpt / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, ckpt / name)
    with pytest.raises(CheckpointError, match=r"missing model.safetensors .*CMI-RM checkpoints are read from "
                                              r"safetensors only"):
        CMIRewardModel.from_pretrained(str(ckpt))


def test_corrupt_safetensors(tiny_checkpoint, tmp_path: Path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ck")
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match=r"model.safetensors': not a readable safetensors file"):
        CMIRewardModel.from_pretrained(str(ckpt))


def test_file_instead_of_folder_and_missing_folder(tiny_checkpoint, tmp_path: Path):
    with pytest.raises(CheckpointError, match="expected the checkpoint folder"):
        CMIRewardModel.from_pretrained(str(tiny_checkpoint / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"no such directory"):
        CMIRewardModel.from_pretrained(str(tmp_path / "does/not/exist"))


def test_unavailable_hub_repo_says_what_to_download(monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the hub is never contacted
    repo = "example-org/no-such-reward-model"
    with pytest.raises(CheckpointError) as err:
        CMIRewardModel.from_pretrained(repo)
    msg = str(err.value)
    assert f"'config.yaml' of hub repo '{repo}'" in msg
    assert f"`hf download {repo} config.yaml`" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "huggingface-cli" not in msg
    with pytest.raises(CheckpointError, match=r"of hub repo 'example-org/reward-v2.5.1'"):  # dots are repo ids too
        CMIRewardModel.from_pretrained("example-org/reward-v2.5.1")


def test_construction_does_not_touch_the_callers_rng(tiny_checkpoint):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    CMIRewardModel.from_pretrained(str(tiny_checkpoint))
    assert torch.equal(torch.rand(3), expected)


def test_frozen_towers_stay_in_eval_mode(tiny_model):
    tiny_model.train()
    try:
        assert tiny_model.prompt_transformer.training
        assert not tiny_model.audio_module.training and not tiny_model.text_module.training
        assert not any(p.requires_grad for p in tiny_model.audio_module.parameters())
    finally:
        tiny_model.eval()


def test_the_tiny_model_is_the_same_model_every_time_it_is_built(tmp_path):
    """`tiny-v<version>` names one model: two builds (tokenizer included) give identical files."""
    from cmirm_plugin.model.tiny import build_tiny_checkpoint

    from safetensors.torch import load_file

    build_tiny_checkpoint(tmp_path / "a"), build_tiny_checkpoint(tmp_path / "b")
    for weights in ("cmi-rm-tiny/model.safetensors", "muq-mulan-tiny/model.safetensors"):
        a, b = load_file(str(tmp_path / "a" / weights)), load_file(str(tmp_path / "b" / weights))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), weights
    tokenizers = [(tmp_path / side / "xlm-roberta-tiny" / "tokenizer.json").read_bytes() for side in "ab"]
    assert tokenizers[0] == tokenizers[1]
