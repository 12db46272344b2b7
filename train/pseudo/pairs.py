"""Unlabeled pairs in, pseudo-labelled pairs out, both in the CMI-Pref JSONL layout `train.data` reads.

An input row is a preference row without (or with ignored) ``preference-*`` /
``confidence_preference-*`` fields. Every line is validated up front with `train.data.parse_pair`
(clips exist, text fields are strings ...), so a pseudo row written later is one that
``cmirm train`` accepts; problems are reported together, each as ``file:line: problem``.

A pair's id is `train.data.PreferencePair.key` (a hash of the resolved clip paths and the
instruction): it keys resuming, and it is the key training's seeded held-out split uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cmirm_plugin.records import AXES
from cmirm_plugin.manifest import read_json_lines
from train.bench import schema as S
from train.data import LABEL_FIELDS, Label, PairDataError, PreferencePair, parse_pair
from train.pseudo.consistency import Order
from train.pseudo.judges.base import PairView

#: The label column of each axis.
LABEL_FIELD = dict(zip(AXES, LABEL_FIELDS))
_REPLACED = {*LABEL_FIELDS, *(S.CONFIDENCE_PREFIX + name for name in LABEL_FIELDS)}


@dataclass(frozen=True)
class UnlabeledPair:
    """One validated input row: its line, the row as read, and the parsed pair."""

    line: int
    row: Mapping[str, Any]
    pair: PreferencePair

    @property
    def id(self) -> str:
        return self.pair.key

    def view(self, order: Order) -> PairView:
        """The judge's view in ``order`` (``ab``: clip A first; ``ba``: clip B first)."""
        a, b = self.pair.audio_a, self.pair.audio_b
        first, second = (a, b) if order == "ab" else (b, a)
        return PairView(self.pair.instruction, first, second)


@dataclass(frozen=True)
class UnlabeledSet:
    """The unique pairs of a file in file order, and the lines that repeat an earlier pair."""

    pairs: list[UnlabeledPair]
    duplicate_lines: list[int]


def load_unlabeled_pairs(path: str | Path, root: str | Path | None = None) -> UnlabeledSet:
    """Read and validate every line of ``path`` (clip paths relative to ``root``, default the file's folder).

    Raises `train.data.PairDataError` listing every problem with its line number, or when the file
    has no pair. Rows that repeat an earlier pair (same id) are judged once; their lines are returned.
    """
    path = Path(path)
    if not path.is_file():
        raise PairDataError(f"'{path}': pair file not found")
    root = Path(root if root is not None else path.parent).resolve()
    if not root.is_dir():
        raise PairDataError(f"'{root}': dataset root is not a directory")
    rows, problems = read_json_lines(path)
    pairs: dict[str, UnlabeledPair] = {}
    duplicates = []
    for lineno, row in rows:
        # Validate as the labelled row we will write: a placeholder label stands for the judge's.
        probe = {k: v for k, v in row.items() if k not in _REPLACED} | {name: "both" for name in LABEL_FIELDS}
        pair, row_problems = parse_pair(lineno, probe, root)
        problems.extend(f"{path}:{lineno}: {p}" for p in row_problems)
        if pair is None:
            continue
        if pair.key in pairs:
            duplicates.append(lineno)
        else:
            pairs[pair.key] = UnlabeledPair(lineno, row, pair)
    if problems:
        listed = "\n  ".join(problems)
        raise PairDataError(f"{len(problems)} problem(s) in the unlabeled pair file:\n  {listed}")
    if not pairs:
        raise PairDataError(f"'{path}': no pairs")
    return UnlabeledSet(list(pairs.values()), duplicates)


def pseudo_row(pair: UnlabeledPair, labels: Mapping[str, Label | None], provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The output row: the input row, its preference fields replaced by ``labels`` ("" = unlabelled axis).

    Every ``preference-*`` and ``confidence_preference-*`` field of the input is replaced; axes not
    in ``labels`` are written unlabelled. ``provenance`` fields are added as they are.
    """
    row = {k: v for k, v in pair.row.items() if k not in _REPLACED}
    for axis, name in LABEL_FIELD.items():
        row[name] = labels.get(axis) or ""
    return row | dict(provenance)

