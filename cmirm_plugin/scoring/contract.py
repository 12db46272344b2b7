"""The scorer contract: what any reward model must offer to be used by cmirm.

A scorer is any object with

* ``sr``: the sample rate it scores at (clips at other rates are resampled by the scorer itself);
* ``axes``: the names of its score columns, e.g. ``("alignment", "musicality")`` for CMI-RM or
  ``("aesthetics",)`` for a single-axis model. Policies (``--policy axis:<name>``) refer to them;
* ``score_batch(audios, instructions, sample_rate=None) -> array [N, len(axes)]`` (higher is better):
  ``audios`` are file paths, encoded bytes, `Audio`, or waveforms (arrays/tensors ``[T]`` or
  ``[C, T]`` with ``sample_rate``; or one ``[B, T]`` array for the whole batch); ``instructions``
  is one `Instruction` for every clip or one per clip. `as_clips` / `as_instructions` normalise
  both, and ``Audio.coerce(clip, sample_rate)`` turns any clip into an `Audio`.

Subclassing is not required. A scorer raises a `CmirmError` (e.g. `AudioError`) or `OSError` for
an input it cannot score; `score_isolated` then finds the bad items so the others still get scores.
`cmirm_plugin.scoring.loader.load_scorer` is the one way to build a scorer from a spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import numpy as np

from cmirm_plugin.errors import CmirmError, ConfigError, ScorerUnavailable
from cmirm_plugin.records import Instruction, Scores

if TYPE_CHECKING:
    from cmirm_plugin.audio import AudioLike


@runtime_checkable
class Scorer(Protocol):
    """What every scorer offers (see the module docstring)."""

    @property
    def sr(self) -> int: ...

    @property
    def axes(self) -> tuple[str, ...]: ...

    def score_batch(self, audios: Sequence["AudioLike"], instructions: Instruction | Sequence[Instruction],
                    sample_rate: int | None = None) -> np.ndarray: ...


def check_scorer(scorer: Any, name: str) -> Scorer:
    """``scorer`` itself when it honours the contract, else a `ConfigError` naming ``name`` and what is missing."""
    problems = []
    sr = getattr(scorer, "sr", None)
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        problems.append(f"an 'sr' (positive int sample rate), got {sr!r}")
    axes = getattr(scorer, "axes", None)
    if not isinstance(axes, (tuple, list)) or not axes or not all(isinstance(a, str) and a for a in axes) \
            or len(set(axes)) != len(axes):
        problems.append(f"'axes' (distinct non-empty names of its score columns), got {axes!r}")
    if not callable(getattr(scorer, "score_batch", None)):
        problems.append("a callable 'score_batch(audios, instructions, sample_rate=None)'")
    if problems:
        raise ConfigError(f"scorer {name} does not honour the scorer contract: it needs " + "; ".join(problems))
    return scorer


def as_clips(audios: Any) -> list[Any]:
    """The clips of ``audios`` as a list: a sequence as given, or the rows of one ``[B, T]`` / ``[B, C, T]`` array."""
    if hasattr(audios, "ndim") and hasattr(audios, "shape"):
        if audios.ndim not in (2, 3):
            raise CmirmError(f"a waveform batch must have shape [B, T] or [B, C, T], got {tuple(audios.shape)}; "
                             "pass one clip as a list of one")
        return list(audios)
    if isinstance(audios, (str, bytes)):
        raise CmirmError("audios must be a sequence of clips; pass one clip as a list of one")
    return list(audios)


def as_instructions(instructions: Instruction | Sequence[Instruction], n: int) -> list[Instruction]:
    """One instruction per clip: ``instructions`` repeated ``n`` times, or checked to hold ``n``."""
    if isinstance(instructions, Instruction):
        return [instructions] * n
    instructions = list(instructions)
    if len(instructions) != n:
        raise CmirmError(f"got {n} clips but {len(instructions)} instructions")
    bad = [type(i).__name__ for i in instructions if not isinstance(i, Instruction)]
    if bad:
        raise CmirmError(f"instructions must be Instruction records, got {bad[0]}")
    return instructions


def check_output(output: Any, n: int, axes: Sequence[str], name: str) -> np.ndarray:
    """``output`` of ``score_batch`` as float64 ``[n, len(axes)]``; a `CmirmError` naming ``name`` otherwise.

    Non-finite values are allowed here (the callers decide: rankings refuse them, benchmarks drop them).
    """
    try:
        array = np.asarray(output, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CmirmError(f"scorer {name}: score_batch returned {type(output).__name__}, expected a float array "
                         f"[{n}, {len(axes)}] ({exc})") from exc
    if array.shape != (n, len(axes)):
        raise CmirmError(f"scorer {name}: score_batch returned shape {list(array.shape)} for {n} clips; expected "
                         f"[{n}, {len(axes)}] (columns {', '.join(axes)})")
    return array


@dataclass(frozen=True)
class ScoreOutcome:
    """The scores of one clip, or why it has none."""

    scores: Scores | None
    error: str | None = None


def score_isolated(scorer: Scorer, audios: Sequence[Any], instructions: Instruction | Sequence[Instruction],
                   sample_rate: int | None = None, name: str = "scorer") -> list[ScoreOutcome]:
    """Score ``audios`` in one batch; when the scorer rejects the batch, find the bad clips one by one.

    A clip the scorer cannot read (`CmirmError`, `OSError`), or one given a non-finite score, gets an
    error instead of failing the others (an item's scores never depend on its batch, so the
    others' scores are those of the batch call). `ScorerUnavailable` (the scorer itself cannot
    score, e.g. its server is gone) and other exceptions (bugs) propagate.
    """
    clips = as_clips(audios)
    insts = as_instructions(instructions, len(clips))
    if not clips:
        return []
    axes = tuple(scorer.axes)
    try:
        rows = check_output(scorer.score_batch(clips, insts, sample_rate), len(clips), axes, name)
    except ScorerUnavailable:
        raise
    except (CmirmError, OSError) as exc:
        if len(clips) == 1:
            return [ScoreOutcome(None, f"{type(exc).__name__}: {exc}")]
        return [score_isolated(scorer, [c], [i], sample_rate, name)[0] for c, i in zip(clips, insts)]
    outcomes = []
    for row in rows:
        bad = [axis for axis, value in zip(axes, row) if not np.isfinite(value)]
        outcomes.append(ScoreOutcome(None, f"scorer {name} returned non-finite {', '.join(bad)}") if bad
                        else ScoreOutcome(Scores.from_array(row, axes)))
    return outcomes


def cmi_columns(axes: Sequence[str], name: str) -> tuple[int, int]:
    """Columns of (alignment, musicality) in a scorer's ``axes``, for uses that need CMI-RM's two axes.

    CMI-RewardBench and the reward judge compare alignment and musicality. A scorer with both axes
    gives those columns; a single-axis scorer's one score stands for both; anything else is refused.
    """
    axes = tuple(axes)
    if "alignment" in axes and "musicality" in axes:
        return axes.index("alignment"), axes.index("musicality")
    if len(axes) == 1:
        return 0, 0
    raise ConfigError(f"scorer {name} has axes {', '.join(axes)}; this needs 'alignment' and 'musicality' "
                      "(or a single-axis scorer, whose one score stands for both)")
