"""Unlabeled pairs in, pseudo-labelled pairs out, both in the CMI-Pref JSONL layout `train.data` reads.

An input row is a preference row without (or with ignored) ``preference-*`` /
``confidence_preference-*`` fields. Every line is validated up front by the reader training uses
(`train.data.read_pair_file`: clips exist, text fields are strings ...), so a pseudo row written
later is one that ``cmirm train`` accepts; problems are reported together, each as
``file:line: problem``.

A pair's id is `train.data.PreferencePair.key` (a hash of the clip paths as written and the
instruction): it keys resuming, and it is the key training's seeded held-out split uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cmirm_plugin.records import AXES
from train.bench import schema as S
from train.data import LABEL_FIELDS, Label, PairDataError, PreferencePair, read_pair_file
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

    Label and confidence fields are ignored (the judge supplies them). Raises
    `train.data.PairDataError` listing the problems with their line numbers, or when the file has
    no pair. Rows that repeat an earlier pair (same id) are judged once; their lines are returned.
    """
    found = read_pair_file(path, root, require_label=False, ignore=_REPLACED)
    if found.problems:
        raise found.error("unlabeled pair file", "Fix these lines and rerun: nothing has been judged yet.")
    pairs: dict[str, UnlabeledPair] = {}
    duplicates = []
    for row, pair in found.rows:
        if pair.key in pairs:
            duplicates.append(pair.line)
        else:
            pairs[pair.key] = UnlabeledPair(pair.line, row, pair)
    if not pairs:
        raise PairDataError(f"'{found.path}': no pairs")
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

