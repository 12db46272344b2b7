"""State-dict keys and shapes of the full-size model match the release (spec §3.4), built on meta."""

import pytest
import torch

from cmirm_plugin.model.config import CMIRMConfig, DownsampleConfig
from cmirm_plugin.model.reward_model import TOWER_PREFIXES, CMIRewardModel, TowerConfigs


def _meta_model(**overrides) -> CMIRewardModel:
    with torch.device("meta"):
        return CMIRewardModel(CMIRMConfig(**overrides), TowerConfigs.default())


@pytest.fixture(scope="module")
def full_size():
    return _meta_model()


def test_trainable_keys_and_shapes(full_size):
    shapes = {k: tuple(v.shape) for k, v in full_size.state_dict().items() if not k.startswith(TOWER_PREFIXES)}
    for tf, depth in (("prompt_transformer", 1), ("joint_transformer", 4)):
        for i in range(depth):
            p = f"{tf}.layers.{i}"
            assert shapes[f"{p}.0.q_scale"] == shapes[f"{p}.0.k_scale"] == (64,)
            assert shapes[f"{p}.0.norm.learned_gamma"] == (768,)
            assert shapes[f"{p}.0.to_q.weight"] == (512, 768)
            assert shapes[f"{p}.0.to_kv.weight"] == (1024, 768)
            assert shapes[f"{p}.0.to_out.0.weight"] == (768, 512)
            assert shapes[f"{p}.1.0.learned_gamma"] == (768,)
            assert shapes[f"{p}.1.1.weight"] == (4096, 768)
            assert shapes[f"{p}.1.4.weight"] == (768, 2048)
    assert "joint_transformer.layers.4.0.q_scale" not in shapes
    head = {"0.weight": (768,), "0.bias": (768,), "1.weight": (512, 768), "1.bias": (512,)}
    for name, k in (("score_projector", 2), ("single_score_projector", 1), ("alignment_head", 1), ("quality_head", 1)):
        for suffix, shape in {**head, "3.weight": (k, 512), "3.bias": (k,)}.items():
            assert shapes[f"{name}.{suffix}"] == shape
    for name in ("null_text_embedding", "null_lyrics_embedding", "null_audio_embedding"):
        assert shapes[name] == (1, 10, 768)
    n_trainable = sum(v.numel() for k, v in full_size.state_dict().items() if not k.startswith(TOWER_PREFIXES))
    assert n_trainable == 33_072_261  # spec §2.10
    assert len(shapes) == 9 * 5 + 4 * 6 + 3  # no other keys (no embeddings, no CLS token)


def test_tower_keys_and_shapes(full_size):
    sd = full_size.state_dict()
    expected = {
        "text_module.model.embeddings.word_embeddings.weight": (250002, 768),
        "text_module.model.encoder.layer.11.output.dense.weight": (768, 3072),
        "text_module.model.pooler.dense.weight": (768, 768),
        "text_module.transformer.layers.7.1.4.weight": (768, 2048),
        "audio_module.model.model.conv.conv.0.conv1.weight": (512, 1, 3, 3),
        "audio_module.model.model.conv.conv.0.conv3.weight": (512, 1, 3, 3),
        "audio_module.model.model.conv.conv.1.bn3.running_var": (512,),
        "audio_module.model.model.conv.linear.weight": (1024, 16384),
        "audio_module.model.model.conformer.layers.11.self_attn.linear_q.weight": (1024, 1024),
        "audio_module.model.model.conformer.layer_norm.weight": (1024,),
        "audio_module.model.model.linear.weight": (4096, 1024),
        "audio_module.model.model.cls_token": (1024,),
        "audio_module.model.model.quantizer_melspec_2048.random_projection": (512, 16),
        "audio_module.model.model.quantizer_melspec_2048.codebook": (4096, 16),
        "audio_module.aggregator.weight": (1, 25, 1),
        "audio_module.proj.weight": (768, 1024),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "text_module.transformer.layers.8.0.q_scale" not in sd
    assert not any(k.startswith("audio_module.transformer.") for k in sd)  # depth 0
    assert not any(".frontend." in k or k.endswith(".beta") for k in sd)  # derived buffers are not saved
    text_tf = sum(v.numel() for k, v in sd.items() if k.startswith("text_module.transformer."))
    assert text_tf == 50_344_960


def test_ca_mode_keys_and_size():
    model = _meta_model(attention_mode="CA")
    sd = model.state_dict()
    for key in ("joint_transformer.0.self_attn.q_scale", "joint_transformer.3.cross_attn.norm_q.learned_gamma",
                "joint_transformer.3.cross_attn.norm_kv.learned_gamma", "joint_transformer.0.ffn.4.weight"):
        assert key in sd, key
    assert tuple(sd["joint_transformer.1.cross_attn.to_kv.weight"].shape) == (1024, 768)
    layer = sum(v.numel() for k, v in sd.items() if k.startswith("joint_transformer.0."))
    assert layer == 7_867_520
    total = sum(v.numel() for k, v in sd.items() if not k.startswith(TOWER_PREFIXES))
    assert round(total / 1e6, 1) == 39.4


def test_downsampler_keys():
    ds = {"eval": "b3", "text": "mpm", "configs": {"b3": {"kind": "b3", "factor": 4}, "mpm": {"kind": "b1", "factor": 1}}}
    sd = _meta_model(downsample=DownsampleConfig.from_dict(ds)).state_dict()
    assert tuple(sd["eval_downsampler.block1.pw1.weight"].shape) == (1536, 768, 1)
    assert tuple(sd["ref_downsampler.final_pw.weight"].shape) == (768, 768, 1)   # ref copies eval's config
    assert tuple(sd["text_downsampler.mlp.0.weight"].shape) == (1536, 768)
    assert tuple(sd["lyrics_downsampler.mlp.3.weight"].shape) == (768, 1536)    # lyrics copies text's
