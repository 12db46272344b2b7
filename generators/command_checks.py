"""Input rules a command template declares (its ``checks:`` field), checked before the tool runs.

External tools often accept an input and then fail late (after a model load) or, worse, ignore it
silently: DiffRhythm skips lyric lines that are not LRC, YuE crashes on lyrics without section
tags and on genre text that does not fit in a file name. A template states such rules once::

    checks:
      seed_range: [0, 4294967295]                  # the seeds the tool accepts (inclusive)
      text:   {max_bytes: 179, forbid: ["/"]}       # UTF-8 size limit, forbidden substrings
      lyrics: {format: sections}                    # lrc | sections (see LYRICS_FORMATS)
      ref_audio: {formats: [wav, mp3, flac], min_seconds: 10}

and `CommandGenerator` refuses an instruction (`InputRuleError`) or a seed (`ConfigError`) that
breaks one, naming the rule, before anything is started.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import soundfile as sf

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.records import Instruction
from generators.base import MAX_SEED, UnsupportedInputError

#: An LRC lyric line as DiffRhythm parses it: ``[mm:ss.xx]`` then the sung text.
LRC_LINE = re.compile(r"\[\d{2}:\d{2}\.\d{2}\]")
#: A section tag as YuE splits lyrics on it (``\[(\w+)\]``): ``[verse]``, ``[chorus]``, ...
SECTION_TAG = re.compile(r"\[(\w+)\]")
#: A line that looks like a tag but is not a ``[word]`` one (YuE drops it and the lines under it).
OTHER_TAG = re.compile(r"^\s*\[([^\]]+)\]\s*$")
#: The lyrics formats a template may require, and what each means.
LYRICS_FORMATS = {
    "lrc": "every non-blank line is '[mm:ss.xx] text'",
    "sections": "at least two [word] section tags such as [verse] and [chorus]",
}


class InputRuleError(UnsupportedInputError):
    """The instruction breaks one of the template's declared input rules (``checks:``)."""


def _keys(data: Any, allowed: set[str], where: str) -> Mapping[str, Any]:
    if not isinstance(data, dict) or set(data) - allowed:
        raise ConfigError(f"{where} must be a mapping with keys among {sorted(allowed)}, got {data!r}")
    return data


def _positive(value: Any, where: str, integer: bool = False) -> float | int:
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{where} must be a positive {'integer' if integer else 'number'}, got {value!r}")
    return value


@dataclass(frozen=True)
class TextRule:
    """Rules for a text input (``text`` or ``lyrics``)."""

    max_bytes: int | None = None
    forbid: tuple[str, ...] = ()
    format: str | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "TextRule":
        data = _keys(data, {"max_bytes", "forbid", "format"}, where)
        max_bytes = data.get("max_bytes")
        if max_bytes is not None:
            _positive(max_bytes, f"{where}.max_bytes", integer=True)
        forbid = data.get("forbid") or []
        if not isinstance(forbid, list) or not all(isinstance(s, str) and s for s in forbid):
            raise ConfigError(f"{where}.forbid must be a list of non-empty strings, got {forbid!r}")
        fmt = data.get("format")
        if fmt is not None and fmt not in LYRICS_FORMATS:
            raise ConfigError(f"{where}.format must be one of {sorted(LYRICS_FORMATS)}, got {fmt!r}")
        return cls(max_bytes, tuple(forbid), fmt)

    def problems(self, name: str, value: str) -> list[str]:
        """What is wrong with input ``name`` = ``value`` (empty when it follows the rule)."""
        found = []
        size = len(value.encode("utf-8"))
        if self.max_bytes is not None and size > self.max_bytes:
            found.append(f"{name} is {size} bytes (UTF-8), more than the {self.max_bytes} the tool takes; shorten it")
        found += [f"{name} contains {s!r}, which the tool cannot take; remove it" for s in self.forbid if s in value]
        if self.format == "lrc":
            found += _lrc_problems(name, value)
        elif self.format == "sections":
            found += _section_problems(name, value)
        return found


def _lrc_problems(name: str, value: str) -> list[str]:
    for number, line in enumerate(value.splitlines(), 1):
        if line.strip() and not LRC_LINE.match(line):
            return [f"{name} line {number} {line.strip()[:40]!r} is not an LRC line '[mm:ss.xx] text' "
                    f"(the tool skips it silently); time every line, e.g. '[00:12.50] first line'"]
    return []


def _section_problems(name: str, value: str) -> list[str]:
    for number, line in enumerate(value.splitlines(), 1):
        match = OTHER_TAG.match(line)
        if match and not SECTION_TAG.fullmatch(line.strip()):
            word = re.sub(r"\W", "", match.group(1)) or "verse"
            return [f"{name} line {number} tag [{match.group(1)}] is not a [word] tag (letters, digits, _): the "
                    f"tool drops it and the lines under it; write e.g. [{word}]"]
    tags = SECTION_TAG.findall(value)
    if len(tags) < 2:
        return [f"{name} has {len(tags)} [word] section tag(s); the tool needs {LYRICS_FORMATS['sections']}"]
    return []


@dataclass(frozen=True)
class RefRule:
    """Rules for the reference clip: file formats (by suffix) and a minimum length."""

    formats: tuple[str, ...] = ()
    min_seconds: float | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "RefRule":
        data = _keys(data, {"formats", "min_seconds"}, where)
        formats = data.get("formats") or []
        if not isinstance(formats, list) or not all(isinstance(f, str) and f.isalnum() for f in formats):
            raise ConfigError(f"{where}.formats must list file suffixes without dots (wav, mp3), got {formats!r}")
        min_seconds = data.get("min_seconds")
        if min_seconds is not None:
            _positive(min_seconds, f"{where}.min_seconds")
        return cls(tuple(f.lower() for f in formats), min_seconds)

    def problems(self, ref: str | Audio) -> list[str]:
        """What is wrong with the reference (a path, or `Audio` that is handed over as a wav file)."""
        name = "the in-memory reference (passed as wav)" if isinstance(ref, Audio) else f"reference '{ref}'"
        suffix = "wav" if isinstance(ref, Audio) else Path(ref).suffix.lower().lstrip(".")
        if self.formats and suffix not in self.formats:
            return [f"{name} has format '{suffix or '(no suffix)'}'; the tool reads {', '.join(self.formats)}; "
                    "convert it"]
        if self.min_seconds is None:
            return []
        if isinstance(ref, Audio):
            seconds = ref.duration
        else:
            try:
                seconds = sf.info(ref).duration
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                return [f"cannot read the length of {name} ({exc})"]
        if seconds < self.min_seconds:
            return [f"{name} is {seconds:.2f} s long; the tool needs at least {self.min_seconds:g} s"]
        return []


@dataclass(frozen=True)
class InputChecks:
    """A template's ``checks:``: rules per input, and the seed range its tool accepts."""

    text: TextRule | None = None
    lyrics: TextRule | None = None
    ref_audio: RefRule | None = None
    seed_range: tuple[int, int] | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "InputChecks":
        """Parse the ``checks`` field; ``where`` names the template file in errors."""
        if data is None:
            return cls()
        data = _keys(data, {"text", "lyrics", "ref_audio", "seed_range"}, f"{where}: field 'checks'")
        rules = {kind: rule.from_dict(data[kind], f"{where}: field 'checks.{kind}'")
                 for kind, rule in (("text", TextRule), ("lyrics", TextRule), ("ref_audio", RefRule)) if kind in data}
        seed_range = data.get("seed_range")
        if seed_range is not None:
            ok = (isinstance(seed_range, list) and len(seed_range) == 2
                  and all(isinstance(s, int) and not isinstance(s, bool) for s in seed_range)
                  and 0 <= seed_range[0] <= seed_range[1] <= MAX_SEED)
            if not ok:
                raise ConfigError(f"{where}: field 'checks.seed_range' must be [low, high] with "
                                  f"0 <= low <= high <= {MAX_SEED}, got {seed_range!r}")
            seed_range = (seed_range[0], seed_range[1])
        return cls(seed_range=seed_range, **rules)

    @property
    def inputs(self) -> set[str]:
        """The inputs some rule is about."""
        return {kind for kind in ("text", "lyrics", "ref_audio") if getattr(self, kind) is not None}

    def problems(self, instruction: Instruction) -> list[str]:
        """Every rule ``instruction`` breaks (inputs it does not carry are not checked)."""
        found = []
        if self.text and instruction.text is not None:
            found += self.text.problems("text", instruction.text)
        if self.lyrics and instruction.lyrics is not None:
            found += self.lyrics.problems("lyrics", instruction.lyrics)
        if self.ref_audio and instruction.ref_audio is not None:
            found += self.ref_audio.problems(instruction.ref_audio)
        return found

    def require(self, instruction: Instruction, generator: str, template: str) -> None:
        """Raise `InputRuleError` listing every rule ``instruction`` breaks."""
        found = self.problems(instruction)
        if found:
            raise InputRuleError(f"generator '{generator}' refuses instruction {instruction.id}: {'; '.join(found)} "
                                 f"(rules in 'checks' of {template})")

    def require_seeds(self, seeds: Sequence[int], generator: str, template: str) -> None:
        """Raise `ConfigError` naming the first seed outside ``seed_range``."""
        if self.seed_range is None:
            return
        low, high = self.seed_range
        for seed in seeds:
            if not low <= seed <= high:
                raise ConfigError(f"seed {seed} is out of range for generator '{generator}': its tool takes seeds "
                                  f"in [{low}, {high}] ('checks.seed_range' of {template}); use smaller seeds")
