"""`Compute` and `Lineage` records: validation, sums, and their place in candidate records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cmirm_plugin import Audio, Candidate, CmirmError, Compute, Lineage


def test_compute_validates_and_round_trips():
    compute = Compute(0.5, 2.0, "cuda:0", "nfe", 100, 200)
    assert Compute.from_dict(json.loads(json.dumps(compute.to_dict()))) == compute
    assert compute.total_seconds == 0.5 and compute.with_scorer_seconds(0.25).total_seconds == 0.75
    with pytest.raises(CmirmError, match="'work_unit' must be one of"):
        Compute(0.5, 2.0, work_unit="flops", work_units=1, model_evals=1)
    with pytest.raises(CmirmError, match="go together"):
        Compute(0.5, 2.0, work_unit="nfe", work_units=100)
    with pytest.raises(CmirmError, match="'audio_seconds' must be a finite number >= 0"):
        Compute(0.5, -1.0)
    with pytest.raises(CmirmError, match="'work_units' must be an integer"):
        Compute(0.5, 1.0, work_unit="nfe", work_units=1.5, model_evals=3)
    with pytest.raises(CmirmError, match=r"unknown compute field\(s\) \['flops'\]"):
        Compute.from_dict({"generator_seconds": 1.0, "audio_seconds": 1.0, "flops": 3})


def test_compute_sum_keeps_only_what_adds_up():
    a = Compute(1.0, 2.0, "cpu", "decoder_steps", 10, 20, 0.5)
    b = Compute(3.0, 4.0, "cpu", "decoder_steps", 5, 10, 0.25)
    assert Compute.sum([a, b]) == Compute(4.0, 6.0, "cpu", "decoder_steps", 15, 30, 0.75)
    unscored = Compute(1.0, 1.0, "cuda:0", "decoder_steps", 1, 2)
    assert Compute.sum([a, unscored]) == Compute(2.0, 3.0, None, "decoder_steps", 11, 22, None)
    other_unit = Compute(1.0, 1.0, "cpu", "nfe", 1, 2, 0.0)
    assert Compute.sum([a, other_unit]) == Compute(2.0, 3.0, "cpu", None, None, None, 0.5)
    assert Compute.sum([]) == Compute(0.0, 0.0)


def test_candidate_record_carries_compute_and_lineage(tmp_path: Path):
    audio = Audio(torch.randn(1, 800) * 0.1, 8000)
    lineage = Lineage("beam", 2, "inst_gen_s3", 0.5, (1, 3, 9))
    compute = Compute(0.1, 0.5, "cpu", "decoder_steps", 28, 56)
    cand = Candidate(audio, "inst", "gen", 9, {"duration": 0.1}, compute, lineage, codes=torch.zeros(4, 5))
    record = json.loads(json.dumps(cand.to_dict(audio_path=audio.save(tmp_path / "a.wav").name)))
    assert record["compute"]["work_units"] == 28 and record["lineage"]["segment_seeds"] == [1, 3, 9]
    assert "codes" not in record  # codes stay in memory
    back = Candidate.from_dict(record, root=tmp_path)
    assert back.compute == compute and back.lineage == lineage and back.codes is None
    plain = Candidate(audio, "inst", "gen", 1).to_dict()
    assert plain["compute"] is None and plain["lineage"] is None
    with pytest.raises(CmirmError, match=r"unknown lineage field\(s\) \['seeds'\]"):
        Lineage.from_dict({"method": "beam", "seeds": [1]})
