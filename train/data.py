"""Preference pairs in the CMI-Pref JSONL layout, validated up front with every problem located.

One line is one vote on two clips generated for the same instruction (spec §5.2, §12)::

    {"audio-path": "gen/a.mp3", "audio2": "gen/b.mp3", "prompt": "...", "lyrics": "", "ref-audio-path": "",
     "preference-alignment": "model_a", "preference-musicality": "model_b",
     "confidence_preference-alignment": "4.5", "confidence_preference-musicality": 3, "split": "train"}

Paths are resolved as the benchmark does (relative to the dataset root, normalised; absolute kept;
null or ``""`` = absent). Labels are normalised as the official evaluator does (§5.5: ``a`` /
``model_a``, ``b`` / ``model_b``, ``both`` / ``neither``, case-insensitive); null or ``""`` means the
axis is unlabelled. Confidences are numbers or numeric strings on the 1-5 scale. `load_pairs`
checks every line before training starts and raises one `PairDataError` listing all problems, or
with ``skip_invalid`` leaves the bad lines out and reports how many.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import Instruction
from cmirm_plugin.manifest import read_json_lines
from train.bench import schema as S
from train.bench.dataset import resolve_path
from train.bench.labels import normalise_label
from train.bench.metrics import to_number

Label = Literal["model_a", "model_b", "both"]
#: Label column of each axis, in `AXES` order (alignment, musicality).
LABEL_FIELDS = (S.PREF_ALIGNMENT, S.PREF_MUSICALITY)
#: The CMI-Pref confidence scale.
CONFIDENCE_RANGE = (1.0, 5.0)
_TEXT_FIELDS = (S.PROMPT, S.LYRICS)


class PairDataError(CmirmError):
    """A preference file with unusable lines; the message lists every one as ``file:line: problem``."""


@dataclass(frozen=True)
class PreferencePair:
    """One validated vote: two clips, their shared instruction, a label and confidence per axis.

    ``labels`` and ``confidences`` follow `AXES` order (alignment, musicality); None = unlabelled
    axis / no confidence given. ``modality`` is the benchmark category (a ``modality`` field wins
    over the one inferred from lyrics and reference, as in the evaluator).
    """

    line: int
    audio_a: Path
    audio_b: Path
    instruction: Instruction
    labels: tuple[Label | None, Label | None]
    confidences: tuple[float | None, float | None]
    modality: str
    split: str | None = None

    @property
    def key(self) -> str:
        """A content hash of the pair (clips and instruction, not the line or the labels).

        Repeated votes on the same pair share it, so seeded splits keep them on the same side.
        """
        inst = self.instruction
        blob = json.dumps([str(self.audio_a), str(self.audio_b), inst.text, inst.lyrics, inst.ref_audio])
        return hashlib.sha1(blob.encode()).hexdigest()


@dataclass
class PairSet:
    """The pairs of a file, in file order, and the problems of the lines left out (``skip_invalid``)."""

    pairs: list[PreferencePair]
    skipped: list[str]
    skipped_lines: int = 0


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _parse_label(name: str, value: Any, problems: list[str]) -> Label | None:
    if _absent(value):
        return None
    label = normalise_label(value) if isinstance(value, str) else None
    if label is None:
        problems.append(f"field '{name}': unknown label {value!r} (expected model_a, model_b, a, b, both or "
                        f"neither; null or \"\" for no label)")
    return label


def _parse_confidence(name: str, value: Any, problems: list[str]) -> float | None:
    if _absent(value):
        return None
    number = to_number(value)
    lo, hi = CONFIDENCE_RANGE
    if math.isnan(number) or not lo <= number <= hi:
        problems.append(f"field '{name}': confidence must be a number in [{lo:g}, {hi:g}], got {value!r}")
        return None
    return number


def _parse_path(name: str, value: Any, root: Path, required: bool, problems: list[str]) -> Path | None:
    if value is not None and not isinstance(value, str):
        problems.append(f"field '{name}': expected a path string, got {type(value).__name__} {value!r}")
        return None
    path = resolve_path(value, root)
    if path is None:
        if required:
            problems.append(f"field '{name}': missing or empty (every pair needs two clips)")
        return None
    if not path.is_file():
        problems.append(f"field '{name}': file not found '{path}'")
    return path


def parse_pair(line: int, row: Mapping[str, Any], root: Path) -> tuple[PreferencePair | None, list[str]]:
    """Validate one row; return the pair (None if unusable) and its problems as ``field 'x': ...``."""
    problems: list[str] = []
    audio_a = _parse_path(S.AUDIO_A, row.get(S.AUDIO_A), root, True, problems)
    audio_b = _parse_path(S.AUDIO_B, row.get(S.AUDIO_B), root, True, problems)
    ref = _parse_path(S.REF_AUDIO, row.get(S.REF_AUDIO), root, False, problems)
    for name in (*_TEXT_FIELDS, S.SPLIT, S.MODALITY):
        if row.get(name) is not None and not isinstance(row[name], str):
            problems.append(f"field '{name}': expected a string or null, got {type(row[name]).__name__} {row[name]!r}")
    labels = tuple(_parse_label(name, row.get(name), problems) for name in LABEL_FIELDS)
    confidences = tuple(_parse_confidence(S.CONFIDENCE_PREFIX + name, row.get(S.CONFIDENCE_PREFIX + name), problems)
                        for name in LABEL_FIELDS)
    if all(_absent(row.get(name)) for name in LABEL_FIELDS):
        problems.append(f"no usable label: '{LABEL_FIELDS[0]}' and '{LABEL_FIELDS[1]}' are both missing or empty")
    if problems:
        return None, problems
    text = {name: row.get(name) for name in _TEXT_FIELDS}
    instruction = Instruction(text=text[S.PROMPT], lyrics=text[S.LYRICS], ref_audio=str(ref) if ref else None)
    modality = S.modality_group({**row, S.REF_AUDIO: str(ref) if ref else None})
    return PreferencePair(line=line, audio_a=audio_a, audio_b=audio_b, instruction=instruction, labels=labels,
                          confidences=confidences, modality=modality, split=row.get(S.SPLIT)), []


def load_pairs(path: str | Path, root: str | Path | None = None, skip_invalid: bool = False) -> PairSet:
    """Read and validate every line of ``path``; paths are relative to ``root`` (default: the file's folder).

    Raises `PairDataError` listing every problem (bad JSON, missing fields or files, unknown labels,
    bad confidences, rows with no label) with its line number, unless ``skip_invalid``; then the bad
    lines are left out and described in ``PairSet.skipped``. Also raises when no pair is usable.
    """
    path = Path(path)
    if not path.is_file():
        raise PairDataError(f"'{path}': preference file not found")
    root = Path(root) if root is not None else path.parent
    if not root.is_dir():
        raise PairDataError(f"'{root}': dataset root is not a directory")
    rows, problems = read_json_lines(path)
    bad_lines = len(problems)
    pairs = []
    for lineno, row in rows:
        pair, row_problems = parse_pair(lineno, row, root)
        problems.extend(f"{path}:{lineno}: {p}" for p in row_problems)
        bad_lines += bool(row_problems)
        if pair is not None:
            pairs.append(pair)
    if problems and not skip_invalid:
        listed = "\n  ".join(problems)
        raise PairDataError(f"{len(problems)} problem(s) on {bad_lines} line(s) of the preference file:\n  {listed}\n"
                            "Fix the file, or pass --skip-invalid to train without these lines.")
    if not pairs:
        raise PairDataError(f"'{path}': no usable preference pairs" + (f" ({bad_lines} invalid line(s) skipped)"
                                                                       if problems else ""))
    return PairSet(pairs=pairs, skipped=problems, skipped_lines=bad_lines)
