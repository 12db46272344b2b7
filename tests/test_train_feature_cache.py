"""The feature cache: hits across epochs and runs, invalidation when the encoder changes, crash safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import train.feature_cache as fc
from cmirm_plugin.manifest import read_records
from cmirm_plugin.model.loading import build_model
from cmirm_plugin.model.reward_model import CMIRewardModel
from cmirm_plugin.model.tiny import build_tiny_towers, tiny_config
from cmirm_plugin.scoring import RewardScorer, ScoringSettings
from cmirm_plugin.testing import sine
from train.config import TrainConfig
from train.feature_cache import FeatureCache
from train.synthetic import write_synthetic_pairs
from train.trainer import train_reward_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> Path:
    return build_tiny_towers(tmp_path_factory.mktemp("towers"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic_pairs(tmp_path_factory.mktemp("data"), n_train=24, n_test=8, clips_per_split=8,
                                 seconds=0.5)


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """Counts the tower calls of every CMIRewardModel."""
    counts = {"audio": 0, "text": 0}
    encode_audio, encode_text = CMIRewardModel.encode_audio, CMIRewardModel.encode_text

    def counting_audio(self, waves, *args, **kwargs):
        counts["audio"] += 1
        return encode_audio(self, waves, *args, **kwargs)

    def counting_text(self, texts):
        counts["text"] += 1
        return encode_text(self, texts)

    monkeypatch.setattr(CMIRewardModel, "encode_audio", counting_audio)
    monkeypatch.setattr(CMIRewardModel, "encode_text", counting_text)
    return counts


def model_for(towers: Path, seed: int = 0) -> CMIRewardModel:
    model, _ = build_model(tiny_config(towers), seed=seed)
    return model


def test_second_epoch_and_second_run_never_call_the_encoders(towers, data, tmp_path, calls):
    config_yaml = tiny_config(towers).to_yaml(tmp_path / "config.yaml")
    seen = []
    config = TrainConfig(pairs=data, out=tmp_path / "run1", model_config=config_yaml, epochs=2, batch_size=8,
                         cache_dir=tmp_path / "cache", progress=False, eval_fraction=0.0)
    train_reward_model(config, callbacks=[lambda state: seen.append((state.global_step, dict(calls)))])
    after_caching = seen[0][1]
    assert after_caching["audio"] > 0 and after_caching["text"] > 0
    assert all(counts == after_caching for _, counts in seen)           # no tower call in either epoch
    assert seen[-1][0] == 2 * 3                                          # 24 pairs / 8 per step, 2 epochs

    calls.update(audio=0, text=0)
    config.out, config.stage = tmp_path / "run2", "finetune"
    train_reward_model(config)
    assert calls == {"audio": 0, "text": 0}                              # another run (and stage) reuses it


def test_cached_features_equal_what_inference_computes(towers, data, tmp_path):
    model = model_for(towers).eval()
    clip = data.parent / "clips" / "train0003.wav"
    cache = FeatureCache(tmp_path / "cache", model, max_dur=0.3, dtype="float32", progress=False)
    cache.precompute(texts=["low pitch"], audio=[clip])
    scorer = RewardScorer(model, ScoringSettings(max_dur=0.3), device="cpu")
    with torch.inference_mode():
        live = model.encode_audio([scorer.prepare_audio(str(clip))])[0]
        text = model.encode_text(["low pitch"]).items()[0]
    assert torch.equal(cache.audio([clip])[0], live)
    assert torch.equal(cache.text(["low pitch"])[0], text)
    assert live.shape[0] == 8                                            # 0.3 s at 25 frames/s, cropped like inference


def test_changed_encoder_or_preprocessing_misses_the_cache(towers, data, tmp_path, calls):
    clips = sorted((data.parent / "clips").glob("*.wav"))[:4]
    root = tmp_path / "cache"
    model = model_for(towers)
    assert FeatureCache(root, model, 1.0, progress=False).precompute(["high pitch"], clips) == {"text": 1, "audio": 4}
    assert FeatureCache(root, model, 1.0, progress=False).precompute(["high pitch"], clips) == {"text": 0, "audio": 0}
    assert FeatureCache(root, model, 0.25, progress=False).precompute([], clips)["audio"] == 4   # other max_dur

    with torch.no_grad():
        model.audio_module.proj.weight.mul_(1.01)                        # the audio encoder changed
    assert FeatureCache(root, model, 1.0, progress=False).precompute(["high pitch"], clips) == {"text": 0, "audio": 4}
    with torch.no_grad():
        model.text_module.transformer.layers[0][0].to_q.weight.mul_(1.01)
    assert FeatureCache(root, model, 1.0, progress=False).precompute(["high pitch"], clips) == {"text": 1, "audio": 0}
    other = model_for(towers)                                            # same weights as the first model
    assert FeatureCache(root, other, 1.0, progress=False).precompute(["high pitch"], clips) == {"text": 0, "audio": 0}
    assert FeatureCache(root, other, 1.0, dtype="float32", progress=False).precompute([], clips)["audio"] == 4
    assert len(list(root.glob("audio-*"))) == 3 and len(list(root.glob("text-*"))) == 2


def test_an_interrupted_precompute_keeps_finished_shards_only(towers, data, tmp_path, monkeypatch):
    clips = sorted((data.parent / "clips").glob("*.wav"))[:6]
    model = model_for(towers)
    monkeypatch.setattr(fc, "SHARD_BYTES", 1)                             # one shard per batch
    encode_audio, batches = CMIRewardModel.encode_audio, []

    def failing(self, waves, *args, **kwargs):
        batches.append(len(waves))
        if len(batches) == 3:
            raise KeyboardInterrupt
        return encode_audio(self, waves, *args, **kwargs)

    monkeypatch.setattr(CMIRewardModel, "encode_audio", failing)
    cache = FeatureCache(tmp_path / "cache", model, 1.0, encode_batch_size=2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        cache.precompute(audio=clips)
    store = next((tmp_path / "cache").glob("audio-*"))
    assert len(list(store.glob("shard-*.safetensors"))) == 2
    (store / ".tmp-killed.safetensors").write_bytes(b"half a shard")     # what a kill mid-write leaves
    monkeypatch.setattr(CMIRewardModel, "encode_audio", encode_audio)
    assert FeatureCache(tmp_path / "cache", model, 1.0, progress=False).precompute(audio=clips)["audio"] == 2


def test_a_missing_text_is_named(towers, tmp_path):
    cache = FeatureCache(tmp_path / "cache", model_for(towers), 1.0, progress=False)
    cache.precompute(texts=["high pitch"])
    with pytest.raises(KeyError, match="text 'low pitch' not in the feature cache"):
        cache.text(["high pitch", "low pitch", "la la"])


def test_a_clip_rewritten_in_place_is_not_served_stale(towers, tmp_path, monkeypatch):
    """Same path and size, new content: with a new mtime, and with the old mtime put back."""
    clip = tmp_path / "clip.wav"
    model = model_for(towers)
    hashed = []
    real_sha256 = fc.file_sha256
    monkeypatch.setattr(fc, "file_sha256", lambda path: hashed.append(path) or real_sha256(path))

    def run(cache: str) -> tuple[int, torch.Tensor]:
        """A new run on ``clip`` with the cache folder ``cache``: clips encoded, and the clip's features."""
        features = FeatureCache(tmp_path / cache, model, 1.0, dtype="float32", progress=False)
        return features.precompute(audio=[clip])["audio"], features.audio([clip])[0]

    sine(220.0, 0.5, 24000).save(clip)
    encoded, first = run("cache")
    assert encoded == 1
    hashed.clear()
    assert run("cache")[0] == 0 and hashed == []                         # unchanged: neither encoded nor read

    before = os.stat(clip)
    sine(440.0, 0.5, 24000).save(clip)                                   # (a) same size, new mtime
    os.utime(clip, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))
    assert os.stat(clip).st_size == before.st_size
    encoded, second = run("cache")
    assert encoded == 1 and not torch.equal(second, first) and torch.equal(second, run("fresh-a")[1])

    before = os.stat(clip)
    sine(880.0, 0.5, 24000).save(clip)                                   # (b) same size AND same mtime
    os.utime(clip, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(clip)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    encoded, third = run("cache")
    assert encoded == 1 and not torch.equal(third, second) and torch.equal(third, run("fresh-b")[1])

    sine(220.0, 0.5, 24000).save(clip)                                   # the first content again: hashed,
    encoded, again = run("cache")                                        # and its features found
    assert encoded == 0 and torch.equal(again, first)


def test_digest_records_of_older_versions_only_cost_a_rehash(towers, data, tmp_path, monkeypatch):
    """A cache written before file identities held ctime and inode: its features are still used."""
    clips = sorted((data.parent / "clips").glob("*.wav"))[:3]
    root = tmp_path / "cache"
    model = model_for(towers)
    assert FeatureCache(root, model, 1.0, progress=False).precompute(audio=clips)["audio"] == 3
    digests = root / "file-digests.jsonl"
    old = [{k: r[k] for k in ("path", "size", "mtime_ns", "sha256")} for r in read_records(digests)]
    digests.write_text("".join(json.dumps(r) + "\n" for r in old))           # the old record layout
    hashed = []
    real_sha256 = fc.file_sha256
    monkeypatch.setattr(fc, "file_sha256", lambda path: hashed.append(path) or real_sha256(path))
    assert FeatureCache(root, model, 1.0, progress=False).precompute(audio=clips)["audio"] == 0
    assert len(hashed) == 3                                              # hashed once more, not re-encoded
    hashed.clear()
    assert FeatureCache(root, model, 1.0, progress=False).precompute(audio=clips)["audio"] == 0
    assert hashed == []                                                  # and remembered from then on
