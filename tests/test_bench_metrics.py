"""compute_metrics against values computed by hand or with scipy directly (spec §5.5)."""

import csv
import io
import json
import math

import numpy as np
import pytest
from rich.console import Console
from scipy import stats

from cmirm_plugin.errors import ConfigError
from train.bench import MetricsConfig, compute_metrics, print_summary, write_metrics
from train.bench.labels import credit, normalise_label, predicted_label
from train.bench.metrics import accuracy, correlations, to_number

PAM = "PAM (music)"
ARENA = "Music Arena ['01-2025JULAUG', '02-2025SEP']"
CMI = "cmi-arena-annotation"


def summary(metrics, dataset, task):
    (row,) = [r for r in metrics["summary"] if (r["dataset"], r["task"]) == (dataset, task)]
    return row


def detail(metrics, dataset, task, key, value, ref=None):
    (row,) = [r for r in metrics["detail"] if (r["dataset"], r["task"], r["group_key"], r["group_value"],
                                                 r["ref_category"]) == (dataset, task, key, value, ref)]
    return row


def test_labels():
    assert [normalise_label(v) for v in ["A", "model_a", "Model_B", "b", "both", "NEITHER", "tie", "", None, " a"]] == \
        ["model_a", "model_a", "model_b", "model_b", "both", "both", None, None, None, None]
    assert predicted_label(2.0, 1.0) == "model_a"
    assert predicted_label(1.0, 1.0) == "model_b"  # ties go to B
    assert predicted_label(1.0, 2.0) == "model_b"
    assert predicted_label(float("nan"), 1.0) is None and predicted_label(1.0, None) is None
    assert credit("model_a", "model_a") == 1.0 and credit("both", "model_b") == 0.5
    assert credit("model_a", "both") == 0.5 and credit("model_a", "model_b") == 0.0


def test_to_number_coerces_like_pandas():
    assert to_number("3.5") == 3.5 and to_number(4) == 4.0
    assert all(math.isnan(to_number(v)) for v in ["abc", None, "", True, [1]])


def test_correlations_match_scipy_and_drop_non_numeric():
    truth = [1.0, 2.5, "3.0", 2.0, 4.5, None, 3.3, "x", 1.5]
    pred = [0.1, 0.4, 0.2, float("nan"), 0.9, 0.3, 0.5, 0.7, 0.1]
    x = np.array([1.0, 2.5, 3.0, 4.5, 3.3, 1.5])
    y = np.array([0.1, 0.4, 0.2, 0.9, 0.5, 0.1])  # a tie in y: average ranks / tau-b matter
    out = correlations(truth, pred)
    assert out["n"] == 6
    assert out["SRCC"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert out["LCC"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert out["K-Tau"] == pytest.approx(stats.kendalltau(x, y, variant="b").statistic)
    assert correlations([1.0], [2.0]) == {"n": 1, "SRCC": None, "LCC": None, "K-Tau": None}
    assert correlations([1, 2, 3], [5, 5, 5])["SRCC"] is None  # constant prediction
    assert set(correlations([1, 2], [1, 2], lcc=False, k_tau=False)) == {"n", "SRCC"}


def test_accuracy_both_credit_unknown_dropped():
    truth = ["model_a", "B", "both", "tie", "model_a", None, "neither"]
    pred = ["model_a", "model_a", "model_b", "model_a", "model_b", "model_a", "model_a"]
    # kept: 1, 0, 0.5 (both), [tie dropped], 0, [None dropped], 0.5 (neither -> both)
    assert accuracy(truth, pred) == {"n": 5, "ACC": pytest.approx((1 + 0 + 0.5 + 0 + 0.5) / 5)}
    assert accuracy(["model_a"], [None]) == {"n": 0, "ACC": None}


def cmi_row(modality_fields, pa, pm, ca, cm, pred_a, pred_m, **extra):
    row = {"source": CMI, "split": "test", "audio-path": "cmi-pref/gen-audio/a.mp3", "audio2": "cmi-pref/gen-audio/b.mp3",
           "prompt": "p", "preference-alignment": pa, "preference-musicality": pm,
           "confidence_preference-alignment": ca, "confidence_preference-musicality": cm,
           "predicted_preference-alignment": pred_a, "predicted_preference-musicality": pred_m,
           "predicted_preference": pred_m}
    row.update(modality_fields)
    row.update(extra)
    return row


T = {"lyrics": "", "ref-audio-path": ""}
L = {"lyrics": "la la", "ref-audio-path": ""}
A = {"lyrics": "", "ref-audio-path": "cmi-pref/ref-audio/r.mp3"}
C = {"lyrics": "la la", "ref-audio-path": "cmi-pref/ref-audio/r.mp3"}
NULLS = {"lyrics": None, "ref-audio-path": None}  # our reader: absent -> text (official: text+lyrics+ref)


def cmi_rows():
    return [
        cmi_row(T, "model_a", "model_a", "2.5", 1, "model_a", "model_b"),
        cmi_row(T, "model_b", "both", 3, "3.0", "model_a", "model_a"),
        cmi_row(NULLS, "model_a", "model_b", 4.5, "5", "model_a", "model_b"),
        cmi_row(L, "model_b", "model_b", "3", "abc", "model_b", "model_b"),
        cmi_row(L, "tie", "model_a", 1.0, 4, "model_b", "model_b"),
        cmi_row(A, "model_a", "model_a", "4", 2.0, "model_b", "model_a"),
        cmi_row(A, "both", "model_b", "x", 3, "model_a", "model_a"),
        cmi_row(C, "model_b", "model_a", 5, None, "model_b", "model_a"),
        cmi_row({**T, "modality": "text+lyrics+ref"}, "model_a", "model_a", "2", 3.5, "model_a", None),
        cmi_row({**C, "modality": None}, "model_a", "model_b", 3.5, 3, "model_b", "model_b"),
        cmi_row({**T, "modality": "T+X"}, "model_a", "model_a", 3, 3, "model_a", "model_a"),
        cmi_row(C, "model_a", "model_a", 3, 3, "model_a", "model_a", split="train"),  # filtered out
    ]


def expected_acc(pairs):
    """Hand computation: drop unknown labels, 0.5 for both."""
    got = [credit(normalise_label(t), normalise_label(p)) for t, p in pairs
           if normalise_label(t) is not None and normalise_label(p) is not None]
    return len(got), (sum(got) / len(got) if got else None)


def test_cmi_pref_summary_and_groups():
    rows = cmi_rows()
    metrics = compute_metrics(rows)
    test_rows = rows[:-1]
    n, acc = expected_acc([(r["preference-alignment"], r["predicted_preference-alignment"]) for r in test_rows])
    assert summary(metrics, "CMI-Pref", "alignment") == {"dataset": "CMI-Pref", "task": "alignment", "n": n, "ACC": pytest.approx(acc)}
    # alignment: 1,0,1,1,[tie],0,0.5,1,1,0,1 -> 6.5/10
    assert (n, acc) == (10, 0.65)
    assert summary(metrics, "CMI-Pref", "musicality")["ACC"] == pytest.approx(
        expected_acc([(r["preference-musicality"], r["predicted_preference-musicality"]) for r in test_rows])[1])

    # modality groups: null lyrics/ref -> text; a modality field wins; a null modality field is inferred.
    groups = {r["group_value"]: r["n"] for r in metrics["detail"]
              if r["group_key"] == "modality" and r["task"] == "musicality"}
    # rows 0-2 text (row 2: null lyrics/ref), 3-4 text+lyrics, 5-6 text+ref, 7-9 text+lyrics+ref (row 8 by its
    # modality field, row 9 inferred under a null modality field; row 8's null prediction is dropped), 10 "T+X"
    assert groups == {"text": 3, "text+lyrics": 2, "text+ref": 2, "text+lyrics+ref": 2, "T+X": 1}
    text_rows = [test_rows[i] for i in (0, 1, 2)]
    assert detail(metrics, "CMI-Pref", "alignment", "modality", "text")["ACC"] == pytest.approx(
        expected_acc([(r["preference-alignment"], r["predicted_preference-alignment"]) for r in text_rows])[1])
    assert detail(metrics, "CMI-Pref", "alignment", "modality", "text+lyrics+ref")["n"] == 3

    # ref subset and modality type ignore the unknown modality value "T+X"
    assert detail(metrics, "CMI-Pref", "alignment", "ref_subset", "no_ref")["n"] == 4  # rows 0,1,2,3 (row 4 tie)
    assert detail(metrics, "CMI-Pref", "alignment", "ref_subset", "ref")["n"] == 5
    assert detail(metrics, "CMI-Pref", "musicality", "modality_type", "instru")["n"] == 5  # rows 0,1,2,5,6
    assert detail(metrics, "CMI-Pref", "musicality", "modality_type", "vocal")["n"] == 4  # 3,4,7,9 (8 dropped)


def test_confidence_groups_string_and_numeric():
    rows = cmi_rows()
    metrics = compute_metrics(rows)
    conf = {(r["task"], r["group_value"], r["ref_category"]): r["n"] for r in metrics["detail"]
            if r["group_key"] == "confidence"}
    # alignment confidences: "2.5",3,4.5,"3",1.0,"4","x",5,"2",3.5,3 ; "x" dropped; row 4 is a tie label (n excludes it)
    assert conf[("alignment", "<3", "no_ref")] == 1   # row 0 (row 4 tie dropped from n)
    assert conf[("alignment", "<3", "ref")] == 1      # row 8 (modality field text+lyrics+ref)
    assert conf[("alignment", "<3", "all")] == 2
    assert conf[("alignment", "=3", "no_ref")] == 2   # rows 1, 3
    assert ("alignment", "=3", "ref") not in conf     # no ref row has confidence 3
    assert conf[("alignment", "=3", "all")] == 3      # rows 1, 3, 10 (T+X only in "all")
    assert conf[("alignment", ">3", "all")] == 4      # rows 2, 5, 7, 9
    # musicality confidences: 1,"3.0","5","abc",4,2.0,3,None,3.5,3,3 ("abc" and None dropped)
    assert conf[("musicality", "=3", "all")] == 4     # rows 1, 6, 9, 10
    assert conf[("musicality", ">3", "no_ref")] == 2  # rows 2, 4
    r = detail(compute_metrics(rows), "CMI-Pref", "musicality", "confidence", "=3", "all")
    picked = [rows[i] for i in (1, 6, 9, 10)]
    assert r["ACC"] == pytest.approx(expected_acc([(p["preference-musicality"], p["predicted_preference-musicality"]) for p in picked])[1])
    # order: <3, =3, >3, each with no_ref, ref, all
    keys = [(r["group_value"], r["ref_category"]) for r in metrics["detail"]
            if r["group_key"] == "confidence" and r["task"] == "alignment"]
    assert keys == [("<3", "no_ref"), ("<3", "ref"), ("<3", "all"), ("=3", "no_ref"), ("=3", "all"),
                    (">3", "no_ref"), (">3", "ref"), (">3", "all")]


def test_correlation_subsets_and_arena_months():
    pam = [{"source": PAM, "split": "test", "audio-path": f"human_eval/music/x/{i}.wav", "musicality": m,
            "text-music alignment": a, "predicted_musicality": pm, "predicted_text-music alignment": pa}
           for i, (m, a, pm, pa) in enumerate([(1.0, 2.0, 0.3, 0.1), (2.5, 3.1, 0.5, 0.4), (3.0, 1.2, None, 0.2),
                                               (4.5, 4.9, 0.9, 0.8), (2.0, 2.0, 0.1, 0.5)])]
    me = [{"source": "SongEval", "split": "test", "audio-path": f"MusicEval_data/test_audio/{i}.wav",
           "musicality": m, "text-music alignment": 5.0, "predicted_musicality": p}
          for i, (m, p) in enumerate([(1.0, 1.0), (3.2, 2.0), (5.0, 2.5)])]
    arena = [{"source": ARENA, "split": "test", "audio-path": f"MusicArena_data/audio_files/{mo}/{i}-a.mp3",
              "audio2": f"MusicArena_data/audio_files/{mo}/{i}-b.mp3", "preference": gt, "predicted_preference": p}
             for i, (mo, gt, p) in enumerate([("01-2025JULAUG", "A", "model_a"), ("01-2025JULAUG", "B", "model_a"),
                                              ("02-2025SEP", "B", "model_b"), ("02-2025SEP", "A", None)])]
    fallback = {"source": "somewhere", "split": "test", "audio-path": "x/MusicArena_data/audio_files/02-2025SEP/9-a.mp3",
                "audio2": "x/MusicArena_data/audio_files/02-2025SEP/9-b.mp3", "preference": "A", "predicted_preference": "model_a"}
    metrics = compute_metrics(pam + me + arena + [fallback], MetricsConfig(include_k_tau=False))
    x, y = [1.0, 2.5, 4.5, 2.0], [0.3, 0.5, 0.9, 0.1]
    assert summary(metrics, "PAM", "musicality") == {
        "dataset": "PAM", "task": "musicality", "n": 4, "SRCC": pytest.approx(stats.spearmanr(x, y).statistic),
        "LCC": pytest.approx(stats.pearsonr(x, y).statistic)}
    x, y = [2.0, 3.1, 1.2, 4.9, 2.0], [0.1, 0.4, 0.2, 0.8, 0.5]
    assert summary(metrics, "PAM", "alignment")["SRCC"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert summary(metrics, "MusicEval", "musicality")["SRCC"] == pytest.approx(1.0)
    assert not [r for r in metrics["summary"] if r["dataset"] == "MusicEval" and r["task"] == "alignment"]
    assert summary(metrics, "MusicArena", "preference") == {"dataset": "MusicArena", "task": "preference", "n": 4, "ACC": 0.75}
    assert detail(metrics, "MusicArena", "preference", "month", "01-2025JULAUG") == {
        "dataset": "MusicArena", "task": "preference", "group_key": "month", "group_value": "01-2025JULAUG",
        "ref_category": None, "n": 2, "ACC": 0.5}
    assert detail(metrics, "MusicArena", "preference", "month", "02-2025SEP")["n"] == 2  # incl. the path fallback
    assert not [r for r in metrics["summary"] if r["dataset"] == "CMI-Pref"]  # absent subsets: no rows


def test_split_filter_and_groups_switches():
    rows = cmi_rows()
    everything = compute_metrics(rows, MetricsConfig(split=None, cmi_by_confidence=False, cmi_by_modality=False))
    assert summary(everything, "CMI-Pref", "alignment")["n"] == 11
    assert {r["group_key"] for r in everything["detail"]} == {"ref_subset", "modality_type"}  # always emitted
    assert compute_metrics(rows, MetricsConfig(split="dev"))["summary"] == []


def test_duration_bins_half_open_last_closed():
    def row(i, da, db, gt, pred):
        return {"source": ARENA, "split": "test", "audio-path": f"MusicArena_data/a/01/{i}-a.wav",
                "audio2": f"MusicArena_data/a/01/{i}-b.wav", "bench_duration_a": da, "bench_duration_b": db,
                "preference": gt, "predicted_preference": pred}
    rows = [row(0, 5, 25, "A", "model_a"),      # mean 15 -> [10, 30)
            row(1, 30, 30, "A", "model_b"),     # 30 -> [30, 60)
            row(2, 500, 500, "B", "model_b"),   # 500 -> last bin, closed
            row(3, 5, 5, "B", "model_b"),       # 5 -> no bin
            row(4, 40, None, "B", "model_b")]   # unknown B length -> no bin
    pam = [{"source": PAM, "split": "test", "audio-path": f"{i}.wav", "bench_duration_a": d, "musicality": m,
            "predicted_musicality": p, "text-music alignment": m, "predicted_text-music alignment": p}
           for i, (d, m, p) in enumerate([(12, 1, 1), (15, 2, 3), (29.9, 3, 2)])]
    metrics = compute_metrics(rows + pam, MetricsConfig(by_duration=True))
    bins = [(r["dataset"], r["group_value"], r["n"], r.get("ACC")) for r in metrics["detail"]
            if r["group_key"] == "duration" and r["dataset"] == "MusicArena"]
    assert bins == [("MusicArena", "[10, 30)", 1, 1.0), ("MusicArena", "[30, 60)", 1, 0.0),
                    ("MusicArena", "[120, 500]", 1, 1.0)]
    pam_bin = detail(metrics, "PAM", "musicality", "duration", "[10, 30)")
    assert set(pam_bin) == {"dataset", "task", "group_key", "group_value", "ref_category", "n", "SRCC"}
    assert pam_bin["SRCC"] == pytest.approx(stats.spearmanr([1, 2, 3], [1, 3, 2]).statistic)
    with pytest.raises(ConfigError, match="duration_bins"):
        MetricsConfig(duration_bins=(10, 5))


def test_write_metrics_and_summary_tables(tmp_path):
    metrics = compute_metrics(cmi_rows())
    files = write_metrics(metrics, tmp_path / "m")
    assert json.loads(files.json.read_text()) == json.loads(json.dumps(metrics))
    assert set(json.loads(files.json.read_text())) == {"config", "summary", "detail"}
    summary_rows = list(csv.DictReader(files.summary_csv.open()))
    assert list(summary_rows[0]) == ["dataset", "task", "n", "SRCC", "LCC", "K-Tau", "ACC"]
    assert summary_rows[0]["dataset"] == "CMI-Pref" and summary_rows[0]["SRCC"] == ""
    detail_rows = list(csv.DictReader(files.detail_csv.open()))
    assert list(detail_rows[0]) == ["dataset", "task", "group_key", "group_value", "ref_category", "n", "ACC", "SRCC"]
    assert len(detail_rows) == len(metrics["detail"])

    buffer = io.StringIO()
    print_summary(metrics, "toy", Console(file=buffer, width=200))
    text = buffer.getvalue()
    for expected in ("Musicality", "Alignment", "CMI-RM (published)", "SongEval-RM", "CLAP score (music)",
                     "78.20%", "0.4321", "toy", "65.00%", "n (ours)"):
        assert expected in text
