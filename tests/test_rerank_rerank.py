"""`cmirm rerank` and the run records: reranking never scores, the per-candidate fold of the manifest."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmirm_plugin import ConfigError, Instruction, ManifestError, ManifestWriter, Scores, read_records
from cmirm_plugin.cli import app
from cmirm_plugin.records import Candidate
from cmirm_plugin.testing import sine
from generators import CandidateFailure
from rerank.run_records import (
    RunPaths,
    candidate_record,
    failure_record,
    fold_records,
    read_run,
    score_record,
)

INST = Instruction(text="calm piano", id="calm")
# seed -> (alignment, musicality): axis:alignment keeps seeds 2, 0; axis:musicality keeps 1, 3.
SCORES = {0: (0.8, 0.1), 1: (0.1, 0.9), 2: (0.9, 0.2), 3: (0.2, 0.7)}


def _make_run(root: Path, scorer: str = "rm") -> RunPaths:
    """A run directory written with the record helpers: four scored sine candidates and one failure."""
    paths = RunPaths(root)
    with ManifestWriter(paths.manifest) as log:
        for seed, (alignment, musicality) in SCORES.items():
            cand = Candidate(sine(200 + 50 * seed, 0.5), INST.id, "synth", seed, {"duration": 0.5})
            wav = cand.audio.save(paths.candidate_wav(cand.id))
            log.append(candidate_record(cand, INST, seed, wav.relative_to(root).as_posix()))
            log.append(score_record(cand.id, scorer, Scores.from_array([alignment, musicality]), None))
        log.append(failure_record(CandidateFailure(INST.id, "synth", 4, "exception", "boom"), INST, 4))
    return paths


@pytest.fixture
def no_scoring(monkeypatch):
    """Any attempt to load a scorer fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("reranking must not score")

    monkeypatch.setattr("rerank.pool.ScorerWorker.__init__", refuse)
    monkeypatch.setattr("cmirm_plugin.scoring.RewardScorer.from_pretrained", refuse)


def _top(paths: RunPaths) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths.top.glob("*.wav")}


def test_rerank_with_another_policy_rewrites_ranking_and_top_without_scoring(tmp_path: Path, no_scoring):
    paths = _make_run(tmp_path / "run")
    manifest_before = paths.manifest.read_bytes()
    runner = CliRunner(env={"COLUMNS": "200"})
    first = runner.invoke(app, ["rerank", str(paths.root), "-k", "2", "--policy", "axis:alignment"])
    assert first.exit_code == 0, first.output + repr(first.exception)
    ranking = {r["seed"]: r for r in read_records(paths.ranking)}
    assert {s for s, r in ranking.items() if r["selected"]} == {2, 0}
    assert ranking[2]["rank"] == 1 and ranking[2]["top_path"] == "top/calm_rank1_s2_calm-piano.wav"
    assert ranking[4]["rank"] is None and ranking[4]["errors"] == ["generation exception: boom"]
    wav = {seed: paths.candidate_wav(Candidate.make_id("calm", "synth", seed)).read_bytes() for seed in SCORES}
    assert _top(paths) == {"calm_rank1_s2_calm-piano.wav": wav[2], "calm_rank2_s0_calm-piano.wav": wav[0]}
    assert "top-2 by axis:alignment (scorer rm)" in first.output

    second = runner.invoke(app, ["rerank", str(paths.manifest), "-k", "3", "--policy", "axis:musicality",
                                 "--min", "alignment=0.15"])
    assert second.exit_code == 0, second.output + repr(second.exception)
    assert _top(paths) == {"calm_rank1_s3_calm-piano.wav": wav[3], "calm_rank2_s2_calm-piano.wav": wav[2],
                           "calm_rank3_s0_calm-piano.wav": wav[0]}
    records = read_records(paths.ranking)
    assert {r["policy"] for r in records} == {"axis:musicality;min:alignment=0.15"}
    assert next(r for r in records if r["seed"] == 1)["eligible"] is False
    assert paths.manifest.read_bytes() == manifest_before          # the manifest is never rewritten

    # Each ranking is kept (jsonl and csv) under rankings/<policy>_k<k>_<scorer>/; top/README.txt names the last.
    first_name, second_name = "axis-alignment_k2_rm", "axis-musicality+min-alignment=0.15_k3_rm"
    assert sorted(p.name for p in paths.rankings.iterdir()) == [first_name, second_name]
    assert {r["policy"] for r in read_records(paths.rankings / first_name / "ranking.jsonl")} == {"axis:alignment"}
    assert (paths.rankings / second_name / "ranking.jsonl").read_bytes() == paths.ranking.read_bytes()
    assert (paths.rankings / second_name / "ranking.csv").read_bytes() == paths.ranking_csv.read_bytes()
    readme = (paths.top / "README.txt").read_text()
    assert readme.splitlines()[0] == (f"This folder holds the top-3 candidates per instruction of the ranking in "
                                      f"rankings/{second_name}/")
    assert f"top: {paths.top}/ holds 3 file(s), the top-3 of ranking rankings/{second_name}" in second.output

    # ranking.csv: one row per candidate (run order), the score axes as columns.
    with paths.ranking_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(row["seed"]) for row in rows] == [r["seed"] for r in records] == [0, 1, 2, 3, 4]
    for row, record in zip(rows, records):
        assert row["instruction_id"] == "calm" and row["text"] == "calm piano" and row["policy"] == record["policy"]
        assert row["rank"] == ("" if record["rank"] is None else str(record["rank"]))
        assert row["top_path"] == (record["top_path"] or "") and row["selected"] == str(record["selected"])
        for axis in ("alignment", "musicality"):
            assert row[axis] == ("" if not record["scores"] else repr(record["scores"][axis]))
    assert rows[4]["errors"] == "generation exception: boom" and rows[1]["eligible"] == "False"


def test_rerank_into_another_directory(tmp_path: Path, no_scoring):
    paths = _make_run(tmp_path / "run")
    out = RunPaths(tmp_path / "elsewhere")
    result = CliRunner().invoke(app, ["rerank", str(paths.root), "-k", "1", "--out", str(out.root)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert not paths.ranking.exists() and not paths.rankings.exists()
    assert sorted(p.name for p in out.top.iterdir()) == ["README.txt", "calm_rank1_s1_calm-piano.wav"]
    assert [p.name for p in out.rankings.iterdir()] == ["axis-musicality_k1_rm"] and out.ranking_csv.is_file()
    best = next(r for r in read_records(out.ranking) if r["selected"])
    assert best["seed"] == 1 and (out.root / best["audio_path"]).resolve() == paths.candidate_wav(best["id"]).resolve()


def test_top_names_carry_rank_seed_and_a_prompt_hint():
    from rerank.rerank_run import top_name

    def name(text: str | None, lyrics: str | None = None) -> str:
        return top_name({"instruction": {"id": "abc", "text": text, "lyrics": lyrics}, "rank": 2, "seed": 17})

    assert name("Calm  Piano, with *soft* strings!") == "abc_rank2_s17_calm-piano-with-soft-strings.wav"
    assert name("Café déjà vu") == "abc_rank2_s17_cafe-deja-vu.wav"
    assert name(None, "La la la") == "abc_rank2_s17_la-la-la.wav"
    assert name("日本の歌") == "abc_rank2_s17.wav"                       # nothing ASCII left: no hint
    assert name("one two three four five six seven eight nine ten") == \
        "abc_rank2_s17_one-two-three-four-five-six-seven-eight.wav"       # at most 40 characters, whole words


def test_rerank_errors(tmp_path: Path):
    paths = _make_run(tmp_path / "run", scorer="rm")
    runner = CliRunner()
    result = runner.invoke(app, ["rerank", str(tmp_path)])
    assert "no manifest.jsonl there" in str(result.exception)
    result = runner.invoke(app, ["rerank", str(paths.root), "--scorer", "other"])
    assert isinstance(result.exception, ConfigError)
    assert "no candidate has scores from 'other' (scorers with scores: rm)" in str(result.exception)


def test_fold_regeneration_replaces_scores_and_later_scores_win():
    inst = Instruction(text="x", id="x")
    cand = Candidate(sine(300, 0.2), "x", "g", 7)
    records = [
        candidate_record(cand, inst, 0, "candidates/a.wav"),
        score_record(cand.id, "rm", Scores.from_array([1.0, 2.0]), None),
        score_record(cand.id, "eval", None, "AudioError: too short"),
        score_record(cand.id, "rm", Scores.from_array([3.0, 4.0]), None),
    ]
    (view,) = fold_records(records).values()
    assert view.scores == {"rm": Scores.from_array([3.0, 4.0])} and view.score_errors == {"eval": "AudioError: too short"}
    assert view.instruction == inst and view.generated and view.errors() == ["scoring (eval): AudioError: too short"]
    (regenerated,) = fold_records(records + [candidate_record(cand, inst, 0, "candidates/a.wav")]).values()
    assert regenerated.scores == {} and regenerated.score_errors == {}


def test_fold_errors_name_the_record():
    with pytest.raises(ManifestError, match="record 1 scores candidate 'nope' before it was generated"):
        fold_records([score_record("nope", "rm", Scores.from_array([0.0, 0.0]), None)], "m.jsonl")
    with pytest.raises(ManifestError, match="m.jsonl: record 1 is not a run record"):
        fold_records([{"id": "a", "record": "mystery"}], "m.jsonl")
    with pytest.raises(ManifestError, match="record 1 \\(candidate of 'a'\\) is malformed"):
        fold_records([{"id": "a", "record": "candidate"}], "m.jsonl")


def test_read_run_order_is_instruction_then_index(tmp_path: Path):
    paths = _make_run(tmp_path / "run")
    other = Instruction(text="rock", id="rock")
    with ManifestWriter(paths.manifest) as log:
        cand = Candidate(sine(500, 0.2), "rock", "synth", 0)
        log.append(candidate_record(cand, other, 0, "candidates/x.wav"))
        log.append(failure_record(CandidateFailure("calm", "synth", 9, "timeout", "slow"), INST, 0))
    order = [(v.instruction.id, v.index, v.seed) for v in read_run(paths.root)]
    assert order == [("calm", 0, 0), ("calm", 0, 9), ("calm", 1, 1), ("calm", 2, 2), ("calm", 3, 3), ("calm", 4, 4),
                     ("rock", 0, 0)]


def test_rerank_refuses_a_file_that_is_not_the_manifest(tmp_path: Path):
    paths = _make_run(tmp_path / "run")
    other = paths.root / "other.jsonl"
    other.write_text("")
    result = CliRunner().invoke(app, ["rerank", str(other)])
    assert "expected a run directory or its manifest.jsonl" in str(result.exception)
