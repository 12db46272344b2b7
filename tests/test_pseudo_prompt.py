"""The LLM judges' prompt template (both orders, optional reference, axis selection) and the strict
verdict parser (allowed tokens in any case and spacing; everything else an error, never an exception)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import Instruction
from train.pseudo.judges.base import PairView
from train.pseudo.prompt import SYSTEM, build_prompt, parse_verdicts

BOTH = ["alignment", "musicality"]


def test_template_renders_both_orders():
    inst = Instruction(text="a calm piano piece", lyrics="la la la", ref_audio="ref.wav")
    ab = build_prompt(PairView(inst, Path("a.wav"), Path("b.wav")), BOTH)
    ba = build_prompt(PairView(inst, Path("b.wav"), Path("a.wav")), BOTH)
    assert ab.system == SYSTEM
    assert ab.audios == [Path("ref.wav"), Path("a.wav"), Path("b.wav")]
    assert ba.audios == [Path("ref.wav"), Path("b.wav"), Path("a.wav")]
    assert ab.as_text() == ba.as_text() == (
        "Instruction given to the music generator:\n"
        "Description: a calm piano piece\n"
        "Lyrics: la la la\n"
        "Reference clip (the music should follow it): <audio:reference>\n"
        "Clip A: <audio:first>\n"
        "Clip B: <audio:second>\n"
        "Compare clip A with clip B on each criterion:\n"
        "- alignment: which clip follows the instruction (description, lyrics, reference) better?\n"
        "- musicality: which clip is better music (sound quality, coherence, arrangement, performance), whatever "
        "the instruction?\n"
        "Answer with exactly one line per criterion, in this order, and nothing else:\n"
        "alignment: <A, B or tie>\n"
        "musicality: <A, B or tie>")
    assert ba.as_text("[{path}]").index("[b.wav]") < ba.as_text("[{path}]").index("[a.wav]")


def test_template_without_lyrics_or_reference_and_one_axis():
    prompt = build_prompt(PairView(Instruction(text="rock"), Path("a.wav"), Path("b.wav")), ["musicality"])
    text = prompt.as_text()
    assert "Lyrics: (none)\n" in text and "Reference" not in text and len(prompt.audios) == 2
    assert "alignment" not in text and text.endswith("musicality: <A, B or tie>")
    with pytest.raises(CmirmError, match="axes must be"):
        build_prompt(PairView(Instruction(text="rock"), Path("a.wav"), Path("b.wav")), ["alignment", "alignment"])


@pytest.mark.parametrize("answer, expected", [
    ("alignment: A\nmusicality: B", ("first", "second")),
    ("  Alignment :  b \n\n MUSICALITY:TIE  \n", ("second", "tie")),
    ("musicality: both\nalignment: a", ("first", "tie")),
])
def test_parser_accepts_the_allowed_tokens(answer, expected):
    verdicts = parse_verdicts(answer, BOTH)
    assert (verdicts["alignment"].choice, verdicts["musicality"].choice) == expected
    assert all(v.error is None for v in verdicts.values())


@pytest.mark.parametrize("answer, alignment_error, musicality_error", [
    ("", "empty answer", "empty answer"),
    ("A", "unexpected text in the answer: 'A'", "unexpected text in the answer: 'A'"),
    ("alignment: A\nmusicality: B\nBecause clip A is nicer.", "unexpected text", "unexpected text"),
    ("alignment: A.\nmusicality: B", "'alignment': 'A.' is not A, B or tie", None),
    ("alignment: A\nalignment: B\nmusicality: B", "'alignment' answered 2 times (expected once)", None),
    ("musicality: B", "'alignment' answered 0 times (expected once)", None),
    ("alignment: A\nmusicality: clip B", "unexpected text", "unexpected text"),
    ("alignment: A\ncreativity: B\nmusicality: B", "unexpected text", "unexpected text"),
    ("alignment: first\nmusicality: B", "'alignment': 'first' is not A, B or tie", None),
])
def test_parser_rejects_everything_else(answer, alignment_error, musicality_error):
    verdicts = parse_verdicts(answer, BOTH)
    assert verdicts["alignment"].choice is None and alignment_error in verdicts["alignment"].error
    if musicality_error is None:
        assert verdicts["musicality"].error is None and verdicts["musicality"].choice == "second"
    else:
        assert verdicts["musicality"].choice is None and musicality_error in verdicts["musicality"].error


def test_parser_only_accepts_the_axes_asked():
    assert parse_verdicts("alignment: A\nmusicality: B", ["musicality"])["musicality"].error.startswith("unexpected")
    assert parse_verdicts("musicality: B", ["musicality"])["musicality"].choice == "second"
