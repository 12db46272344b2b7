"""The resumable pseudo-labelling loop: judge each pair in both orders, keep what is consistent.

Files of a run with ``out = DIR/pseudo.jsonl``:

* ``DIR/pseudo.judgments.jsonl``: one `Judgment` per finished pair, appended (flushed) as soon as
  the pair is done, errors included. A crash loses at most the pair in flight; a rerun skips every
  pair recorded here (keyed by pair id) and refuses one written by another judge.
* ``DIR/pseudo.jsonl``: the pseudo pairs ``cmirm train`` reads (`train.pseudo.pairs.pseudo_row`),
  in input order. At the start of each run it is rewritten from the judgments under the current
  ``--ties`` / ``--filter``, then appended to pair by pair, so it always matches the judgments.
* ``DIR/pseudo.report.json``: the `PseudoLabelReport` (also printed).

Only a judge that cannot answer at all (`JudgeUnavailable`) stops the run; an unusable answer, or a
clip that cannot be decoded, is recorded as an error on that pair and order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cmirm_plugin.errors import AudioError, CmirmError
from cmirm_plugin.manifest import ManifestWriter, iter_records, rewrite_records
from cmirm_plugin.records import AXES
from train.pseudo.consistency import ORDERS, FilterMode, TiePolicy, check_policy, row_labels
from train.pseudo.judges.base import Judge, JudgeReply
from train.pseudo.judgment import Judgment
from train.pseudo.pairs import UnlabeledPair, load_unlabeled_pairs, pseudo_row
from train.pseudo.prompt import check_axes
from train.pseudo.report import PseudoLabelReport

@dataclass(frozen=True)
class PseudoLabelOptions:
    """Which axes to label and how to turn two answers into labels (`train.pseudo.consistency`)."""

    axes: Sequence[str] = field(default=AXES)
    ties: TiePolicy = "drop"
    filter: FilterMode = "per-axis"

    def __post_init__(self) -> None:
        object.__setattr__(self, "axes", check_axes(self.axes))
        check_policy(self.ties, self.filter)


def judgments_path(out: str | Path) -> Path:
    """The judgments manifest that goes with the pseudo-pair file ``out``."""
    out = Path(out)
    return out.with_name(out.stem + ".judgments.jsonl")


def default_report_path(out: str | Path) -> Path:
    """The default report of the pseudo-pair file ``out`` (named after it, so outputs sharing a folder keep theirs)."""
    out = Path(out)
    return out.with_name(out.stem + ".report.json")


def judge_pair(judge: Judge, pair: UnlabeledPair, axes: Sequence[str]) -> Judgment:
    """Ask ``judge`` about ``pair`` in both orders; a clip that cannot be read is that order's error."""
    replies = {}
    for order in ORDERS:
        try:
            reply = judge.judge(pair.view(order), axes)
        except AudioError as exc:
            reply = JudgeReply.failed(axes, f"audio: {exc}")
        if set(reply.verdicts) != set(axes):
            raise CmirmError(f"judge {judge.id} answered axes {sorted(reply.verdicts)}, asked {list(axes)}")
        replies[order] = reply
    return Judgment(pair.id, pair.line, judge.id, tuple(axes), replies)


def _finished(path: Path, judge_id: str, axes: Sequence[str]) -> dict[str, Judgment]:
    """The judgments already on disk, checked to come from this judge and to cover ``axes``."""
    done: dict[str, Judgment] = {}
    for i, record in enumerate(iter_records(path), start=1):
        judgment = Judgment.from_dict(record, where=f"{path}: record {i}")
        if judgment.judge != judge_id:
            raise CmirmError(f"'{path}': pairs were judged by '{judgment.judge}', this run's judge is '{judge_id}'. "
                             "Write to another --out (or delete that file and its pseudo pairs) to change judges.")
        missing = [a for a in axes if a not in judgment.axes]
        if missing:
            raise CmirmError(f"'{path}': earlier judgments cover axes {list(judgment.axes)}, not {missing}. "
                             "Write to another --out to judge more axes.")
        done[judgment.pair_id] = judgment
    return done


class _Labeller:
    """Turns judgments into output rows under the options, counting everything in the report."""

    def __init__(self, options: PseudoLabelOptions, report: PseudoLabelReport) -> None:
        self.options = options
        self.report = report

    def row(self, pair: UnlabeledPair, judgment: Judgment) -> dict[str, Any] | None:
        opts = self.options
        decisions = judgment.decide(opts.ties)
        labels = row_labels(decisions, opts.axes, opts.filter)
        self.report.add(judgment, decisions, labels)
        if labels is None:
            return None
        provenance = {"source": "cmirm pseudo-label", "pair_id": pair.id, "ties": opts.ties, "filter": opts.filter,
                      "axes": list(opts.axes), "consistent": {a: decisions[a].consistent for a in opts.axes}}
        return pseudo_row(pair, labels, {"judge": judgment.judge, "judge_answers": judgment.answers(),
                                         "pseudo_label": provenance})


def pseudo_label(pairs_file: str | Path, out: str | Path, judge: Judge, dataset_root: str | Path | None = None,
                 options: PseudoLabelOptions = PseudoLabelOptions(), report_path: str | Path | None = None,
                 console: Console | None = None, progress: bool = True) -> PseudoLabelReport:
    """Pseudo-label the unlabeled pairs of ``pairs_file`` with ``judge`` into ``out`` (module docstring).

    ``dataset_root`` is where the pair file's relative clip paths start (default: its folder);
    ``report_path`` defaults to `default_report_path` (``<out stem>.report.json`` next to ``out``).
    Returns the report.
    """
    console = console or Console()
    out = Path(out)
    if out.resolve() == Path(pairs_file).resolve():
        raise CmirmError(f"--out '{out}' is the input pair file; choose another path")
    data = load_unlabeled_pairs(pairs_file, dataset_root)
    jpath = judgments_path(out)
    done = _finished(jpath, judge.id, options.axes)
    report = PseudoLabelReport(judge.id, tuple(options.axes), options.ties, options.filter, len(data.pairs),
                               len(data.duplicate_lines))
    labeller = _Labeller(options, report)
    earlier = [p for p in data.pairs if p.id in done]
    rewrite_records(out, (row for p in earlier if (row := labeller.row(p, done[p.id])) is not None))
    report.judged_before = len(earlier)
    pending = [p for p in data.pairs if p.id not in done]
    columns = (TextColumn("judging pairs"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with ManifestWriter(jpath) as judgments, ManifestWriter(out) as rows, \
                Progress(*columns, console=console, disable=not progress) as bar:
            task = bar.add_task("judge", total=len(pending))
            for pair in pending:
                judgment = judge_pair(judge, pair, options.axes)
                judgments.append(judgment.to_dict())
                report.judged_now += 1
                row = labeller.row(pair, judgment)
                if row is not None:
                    rows.append(row)
                bar.advance(task)
    finally:
        report.write(report_path if report_path is not None else default_report_path(out))
        report.print(console)
    return report
