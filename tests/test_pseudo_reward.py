"""The reward-model judge on a tiny CMI-RM: verdicts follow score differences, the margin makes ties,
each clip is scored once per pair, and (batch-independent scores) it has no position bias."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.manifest import read_records
from cmirm_plugin.records import Instruction
from cmirm_plugin.scoring import RewardScorer, ScoringSettings
from cmirm_plugin.testing import noise, sine
from train.pseudo.judges.base import PairView
from train.pseudo.judges.reward import RewardJudge
from train.pseudo.runner import PseudoLabelOptions, pseudo_label


class CountingScorer(RewardScorer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clips_scored = 0

    def score_batch(self, audios, instructions, sample_rate=None) -> np.ndarray:
        self.clips_scored += len(audios)
        return super().score_batch(audios, instructions, sample_rate)


@pytest.fixture(scope="module")
def scorer(tiny_model) -> CountingScorer:
    return CountingScorer(tiny_model, ScoringSettings(max_dur=10.0), device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reward")
    rows = []
    for i in range(4):
        sine(150.0 * (i + 1), 0.5, harmonics=3).save(root / f"a{i}.wav")
        noise(0.5, amplitude=0.05 * (i + 1), seed=i).save(root / f"b{i}.wav")
        rows.append({"audio-path": f"a{i}.wav", "audio2": f"b{i}.wav", "prompt": "a calm piano piece",
                     "lyrics": "la la" if i == 1 else "", "ref-audio-path": "a0.wav" if i == 2 else ""})
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_verdicts_follow_score_differences_and_margin(scorer, data):
    inst = Instruction(text="a calm piano piece")
    a, b = data / "a0.wav", data / "b0.wav"
    scores = scorer.score_batch([str(a), str(b)], inst)
    diff = scores[0] - scores[1]
    before = scorer.clips_scored
    judge = RewardJudge(scorer, "tiny", margin=0.0)
    ab = judge.judge(PairView(inst, a, b), ["alignment", "musicality"])
    ba = judge.judge(PairView(inst, b, a), ["alignment", "musicality"])
    assert scorer.clips_scored - before == 2                   # the second order reuses the cached scores
    for k, axis in enumerate(("alignment", "musicality")):
        expected = "first" if diff[k] > 0 else "second"
        assert ab.verdicts[axis].choice == expected
        assert ba.verdicts[axis].choice == ("second" if expected == "first" else "first")
    assert ab.raw["first"]["alignment"] == pytest.approx(float(scores[0, 0]))
    assert ab.raw["second"]["musicality"] == pytest.approx(float(scores[1, 1]))
    # A margin between the two axes' gaps turns the smaller gap into a tie and keeps the larger one.
    small, large = sorted(abs(diff))
    judge = RewardJudge(scorer, "tiny", margin=float(small + large) / 2)
    verdicts = judge.judge(PairView(inst, a, b), ["alignment", "musicality"]).verdicts
    axis_small = ("alignment", "musicality")[int(np.argmin(abs(diff)))]
    assert verdicts[axis_small].choice == "tie"
    assert all(v.choice != "tie" for ax, v in verdicts.items() if ax != axis_small)
    assert judge.id == f"reward:tiny:margin={float(small + large) / 2:g}:max_dur=10"
    with pytest.raises(CmirmError, match="--margin"):
        RewardJudge(scorer, "tiny", margin=-1)


def test_a_reward_judge_is_position_consistent(scorer, data, tmp_path):
    report = pseudo_label(data / "pairs.jsonl", tmp_path / "out.jsonl", RewardJudge(scorer, "tiny"), progress=False)
    for stats in report.axis.values():
        assert stats.agreement == 1.0 and stats.first_rate == 0.5 and stats.judged == 4
    rows = read_records(tmp_path / "out.jsonl")
    assert len(rows) == 4 and all(r["preference-alignment"] in ("model_a", "model_b") for r in rows)


def test_a_wide_margin_gives_ties_that_the_policy_decides(scorer, data, tmp_path):
    judge = RewardJudge(scorer, "tiny", margin=1e6)
    dropped = pseudo_label(data / "pairs.jsonl", tmp_path / "drop.jsonl", judge, progress=False)
    assert dropped.rows_written == 0 and dropped.axis["musicality"].dropped["tie"] == 4
    kept = pseudo_label(data / "pairs.jsonl", tmp_path / "both.jsonl", judge, progress=False,
                        options=PseudoLabelOptions(ties="keep-if-consistent"))
    rows = read_records(tmp_path / "both.jsonl")
    assert kept.rows_written == 4 and {(r["preference-alignment"], r["preference-musicality"]) for r in rows} == \
        {("both", "both")}
    assert kept.axis["alignment"].verdicts["tie"] == 8


def test_the_judge_id_names_what_the_scorer_hears(tiny_model, scorer):
    shorter = RewardScorer(tiny_model, ScoringSettings(max_dur=5.0), device="cpu")
    assert RewardJudge(shorter, "tiny").id == "reward:tiny:margin=0:max_dur=5"
    assert RewardJudge(shorter, "tiny").id != RewardJudge(scorer, "tiny").id
    assert RewardJudge(RewardScorer(tiny_model, ScoringSettings(missing="null"), device="cpu"), "tiny").id.endswith(":missing=null")
