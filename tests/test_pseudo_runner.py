"""The pseudo-labelling run: validation up front, resuming after a crash, re-filtering on a rerun,
one judge per output, duplicates judged once, a clip that cannot be decoded recorded as an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.manifest import read_records
from cmirm_plugin.testing import sine
from train.data import PairDataError, load_pairs
from train.pseudo.judges.base import AxisVerdict, JudgeReply, JudgeUnavailable, PairView
from train.pseudo.runner import PseudoLabelOptions, judgments_path, pseudo_label


class CountingJudge:
    """Musicality: clip "a" wins (consistent); alignment: always the first clip (pure position bias).

    Stops answering (`JudgeUnavailable`) after ``fail_after`` calls, like a server that went away.
    """

    def __init__(self, fail_after: int | None = None, id: str = "counting:v1") -> None:
        self.id = id
        self.calls = 0
        self.fail_after = fail_after

    def judge(self, view: PairView, axes) -> JudgeReply:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise JudgeUnavailable("judge went away")
        self.calls += 1
        a_first = view.first.name.startswith("a")
        choices = {"alignment": "first", "musicality": "first" if a_first else "second"}
        return JudgeReply({axis: AxisVerdict(choices[axis]) for axis in axes}, raw=self.calls)


def write_unlabeled(root: Path, lines: int = 5) -> Path:
    rows = []
    for i in range(1, lines + 1):
        for name in (f"a{i}", f"b{i}"):
            sine(300.0 + 10 * i, 0.1, 16000).save(root / "data" / "clips" / f"{name}.wav")
        rows.append({"audio-path": f"clips/a{i}.wav", "audio2": f"clips/b{i}.wav", "prompt": f"song {i}",
                     "lyrics": "la la" if i % 2 else "", "ref-audio-path": ""})
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(pairs: Path, judge, out: Path, **options):
    return pseudo_label(pairs, out, judge, dataset_root=pairs.parent / "data", options=PseudoLabelOptions(**options),
                        progress=False)


def test_crash_keeps_finished_pairs_and_rerun_resumes(tmp_path):
    pairs = write_unlabeled(tmp_path)
    full = run(pairs, CountingJudge(), tmp_path / "full.jsonl")
    out = tmp_path / "out.jsonl"
    with pytest.raises(JudgeUnavailable):
        run(pairs, CountingJudge(fail_after=5), out)                # pair 3 dies between its two orders
    assert [j["line"] for j in read_records(judgments_path(out))] == [1, 2]
    assert len(read_records(out)) == 2
    assert json.loads((tmp_path / "out.report.json").read_text())["judged"] == 2
    judge = CountingJudge()
    report = run(pairs, judge, out)
    assert judge.calls == 6                                          # pairs 3-5 only, both orders
    assert (report.judged_before, report.judged_now) == (2, 3)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "judge_answers"} for r in rows]  # noqa: E731
    assert strip(read_records(out)) == strip(read_records(tmp_path / "full.jsonl"))
    assert report.to_dict()["per_axis"] == full.to_dict()["per_axis"]
    assert report.axis["alignment"].first_rate == 1.0 and report.axis["alignment"].agreement == 0.0
    assert report.axis["musicality"].agreement == 1.0 and report.axis["musicality"].first_rate == 0.5
    again = CountingJudge()
    run(pairs, again, out)
    assert again.calls == 0 and len(read_records(out)) == 5         # nothing left to judge


def test_rerun_repairs_the_output_and_refilters_without_judging(tmp_path):
    pairs = write_unlabeled(tmp_path)
    out = tmp_path / "out.jsonl"
    run(pairs, CountingJudge(), out)
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])     # killed after a judgment, mid-row
    judge = CountingJudge()
    run(pairs, judge, out)
    assert judge.calls == 0 and len(read_records(out)) == 5
    report = run(pairs, judge, out, filter="joint")                  # alignment is never consistent
    assert judge.calls == 0 and report.rows_written == 0 and read_records(out) == []
    report = run(pairs, judge, out, ties="both", axes=["musicality"], filter="joint")
    assert report.rows_written == 5 and all(r["preference-alignment"] == "" for r in read_records(out))


def test_output_is_training_data(tmp_path):
    pairs = write_unlabeled(tmp_path)
    out = tmp_path / "pseudo" / "out.jsonl"
    run(pairs, CountingJudge(), out)
    loaded = load_pairs(out, root=tmp_path / "data")
    assert [p.labels for p in loaded.pairs] == [(None, "model_a")] * 5
    assert [p.line for p in loaded.pairs] == [1, 2, 3, 4, 5]
    assert {r["pseudo_label"]["pair_id"] for r in read_records(out)} == {p.key for p in loaded.pairs}


def test_refuses_to_mix_judges_or_extend_axes(tmp_path):
    pairs = write_unlabeled(tmp_path)
    out = tmp_path / "out.jsonl"
    run(pairs, CountingJudge(), out, axes=["musicality"])
    with pytest.raises(CmirmError, match="judged by 'counting:v1', this run's judge is 'other'"):
        run(pairs, CountingJudge(id="other"), out, axes=["musicality"])
    with pytest.raises(CmirmError, match=r"not \['alignment'\]"):
        run(pairs, CountingJudge(), out)
    with pytest.raises(CmirmError, match="is the input pair file"):
        run(pairs, CountingJudge(), pairs)


def test_every_bad_line_is_reported_before_judging(tmp_path):
    pairs = write_unlabeled(tmp_path)
    lines = pairs.read_text().splitlines()
    bad = lines[:1] + ["{oops"] + [lines[1].replace("a2.wav", "missing.wav")] + \
        [lines[2].replace('"prompt": "song 3"', '"prompt": 3')] + ["[1, 2]"] + \
        [lines[3].replace('"audio2": "clips/b4.wav"', '"audio2": ""')]
    pairs.write_text("\n".join(bad) + "\n")
    judge = CountingJudge()
    with pytest.raises(PairDataError) as err:
        run(pairs, judge, tmp_path / "out.jsonl")
    message = str(err.value)
    assert judge.calls == 0 and "5 problem(s)" in message
    assert f"{pairs}:2: not valid JSON" in message
    assert f"{pairs}:3: field 'audio-path': file not found" in message and "missing.wav" in message
    assert f"{pairs}:4: field 'prompt': expected a string or null, got int 3" in message
    assert f"{pairs}:5: expected a JSON object, got list" in message
    assert f"{pairs}:6: field 'audio2': missing or empty" in message
    with pytest.raises(CmirmError, match="--ties"):
        PseudoLabelOptions(ties="maybe")
    with pytest.raises(CmirmError, match="axes must be"):
        PseudoLabelOptions(axes=["alignment", "vibes"])


def test_duplicates_are_judged_once(tmp_path):
    pairs = write_unlabeled(tmp_path, lines=2)
    lines = pairs.read_text().splitlines()
    pairs.write_text("\n".join(lines + [lines[0]]) + "\n")
    judge = CountingJudge()
    report = run(pairs, judge, tmp_path / "out.jsonl")
    assert judge.calls == 4
    assert report.pairs == 2 and report.duplicate_lines == 1 and len(read_records(tmp_path / "out.jsonl")) == 2


class DecodingJudge(CountingJudge):
    def judge(self, view: PairView, axes) -> JudgeReply:
        from cmirm_plugin.audio import Audio

        Audio.load(view.first), Audio.load(view.second)
        return super().judge(view, axes)


def test_an_undecodable_clip_is_recorded_not_fatal(tmp_path):
    pairs = write_unlabeled(tmp_path, lines=2)
    (tmp_path / "data" / "clips" / "b2.wav").write_bytes(b"RIFF not really a wav")
    report = run(pairs, DecodingJudge(), tmp_path / "out.jsonl")
    assert report.judged == 2 and report.rows_written == 1
    error = read_records(judgments_path(tmp_path / "out.jsonl"))[1]["orders"]["ab"]["errors"]["musicality"]
    assert error.startswith("audio: ") and "b2.wav" in error
    assert report.axis["musicality"].error_pairs == 1


def test_outputs_sharing_a_folder_keep_their_own_report(tmp_path):
    pairs = write_unlabeled(tmp_path, lines=2)
    run(pairs, CountingJudge(), tmp_path / "all.jsonl")
    run(pairs, CountingJudge(), tmp_path / "music.jsonl", axes=["musicality"])
    assert json.loads((tmp_path / "all.report.json").read_text())["axes"] == ["alignment", "musicality"]
    assert json.loads((tmp_path / "music.report.json").read_text())["axes"] == ["musicality"]
