"""Position consistency on a scripted judge with a built-in order bias: labels, tie policies, row filters,
agreement and position bias (expected numbers worked out by hand below), and the output rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmirm_plugin.manifest import read_records
from cmirm_plugin.testing import sine
from train.pseudo.consistency import decide_axis, outcome, row_labels
from train.pseudo.judges.base import AxisVerdict, JudgeReply, PairView
from train.pseudo.runner import PseudoLabelOptions, judgments_path, pseudo_label

F, S, T, E = "first", "second", "tie", None      # E: the answer for that order was unusable

#: Positional answers (order ab, order ba) per line and axis. The judge leans to the first clip:
#: lines 2 and 6 say "first" in both orders on alignment, line 3 on musicality.
SCRIPT = {
    1: {"alignment": (F, S), "musicality": (F, S)},   # A, A | A, A       consistent model_a on both
    2: {"alignment": (F, F), "musicality": (S, F)},   # A, B (bias)       | B, B consistent
    3: {"alignment": (T, T), "musicality": (F, F)},   # tie, tie          | A, B (bias)
    4: {"alignment": (T, F), "musicality": (S, F)},   # tie, B            | B, B consistent
    5: {"alignment": (S, F), "musicality": (F, T)},   # B, B consistent   | A, tie
    6: {"alignment": (F, F), "musicality": (E, F)},   # A, B (bias)       | error
}


class ScriptedJudge:
    """Answers from `SCRIPT`, looked up by the clips' names (a<line>.wav / b<line>.wav)."""

    id = "scripted:v1"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def judge(self, view: PairView, axes) -> JudgeReply:
        self.calls.append((view.first.name, view.second.name))
        line = int(view.first.stem[1:])
        index = 0 if view.first.name.startswith("a") else 1
        verdicts = {axis: AxisVerdict(SCRIPT[line][axis][index]) if SCRIPT[line][axis][index] else
                    AxisVerdict(None, "unparseable") for axis in axes}
        return JudgeReply(verdicts, raw=f"scripted {view.first.name} vs {view.second.name}")


def write_unlabeled(root: Path, lines: int = 6) -> Path:
    """Clips clips/a<i>.wav, clips/b<i>.wav and the pair file root/pairs.jsonl (no labels)."""
    rows = []
    for i in range(1, lines + 1):
        for name, freq in ((f"a{i}", 200.0 * i), (f"b{i}", 210.0 * i)):
            sine(freq, 0.1, 16000).save(root / "clips" / f"{name}.wav")
        rows.append({"audio-path": f"clips/a{i}.wav", "audio2": f"clips/b{i}.wav", "prompt": f"song {i}",
                     "lyrics": "", "ref-audio-path": "", "split": "train", "model_a": "gen-x"})
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def pairs(tmp_path) -> Path:
    return write_unlabeled(tmp_path)


def run(pairs: Path, out_name: str = "out.jsonl", **options):
    judge = ScriptedJudge()
    report = pseudo_label(pairs, pairs.parent / out_name, judge, options=PseudoLabelOptions(**options), progress=False)
    rows = read_records(pairs.parent / out_name)
    labels = {int(r["audio-path"][7:-4]): (r["preference-alignment"], r["preference-musicality"]) for r in rows}
    return report, labels, rows, judge


def test_outcome_maps_positions_back_to_clips():
    assert outcome("ab", "first") == "model_a" and outcome("ab", "second") == "model_b"
    assert outcome("ba", "first") == "model_b" and outcome("ba", "second") == "model_a"
    assert outcome("ba", "tie") == "tie"


@pytest.mark.parametrize("ab, ba, ties, label, dropped", [
    (F, S, "drop", "model_a", None), (S, F, "both", "model_b", None),
    (F, F, "drop", None, "inconsistent"), (F, F, "both", None, "inconsistent"),
    (T, T, "drop", None, "tie"), (T, T, "both", "both", None), (T, T, "keep-if-consistent", "both", None),
    (T, F, "drop", None, "tie"), (T, F, "both", "both", None), (T, F, "keep-if-consistent", None, "inconsistent"),
    (E, F, "both", None, "error"), (F, E, "keep-if-consistent", None, "error"),
])
def test_decide_axis_table(ab, ba, ties, label, dropped):
    decision = decide_axis(ab, ba, ties)
    assert (decision.label, decision.dropped) == (label, dropped)


def test_row_filters():
    decisions = {"alignment": decide_axis(F, S, "drop"), "musicality": decide_axis(F, F, "drop")}
    assert row_labels(decisions, ("alignment", "musicality"), "per-axis") == {"alignment": "model_a", "musicality": None}
    assert row_labels(decisions, ("alignment", "musicality"), "joint") is None
    assert row_labels(decisions, ("alignment",), "joint") == {"alignment": "model_a"}
    assert row_labels({"alignment": decide_axis(F, F, "drop")}, ("alignment",), "per-axis") is None


def test_keeps_exactly_the_consistent_pairs_and_measures_the_bias(pairs):
    report, labels, rows, judge = run(pairs)
    assert len(judge.calls) == 12 and judge.calls[:2] == [("a1.wav", "b1.wav"), ("b1.wav", "a1.wav")]
    # ties=drop, per-axis: alignment labels on lines 1 (A) and 5 (B); musicality on 1 (A), 2 (B), 4 (B).
    assert labels == {1: ("model_a", "model_a"), 2: ("", "model_b"), 4: ("", "model_b"), 5: ("model_b", "")}
    al, mu = report.axis["alignment"], report.axis["musicality"]
    # alignment: both orders valid on all 6 lines; consistent on 1, 3 (tie twice), 5 -> 3/6.
    assert (al.judged, al.consistent, al.agreement) == (6, 3, 0.5)
    # first picks: ab on 1, 2, 6 + ba on 2, 4, 5, 6 = 7; second: ab 5, ba 1 = 2 -> 7/9; ties: ab 3, 4 + ba 3 = 3.
    assert dict(al.verdicts) == {"first": 7, "second": 2, "tie": 3} and al.first_rate == pytest.approx(7 / 9)
    assert dict(al.dropped) == {"inconsistent": 2, "tie": 2} and dict(al.labels) == {"model_a": 1, "model_b": 1}
    # musicality: line 6 has an error -> judged 5; consistent on 1, 2, 4 -> 3/5.
    assert (mu.judged, mu.consistent, mu.agreement, mu.error_pairs) == (5, 3, 0.6, 1)
    # first picks: ab 1, 3, 5 + ba 2, 3, 4, 6 = 7; second: ab 2, 4 + ba 1 = 3 -> 7/10.
    assert dict(mu.verdicts) == {"first": 7, "second": 3, "tie": 1, "error": 1} and mu.first_rate == pytest.approx(0.7)
    assert dict(mu.dropped) == {"inconsistent": 1, "tie": 1, "error": 1}
    assert (report.pairs, report.judged, report.rows_written) == (6, 6, 4)
    saved = json.loads((pairs.parent / "out.report.json").read_text())
    assert saved["per_axis"]["alignment"]["first_rate"] == pytest.approx(7 / 9)
    assert saved["per_axis"]["musicality"]["agreement"] == 0.6 and saved["rows_dropped"] == 2


@pytest.mark.parametrize("ties, filter_mode, expected", [
    ("drop", "joint", {1: ("model_a", "model_a")}),
    ("both", "per-axis", {1: ("model_a", "model_a"), 2: ("", "model_b"), 3: ("both", ""), 4: ("both", "model_b"),
                          5: ("model_b", "both")}),
    ("both", "joint", {1: ("model_a", "model_a"), 4: ("both", "model_b"), 5: ("model_b", "both")}),
    ("keep-if-consistent", "per-axis", {1: ("model_a", "model_a"), 2: ("", "model_b"), 3: ("both", ""),
                                        4: ("", "model_b"), 5: ("model_b", "")}),
    ("keep-if-consistent", "joint", {1: ("model_a", "model_a")}),
])
def test_tie_policies_and_filters(pairs, ties, filter_mode, expected):
    report, labels, _, _ = run(pairs, ties=ties, filter=filter_mode)
    assert labels == expected
    assert report.rows_written == len(expected)
    assert report.axis["alignment"].agreement == 0.5            # agreement describes the judge, not the policy


def test_single_axis(pairs):
    report, labels, rows, _ = run(pairs, axes=["musicality"], filter="joint")
    assert labels == {1: ("", "model_a"), 2: ("", "model_b"), 4: ("", "model_b")}
    assert list(report.axis) == ["musicality"]
    assert set(rows[0]["judge_answers"]["ab"]["verdicts"]) == {"musicality"}


def test_output_rows_carry_the_answers_and_provenance(pairs):
    _, _, rows, _ = run(pairs)
    row = rows[1]                                                      # line 2
    assert row["model_a"] == "gen-x" and row["prompt"] == "song 2" and row["split"] == "train"   # input kept
    assert row["judge"] == "scripted:v1"
    assert row["judge_answers"]["ab"] == {"raw": "scripted a2.wav vs b2.wav",
                                          "verdicts": {"alignment": "first", "musicality": "second"}, "errors": {}}
    assert row["judge_answers"]["ba"]["verdicts"] == {"alignment": "first", "musicality": "first"}
    prov = row["pseudo_label"]
    assert prov["ties"] == "drop" and prov["filter"] == "per-axis" and prov["axes"] == ["alignment", "musicality"]
    assert prov["consistent"] == {"alignment": False, "musicality": True} and len(prov["pair_id"]) == 40
    judged = read_records(judgments_path(pairs.parent / "out.jsonl"))
    assert [j["line"] for j in judged] == [1, 2, 3, 4, 5, 6]
    assert judged[5]["orders"]["ab"]["errors"] == {"musicality": "unparseable"}
