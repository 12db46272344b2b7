"""Reading the benchmark file (all_test.jsonl) into validated rows, with every problem located.

A row is kept when its ``split`` matches and its subset is selected. Each kept row must have a
recognised ``source``, a clip path (and a second clip for the pairwise subsets), and string-or-null
text fields; every violation, and every line that is not a JSON object, is reported as
``file:line: field 'x': problem``. Paths are resolved as the official runner does (§5.1): relative
paths are joined to the dataset root and normalised, absolute paths are kept, empty or null means absent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import read_json_lines
from train.bench import schema as S
from train.bench.errors import DatasetError
from train.bench.schema import resolve_path

#: Pairwise subsets: their rows need a second clip.
PAIRWISE_SUBSETS = ("MusicArena", "CMI-Pref")
#: Fields that, when present, must be a string or null.
_TEXT_FIELDS = (S.PROMPT, S.LYRICS, S.REF_AUDIO, S.AUDIO_B, S.MODALITY)


@dataclass(frozen=True)
class BenchRow:
    """One usable benchmark row: its original fields plus the resolved inputs the scorer needs.

    ``id`` is stable across runs (line number + hash of the two clip paths as written), so resuming
    recognises finished rows and notices a reordered or edited file.
    """

    line: int
    data: Mapping[str, Any]
    subset: str
    audio_a: Path
    audio_b: Path | None
    ref_audio: Path | None
    text: str
    lyrics: str
    id: str = field(init=False)

    def __post_init__(self) -> None:
        paths = f"{self.data.get(S.AUDIO_A)}\0{self.data.get(S.AUDIO_B) or ''}"
        object.__setattr__(self, "id", f"L{self.line}-{hashlib.sha1(paths.encode()).hexdigest()[:10]}")

    @property
    def pairwise(self) -> bool:
        """Whether the row has a second clip (side B) to score."""
        return self.audio_b is not None


@dataclass
class BenchmarkData:
    """The selected rows, in file order, and the problems of rows left out (``skip_invalid``)."""

    rows: list[BenchRow]
    skipped: list[str]


def _row_problems(data: Mapping[str, Any], subset: str | None) -> list[str]:
    """What makes one row unusable, as ``field 'x': problem`` strings."""
    problems = []
    if subset is None:
        problems.append(f"field '{S.SOURCE}': unrecognised value {data.get(S.SOURCE)!r} (expected one containing "
                        f"'PAM' or 'Music Arena', 'MusicEval', 'SongEval' or 'cmi-arena-annotation')")
    problems.extend(S.string_problems(data, _TEXT_FIELDS))
    clip = data.get(S.AUDIO_A)
    if not isinstance(clip, str) or S.declared(clip) is None:
        problems.append(f"field '{S.AUDIO_A}': missing or empty (every row needs its clip), got {clip!r}")
    if subset in PAIRWISE_SUBSETS and not (isinstance(data.get(S.AUDIO_B), str) and S.declared(data[S.AUDIO_B])):
        problems.append(f"field '{S.AUDIO_B}': missing or empty ({subset} rows compare two clips)")
    return problems


def _located(path: Path, lineno: int, problems: list[str]) -> list[str]:
    return [f"{path}:{lineno}: {p}" for p in problems]


def load_benchmark(path: str | Path, root: str | Path, *, split: str | None = "test", subset: str = "all",
                   skip_invalid: bool = False) -> BenchmarkData:
    """The rows of ``path`` with ``split`` (None: any) in ``subset`` (one of `schema.SUBSETS` or ``all``).

    Raises `DatasetError` listing every bad line and row unless ``skip_invalid``, which leaves them
    out and returns their descriptions; also raises when nothing is selected.
    """
    path = Path(path)
    if subset != "all" and subset not in S.SUBSETS:
        raise ConfigError(f"unknown subset {subset!r}; expected one of {', '.join(S.SUBSETS)} or all")
    if not path.is_file():
        raise DatasetError(f"'{path}': benchmark file not found")
    parsed, problems = read_json_lines(path, nan_as_null=True)
    rows = []
    for lineno, data in parsed:
        if split is not None and data.get(S.SPLIT) != split:
            continue
        row_subset = S.subset_of(data)
        if subset != "all" and row_subset != subset:
            continue
        row_problems = _row_problems(data, row_subset)
        if row_problems:
            problems.extend(_located(path, lineno, row_problems))
            continue
        rows.append(BenchRow(
            line=lineno, data=data, subset=row_subset,
            audio_a=resolve_path(data[S.AUDIO_A], root), audio_b=resolve_path(data.get(S.AUDIO_B), root),
            ref_audio=resolve_path(data.get(S.REF_AUDIO), root),
            text=data.get(S.PROMPT) or "", lyrics=data.get(S.LYRICS) or ""))
    if problems and not skip_invalid:
        raise DatasetError(f"{len(problems)} problem(s) in the benchmark file:{S.list_problems(problems)}\n"
                           "Fix the file, or pass --skip-invalid to leave these lines out.")
    if not rows:
        raise DatasetError(f"'{path}': no usable rows with split == {split!r} in subset {subset!r}")
    return BenchmarkData(rows=rows, skipped=problems)
