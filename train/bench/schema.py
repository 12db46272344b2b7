"""The CMI-RewardBench row schema: field names, and what a row means (spec §5.2, §5.4).

One module decides a row's subset, its Music Arena month and its CMI-Pref modality group, so
the runner (which scores rows) and the metrics (which group them) can never disagree. It also
holds the field readers every row file shares (benchmark rows, preference pairs): what counts as
absent, path resolution, numbers, type checks and problem listings. It stays light (no scipy,
no runner), so `train.data` can use it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cmirm_plugin.records import MODALITIES, Instruction

# Fields of the benchmark file (all_test.jsonl).
AUDIO_A = "audio-path"
AUDIO_B = "audio2"
PROMPT = "prompt"
LYRICS = "lyrics"
REF_AUDIO = "ref-audio-path"
SOURCE = "source"
SPLIT = "split"
MODALITY = "modality"
MUSICALITY = "musicality"
ALIGNMENT = "text-music alignment"
PREFERENCE = "preference"
PREF_MUSICALITY = "preference-musicality"
PREF_ALIGNMENT = "preference-alignment"
CONFIDENCE_PREFIX = "confidence_"

# Fields the runner adds to each row of results.jsonl (names as the official runner, §5.4).
DATASET = "benchmark_dataset"
PRED_ALIGNMENT = "predicted_text-music alignment"
PRED_MUSICALITY = "predicted_musicality"
PRED_ALIGNMENT_B = "predicted_text-music alignment_b"
PRED_MUSICALITY_B = "predicted_musicality_b"
PRED_PREFERENCE = "predicted_preference"
PRED_PREF_MUSICALITY = "predicted_preference-musicality"
PRED_PREF_ALIGNMENT = "predicted_preference-alignment"
VALID_A = "inference_valid_a"
VALID_B = "inference_valid_b"
ERROR = "inference_error"

# Our additions: a stable row key (resuming), the source line, and the clips' lengths (seconds,
# from the files' headers) that the optional duration bins use.
ROW_ID = "bench_row_id"
LINE = "bench_line"
DURATION_A = "bench_duration_a"
DURATION_B = "bench_duration_b"

#: The four subsets, in the order the runner scores them (§5.3).
SUBSETS = ("PAM", "MusicEval", "MusicArena", "CMI-Pref")
#: How many problems an error message lists before summarising the rest.
MAX_LISTED = 20

_NO_REF = ("text", "text+lyrics")
_INSTRUMENTAL = ("text", "text+ref")


def subset_of(row: Mapping[str, Any]) -> str | None:
    """The subset a row belongs to, from its ``source`` (§5.2); None when it matches none.

    Includes the official evaluator's fallback: an unmatched row whose clip path has a
    ``MusicArena_data/<x>/<month>`` layout is Music Arena. We apply it in the runner too, so every
    row the metrics would count is also scored.
    """
    source = row.get(SOURCE)
    source = "" if source is None else str(source)
    if "PAM" in source:
        return "PAM"
    if source in ("MusicEval", "SongEval"):
        return "MusicEval"
    if "Music Arena" in source:
        return "MusicArena"
    if source == "cmi-arena-annotation":
        return "CMI-Pref"
    if musicarena_month(row.get(AUDIO_A)) is not None:
        return "MusicArena"
    return None


def musicarena_month(path: Any) -> str | None:
    """The path component two after ``MusicArena_data`` (e.g. ``01-2025JULAUG``), or None."""
    if not isinstance(path, str):
        return None
    parts = [p for p in re.split(r"[\\/]+", path) if p]
    if "MusicArena_data" not in parts:
        return None
    index = parts.index("MusicArena_data") + 2
    return parts[index] if index < len(parts) else None


def declared(value: Any) -> str | None:
    """A row field as our readers see it: JSON null and blank strings are absent (None); other values as text."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def string_problems(row: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """``field 'x': expected a string or null, ...`` for each of ``names`` present with another type."""
    return [f"field '{name}': expected a string or null, got {type(row[name]).__name__} {row[name]!r}"
            for name in names if row.get(name) is not None and not isinstance(row[name], str)]


def resolve_path(value: Any, root: str | Path) -> Path | None:
    """A row path joined to ``root`` and normalised (relative) or kept (absolute); None when absent (§5.1)."""
    text = declared(value)
    if text is None:
        return None
    return Path(text) if os.path.isabs(text) else Path(os.path.normpath(os.path.join(root, text)))


def to_number(value: Any) -> float:
    """A numeric field as a float, NaN when it is not numeric (like ``pd.to_numeric(errors="coerce")``)."""
    if isinstance(value, bool) or value is None:
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return math.nan


def list_problems(problems: Sequence[str], limit: int = MAX_LISTED) -> str:
    """The first ``limit`` problems, one per indented line, then how many more there are."""
    listed = "".join(f"\n  {p}" for p in problems[:limit])
    return listed + (f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else "")


def modality_group(row: Mapping[str, Any]) -> str:
    """The CMI-Pref category of a row: its ``modality`` field if present, else inferred.

    Inference uses `Instruction.modality` on the row's lyrics and reference path, so a JSON null
    counts as absent. The official evaluator counts null as present (it tests ``str(value)``,
    which is ``"None"``); that only differs on files that write null for an absent input.
    """
    given = declared(row.get(MODALITY))
    if given is not None:
        return given
    return Instruction(text=declared(row.get(PROMPT)), lyrics=declared(row.get(LYRICS)),
                       ref_audio=declared(row.get(REF_AUDIO))).modality


def ref_category(modality: str) -> str | None:
    """``no_ref`` or ``ref`` for the four known categories, None for any other value."""
    if modality not in MODALITIES:
        return None
    return "no_ref" if modality in _NO_REF else "ref"


def modality_type(modality: str) -> str | None:
    """``instru`` (no lyrics) or ``vocal`` for the four known categories, None otherwise."""
    if modality not in MODALITIES:
        return None
    return "instru" if modality in _INSTRUMENTAL else "vocal"
