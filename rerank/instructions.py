"""The instructions of a job: one from the command line, or many from a ``--prompts`` JSONL file.

Reference clips are stored as absolute paths, so scorer workers (Ray actors run from another
working directory) can read them. A prompts file is validated as a whole before anything runs:
every bad line is reported with its number, field and value in one error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cmirm_plugin.errors import CmirmError, ConfigError
from cmirm_plugin.manifest import read_json_lines
from cmirm_plugin.records import Instruction, file_problem

#: Fields of a prompts-file line.
PROMPT_FIELDS = ("text", "lyrics", "ref_audio", "id")

#: Instruction ids become parts of file names.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: How many bad lines one error lists.
_MAX_REPORTED = 20


def cli_instruction(text: str | None, lyrics: str | None = None, ref_audio: str | None = None) -> Instruction:
    """The instruction of ``TEXT [--lyrics TEXT|FILE] [--ref-audio FILE]``."""
    if not any(value and value.strip() for value in (text, lyrics, ref_audio)):
        raise ConfigError("give an instruction: TEXT, --lyrics or --ref-audio (or --prompts FILE.jsonl)")
    inst = Instruction.from_cli(text, lyrics, ref_audio)
    if inst.ref_audio is None:
        return inst
    return Instruction(text=inst.text, lyrics=inst.lyrics, ref_audio=str(Path(str(inst.ref_audio)).resolve()))


def _line_instruction(data: dict[str, Any], base: Path) -> Instruction:
    """One prompts-file line as an instruction; raises `CmirmError` naming the field and value."""
    unknown = sorted(set(data) - set(PROMPT_FIELDS))
    if unknown:
        raise CmirmError(f"unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(PROMPT_FIELDS)}")
    for key in PROMPT_FIELDS:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise CmirmError(f"field '{key}' must be a string or null, got {value!r}")
    if not any((data.get(key) or "").strip() for key in ("text", "lyrics", "ref_audio")):
        raise CmirmError("needs at least one of 'text', 'lyrics', 'ref_audio'")
    ref = data.get("ref_audio")
    if ref:
        path = (base / ref).resolve()
        problem = file_problem(path)
        if problem:
            raise CmirmError(f"field 'ref_audio': {problem}: '{path}' (paths are relative to the prompts file)")
        ref = str(path)
    given_id = data.get("id")
    if given_id is not None and not _ID.match(given_id):
        raise CmirmError(f"field 'id' {given_id!r} must be 1-128 letters, digits, '.', '_' or '-' "
                         "(it becomes part of file names)")
    return Instruction(text=data.get("text"), lyrics=data.get("lyrics"), ref_audio=ref, id=given_id)


def load_prompts(path: str | Path) -> list[Instruction]:
    """Every instruction of a prompts file (``text``, ``lyrics``, ``ref_audio``, optional ``id``; one per line).

    Blank lines are skipped. All problems (bad JSON, unknown fields, wrong types, missing reference
    clips, repeated instructions or ids) are collected and raised as one `ConfigError`: lines that
    are not JSON objects first, then invalid instructions, each with its line number.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"'{path}': prompts file not found")
    rows, unreadable = read_json_lines(path)
    invalid: list[tuple[int, str]] = []
    instructions: list[Instruction] = []
    seen: dict[str, int] = {}
    for lineno, data in rows:
        try:
            inst = _line_instruction(data, path.parent)
        except CmirmError as exc:
            invalid.append((lineno, str(exc)))
            continue
        if inst.id in seen:
            invalid.append((lineno, f"instruction id {inst.id!r} repeats line {seen[inst.id]} "
                                    "(give distinct 'id' values or remove the duplicate)"))
            continue
        seen[inst.id] = lineno
        instructions.append(inst)
    # Lines that are not JSON objects first (`read_json_lines` words them), then invalid instructions;
    # each group is in line order.
    errors = unreadable + [f"{path}:{lineno}: {message}" for lineno, message in invalid]
    if errors:
        more = f"\n  ... and {len(errors) - _MAX_REPORTED} more" if len(errors) > _MAX_REPORTED else ""
        raise ConfigError(f"{len(errors)} invalid line(s) in the prompts file:\n  "
                          + "\n  ".join(errors[:_MAX_REPORTED]) + more)
    if not instructions:
        raise ConfigError(f"'{path}': no instructions (the file is empty)")
    return instructions
