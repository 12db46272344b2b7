"""`cmirm bench` end to end on a synthetic benchmark: scoring order, results.jsonl, metrics, resume, CLI.

The scorer is a plug-in written into tmp_path and loaded by ``module:Class``: it reads its scores
from a lookup table keyed by clip name (alignment gets +10 when a reference is passed), and logs
every ``score_batch`` call, so every number below is known in advance.
"""

import importlib
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from cmirm_plugin.cli import app
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import read_records
from cmirm_plugin.testing import sine
from cmirm_plugin.scoring import ScoringSettings
from train.bench import BenchConfig, MetricsConfig, ScorerError, compute_metrics, run_benchmark

SCORER_SOURCE = '''
import math
from pathlib import Path

import numpy as np


class TableScorer:
    calls = []
    instances = 0
    fail_on = None  # a clip-name prefix that makes score_batch crash (simulated interruption)

    def __init__(self, scores, checkpoint=None, device="cpu", ref_bonus=0.0, bad_shape=False):
        type(self).instances += 1
        self.scores, self.ref_bonus, self.bad_shape = scores, ref_bonus, bad_shape
        self.checkpoint, self.device = checkpoint, device

    @property
    def sr(self):
        return 24000

    def score_batch(self, inputs, batch_size, max_dur, **kwargs):
        names = [Path(item.audio).name for item in inputs]
        if self.fail_on and any(name.startswith(self.fail_on) for name in names):
            raise RuntimeError("simulated crash")
        type(self).calls.append({"names": names, "text": [i.text for i in inputs], "lyrics": [i.lyrics for i in inputs],
                                 "ref": [i.ref_audio for i in inputs], "batch_size": batch_size, "max_dur": max_dur,
                                 "kwargs": kwargs, "checkpoint": self.checkpoint, "device": self.device})
        out = []
        for item, name in zip(inputs, names):
            alignment, musicality = self.scores[name]
            alignment = math.nan if alignment is None else alignment + (self.ref_bonus if item.ref_audio else 0.0)
            out.append([alignment, math.nan if musicality is None else musicality])
        return np.zeros((len(inputs), 3)) if self.bad_shape else np.array(out)
'''

# clip name -> (alignment, musicality); None -> NaN
SCORES = {
    "p0.wav": (0.1, 0.2), "p1.wav": (0.5, 0.6), "p2.wav": (0.7, 0.7), "p3.wav": (0.3, None), "p4.wav": (0.9, 0.9),
    "m0.wav": (0.0, 0.1), "m1.wav": (0.0, 0.3), "m2.wav": (0.0, 0.2), "m3.wav": (0.0, 0.25),
    "a0-a.wav": (0.1, 0.9), "a0-b.wav": (0.9, 0.1), "a1-a.wav": (0.3, 0.5), "a1-b.wav": (0.2, 0.5),
    "a2-a.wav": (0.5, 0.2), "a2-b.wav": (0.4, 0.8), "a3-a.wav": (0.5, 0.6), "a3-b.wav": (0.4, 0.4),
    "c0a.wav": (0.2, 0.9), "c0b.wav": (0.1, 0.3), "c1a.wav": (0.4, 0.5), "c1b.wav": (0.6, 0.5),
    "c2a.wav": (0.3, 0.7), "c2b.wav": (0.5, 0.1), "c3a.wav": (0.9, 0.2), "c3b.wav": (0.1, 0.8),
    "c4a.wav": (0.5, 0.5), "c4b.wav": (0.4, 0.6), "c5a.wav": (0.1, None), "c5b.wav": (0.2, 0.3),
    "c6a.wav": (0.3, 0.3), "c6b.wav": (0.3, 0.3), "c7a.wav": (0.0, 0.0), "c7b.wav": (0.0, 0.0),
}
MISSING = {"p4.wav", "c6b.wav"}  # never written: rows recorded with errors
ARENA = "Music Arena ['01-2025JULAUG', '02-2025SEP']"
REF = "cmi-pref/ref-audio/r1.wav"
MISSING_REF = "cmi-pref/ref-audio/missing.wav"


def cmi(i, lyrics, ref, pa, pm, ca, cm, split="test"):
    return {"source": "cmi-arena-annotation", "split": split, "audio-path": f"cmi-pref/gen-audio/c{i}a.wav",
            "audio2": f"cmi-pref/gen-audio/c{i}b.wav", "prompt": f"prompt {i}", "lyrics": lyrics, "ref-audio-path": ref,
            "preference-alignment": pa, "preference-musicality": pm,
            "confidence_preference-alignment": ca, "confidence_preference-musicality": cm}


def arena(i, month, gt, source=ARENA):
    return {"source": source, "split": "test", "audio-path": f"MusicArena_data/audio_files/{month}/a{i}-a.wav",
            "audio2": f"MusicArena_data/audio_files/{month}/a{i}-b.wav", "prompt": f"battle {i}", "lyrics": "",
            "ref-audio-path": "", "preference": gt}


ROWS = [  # file order as the official file: CMI-Pref, PAM, MusicEval, Music Arena
    cmi(0, "", "", "model_a", "model_b", "2.5", 4),
    cmi(1, "la", "", "model_b", "both", 3, "3"),
    cmi(2, "", REF, "model_a", "model_a", 4.5, "1.5"),
    cmi(3, "la", REF, "tie", "model_b", "5", 5),
    cmi(4, "", MISSING_REF, "model_b", "model_a", 1, 3),
    cmi(5, None, None, "model_a", "model_a", "x", 2),
    cmi(6, "la", "", "model_a", "model_a", 2, 2),
    cmi(7, "", "", "model_a", "model_a", 3, 3, split="train"),
    *[{"source": "PAM (music)", "split": "test", "audio-path": f"human_eval/music/sys/p{i}.wav", "prompt": f"pam {i}",
       "lyrics": "", "ref-audio-path": "", "musicality": m, "text-music alignment": a}
      for i, (m, a) in enumerate([(1.0, 2.0), (3.0, 1.5), (2.0, 4.0), (4.5, 3.0), (2.5, 2.5)])],
    *[{"source": source, "split": "test", "audio-path": f"MusicEval_data/test_audio/m{i}.wav", "prompt": f"me {i}",
       "musicality": m, "text-music alignment": 3.0}
      for i, (source, m) in enumerate([("MusicEval", 1.0), ("MusicEval", 3.2), ("MusicEval", 5.0), ("SongEval", 2.4)])],
    arena(0, "01-2025JULAUG", "A"), arena(1, "01-2025JULAUG", "A"),
    arena(2, "02-2025SEP", "B"), arena(3, "02-2025SEP", "A", source="arena (unlabelled source)"),
]


@pytest.fixture
def bench_data(tmp_path):
    """The synthetic benchmark: (jsonl path, data root). Clips are 0.25 s tones (p1: 0.5 s)."""
    root = tmp_path / "data"
    paths = [row[key] for row in ROWS for key in ("audio-path", "audio2") if row.get(key)] + [REF]
    for rel in paths:
        if Path(rel).name not in MISSING:
            sine(220.0, seconds=0.5 if rel.endswith("p1.wav") else 0.25, sample_rate=8000).save(root / rel)
    jsonl = tmp_path / "all_test.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return jsonl, root


@pytest.fixture
def scorer(tmp_path, monkeypatch):
    """The plug-in module (a unique name per test, so class-level call logs never mix): (spec, class)."""
    name = f"toy_scorer_{uuid.uuid4().hex[:8]}"
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / f"{name}.py").write_text(SCORER_SOURCE)
    monkeypatch.syspath_prepend(str(plug))
    return f"{name}:TableScorer", importlib.import_module(name).TableScorer


def config(bench_data, scorer, out, **overrides):
    jsonl, root = bench_data
    values = dict(dataset_jsonl=jsonl, dataset_root=root, out_dir=out, model=scorer[0],
                  init_kwargs={"scores": SCORES, "ref_bonus": 10.0, "checkpoint": "toy-ckpt"},
                  score_kwargs={"temperature": 0.5}, batch_size=2, scoring=ScoringSettings(max_dur=30.0), device="cpu")
    if "max_dur" in overrides:
        values["scoring"] = ScoringSettings(max_dur=overrides.pop("max_dur"))
    values.update(overrides)
    return BenchConfig(**values)


def records_by_clip(path):
    return {Path(r["audio-path"]).name: r for r in read_records(path)}


def test_scoring_order_batches_and_inputs(bench_data, scorer, tmp_path):
    cls = scorer[1]
    run_benchmark(config(bench_data, scorer, tmp_path / "out"), show_progress=False)
    assert [c["names"] for c in cls.calls] == [
        ["p0.wav", "p1.wav"], ["p2.wav", "p3.wav"],                     # PAM; p4 missing: no call for it
        ["m0.wav", "m1.wav"], ["m2.wav", "m3.wav"],                     # MusicEval (SongEval row included)
        ["a0-a.wav", "a1-a.wav"], ["a2-a.wav", "a3-a.wav"],             # MusicArena side A, then B
        ["a0-b.wav", "a1-b.wav"], ["a2-b.wav", "a3-b.wav"],
        ["c0a.wav", "c1a.wav"], ["c2a.wav", "c3a.wav"], ["c4a.wav", "c5a.wav"], ["c6a.wav"],  # CMI-Pref A
        ["c0b.wav", "c1b.wav"], ["c2b.wav", "c3b.wav"], ["c4b.wav", "c5b.wav"],               # B; c6b missing
    ]
    assert all(c["batch_size"] == len(c["names"]) and c["max_dur"] == 30.0 for c in cls.calls)
    assert all(c["kwargs"] == {"temperature": 0.5} for c in cls.calls)
    assert all((c["checkpoint"], c["device"]) == ("toy-ckpt", "cpu") for c in cls.calls)
    root = bench_data[1]
    for side in (9, 13):  # both sides share prompt, lyrics and ref; a missing ref is not passed
        assert cls.calls[side]["text"] == ["prompt 2", "prompt 3"]
        assert cls.calls[side]["ref"] == [str(root / REF)] * 2
        assert cls.calls[side + 1]["lyrics"] == ["", ""] and cls.calls[side + 1]["ref"] == [None, None]
    assert cls.calls[8]["lyrics"] == ["", "la"]


def test_results_fields(bench_data, scorer, tmp_path):
    result = run_benchmark(config(bench_data, scorer, tmp_path / "out"), show_progress=False)
    records = records_by_clip(result.results_path)
    assert len(records) == 20 and "c7a.wav" not in records  # train split left out
    root = bench_data[1]

    p0 = records["p0.wav"]
    added = {"benchmark_dataset", "bench_row_id", "bench_line", "predicted_text-music alignment", "predicted_musicality",
             "inference_valid_a", "inference_error", "bench_duration_a"}
    assert set(p0) == set(ROWS[8]) | added
    assert p0["benchmark_dataset"] == "PAM" and p0["bench_line"] == 9 and p0["inference_valid_a"] is True
    assert (p0["predicted_text-music alignment"], p0["predicted_musicality"], p0["inference_error"]) == (0.1, 0.2, "")
    assert p0["bench_duration_a"] == 0.25 and records["p1.wav"]["bench_duration_a"] == 0.5
    assert records["p3.wav"]["predicted_musicality"] is None  # NaN prediction -> null
    p4 = records["p4.wav"]
    assert p4["inference_valid_a"] is False and p4["predicted_musicality"] is None
    assert p4["inference_error"] == f"audio_not_found:{root / 'human_eval/music/sys/p4.wav'}"

    a1 = records["a1-a.wav"]
    assert a1["benchmark_dataset"] == "MusicArena" and a1["inference_valid_b"] is True
    assert a1["predicted_preference"] == "model_b"  # musicality tie goes to B
    assert records["a0-a.wav"]["predicted_preference"] == "model_a"  # from musicality, not alignment
    assert records["a0-a.wav"]["predicted_preference-alignment"] == "model_b"
    assert records["a3-a.wav"]["benchmark_dataset"] == "MusicArena"  # path fallback
    assert (records["a0-a.wav"]["predicted_text-music alignment_b"], records["a0-a.wav"]["predicted_musicality_b"]) == (0.9, 0.1)

    c2 = records["c2a.wav"]
    assert c2["predicted_text-music alignment"] == 10.3 and c2["predicted_text-music alignment_b"] == 10.5
    c4 = records["c4a.wav"]  # missing ref: recorded, scored without it
    assert c4["inference_error"] == f"ref_audio_not_found:{root / MISSING_REF}"
    assert c4["inference_valid_a"] and c4["inference_valid_b"] and c4["predicted_text-music alignment"] == 0.5
    c6 = records["c6a.wav"]  # missing B clip: no B prediction, no label
    assert c6["inference_valid_a"] is True and c6["inference_valid_b"] is False
    assert c6["inference_error"] == f"audio2_not_found:{root / 'cmi-pref/gen-audio/c6b.wav'}"
    assert c6["predicted_musicality_b"] is None and c6["predicted_preference-alignment"] is None
    assert records["c5a.wav"]["predicted_preference-musicality"] is None  # NaN musicality on A
    assert records["c5a.wav"]["lyrics"] is None  # original fields are kept as they were


def test_metrics_of_the_run(bench_data, scorer, tmp_path):
    result = run_benchmark(config(bench_data, scorer, tmp_path / "out"), show_progress=False)
    summary = {(r["dataset"], r["task"]): r for r in result.metrics["summary"]}
    truth, pred = [1.0, 3.0, 2.0], [0.2, 0.6, 0.7]  # p3 NaN, p4 missing
    assert summary["PAM", "musicality"]["n"] == 3
    assert summary["PAM", "musicality"]["SRCC"] == pytest.approx(stats.spearmanr(truth, pred).statistic)
    assert summary["PAM", "musicality"]["LCC"] == pytest.approx(stats.pearsonr(truth, pred).statistic)
    assert summary["PAM", "musicality"]["K-Tau"] == pytest.approx(stats.kendalltau(truth, pred).statistic)
    truth, pred = [2.0, 1.5, 4.0, 3.0], [0.1, 0.5, 0.7, 0.3]
    assert summary["PAM", "alignment"]["SRCC"] == pytest.approx(stats.spearmanr(truth, pred).statistic)
    truth, pred = [1.0, 3.2, 5.0, 2.4], [0.1, 0.3, 0.2, 0.25]
    assert summary["MusicEval", "musicality"]["SRCC"] == pytest.approx(stats.spearmanr(truth, pred).statistic)
    # Music Arena: a0 A=A, a1 tie->B vs A, a2 B=B, a3 A=A
    assert (summary["MusicArena", "preference"]["n"], summary["MusicArena", "preference"]["ACC"]) == (4, 0.75)
    # CMI alignment: c0 1, c1 1, c2 0, c3 tie label dropped, c4 0, c5 0, c6 no prediction
    assert (summary["CMI-Pref", "alignment"]["n"], summary["CMI-Pref", "alignment"]["ACC"]) == (5, 0.4)
    # CMI musicality: c0 0, c1 both 0.5, c2 1, c3 1, c4 0, c5 NaN dropped, c6 dropped
    assert (summary["CMI-Pref", "musicality"]["n"], summary["CMI-Pref", "musicality"]["ACC"]) == (5, 0.5)
    detail = {(r["task"], r["group_key"], r["group_value"], r["ref_category"]): (r["n"], r.get("ACC"))
              for r in result.metrics["detail"]}
    assert detail["preference", "month", "01-2025JULAUG", None] == (2, 0.5)
    assert detail["preference", "month", "02-2025SEP", None] == (2, 1.0)
    assert detail["alignment", "modality", "text", None] == (2, 0.5)  # c0, c5 (null lyrics/ref -> text)
    assert detail["alignment", "modality", "text+ref", None] == (2, 0.0)  # c2, c4 (missing ref file keeps its category)
    assert detail["alignment", "modality", "text+lyrics+ref", None] == (0, None)
    assert detail["alignment", "confidence", "<3", "all"] == (2, 0.5)
    assert detail["musicality", "confidence", "=3", "all"] == (2, 0.25)
    assert json.loads(result.files.json.read_text()) == result.metrics
    metadata = json.loads((tmp_path / "out/metadata.json").read_text())
    assert metadata["scoring"]["model"] == scorer[0] and metadata["rows"] == 20


def test_resume_scores_only_unfinished_rows(bench_data, scorer, tmp_path):
    cls = scorer[1]
    out = tmp_path / "out"
    cls.fail_on = "c"  # crash at the first CMI-Pref batch
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_benchmark(config(bench_data, scorer, out), show_progress=False)
    assert len(read_records(out / "results.jsonl")) == 13  # PAM 5 + MusicEval 4 + Music Arena 4
    cls.fail_on, cls.calls[:] = None, []
    resumed = run_benchmark(config(bench_data, scorer, out), show_progress=False)
    assert {n for c in cls.calls for n in c["names"]} == {n for n in SCORES if n.startswith("c") and n[:2] != "c7"} - MISSING
    assert (resumed.scored, resumed.reused) == (7, 13)
    fresh = run_benchmark(config(bench_data, scorer, tmp_path / "fresh"), show_progress=False)
    assert resumed.metrics == fresh.metrics

    cls.calls[:], instances = [], cls.instances
    again = run_benchmark(config(bench_data, scorer, out), show_progress=False)
    assert cls.calls == [] and cls.instances == instances and (again.scored, again.reused) == (0, 20)
    assert len(read_records(out / "results.jsonl")) == 20
    with pytest.raises(ConfigError, match="holds results scored with"):
        run_benchmark(config(bench_data, scorer, out, max_dur=10.0), show_progress=False)


def test_retry_errors_rescores_rows_with_errors(bench_data, scorer, tmp_path):
    cls = scorer[1]
    out = tmp_path / "out"
    run_benchmark(config(bench_data, scorer, out), show_progress=False)
    root = bench_data[1]
    for rel in ("human_eval/music/sys/p4.wav", "cmi-pref/gen-audio/c6b.wav"):
        sine(330.0, seconds=0.25, sample_rate=8000).save(root / rel)
    cls.calls[:] = []
    result = run_benchmark(config(bench_data, scorer, out, retry_errors=True), show_progress=False)
    assert [c["names"] for c in cls.calls] == [["p4.wav"], ["c4a.wav", "c6a.wav"], ["c4b.wav", "c6b.wav"]]
    records = records_by_clip(out / "results.jsonl")  # the later record of a row wins
    assert records["p4.wav"]["inference_valid_a"] and records["c6a.wav"]["inference_valid_b"]
    assert records["c4a.wav"]["inference_error"].startswith("ref_audio_not_found:")
    assert {(r["dataset"], r["task"]): r["n"] for r in result.metrics["summary"]}["PAM", "musicality"] == 4


def test_bad_scorer_output(bench_data, scorer, tmp_path):
    cfg = config(bench_data, scorer, tmp_path / "out", init_kwargs={"scores": SCORES, "bad_shape": True})
    with pytest.raises(ScorerError, match=r"shape \[2, 3\] for 2 clips; expected \[2, 2\].*\(PAM, side A, lines \[9, 10\]\)"):
        run_benchmark(cfg, show_progress=False)


def test_in_memory_scorer_and_subset(bench_data, scorer, tmp_path):
    """A trainer passes its model object instead of a class path; --subset limits the rows."""
    model = scorer[1](SCORES, ref_bonus=10.0)
    cfg = BenchConfig(dataset_jsonl=bench_data[0], dataset_root=bench_data[1], out_dir=tmp_path / "out", subset="CMI-Pref")
    result = run_benchmark(cfg, scorer=model, show_progress=False)
    assert {r["dataset"] for r in result.metrics["summary"]} == {"CMI-Pref"}
    assert compute_metrics(read_records(result.results_path), MetricsConfig()) == result.metrics


def test_cli_end_to_end(bench_data, scorer, tmp_path):
    jsonl, root = bench_data
    out = tmp_path / "out"
    runner = CliRunner(env={"COLUMNS": "200"})  # wide enough that rich does not fold the model name
    args = ["bench", "--dataset-jsonl", str(jsonl), "--dataset-root", str(root), "--model", scorer[0],
            "--model-init-json", json.dumps({"scores": SCORES, "ref_bonus": 10.0}), "--score-kwargs-json", '{"temperature": 0.5}',
            "--batch-size", "2", "--max-dur", "30", "--device", "cpu", "--out", str(out),
            "--by-duration", "--duration-bins", "0,0.3,1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for expected in ("Musicality", "Alignment", "CMI-RM (published)", "Gemini 3 Pro", scorer[0], "75.00%",
                     "rows scored now: 20", "metrics_summary.csv"):
        assert expected in result.output
    assert scorer[1].calls[0]["checkpoint"] is None and scorer[1].calls[0]["kwargs"] == {"temperature": 0.5}
    run_metrics = json.loads((out / "metrics.json").read_text())
    durations = {(r["dataset"], r["task"], r["group_value"]): r["n"] for r in run_metrics["detail"] if r["group_key"] == "duration"}
    assert durations["PAM", "alignment", "[0, 0.3)"] == 3 and durations["PAM", "alignment", "[0.3, 1]"] == 1

    result = runner.invoke(app, ["bench-metrics", str(out / "results.jsonl"), "--by-duration", "--duration-bins", "0,0.3,1"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "evaluation_output/metrics.json").read_text()) == run_metrics
    assert (out / "evaluation_output/metrics_detail.csv").read_text() == (out / "metrics_detail.csv").read_text()

    result = runner.invoke(app, args[:-3] + ["--model-init-json", "[1]"])
    assert isinstance(result.exception, ConfigError) and "--model-init-json" in str(result.exception)
    result = runner.invoke(app, ["bench-metrics", str(tmp_path / "nope.jsonl")])
    assert isinstance(result.exception, ConfigError) and "results file not found" in str(result.exception)


@pytest.mark.parametrize("model,init", [("tiny", "{}"),
                                        ("cmirm_plugin.scoring:CMIRMBenchmarkModel", '{"checkpoint": "tiny"}')])
def test_bench_with_our_own_cmirm_scorer(bench_data, tmp_path, monkeypatch, model, init):
    """`cmirm bench` with CMI-RM itself (here the tiny one), by spec and through the official-plug-in adapter."""
    from cmirm_plugin.records import Instruction
    from cmirm_plugin.scoring import load_scorer

    monkeypatch.setenv("CMIRM_CACHE", str(tmp_path / "cache"))
    jsonl, root = bench_data
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "--dataset-jsonl", str(jsonl), "--dataset-root", str(root),
                                      "--model", model, "--model-init-json", init, "--subset", "CMI-Pref",
                                      "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    scorer = load_scorer("tiny", device="cpu")
    records = records_by_clip(out / "results.jsonl")
    row = records["c3a.wav"]                                       # text + lyrics + reference
    inst = Instruction(text=row["prompt"], lyrics=row["lyrics"], ref_audio=str(root / row["ref-audio-path"]))
    expected = scorer.score_batch([str(root / row["audio-path"]), str(root / row["audio2"])], inst)
    got = [[row["predicted_text-music alignment"], row["predicted_musicality"]],
           [row["predicted_text-music alignment_b"], row["predicted_musicality_b"]]]
    np.testing.assert_allclose(got, expected, atol=1e-5)
