"""The judge interface: one question, "which of these two clips is better on each axis?".

A judge sees a `PairView` (the instruction, then a *first* and a *second* clip) and answers with a
`JudgeReply`: a verdict per requested axis (``first``, ``second`` or ``tie``, or an error) plus its
raw answer for the record. It never learns which clip is "A" in the pair file: the runner asks
in both orders and maps positions back (`train.pseudo.consistency`), which is what exposes a
judge's position bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol, Sequence

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import Instruction

#: A judge's answer for one axis, in the positions it was shown.
Choice = Literal["first", "second", "tie"]
CHOICES: tuple[Choice, ...] = ("first", "second", "tie")


class JudgeUnavailable(CmirmError):
    """The judge cannot answer at all (server gone after all retries, bad credentials, unknown model).

    The run stops; every pair finished so far is kept, and a rerun resumes after it.
    """


@dataclass(frozen=True)
class PairView:
    """What a judge is shown: the instruction, then two clips in presentation order."""

    instruction: Instruction
    first: Path
    second: Path


@dataclass(frozen=True)
class AxisVerdict:
    """One axis of a reply: a `Choice`, or None with the reason the answer was unusable."""

    choice: Choice | None
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.choice is None) == (self.error is None):
            raise ValueError("an AxisVerdict holds either a choice or an error")
        if self.choice is not None and self.choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {self.choice!r}")


@dataclass(frozen=True)
class JudgeReply:
    """A judge's answer to one view: a verdict per axis and its raw answer (JSON-ready, for the record)."""

    verdicts: Mapping[str, AxisVerdict]
    raw: Any = None

    @classmethod
    def failed(cls, axes: Sequence[str], error: str, raw: Any = None) -> "JudgeReply":
        """The same error on every axis (an answer that could not be obtained or read at all)."""
        return cls({axis: AxisVerdict(None, error) for axis in axes}, raw)


def judge_id(*parts: str, **settings: Any) -> str:
    """A judge's id: ``parts`` and then ``key=value`` per setting, joined by ``:``.

    Every setting that can change an answer (model, prompt version, how much of each clip is
    heard and at which rate, answer length, margin ...) belongs in it: the id is what keeps a
    rerun with other settings from mixing its judgments with earlier ones.
    """
    values = (f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in settings.items())
    return ":".join([*parts, *values])


class Judge(Protocol):
    """Anything that compares two clips under an instruction on the requested axes.

    ``id`` names the judge and every setting that changes its answers (`judge_id`); it is written
    into every output row and a resumed run refuses to mix judges in one output file.
    """

    id: str

    def judge(self, view: PairView, axes: Sequence[str]) -> JudgeReply:
        """Compare ``view.first`` with ``view.second`` on each of ``axes``."""
        ...
