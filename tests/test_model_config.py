"""config.yaml schema (spec §3.2): defaults, flat/nested, round trip, clear errors."""

from pathlib import Path

import pytest
import yaml

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.model.config import CMIRMConfig

from conftest import PARITY


def test_defaults_match_the_spec():
    c = CMIRMConfig()
    assert (c.name, c.model_name, c.dim, c.mode, c.attention_mode, c.mlp_dim, c.output_dim, c.sr) == (
        "reward", "OpenMuQ/MuQ-MuLan-large", 768, "concat_text_late", "SA", 512, 2, 24000)
    assert (c.prompt_tf_depth, c.joint_tf_depth, c.dim_head, c.heads, c.ff_mult) == (1, 4, 64, 8, 4)
    assert (c.null_embedding.text.dropout, c.null_embedding.lyrics.dropout, c.null_embedding.audio.dropout) == (0.2, 0.3, 0.5)
    assert c.null_embedding.text.length == 10 and not c.null_embedding.skip_null
    assert all(c.downsample.spec_for(s).kind == "none" for s in ("eval", "ref", "text", "lyrics"))


def test_reads_the_parity_configs():
    c = CMIRMConfig.from_yaml(PARITY / "sa_meanpool_mlp/model/config.yaml")
    assert c.dim == 32 and c.joint_tf_depth == 2 and c.mlp_dim == 24
    assert c.downsample.spec_for("eval").kind == "meanpool+mlp" and c.downsample.spec_for("eval").factor == 2
    assert c.downsample.spec_for("ref").factor == 2  # ref inherits eval's config
    assert c.downsample.spec_for("lyrics").kind == "none"


def test_flat_and_nested_and_round_trip(tmp_path: Path):
    data = {"dim": 64, "heads": 2, "downsample": {"eval": "c", "text": "none", "configs": {
        "none": {"kind": "none"}, "c": {"kind": "conv*2", "factor": 4, "kernel_size": 3}}}}
    flat = CMIRMConfig.from_dict(data)
    nested = CMIRMConfig.from_dict({"model": data})
    assert flat.to_dict() == nested.to_dict()
    path = flat.to_yaml(tmp_path / "config.yaml")
    back = CMIRMConfig.from_yaml(path)
    assert back.to_dict() == flat.to_dict()
    assert back.downsample.spec_for("eval").options == {"kernel_size": 3}


def test_unknown_keys_are_kept_with_a_warning(tmp_path: Path):
    with pytest.warns(UserWarning, match=r"keeping unknown key\(s\) \['future_option'\]"):
        c = CMIRMConfig.from_dict({"future_option": {"a": 1}})
    assert yaml.safe_load(yaml.safe_dump(c.to_dict()))["future_option"] == {"a": 1}


@pytest.mark.parametrize("data,message", [
    ({"attention_mode": "XA"}, r"'attention_mode': unknown value 'XA'; expected one of \['SA', 'CA'\]"),
    ({"mode": "late"}, r"'mode': unknown value 'late'"),
    ({"name": "sanity"}, r"'name': 'sanity' is not supported"),
    ({"downsample": {"eval": "x", "configs": {"x": {"kind": "maxpool"}}}},
     r"'downsample.configs.x.kind': unknown downsampler kind 'maxpool'"),
    ({"downsample": {"eval": "y", "configs": {"none": {"kind": "none"}}}},
     r"'downsample.eval': 'y' is not defined under 'downsample.configs'"),
    ({"downsample": {"eval": "x", "configs": {"x": {"kind": "meanpool", "factor": 2, "kernel_size": 3}}}},
     r"option\(s\) \['kernel_size'\] do not apply to kind 'meanpool'"),
    ({"null_embedding": {"text": {"dropout": 1.5}}}, r"'null_embedding.text.dropout': 1.5 is not in \[0, 1\]"),
    ({"load_config": {"checkpoint_path": "ckpt/full_model.pt"}}, r"cmirm loads weights only from model.safetensors"),
    ({"text_encoder": {"name": "t5"}}, r"'text_encoder.name': 't5' is not supported"),
    ({"joint_tf_depth": -1}, r"'joint_tf_depth': must be >= 0"),
    ({"dim": "big"}, r"'dim': expected int, got 'big'"),
    ({"null_embedding": {"text": 0.2}}, r"'null_embedding.text': expected a mapping, got 0.2"),
    ({"downsample": {"eval": "x", "configs": {"x": "meanpool"}}}, r"'downsample.configs.x': expected a mapping"),
])
def test_bad_values_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        CMIRMConfig.from_dict(data)


def test_bad_yaml_names_the_file(tmp_path: Path):
    p = tmp_path / "config.yaml"
    p.write_text("dim: [1, 2\n")
    with pytest.raises(ConfigError, match=r"config.yaml': not valid YAML"):
        CMIRMConfig.from_yaml(p)
    p.write_text("attention_mode: XA\n")
    with pytest.raises(ConfigError, match=r"config.yaml': config field 'attention_mode'"):
        CMIRMConfig.from_yaml(p)


def test_downsample_names_without_configs_warn_and_stay_identity():
    with pytest.warns(UserWarning, match=r"names \{'eval': 'mp2'\} but defines no 'configs'"):
        c = CMIRMConfig.from_dict({"downsample": {"eval": "mp2"}})
    assert c.downsample.spec_for("eval").kind == "none"
