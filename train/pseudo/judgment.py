"""`Judgment`: both of a judge's replies on one pair, as one record of the judgments manifest.

The judgments manifest (``<out>.judgments.jsonl``) is the run's source of truth: one line per
finished pair, appended as soon as the pair is done, whatever the verdicts. Resuming skips the
pairs it holds, and the pseudo-pair file is (re)derived from it, so changing ``--ties`` /
``--filter`` on a rerun costs no judge calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from cmirm_plugin.errors import ManifestError
from train.pseudo.consistency import ORDERS, AxisDecision, Order, TiePolicy, decide_axis
from train.pseudo.judges.base import AxisVerdict, Choice, JudgeReply


def reply_to_dict(reply: JudgeReply) -> dict[str, Any]:
    """``{"raw": ..., "verdicts": {axis: choice or null}, "errors": {axis: message}}``."""
    return {"raw": reply.raw,
            "verdicts": {axis: v.choice for axis, v in reply.verdicts.items()},
            "errors": {axis: v.error for axis, v in reply.verdicts.items() if v.error is not None}}


def reply_from_dict(data: Mapping[str, Any]) -> JudgeReply:
    errors = data.get("errors") or {}
    verdicts = {axis: AxisVerdict(choice, errors.get(axis) if choice is None else None)
                for axis, choice in data["verdicts"].items()}
    return JudgeReply(verdicts, data.get("raw"))


@dataclass(frozen=True)
class Judgment:
    """A judge's replies in both orders on one pair (``line`` is where the pair was read)."""

    pair_id: str
    line: int
    judge: str
    axes: tuple[str, ...]
    replies: Mapping[Order, JudgeReply]

    def choice(self, order: Order, axis: str) -> Choice | None:
        """The positional choice of ``order`` on ``axis`` (None if that answer was an error)."""
        return self.replies[order].verdicts[axis].choice

    def decide(self, ties: TiePolicy) -> dict[str, AxisDecision]:
        """The position-consistency decision on each axis."""
        return {axis: decide_axis(self.choice("ab", axis), self.choice("ba", axis), ties) for axis in self.axes}

    def answers(self) -> dict[str, Any]:
        """Both replies, JSON-ready, keyed by order."""
        return {order: reply_to_dict(self.replies[order]) for order in ORDERS}

    def to_dict(self) -> dict[str, Any]:
        return {"pair_id": self.pair_id, "line": self.line, "judge": self.judge, "axes": list(self.axes),
                "orders": self.answers()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "judgment") -> "Judgment":
        """Rebuild a record; raise `ManifestError` naming ``where`` when it is not one of ours."""
        try:
            axes = tuple(data["axes"])
            replies = {order: reply_from_dict(data["orders"][order]) for order in ORDERS}
            if any(set(r.verdicts) != set(axes) for r in replies.values()):
                raise ValueError("verdict axes differ from 'axes'")
            return cls(str(data["pair_id"]), int(data["line"]), str(data["judge"]), axes, replies)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"{where}: not a pseudo-label judgment record ({exc!r})") from exc
