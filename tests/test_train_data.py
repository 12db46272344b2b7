"""Preference-pair reading and validation, held-out splits and seeded subsets (no model needed)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from cmirm_plugin.testing import sine
from train.data import PairDataError, load_pairs
from train.splits import split_pairs, subsample


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    for name in ("a.wav", "b.wav", "ref.wav"):
        sine(440.0, 0.2).save(root / "audio" / name)
    return root


def row(**overrides) -> dict:
    base = {"audio-path": "audio/a.wav", "audio2": "audio/b.wav", "prompt": "calm piano", "lyrics": "",
            "ref-audio-path": "", "preference-alignment": "model_a", "preference-musicality": "model_b",
            "confidence_preference-alignment": "4.5", "confidence_preference-musicality": 3, "split": "train"}
    base.update(overrides)
    return base


def write(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_reads_labels_confidences_paths_and_modality(root):
    path = write(root / "ok.jsonl", [
        row(),
        row(**{"preference-alignment": "A", "preference-musicality": "neither", "lyrics": "la la",
               "ref-audio-path": "audio/ref.wav", "confidence_preference-alignment": None}),
        row(**{"preference-alignment": "", "preference-musicality": "b", "prompt": None}),
    ])
    pairs = load_pairs(path).pairs
    assert [p.labels for p in pairs] == [("model_a", "model_b"), ("model_a", "both"), (None, "model_b")]
    assert pairs[0].confidences == (4.5, 3.0) and pairs[1].confidences == (None, 3.0)
    assert pairs[0].audio_a == root / "audio" / "a.wav"
    assert [p.modality for p in pairs] == ["text", "text+lyrics+ref", "text"]
    assert pairs[1].instruction.ref_audio == str(root / "audio" / "ref.wav")
    assert pairs[2].instruction.text is None and [p.line for p in pairs] == [1, 2, 3]


def test_every_problem_is_reported_at_once_with_its_line(root):
    path = write(root / "bad.jsonl", [
        row(),                                                        # 1: fine
        "{not json",                                                  # 2
        row(**{"audio2": "audio/missing.wav"}),                       # 3
        row(**{"preference-alignment": "tie"}),                       # 4
        row(**{"preference-alignment": None, "preference-musicality": ""}),  # 5: no label at all
        row(**{"confidence_preference-musicality": "high"}),          # 6
        row(**{"audio-path": None}),                                  # 7
        "[1, 2]",                                                     # 8
        row(**{"confidence_preference-alignment": 9}),               # 9
    ])
    with pytest.raises(PairDataError) as info:
        load_pairs(path)
    message = str(info.value)
    for line, needle in [(2, "not valid JSON"), (3, "missing.wav"), (4, "'tie'"), (5, "no usable label"),
                         (6, "'high'"), (7, "'audio-path'"), (8, "expected a JSON object"), (9, "[1, 5]")]:
        assert f"{path}:{line}: " in message and needle in message, (line, needle)
    assert f"{path}:1:" not in message
    assert "8 line(s)" in message and "--skip-invalid" in message


def test_skip_invalid_keeps_the_good_lines_and_counts_the_rest(root):
    path = write(root / "mixed.jsonl", [row(), "oops", row(**{"preference-musicality": "tie"}), row()])
    result = load_pairs(path, skip_invalid=True)
    assert [p.line for p in result.pairs] == [1, 4]
    assert result.skipped_lines == 2 and len(result.skipped) == 2


def test_dataset_root_and_absolute_paths(root, tmp_path):
    path = write(tmp_path / "elsewhere.jsonl", [row(**{"audio2": str(root / "audio" / "b.wav")})])
    with pytest.raises(PairDataError, match="file not found"):
        load_pairs(path)                       # relative paths default to the file's own folder
    pairs = load_pairs(path, root=root).pairs
    assert pairs[0].audio_a == root / "audio" / "a.wav" and pairs[0].audio_b == root / "audio" / "b.wav"


def test_eval_split_wins_and_hash_holdout_is_seeded_and_stable(root):
    with_test = write(root / "split.jsonl", [row(prompt=f"p{i}", split="test" if i % 4 == 0 else "train")
                                             for i in range(40)] + [row(prompt="dev", split="dev")])
    split = split_pairs(load_pairs(with_test).pairs)
    assert len(split.eval) == 10 and len(split.train) == 30            # 'dev' is in neither
    assert all(p.split == "test" for p in split.eval)

    no_test = write(root / "nosplit.jsonl", [row(prompt=f"p{i}", split=None) for i in range(200)])
    pairs = load_pairs(no_test).pairs
    first, again = split_pairs(pairs, eval_fraction=0.2, seed=3), split_pairs(pairs[::-1], eval_fraction=0.2, seed=3)
    assert {p.key for p in first.eval} == {p.key for p in again.eval}  # order-independent
    assert 20 <= len(first.eval) <= 60 and len(first.eval) + len(first.train) == 200
    other = split_pairs(pairs, eval_fraction=0.2, seed=4)
    assert {p.key for p in other.eval} != {p.key for p in first.eval}
    assert split_pairs(pairs, eval_fraction=0.0).eval == []


def test_repeated_votes_stay_on_one_side(root):
    """30 pairs with 3 votes each (the votes disagree): all votes of a pair are held out, or none."""
    labels = ("model_a", "model_b", "both")
    rows = [row(prompt=f"p{i // 3}", split=None, **{"preference-alignment": labels[i % 3]}) for i in range(90)]
    split = split_pairs(load_pairs(write(root / "votes.jsonl", rows)).pairs, eval_fraction=0.3, seed=0)
    held = Counter(p.instruction.text for p in split.eval)
    kept = Counter(p.instruction.text for p in split.train)
    assert held and kept and len(split.eval) + len(split.train) == 90
    assert set(held.values()) == set(kept.values()) == {3}              # whole pairs on each side ...
    assert not held.keys() & kept.keys() and len(held) + len(kept) == 30   # ... and never on both
    assert 3 <= len(held) <= 15                                          # about 30 % of 30 pairs


def test_max_pairs_subsets_are_seeded_and_nested(root):
    path = write(root / "many.jsonl", [row(prompt=f"p{i}") for i in range(100)])
    pairs = load_pairs(path).pairs
    small, large = subsample(pairs, 10, seed=1), subsample(pairs, 30, seed=1)
    assert len(small) == 10 and len(large) == 30
    assert {p.line for p in small} <= {p.line for p in large}
    assert [p.line for p in large] == sorted(p.line for p in large)
    assert {p.line for p in subsample(pairs, 10, seed=2)} != {p.line for p in small}
    assert subsample(pairs, None) == pairs


def test_pair_keys_do_not_depend_on_how_the_root_is_spelled(root, monkeypatch):
    from train.pseudo.pairs import load_unlabeled_pairs

    rows = [row(prompt=f"p{i}", split=None, **{"ref-audio-path": "audio/ref.wav" if i % 2 else ""}) for i in range(40)]
    path = write(root / "spelled.jsonl", rows)
    absolute = load_pairs(path, root=root.resolve()).pairs
    monkeypatch.chdir(root.parent)
    spellings = [Path(root.name), Path(root.name) / "audio" / "..", Path(".") / root.name]
    for spelled in spellings:
        pairs = load_pairs(Path(root.name) / path.name, root=spelled).pairs
        assert [p.key for p in pairs] == [p.key for p in absolute]
        assert {p.key for p in split_pairs(pairs, eval_fraction=0.3).eval} == \
            {p.key for p in split_pairs(absolute, eval_fraction=0.3).eval}
        assert [p.line for p in subsample(pairs, 10)] == [p.line for p in subsample(absolute, 10)]
    # cmirm pseudo-label keys its pairs the same way, so its pair ids are training's keys
    unlabeled = load_unlabeled_pairs(Path(root.name) / path.name, root=Path(root.name))
    assert [p.id for p in unlabeled.pairs] == [p.key for p in absolute]


def test_long_problem_lists_are_cut_and_missing_clips_name_the_root(root):
    path = write(root / "many-bad.jsonl", [row(**{"audio2": f"audio/missing{i}.wav"}) for i in range(25)])
    with pytest.raises(PairDataError) as info:
        load_pairs(path)
    message = str(info.value)
    assert "25 problem(s) on 25 line(s)" in message and "missing19.wav" in message
    assert "missing20.wav" not in message and "... and 5 more" in message
    assert f"resolved against '{root}' (--dataset-root" in message


def test_importing_the_pair_reader_stays_light():
    import subprocess
    import sys

    code = ("import sys, train.data; heavy = [m for m in ('scipy', 'train.bench.runner', 'train.bench.metrics') "
            "if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_feature_cache_follows_cmirm_cache(monkeypatch, tmp_path):
    from train.config import TrainConfig

    monkeypatch.setenv("CMIRM_CACHE", str(tmp_path / "c"))
    assert TrainConfig(pairs=tmp_path / "p.jsonl", out=tmp_path / "o").features_dir == tmp_path / "c" / "features"
    monkeypatch.setenv("CMIRM_CACHE", "")
    assert TrainConfig(pairs=tmp_path / "p.jsonl", out=tmp_path / "o").features_dir == \
        Path.home() / ".cache" / "cmirm" / "features"
