"""Tower checkpoints as the hub mixin reads them: model.safetensors first, else a weights-only pytorch_model.bin."""

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cmirm_plugin.errors import CheckpointError
from cmirm_plugin.model.loading import build_model, resolve_tower_weights
from cmirm_plugin.model.tiny import build_tiny_towers, tiny_config
from cmirm_plugin.model.weights import read_torch_weights, read_weights

COMMIT = "0" * 40


class CreatesAFile:
    """Unpickling this runs ``open(path, "w")``: what a malicious checkpoint would do."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.fixture(scope="module")
def bin_towers(tmp_path_factory) -> Path:
    """Tiny towers whose MuQ-MuLan folder is laid out as the real repo: config.json + pytorch_model.bin."""
    return build_tiny_towers(tmp_path_factory.mktemp("towers"), mulan_format="bin")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """cmirm's cache (and so the conversion cache) in a fresh folder."""
    monkeypatch.setenv("CMIRM_CACHE", str(tmp_path / "cmirm-cache"))
    return tmp_path / "cmirm-cache"


def _copy(folder: Path, dst: Path) -> Path:
    shutil.copytree(folder, dst)
    return dst


def _fake_hub(monkeypatch, root: Path, repo: str, files: dict[str, Path]) -> Path:
    """A hub cache (offline) holding ``repo`` with ``files`` (name -> source file); returns the snapshot folder."""
    import huggingface_hub.constants as constants

    repo_dir = root / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    for name, src in files.items():
        shutil.copy(src, snapshot / name)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return snapshot


def test_tiny_bin_towers_mirror_the_real_repo(bin_towers):
    assert sorted(p.name for p in bin_towers.iterdir()) == ["config.json", "pytorch_model.bin"]
    state = torch.load(bin_towers / "pytorch_model.bin", weights_only=True)
    assert all(k.startswith("mulan.") for k in state) and "mulan.audio.proj.weight" in state


def test_bin_towers_load_the_same_tensors_as_safetensors(bin_towers, cache, tmp_path):
    as_bin, bin_report = build_model(tiny_config(bin_towers))
    assert bin_report.tower_weights == bin_report.tower_weights_read == str(bin_towers / "pytorch_model.bin")
    assert bin_report.missing_towers == [] and bin_report.unexpected_hub == [] and bin_report.tower_keys_from_hub > 0

    st_towers = _copy(bin_towers, tmp_path / "st")
    save_file(torch.load(st_towers / "pytorch_model.bin", weights_only=True), str(st_towers / "model.safetensors"))
    (st_towers / "pytorch_model.bin").unlink()
    as_st, st_report = build_model(tiny_config(st_towers))
    assert st_report.tower_weights == st_report.tower_weights_read == str(st_towers / "model.safetensors")
    a, b = as_bin.state_dict(), as_st.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(a["audio_module.proj.weight"],
                       torch.load(bin_towers / "pytorch_model.bin", weights_only=True)["mulan.audio.proj.weight"])


def test_a_bin_is_converted_once_keyed_by_its_content(bin_towers, cache, tmp_path, monkeypatch):
    weights = _copy(bin_towers, tmp_path / "mulan") / "pytorch_model.bin"
    first = read_weights(weights)
    assert first.read_from == weights
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    converted = cache / "converted-weights" / f"{digest}.safetensors"
    assert sorted(p.name for p in converted.parent.glob("*.safetensors")) == [converted.name]
    assert load_file(str(converted)).keys() == first.state.keys()

    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the .bin was unpickled again"))
    second = read_weights(weights)
    assert second.path == weights and second.read_from == converted
    assert all(torch.equal(first.state[k], second.state[k]) for k in first.state)
    # A touched file (new mtime) is hashed again, finds its content's copy and is still not unpickled;
    # the same bytes at another path share that copy.
    os.utime(weights, ns=(1, 1))
    assert read_weights(weights).read_from == converted
    moved = Path(shutil.copy(weights, tmp_path / "elsewhere.bin"))
    assert read_weights(moved).read_from == converted
    assert len(list(converted.parent.glob("*.safetensors"))) == 1


def test_changed_bin_is_converted_again(bin_towers, cache, tmp_path):
    weights = _copy(bin_towers, tmp_path / "mulan") / "pytorch_model.bin"
    read_weights(weights)
    state = torch.load(weights, weights_only=True)
    state["mulan.audio.proj.bias"] = state["mulan.audio.proj.bias"] + 1
    torch.save(state, weights)
    again = read_weights(weights)
    assert again.read_from == weights   # new content: unpickled, not served from the old copy
    assert torch.equal(again.state["mulan.audio.proj.bias"], state["mulan.audio.proj.bias"])
    assert len(list((cache / "converted-weights").glob("*.safetensors"))) == 2


def test_unwritable_cache_reads_the_bin_directly(bin_towers, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CMIRM_CACHE", str(blocker))
    with pytest.warns(UserWarning, match=r"could not keep a safetensors copy of '.*pytorch_model.bin'"):
        model, report = build_model(tiny_config(bin_towers))
    assert report.tower_weights_read == str(bin_towers / "pytorch_model.bin") and report.missing_towers == []
    assert blocker.read_text() == "a file where the cache folder should be"


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_bin_is_refused_and_nothing_runs(bin_towers, cache, tmp_path, writer):
    mulan = _copy(bin_towers, tmp_path / "mulan")
    weights = mulan / "pytorch_model.bin"
    marker = tmp_path / "pwned.txt"
    payload = {"mulan.audio.proj.weight": torch.zeros(2), "evil": CreatesAFile(marker)}
    if writer == "torch.save":   # the zip format torch.save writes
        torch.save(payload, weights)
    else:                        # a bare pickle (torch's legacy format path); protocol 2 as torch writes
        weights.write_bytes(pickle.dumps({"evil": CreatesAFile(marker)}, protocol=2))
    with pytest.raises(CheckpointError) as err:
        build_model(tiny_config(mulan))
    msg = str(err.value)
    assert msg.startswith(f"'{weights}': refused: torch's weights-only unpickler accepts only tensors and plain "
                          f"containers and stopped at: Unsupported global: GLOBAL io.open was not an allowed global "
                          f"by default; nothing in the file was run.")
    assert "\n" not in msg
    assert not marker.exists()
    assert not list((cache / "converted-weights").glob("*.safetensors"))
    if writer == "torch.save":   # the payload is live: a full unpickle would have created the file
        torch.load(weights, weights_only=False)
        assert marker.exists()


def test_bin_that_is_not_a_state_dict_or_not_a_checkpoint(tmp_path, cache):
    nested = tmp_path / "nested.bin"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, nested)
    with pytest.raises(CheckpointError, match=r"nested.bin': expected a state dict \(parameter names -> tensors\), "
                                              r"found dict"):
        read_torch_weights(nested)
    truncated = tmp_path / "truncated.bin"
    torch.save({"w": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"truncated.bin': not a readable torch checkpoint \(RuntimeError: "):
        read_weights(truncated)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage.bin': refused: .* stopped at: Unsupported operand 0; "):
        read_weights(garbage)
    assert not list((cache / "converted-weights").glob("*.safetensors"))


def test_a_real_state_dict_pickle_loads(tmp_path, cache):
    """What `torch.save(module.state_dict())` writes (an OrderedDict with `_metadata`) is weights-only readable."""
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    torch.save(module.state_dict(), tmp_path / "pytorch_model.bin")
    state = read_weights(tmp_path / "pytorch_model.bin").state
    assert state.keys() == module.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())


def test_folder_with_both_files_uses_safetensors(bin_towers, cache, tmp_path):
    mulan = _copy(bin_towers, tmp_path / "mulan")
    state = torch.load(mulan / "pytorch_model.bin", weights_only=True)
    save_file({k: v + 1 for k, v in state.items()}, str(mulan / "model.safetensors"))
    model, report = build_model(tiny_config(mulan))
    assert report.tower_weights == report.tower_weights_read == str(mulan / "model.safetensors")
    assert torch.equal(model.audio_module.proj.weight, state["mulan.audio.proj.weight"] + 1)
    assert resolve_tower_weights(mulan) == mulan / "model.safetensors"


def test_folder_with_neither_file(bin_towers, tmp_path):
    mulan = _copy(bin_towers, tmp_path / "mulan")
    (mulan / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError) as err:
        build_model(tiny_config(mulan))
    assert str(err.value) == (f"'{mulan}': missing both model.safetensors and pytorch_model.bin "
                              f"(folder holds: ['config.json']).")


def test_hub_snapshot_prefers_safetensors_then_bin_then_says_what_is_missing(bin_towers, cache, tmp_path, monkeypatch):
    repo = "OpenMuQ/MuQ-MuLan-large"
    bin_file = bin_towers / "pytorch_model.bin"
    state = torch.load(bin_file, weights_only=True)
    st_file = tmp_path / "model.safetensors"
    save_file({k: v + 1 for k, v in state.items()}, str(st_file))
    snapshot = _fake_hub(monkeypatch, tmp_path, repo, {"config.json": bin_towers / "config.json",
                                                       "pytorch_model.bin": bin_file, "model.safetensors": st_file})
    assert resolve_tower_weights(repo) == snapshot / "model.safetensors"
    model, report = build_model(tiny_config(repo))
    assert report.tower_weights == str(snapshot / "model.safetensors")
    assert torch.equal(model.audio_module.proj.weight, state["mulan.audio.proj.weight"] + 1)

    (snapshot / "model.safetensors").unlink()   # the real repo's layout
    model, report = build_model(tiny_config(repo))
    assert report.tower_weights == report.tower_weights_read == str(snapshot / "pytorch_model.bin")
    assert torch.equal(model.audio_module.proj.weight, state["mulan.audio.proj.weight"])

    (snapshot / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError) as err:
        build_model(tiny_config(repo))
    msg = str(err.value)
    assert msg.startswith(f"could not get 'model.safetensors' or 'pytorch_model.bin' of hub repo '{repo}' "
                          f"(LocalEntryNotFoundError: ")
    assert msg.endswith(f"On a machine with the hub run `hf download {repo} model.safetensors pytorch_model.bin` (or "
                        f"`cmirm download`), copy its hub cache (HF_HOME) here and set HF_HUB_OFFLINE=1 to run from it "
                        f"without network.")
