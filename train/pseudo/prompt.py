"""The fixed prompt of the audio-language-model judges, and the strict parser of their answers.

Both LLM judges (local transformers model, OpenAI-compatible endpoint) present the same `Prompt`:
a system message and one user turn made of text and audio segments, rendered by each judge into its
own message format. The template (``PROMPT_VERSION`` changes whenever the wording does)::

    [system] You are an expert music critic. You compare two music clips that were generated for
             the same instruction and answer only in the requested format.
    [user]   Instruction given to the music generator:
             Description: <text, or "(none)">
             Lyrics: <lyrics, or "(none)">
             Reference clip (the music should follow it):  <audio: reference>     (only if present)
             Clip A:  <audio: first clip>
             Clip B:  <audio: second clip>
             Compare clip A with clip B on each criterion:
             - alignment: which clip follows the instruction (description, lyrics, reference) better?
             - musicality: which clip is better music (sound quality, coherence, ...), whatever the instruction?
             Answer with exactly one line per criterion, in this order, and nothing else:
             alignment: <A, B or tie>
             musicality: <A, B or tie>

Only the requested axes are listed. "Clip A" is always the clip shown first: the runner asks twice
with the clips swapped. The parser accepts exactly one ``<axis>: <token>`` line per requested axis
(any order, case and surrounding whitespace ignored), with token ``A``, ``B``, ``tie`` or ``both``
(= tie); anything else (extra text, a missing or repeated axis, another token) makes the axes it
concerns errors, recorded for that pair and order, never a crash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.records import AXES
from train.pseudo.judges.base import AxisVerdict, Choice, PairView

PROMPT_VERSION = "1"

SYSTEM = ("You are an expert music critic. You compare two music clips that were generated for the same "
          "instruction and answer only in the requested format.")

#: What each axis asks, in the words of the prompt.
QUESTIONS = {
    "alignment": "which clip follows the instruction (description, lyrics, reference) better?",
    "musicality": "which clip is better music (sound quality, coherence, arrangement, performance), whatever "
                  "the instruction?",
}

#: Answer tokens (lower-cased) and what they mean.
TOKENS: dict[str, Choice] = {"a": "first", "b": "second", "tie": "tie", "both": "tie"}

_LINE = re.compile(r"^\s*([a-z]+)\s*:\s*(\S+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Segment:
    """A piece of the user turn: text, or an audio clip (``role`` says which)."""

    kind: Literal["text", "audio"]
    text: str = ""
    audio: Path | None = None
    role: Literal["reference", "first", "second"] | None = None


@dataclass(frozen=True)
class Prompt:
    """The rendered template: a system message and the user turn's segments, in order."""

    system: str
    segments: tuple[Segment, ...]

    @property
    def audios(self) -> list[Path]:
        """The audio segments' clips, in the order the model hears them."""
        return [s.audio for s in self.segments if s.kind == "audio"]

    def as_text(self, audio_marker: str = "<audio:{role}>") -> str:
        """The user turn as one string with a marker per clip (logs, tests, text-only previews)."""
        return "".join(s.text if s.kind == "text" else audio_marker.format(role=s.role, path=s.audio)
                       for s in self.segments)


def check_axes(axes: Sequence[str]) -> tuple[str, ...]:
    """The axes as a tuple, in `AXES` order; raise naming an unknown or repeated axis."""
    unknown = [a for a in axes if a not in AXES]
    if unknown or not axes or len(set(axes)) != len(axes):
        raise ConfigError(f"axes must be a non-empty selection of {', '.join(AXES)} without repeats, got {list(axes)}")
    return tuple(a for a in AXES if a in axes)


def build_prompt(view: PairView, axes: Sequence[str]) -> Prompt:
    """Fill the template (module docstring) for ``view``; clip A is ``view.first``."""
    axes = check_axes(axes)
    inst = view.instruction
    segments = [Segment("text", "Instruction given to the music generator:\n"
                                f"Description: {inst.text or '(none)'}\nLyrics: {inst.lyrics or '(none)'}\n")]
    if inst.has_ref:
        segments += [Segment("text", "Reference clip (the music should follow it): "),
                     Segment("audio", audio=Path(str(inst.ref_audio)), role="reference"), Segment("text", "\n")]
    segments += [Segment("text", "Clip A: "), Segment("audio", audio=view.first, role="first"), Segment("text", "\n"),
                 Segment("text", "Clip B: "), Segment("audio", audio=view.second, role="second"), Segment("text", "\n")]
    criteria = "".join(f"- {axis}: {QUESTIONS[axis]}\n" for axis in axes)
    form = "".join(f"{axis}: <A, B or tie>\n" for axis in axes)
    segments.append(Segment("text", f"Compare clip A with clip B on each criterion:\n{criteria}"
                                    f"Answer with exactly one line per criterion, in this order, and nothing else:\n"
                                    f"{form.rstrip()}"))
    return Prompt(SYSTEM, tuple(segments))


def parse_verdicts(answer: str, axes: Sequence[str]) -> dict[str, AxisVerdict]:
    """Read an answer strictly (module docstring): a verdict or an error for each of ``axes``."""
    axes = check_axes(axes)
    lines = [line for line in answer.splitlines() if line.strip()]
    if not lines:
        return {axis: AxisVerdict(None, "empty answer") for axis in axes}
    found: dict[str, list[str]] = {}
    for line in lines:
        match = _LINE.match(line)
        if match is None or match.group(1).lower() not in axes:
            snippet = line.strip()[:80]
            return {axis: AxisVerdict(None, f"unexpected text in the answer: {snippet!r}") for axis in axes}
        found.setdefault(match.group(1).lower(), []).append(match.group(2))
    verdicts = {}
    for axis in axes:
        tokens = found.get(axis, [])
        if len(tokens) != 1:
            verdicts[axis] = AxisVerdict(None, f"'{axis}' answered {len(tokens)} times (expected once)")
        elif tokens[0].lower() not in TOKENS:
            verdicts[axis] = AxisVerdict(None, f"'{axis}': {tokens[0]!r} is not A, B or tie")
        else:
            verdicts[axis] = AxisVerdict(TOKENS[tokens[0].lower()])
    return verdicts
