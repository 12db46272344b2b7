"""Reading the benchmark file, subset and modality rules (spec §5.2), and loading plug-in scorers (§6)."""

import json
from pathlib import Path

import numpy as np
import pytest

from cmirm_plugin.errors import CmirmError, ConfigError
from cmirm_plugin.records import Instruction
from cmirm_plugin.scoring import BenchmarkPluginScorer, load_scorer
from train.bench import BenchScorer, DatasetError, ScorerError, load_benchmark
from train.bench.dataset import resolve_path
from train.bench.schema import modality_group, musicarena_month, subset_of


def test_subset_assignment_from_source_and_path_fallback():
    assert subset_of({"source": "PAM (music)"}) == "PAM"
    assert subset_of({"source": "MusicEval"}) == "MusicEval" and subset_of({"source": "SongEval"}) == "MusicEval"
    assert subset_of({"source": "MusicEval v2"}) is None
    assert subset_of({"source": "Music Arena ['01-2025JULAUG']"}) == "MusicArena"
    assert subset_of({"source": "cmi-arena-annotation"}) == "CMI-Pref"
    assert subset_of({"source": "cmi-arena"}) is None and subset_of({}) is None
    assert subset_of({"source": "x", "audio-path": "MusicArena_data/audio_files/03-2025OCT/b-a.mp3"}) == "MusicArena"
    assert musicarena_month("/abs/MusicArena_data/audio_files/03-2025OCT/b-a.mp3") == "03-2025OCT"
    assert musicarena_month("MusicArena_data\\audio_files\\03-2025OCT\\b-a.mp3") == "03-2025OCT"
    assert musicarena_month("MusicArena_data/b-a.mp3") is None and musicarena_month(None) is None


def test_modality_null_is_absent_and_field_wins():
    assert modality_group({"lyrics": "", "ref-audio-path": ""}) == "text"
    assert modality_group({"lyrics": None, "ref-audio-path": None}) == "text"  # official: text+lyrics+ref
    assert modality_group({}) == "text"
    assert modality_group({"lyrics": "  ", "ref-audio-path": "r.mp3"}) == "text+ref"
    assert modality_group({"lyrics": "la", "ref-audio-path": "r.mp3"}) == "text+lyrics+ref"
    assert modality_group({"lyrics": "la", "modality": "text"}) == "text"
    assert modality_group({"lyrics": "la", "modality": None}) == "text+lyrics"
    assert modality_group({"lyrics": "la", "modality": " "}) == "text+lyrics"


def test_resolve_path(tmp_path):
    assert resolve_path("a/../b/c.wav", "root") == Path("root/b/c.wav")
    assert resolve_path(str(tmp_path / "x.wav"), "root") == tmp_path / "x.wav"
    assert resolve_path("", "root") is None and resolve_path(None, "root") is None and resolve_path("  ", "r") is None


def write_jsonl(path, lines):
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    return path


GOOD_PAM = {"source": "PAM (music)", "split": "test", "audio-path": "pam/0.wav", "prompt": "p", "lyrics": None}
GOOD_CMI = {"source": "cmi-arena-annotation", "split": "test", "audio-path": "a.wav", "audio2": "b.wav",
            "ref-audio-path": "/abs/ref.wav", "lyrics": "la"}


def test_load_filters_split_and_subset_and_resolves(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", [GOOD_PAM, "", {**GOOD_PAM, "split": "train"}, GOOD_CMI,
                                              {**GOOD_PAM, "audio-path": "pam/1.wav"}])
    data = load_benchmark(path, tmp_path / "data")
    assert [(r.line, r.subset, r.pairwise) for r in data.rows] == [(1, "PAM", False), (4, "CMI-Pref", True), (5, "PAM", False)]
    cmi = data.rows[1]
    assert cmi.audio_a == tmp_path / "data/a.wav" and cmi.audio_b == tmp_path / "data/b.wav"
    assert cmi.ref_audio == Path("/abs/ref.wav") and cmi.text == "" and cmi.lyrics == "la"
    assert data.rows[0].ref_audio is None and data.rows[0].lyrics == ""
    assert [r.line for r in load_benchmark(path, tmp_path, subset="PAM").rows] == [1, 5]
    assert [r.line for r in load_benchmark(path, tmp_path, split=None, subset="PAM").rows] == [1, 3, 5]
    assert load_benchmark(path, tmp_path).rows[0].id == data.rows[0].id  # stable
    assert data.rows[0].id != data.rows[2].id
    with pytest.raises(ConfigError, match="unknown subset 'SongEval'"):
        load_benchmark(path, tmp_path, subset="SongEval")
    with pytest.raises(DatasetError, match="no usable rows with split == 'dev'"):
        load_benchmark(path, tmp_path, split="dev")
    with pytest.raises(DatasetError, match="benchmark file not found"):
        load_benchmark(tmp_path / "nope.jsonl", tmp_path)


def test_bad_lines_are_reported_with_line_numbers(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", [
        GOOD_PAM,
        '{"source": "PAM (music)", "split": "test"',          # 2: broken JSON
        "[1, 2]",                                             # 3: not an object
        {**GOOD_PAM, "audio-path": ""},                       # 4: empty clip
        {**GOOD_CMI, "audio2": None},                         # 5: pairwise without B
        {**GOOD_PAM, "source": "Mystery"},                    # 6: unknown source
        {**GOOD_PAM, "lyrics": 3},                            # 7: non-string text field
        {**GOOD_PAM, "audio-path": "", "split": "train"},     # 8: other split: not checked
    ])
    with pytest.raises(DatasetError) as err:
        load_benchmark(path, tmp_path)
    message = str(err.value)
    assert "6 problem(s)" in message and "--skip-invalid" in message
    for expected in (f"{path}:2: not valid JSON", f"{path}:3: expected a JSON object, got list",
                     f"{path}:4: field 'audio-path': missing or empty", f"{path}:5: field 'audio2': missing or empty (CMI-Pref",
                     f"{path}:6: field 'source': unrecognised value 'Mystery'", f"{path}:7: field 'lyrics': expected a string or null, got int 3"):
        assert expected in message
    assert ":8:" not in message
    data = load_benchmark(path, tmp_path, skip_invalid=True)
    assert [r.line for r in data.rows] == [1] and len(data.skipped) == 6
    assert isinstance(err.value, CmirmError)


def test_nan_literals_become_null(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", ['{"source": "PAM (music)", "split": "test", "audio-path": "a.wav", "musicality": NaN}'])
    assert load_benchmark(path, tmp_path).rows[0].data["musicality"] is None


class NoSr:
    def __init__(self, checkpoint=None, device="cpu"):
        pass

    def score_batch(self, inputs, batch_size, max_dur):
        return np.zeros((len(inputs), 2))


class NotCallable:
    sr = 24000
    score_batch = 3

    def __init__(self, **kwargs):
        pass


class KwargsRecorder:
    sr = 24000

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def score_batch(self, inputs, batch_size, max_dur, **kwargs):
        return np.zeros((len(inputs), 2))


class WrongShape:
    sr = 24000

    def score_batch(self, inputs, batch_size, max_dur, **kwargs):
        return np.zeros((len(inputs), 3))


class NotNumbers(WrongShape):
    def score_batch(self, inputs, batch_size, max_dur, **kwargs):
        return [["a", "b"]] * len(inputs)


def test_load_scorer_errors_name_what_failed(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    with pytest.raises(ConfigError, match="no such folder, and not a hub id"):
        load_scorer("./no_colon")
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg.mod'.*No module named 'no_such_pkg'"):
        load_scorer("no_such_pkg.mod:X")
    with pytest.raises(ConfigError, match="'Missing' not found in module 'test_bench_dataset'"):
        load_scorer("test_bench_dataset:Missing")
    with pytest.raises(ConfigError, match=r"does not honour the scorer contract: it needs an 'sr'"):
        load_scorer("test_bench_dataset:NoSr")
    with pytest.raises(ConfigError, match="callable 'score_batch"):
        load_scorer("test_bench_dataset:NotCallable")
    with pytest.raises(ConfigError, match=r"cannot call it with arguments \['device', 'extra'\]"):
        load_scorer("test_bench_dataset:NoSr", device="cpu", init_kwargs={"extra": 1})
    # device and settings are passed when the signature takes them; explicit init kwargs win
    model = load_scorer("test_bench_dataset:KwargsRecorder", device="cpu", init_kwargs={"device": "cuda:1", "x": 1})
    assert isinstance(model, BenchmarkPluginScorer)      # no 'axes': the official plug-in contract
    assert model.plugin.kwargs["device"] == "cuda:1" and model.plugin.kwargs["x"] == 1
    assert sorted(model.plugin.kwargs) == ["device", "settings", "x"]


def test_bench_scorer_checks_output_shape():
    inputs = ["a.wav", "b.wav"]
    insts = [Instruction(), Instruction()]
    with pytest.raises(ScorerError, match=r"returned shape \[2, 3\] for 2 clips; expected \[2, 2\].*\(PAM, side A\)"):
        BenchScorer(BenchmarkPluginScorer(WrongShape()), "WrongShape").score(inputs, insts, "PAM, side A")
    with pytest.raises(ScorerError, match="returned list.*\\(here\\)"):
        BenchScorer(BenchmarkPluginScorer(NotNumbers()), "NotNumbers").score(inputs, insts, "here")
