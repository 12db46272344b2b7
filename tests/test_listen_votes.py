"""Votes as CMI-Pref pairs: the row layout the trainer reads, refusals, the lock, pair choice, agreement, merging."""

from __future__ import annotations

import fcntl
import json
import threading
from itertools import combinations
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmirm_plugin.cli import app
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import read_records
from rerank.listen.pairs import Pair, plan_pairs
from rerank.listen.review_app import ReviewSession
from rerank.listen.run_view import load_listen_run
from rerank.listen.synthetic import SyntheticRun, write_synthetic_run
from rerank.listen.votes import (
    ALL,
    VOTES,
    PairUnavailable,
    VoteLog,
    VoteRefused,
    merge_votes,
    model_agreement,
    reviewer_agreement,
    vote_row,
)
from train.data import load_pairs

pytestmark = pytest.mark.timeout(120)


def _answers(alignment: str, musicality: str, confidence: int = 3) -> dict:
    return {"alignment": (alignment, confidence), "musicality": (musicality, confidence)}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_synthetic_run(tmp_path / "run", SyntheticRun(n_instructions=3, n_candidates=4))


def test_votes_are_cmi_pref_rows_the_trainer_reads(run: Path):
    listen = load_listen_run(run)
    log = VoteLog(run)
    by_instruction = {}
    for pair in plan_pairs(listen, "random", seed=3):
        by_instruction.setdefault(pair.instruction_id, pair)
    plain, lyrics, ref = by_instruction["s00000"], by_instruction["s00001"], by_instruction["s00002"]
    log.append(vote_row(listen, plain, {"alignment": ("A", 4), "musicality": ("B", 2)}, " ana "))
    log.append(vote_row(listen, lyrics, _answers("neither", "both", 5), "bo"))
    log.append(vote_row(listen, ref, _answers("B", "A", 1), "ana"))
    rows = read_records(run / VOTES)
    first = rows[0]
    assert first["audio-path"] == f"candidates/{plain.a}.wav" and first["audio2"] == f"candidates/{plain.b}.wav"
    assert first["prompt"] == "synthetic instruction 0: a tone in a scale" and first["lyrics"] == ""
    assert first["ref-audio-path"] == "" and first["modality"] == "text"
    assert (first["preference-alignment"], first["preference-musicality"]) == ("model_a", "model_b")
    assert (first["confidence_preference-alignment"], first["confidence_preference-musicality"]) == (4, 2)
    assert first["voter"] == "ana" and first["candidate-a"] == plain.a and first["instruction-id"] == "s00000"
    assert first["timestamp"].endswith("Z") and len(first["timestamp"]) == 20
    assert rows[1]["lyrics"] == "line one of song 1\nline two" and rows[1]["preference-alignment"] == "neither"
    assert rows[2]["ref-audio-path"] == "tones/reference.wav" and rows[2]["modality"] == "text+ref"

    pairs = load_pairs(run / VOTES).pairs    # default dataset root: the votes file's folder = the run
    assert [p.labels for p in pairs] == [("model_a", "model_b"), ("both", "both"), ("model_b", "model_a")]
    assert [p.confidences for p in pairs] == [(4.0, 2.0), (5.0, 5.0), (1.0, 1.0)]
    assert pairs[0].audio_a == run / "candidates" / f"{plain.a}.wav"
    assert pairs[2].instruction.ref_audio == str(run / "tones" / "reference.wav")
    assert [p.modality for p in pairs] == ["text", "text+lyrics", "text+ref"]


def test_bad_votes_are_refused_with_the_reason(run: Path):
    listen = load_listen_run(run)
    pair = plan_pairs(listen, "random", seed=0)[0]
    with pytest.raises(VoteRefused, match="enter your name"):
        vote_row(listen, pair, _answers("A", "B"), "  ")
    with pytest.raises(VoteRefused, match="answer the musicality question"):
        vote_row(listen, pair, {"alignment": ("A", 3), "musicality": (None, 3)}, "ana")
    with pytest.raises(VoteRefused, match="confidence of 1-5 for the alignment answer, got 7"):
        vote_row(listen, pair, {"alignment": ("A", 7), "musicality": ("A", 3)}, "ana")
    other = next(c for c in listen.candidates if c.instruction.id != pair.instruction_id)
    with pytest.raises(VoteRefused, match="not two candidates of one instruction"):
        vote_row(listen, Pair(pair.instruction_id, pair.a, other.id), _answers("A", "B"), "ana")
    (run / "candidates" / f"{pair.b}.wav").unlink()
    with pytest.raises(PairUnavailable, match=f"clip B \\({pair.b}\\) is gone: its file .* no longer exists"):
        vote_row(listen, pair, _answers("A", "B"), "ana")
    assert not (run / VOTES).exists()


def test_appends_wait_for_the_lock(run: Path):
    listen = load_listen_run(run)
    row = vote_row(listen, plan_pairs(listen, "random", seed=0)[0], _answers("A", "B"), "ana")
    log = VoteLog(run)
    with (run / f".{VOTES}.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)        # another reviewer's process holds the lock
        writer = threading.Thread(target=log.append, args=(row,))
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive() and not (run / VOTES).exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    writer.join(timeout=30)
    assert not writer.is_alive() and read_records(run / VOTES) == [row]
    threads = [threading.Thread(target=lambda: [log.append(row) for _ in range(20)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(log.rows()) == 81


def test_pair_modes(run: Path):
    listen = load_listen_run(run)
    random_pairs = plan_pairs(listen, "random", seed=1)
    expected = {tuple(sorted(p)) for _, group in listen.instructions() for p in combinations([c.id for c in group], 2)}
    assert len(random_pairs) == 18 and {p.key for p in random_pairs} == expected
    assert all(p.a.split("_")[0] == p.b.split("_")[0] == p.instruction_id for p in random_pairs)
    assert any(p.a > p.b for p in random_pairs) and any(p.a < p.b for p in random_pairs)   # sides are drawn
    assert random_pairs == plan_pairs(listen, "random", seed=1) != plan_pairs(listen, "random", seed=2)

    near = plan_pairs(listen, "near-ties", seed=1)
    for pair in near:
        sa, sb = listen.scores(listen.candidate(pair.a)), listen.scores(listen.candidate(pair.b))
        assert pair.gap == pytest.approx(abs(sa["alignment"] - sb["alignment"])
                                         + abs(sa["musicality"] - sb["musicality"]))
    assert [p.gap for p in near] == sorted(p.gap for p in near) and {p.key for p in near} == expected

    top = plan_pairs(listen, "top-vs-rest", seed=1)
    ranks = {c.id: c.rank for c in listen.candidates}
    assert len(top) == 9 and all(1 in (ranks[p.a], ranks[p.b]) for p in top)
    assert [max(ranks[p.a], ranks[p.b]) for p in top] == [2, 2, 2, 3, 3, 3, 4, 4, 4]   # one round at a time

    gone = random_pairs[0].a
    (run / "candidates" / f"{gone}.wav").unlink()
    assert all(gone not in (p.a, p.b) for p in plan_pairs(load_listen_run(run), "random", seed=1))
    (run / "ranking.jsonl").unlink()
    with pytest.raises(ConfigError, match="top-vs-rest needs a ranking.*cmirm rerank"):
        plan_pairs(load_listen_run(run), "top-vs-rest")
    with pytest.raises(ConfigError, match="--pairs must be one of random, near-ties, top-vs-rest"):
        plan_pairs(listen, "best")


def _preferred(listen, pair: Pair, axis: str) -> str:
    """The side the model prefers on ``axis``."""
    a, b = listen.scores(listen.candidate(pair.a)), listen.scores(listen.candidate(pair.b))
    return "A" if a[axis] > b[axis] else "B"


def test_model_and_reviewer_agreement_counts(run: Path):
    listen = load_listen_run(run)
    pairs = plan_pairs(listen, "random", seed=5)
    first, second = pairs[0], pairs[1]
    flip = {"A": "B", "B": "A"}
    model_a = _preferred(listen, first, "alignment")
    rows = [
        vote_row(listen, first, _answers(model_a, "both"), "ana"),                       # agrees on alignment
        vote_row(listen, Pair(first.instruction_id, first.b, first.a),                   # the same pair, B/A shown
                 _answers(model_a, "neither"), "bo"),                                    # bo disagrees with ana
        vote_row(listen, first, _answers(model_a, "both"), "cy"),                        # cy agrees with ana
        vote_row(listen, second, _answers(flip[_preferred(listen, second, "alignment")], "A"), "ana"),
    ]
    table = model_agreement(rows, listen, by_modality=True)
    alignment = table[ALL]["alignment"]
    assert (alignment.votes, alignment.ties, alignment.decisive, alignment.agreed) == (4, 0, 4, 2)
    musicality = table[ALL]["musicality"]
    assert (musicality.votes, musicality.ties, musicality.decisive) == (4, 3, 1)
    assert set(table) == {ALL} | {r["modality"] for r in rows}

    people = reviewer_agreement(rows)
    # alignment: ana and cy chose the same clip, bo (who heard the sides swapped) the other one.
    assert (people[ALL]["alignment"].pairs, people[ALL]["alignment"].comparisons,
            people[ALL]["alignment"].agreed) == (1, 3, 1)
    # musicality: both and neither are one tie label: all three agree.
    assert (people[ALL]["musicality"].comparisons, people[ALL]["musicality"].agreed) == (3, 3)
    assert people[rows[0]["modality"]]["alignment"].comparisons == 3


def test_a_session_continues_where_the_votes_file_says(run: Path):
    session = ReviewSession.open(run, "near-ties", seed=0)
    first = session.next_pair("ana")
    assert first == session.pairs[0]
    session.vote(first, _answers("A", "B"), "ana")
    with pytest.raises(PairUnavailable, match="already voted"):
        session.vote(first, _answers("A", "A"), "ana")
    assert session.next_pair("ana") == session.pairs[1] and session.next_pair("bo") == first
    assert session.next_pair("ana", skipped=[list(session.pairs[1].key)]) == session.pairs[2]
    status = session.status("ana")
    assert status.startswith("**1** vote(s) so far in `votes.jsonl` (1 by ana).")
    assert "Reward model agreed with the A/B votes on alignment" in status
    restarted = ReviewSession.open(run, "near-ties", seed=0)
    assert restarted.next_pair("ana") == session.pairs[1] and "**1** vote(s)" in restarted.status("")
    (run / VOTES).write_text((run / VOTES).read_text() + '{"audio-path": "x"}\n')
    with pytest.raises(ConfigError, match=r"votes.jsonl:2: field 'audio2': missing"):
        ReviewSession.open(run)


def test_merging_votes_of_two_runs_and_the_votes_command(tmp_path: Path):
    runs = [write_synthetic_run(tmp_path / name, SyntheticRun(n_instructions=2, n_candidates=3, seed=seed))
            for seed, name in enumerate(("run1", "run2"))]
    for root in runs:
        listen = load_listen_run(root)
        log = VoteLog(root)
        pair = plan_pairs(listen, "random", seed=0)[0]
        for voter in ("ana", "bo"):
            log.append(vote_row(listen, pair, _answers("A", "B", 4), voter))
    out = tmp_path / "merged" / "pairs.jsonl"
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["votes", str(runs[0]), str(runs[1] / VOTES),
                                                            "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "4 vote(s) by 2 reviewer(s) from 2 run(s)" in result.output
    rows = read_records(out)
    assert len(rows) == 4 and rows[0]["audio-path"].startswith("../run1/candidates/")
    assert {r["run"] for r in rows} == {str(r.resolve()) for r in runs}
    assert len(load_pairs(out).pairs) == 4   # paths relative to the merged file's folder
    report = json.loads((tmp_path / "merged" / "pairs.agreement.json").read_text())
    assert report["votes"] == 4 and report["voters"] == ["ana", "bo"]
    assert report["reviewers"][ALL]["alignment"] == {"pairs": 2, "comparisons": 2, "agreed": 2, "rate": 1.0}
    assert report["model"][ALL]["alignment"]["decisive"] == 4

    with pytest.raises(ConfigError, match="given twice"):
        merge_votes([runs[0], runs[0] / VOTES])
    empty = write_synthetic_run(tmp_path / "empty", SyntheticRun(n_instructions=1, n_candidates=2))
    with pytest.raises(ConfigError, match="no votes.jsonl here yet"):
        merge_votes([empty])


def test_a_vote_cut_short_by_a_crash_is_dropped(run: Path):
    listen = load_listen_run(run)
    log = VoteLog(run)
    pairs = plan_pairs(listen, "random", seed=0)
    log.append(vote_row(listen, pairs[0], _answers("A", "B"), "ana"))
    with (run / VOTES).open("a") as handle:
        handle.write('{"audio-path": "candidates/x.wav", "aud')     # the process died mid-write
    assert len(log.rows()) == 1
    log.append(vote_row(listen, pairs[1], _answers("B", "B"), "ana"))
    assert [r["candidate-a"] for r in read_records(run / VOTES)] == [pairs[0].a, pairs[1].a]
    with (run / VOTES).open("a") as handle:
        handle.write("{broken\n")
    with pytest.raises(ConfigError, match=r"votes.jsonl:3: not valid JSON"):
        log.rows()
