"""`--generator DIR`: the backend is read from the folder's config; the files each folder needs; folder errors."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from cmirm_plugin.errors import CheckpointError, ConfigError
from cmirm_plugin.models_needed import ModelFiles, check_available
from generators import build_generator
from generators.musicgen import MusicGenGenerator
from generators.registry import checkpoint_of, detect_backend, generator_needs, is_generator_name
from generators.tiny import save_tiny

HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None and importlib.util.find_spec("torchsde") is not None


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    kinds = ["musicgen", "musicgen-melody"] + (["stable-audio"] if HAS_DIFFUSERS else [])
    return {kind: save_tiny(kind, root / kind) for kind in kinds}


def test_the_backend_of_a_folder_comes_from_its_config(saved):
    assert checkpoint_of(str(saved["musicgen"])) == ("musicgen", str(saved["musicgen"]))
    assert detect_backend(saved["musicgen-melody"]) == "musicgen-melody"
    if HAS_DIFFUSERS:
        assert detect_backend(saved["stable-audio"]) == "stable-audio"
    generator = build_generator(str(saved["musicgen"]))
    assert type(generator) is MusicGenGenerator and generator.name == str(saved["musicgen"])
    assert is_generator_name(str(saved["musicgen"])) and is_generator_name("musicgen:x/y")
    assert not is_generator_name("HaiwenXia/CMI-RM") and not is_generator_name("tiny")


def test_a_folder_of_no_known_kind_and_a_bare_hub_id_get_the_right_syntax(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(ConfigError) as err:
        build_generator(str(tmp_path))
    assert str(err.value) == (f"--generator '{tmp_path}': not a generator folder cmirm recognises (config.json "
                              f"model_type 't5'); name its backend: musicgen:{tmp_path}, musicgen-melody:{tmp_path}, "
                              f"stable-audio:{tmp_path}, audiocraft:{tmp_path}")
    with pytest.raises(ConfigError, match=r"^unknown generator 'facebook/musicgen-small' \(for a hub checkpoint name "
                                          r"its backend, e\.g\. musicgen:facebook/musicgen-small or "
                                          r"stable-audio:facebook/musicgen-small\); known: musicgen-small, "):
        build_generator("facebook/musicgen-small")
    with pytest.raises(ConfigError, match=r"^unknown generator '\./no/such/dir' \(no such folder\)"):
        build_generator("./no/such/dir")


def test_a_saved_folder_needs_exactly_what_it_holds(saved, tmp_path):
    files = ModelFiles(local_only=True)
    for kind, path in saved.items():
        (need,) = generator_needs(str(path), files)
        status = files.status(need)
        assert status.complete, (kind, status.missing)
        held = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
        assert set(status.local) == held, kind   # every file of a save is read, and nothing else is needed
    if HAS_DIFFUSERS:
        broken = shutil.copytree(saved["stable-audio"], tmp_path / "sa")
        (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
        with pytest.raises(CheckpointError) as err:
            check_available([str(broken)])
        assert (f"  - folder '{broken}' (generator {broken}): missing vae/diffusion_pytorch_model.safetensors or "
                "vae/diffusion_pytorch_model.safetensors.index.json (folder holds: model_index.json, projection_model, "
                "scheduler, text_encoder, tokenizer, transformer, vae)") in str(err.value).splitlines()


def test_an_incomplete_local_folder_is_named_as_a_folder_not_a_download(saved, tmp_path):
    broken = shutil.copytree(saved["musicgen"], tmp_path / "mg")
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError) as err:
        build_generator(f"musicgen:{broken}")
    assert str(err.value).startswith(f"could not load generator from folder '{broken}' (")
    assert str(err.value).endswith("check that it holds a complete checkpoint")
    assert "hf download" not in str(err.value)
