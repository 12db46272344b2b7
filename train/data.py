"""Preference pairs in the CMI-Pref JSONL layout, validated up front with every problem located.

One line is one vote on two clips generated for the same instruction (spec §5.2, §12)::

    {"audio-path": "gen/a.mp3", "audio2": "gen/b.mp3", "prompt": "...", "lyrics": "", "ref-audio-path": "",
     "preference-alignment": "model_a", "preference-musicality": "model_b",
     "confidence_preference-alignment": "4.5", "confidence_preference-musicality": 3, "split": "train"}

Paths are resolved as the benchmark does (relative to the dataset root, normalised; absolute kept;
null or ``""`` = absent). Labels are normalised as the official evaluator does (§5.5: ``a`` /
``model_a``, ``b`` / ``model_b``, ``both`` / ``neither``, case-insensitive); null or ``""`` means the
axis is unlabelled. Confidences are numbers or numeric strings on the 1-5 scale. `load_pairs`
checks every line before training starts and raises one `PairDataError` listing the problems, or
with ``skip_invalid`` leaves the bad lines out and reports how many. `read_pair_file` is the
reader both training and ``cmirm pseudo-label`` (`train.pseudo.pairs`, unlabeled rows) use.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Literal, Mapping

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.manifest import read_json_lines
from cmirm_plugin.records import Instruction
from train.bench import schema as S
from train.bench.labels import normalise_label

Label = Literal["model_a", "model_b", "both"]
#: Label column of each axis, in `AXES` order (alignment, musicality).
LABEL_FIELDS = (S.PREF_ALIGNMENT, S.PREF_MUSICALITY)
#: The CMI-Pref confidence scale.
CONFIDENCE_RANGE = (1.0, 5.0)
_TEXT_FIELDS = (S.PROMPT, S.LYRICS)
_NOT_FOUND = "file not found"


class PairDataError(CmirmError):
    """A preference file with unusable lines; the message lists them as ``file:line: problem``."""


@dataclass(frozen=True)
class PreferencePair:
    """One validated vote: two clips, their shared instruction, a label and confidence per axis.

    ``labels`` and ``confidences`` follow `AXES` order (alignment, musicality); None = unlabelled
    axis / no confidence given. ``modality`` is the benchmark category (a ``modality`` field wins
    over the one inferred from lyrics and reference, as in the evaluator).

    ``key`` is a hash of the pair's content as the file writes it: the two clip paths and the
    reference path as written (normalised; relative to the dataset root unless absolute), the text
    and the lyrics; not the line or the labels. Repeated votes on a pair share it, and it does not
    depend on where the dataset root is or how it is spelled, so held-out splits, ``--max-pairs``
    subsets, the resume check and the pair ids of ``cmirm pseudo-label`` agree wherever they run.
    """

    line: int
    audio_a: Path
    audio_b: Path
    instruction: Instruction
    labels: tuple[Label | None, Label | None]
    confidences: tuple[float | None, float | None]
    modality: str
    key: str
    split: str | None = None


@dataclass
class PairSet:
    """The pairs of a file, in file order, and the problems of the lines left out (``skip_invalid``)."""

    pairs: list[PreferencePair]
    skipped: list[str]
    skipped_lines: int = 0


def _parse_label(name: str, value: Any, problems: list[str]) -> Label | None:
    if S.declared(value) is None:
        return None
    label = normalise_label(value) if isinstance(value, str) else None
    if label is None:
        problems.append(f"field '{name}': unknown label {value!r} (expected model_a, model_b, a, b, both or "
                        f"neither; null or \"\" for no label)")
    return label


def _parse_confidence(name: str, value: Any, problems: list[str]) -> float | None:
    if S.declared(value) is None:
        return None
    number = S.to_number(value)
    lo, hi = CONFIDENCE_RANGE
    if math.isnan(number) or not lo <= number <= hi:
        problems.append(f"field '{name}': confidence must be a number in [{lo:g}, {hi:g}], got {value!r}")
        return None
    return number


def _parse_path(name: str, value: Any, root: Path, required: bool, problems: list[str]) -> Path | None:
    if value is not None and not isinstance(value, str):
        problems.append(f"field '{name}': expected a path string, got {type(value).__name__} {value!r}")
        return None
    path = S.resolve_path(value, root)
    if path is None:
        if required:
            problems.append(f"field '{name}': missing or empty (every pair needs two clips)")
        return None
    if not path.is_file():
        problems.append(f"field '{name}': {_NOT_FOUND} '{path}'")
    return path


def _written(value: str | None) -> str | None:
    """A (validated) path field as the file writes it, normalised (``a/./b`` = ``a/b``); None when absent."""
    text = S.declared(value)
    return None if text is None else os.path.normpath(text)


def parse_pair(line: int, row: Mapping[str, Any], root: Path,
               require_label: bool = True) -> tuple[PreferencePair | None, list[str]]:
    """Validate one row; return the pair (None if unusable) and its problems as ``field 'x': ...``.

    ``require_label=False`` accepts a row without any label (unlabeled pairs to be judged).
    """
    problems: list[str] = []
    audio_a = _parse_path(S.AUDIO_A, row.get(S.AUDIO_A), root, True, problems)
    audio_b = _parse_path(S.AUDIO_B, row.get(S.AUDIO_B), root, True, problems)
    ref = _parse_path(S.REF_AUDIO, row.get(S.REF_AUDIO), root, False, problems)
    problems.extend(S.string_problems(row, (*_TEXT_FIELDS, S.SPLIT, S.MODALITY)))
    labels = tuple(_parse_label(name, row.get(name), problems) for name in LABEL_FIELDS)
    confidences = tuple(_parse_confidence(S.CONFIDENCE_PREFIX + name, row.get(S.CONFIDENCE_PREFIX + name), problems)
                        for name in LABEL_FIELDS)
    if require_label and all(S.declared(row.get(name)) is None for name in LABEL_FIELDS):
        problems.append(f"no usable label: '{LABEL_FIELDS[0]}' and '{LABEL_FIELDS[1]}' are both missing or empty")
    if problems or audio_a is None or audio_b is None:
        return None, problems
    instruction = Instruction(text=row.get(S.PROMPT), lyrics=row.get(S.LYRICS), ref_audio=str(ref) if ref else None)
    modality = S.modality_group({**row, S.REF_AUDIO: instruction.ref_audio})
    content = [_written(row[S.AUDIO_A]), _written(row[S.AUDIO_B]), instruction.text, instruction.lyrics,
               _written(row.get(S.REF_AUDIO))]
    key = hashlib.sha1(json.dumps(content, ensure_ascii=False).encode()).hexdigest()
    return PreferencePair(line=line, audio_a=audio_a, audio_b=audio_b, instruction=instruction, labels=labels,
                          confidences=confidences, modality=modality, key=key, split=row.get(S.SPLIT)), []


@dataclass
class PairFile:
    """Every line of a pair file, checked (`read_pair_file`).

    ``rows`` holds the usable lines in file order, each as (the row as read, its pair);
    ``problems`` the others' as ``file:line: problem``, over ``bad_lines`` lines.
    """

    path: Path
    root: Path
    rows: list[tuple[Mapping[str, Any], PreferencePair]]
    problems: list[str]
    bad_lines: int

    def error(self, what: str, advice: str) -> PairDataError:
        """One error listing the problems (the first `schema.MAX_LISTED`), where paths start, and ``advice``."""
        text = f"{len(self.problems)} problem(s) on {self.bad_lines} line(s) of the {what} {self.path}:"
        text += S.list_problems(self.problems)
        if any(_NOT_FOUND in p for p in self.problems):
            text += (f"\nRelative clip paths are resolved against '{self.root.absolute()}' (--dataset-root; "
                     f"default: the pair file's folder).")
        return PairDataError(f"{text}\n{advice}")


def read_pair_file(path: str | Path, root: str | Path | None = None, *, require_label: bool = True,
                   ignore: Collection[str] = ()) -> PairFile:
    """Read and check every line of ``path``; clip paths are relative to ``root`` (default: the file's folder).

    Fields in ``ignore`` are dropped before a row is checked (e.g. the labels of pairs about to be
    judged); ``require_label`` as in `parse_pair`. Raises `PairDataError` only when the file or the
    root is missing: line problems are returned, for the caller to report or skip.
    """
    path = Path(path)
    if not path.is_file():
        raise PairDataError(f"'{path}': pair file not found")
    root = Path(root) if root is not None else path.parent
    if not root.is_dir():
        raise PairDataError(f"'{root}': dataset root is not a directory (--dataset-root)")
    parsed, problems = read_json_lines(path)
    bad_lines = len(problems)
    rows: list[tuple[Mapping[str, Any], PreferencePair]] = []
    for lineno, row in parsed:
        checked = {k: v for k, v in row.items() if k not in ignore} if ignore else row
        pair, row_problems = parse_pair(lineno, checked, root, require_label)
        problems.extend(f"{path}:{lineno}: {p}" for p in row_problems)
        bad_lines += bool(row_problems)
        if pair is not None:
            rows.append((row, pair))
    return PairFile(path, root, rows, problems, bad_lines)


def load_pairs(path: str | Path, root: str | Path | None = None, skip_invalid: bool = False) -> PairSet:
    """Read and validate every line of ``path``; paths are relative to ``root`` (default: the file's folder).

    Raises `PairDataError` listing the problems (bad JSON, missing fields or files, unknown labels,
    bad confidences, rows with no label) with their line numbers, unless ``skip_invalid``; then the
    bad lines are left out and described in ``PairSet.skipped``. Also raises when no pair is usable.
    """
    found = read_pair_file(path, root)
    if found.problems and not skip_invalid:
        raise found.error("preference file", "Fix the file, or pass --skip-invalid to train without these lines.")
    if not found.rows:
        raise PairDataError(f"'{found.path}': no usable preference pairs"
                            + (f" ({found.bad_lines} invalid line(s) skipped)" if found.problems else ""))
    return PairSet(pairs=[pair for _, pair in found.rows], skipped=found.problems, skipped_lines=found.bad_lines)
