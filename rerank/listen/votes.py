"""Human votes as CMI-Pref preference pairs: one JSON line per vote in ``RUN_DIR/votes.jsonl``.

A row is a pair in the layout ``cmirm train --pairs`` reads (spec §5.2), plus who voted, when,
and which candidates of the run were compared::

    {"audio-path": "candidates/<A>.wav", "audio2": "candidates/<B>.wav", "prompt": "...", "lyrics": "",
     "ref-audio-path": "", "preference-alignment": "model_a", "preference-musicality": "neither",
     "confidence_preference-alignment": 4, "confidence_preference-musicality": 2, "modality": "text",
     "voter": "ana", "timestamp": "2026-01-31T12:00:00Z", "candidate-a": "<A>", "candidate-b": "<B>",
     "instruction-id": "..."}

Clip paths are relative to the run directory, which is the folder of ``votes.jsonl``, so the
pair reader's default dataset root (the pair file's folder) finds them: ``cmirm train --pairs
RUN_DIR/votes.jsonl`` works as is. A reference clip inside the run directory is written relative
to it too; one elsewhere keeps the absolute path the run recorded. Choices map to labels as
A -> ``model_a``, B -> ``model_b``, both -> ``both``, neither -> ``neither``: the pair reader and
the official evaluator read ``neither`` as ``both``, a tie (``cmirm train --both target`` aims the
two clips at equal scores, ``--both skip`` leaves that axis out), while the file keeps what the
reviewer said. Agreement figures count only decisive votes (A or B) for the same reason.

Appends hold an exclusive lock (``fcntl.flock`` on ``.votes.jsonl.lock``), so several reviewers,
threads or processes can vote at once; every row is a complete line, so a restart loses nothing.
"""

from __future__ import annotations

import fcntl
import os
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from cmirm_plugin.errors import CmirmError, ConfigError
from cmirm_plugin.manifest import ManifestWriter, read_json_lines, rewrite_records
from rerank.listen.pairs import Pair
from rerank.listen.run_view import ListenRun
from rerank.run_records import require_run_dir

VOTES = "votes.jsonl"
#: The answers a reviewer gives per question, and the label each is written as.
CHOICES = ("A", "B", "both", "neither")
LABELS = {"A": "model_a", "B": "model_b", "both": "both", "neither": "neither"}
#: The questions (vote axes) and their CMI-Pref label fields.
AXIS_FIELDS = {"alignment": "preference-alignment", "musicality": "preference-musicality"}
CONFIDENCE_PREFIX = "confidence_"
CONFIDENCES = (1, 2, 3, 4, 5)
AUDIO_A, AUDIO_B, PROMPT, LYRICS, REF_AUDIO = "audio-path", "audio2", "prompt", "lyrics", "ref-audio-path"
VOTER, TIMESTAMP, CANDIDATE_A, CANDIDATE_B, INSTRUCTION = "voter", "timestamp", "candidate-a", "candidate-b", \
    "instruction-id"
MODALITY, RUN = "modality", "run"
#: Rows of merged files name their run directory in ``run``.
ALL = "all"
_MAX_VOTER = 64
_MAX_LISTED = 20


class VoteRefused(CmirmError):
    """A vote that cannot be recorded (an answer is missing, ...); the message says why."""


class PairUnavailable(VoteRefused):
    """A vote on a pair that cannot take it (a clip's file is gone, the voter already voted on it)."""


def confidence_field(axis: str) -> str:
    return CONFIDENCE_PREFIX + AXIS_FIELDS[axis]


def _tie(label: str) -> bool:
    return label in ("both", "neither")


def _path_in_run(path: Path, root: Path) -> str:
    """``path`` relative to the run directory when inside it, else absolute."""
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    return os.path.relpath(path, root) if path.is_relative_to(root) else str(path)


def vote_row(run: ListenRun, pair: Pair, answers: Mapping[str, tuple[str | None, int | None]], voter: str,
             when: datetime | None = None) -> dict[str, Any]:
    """The CMI-Pref row of a vote on ``pair`` (A = ``pair.a``); `VoteRefused` says what is wrong.

    ``answers`` maps each question of `AXIS_FIELDS` to (choice of `CHOICES`, confidence 1-5).
    """
    voter = (voter or "").strip()
    if not voter:
        raise VoteRefused("enter your name (voter id) before voting")
    if len(voter) > _MAX_VOTER:
        raise VoteRefused(f"voter id is longer than {_MAX_VOTER} characters")
    row_labels: dict[str, Any] = {}
    for axis, label_field in AXIS_FIELDS.items():
        choice, confidence = answers.get(axis, (None, None))
        if choice not in CHOICES:
            raise VoteRefused(f"answer the {axis} question ({' / '.join(CHOICES)})")
        if confidence not in CONFIDENCES:
            raise VoteRefused(f"give a confidence of 1-5 for the {axis} answer, got {confidence!r}")
        row_labels[label_field] = LABELS[choice]
        row_labels[confidence_field(axis)] = confidence
    a, b = run.candidate(pair.a), run.candidate(pair.b)
    if a.instruction.id != b.instruction.id or a.id == b.id:
        raise VoteRefused(f"candidates {a.id!r} and {b.id!r} are not two candidates of one instruction")
    for name, candidate in (("A", a), ("B", b)):
        if not candidate.playable:
            raise PairUnavailable(f"clip {name} ({candidate.id}) is gone: its file {candidate.audio} no longer "
                                  "exists, so this vote was not recorded; the pair is skipped")
    instruction = a.instruction
    ref = instruction.to_dict()["ref_audio"]
    when = when or datetime.now(timezone.utc)
    return {
        AUDIO_A: _path_in_run(a.audio, run.root), AUDIO_B: _path_in_run(b.audio, run.root),  # type: ignore[arg-type]
        PROMPT: instruction.text or "", LYRICS: instruction.lyrics or "",
        REF_AUDIO: _path_in_run(Path(ref), run.root) if ref else "",
        **row_labels, MODALITY: instruction.modality, VOTER: voter,
        TIMESTAMP: when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        CANDIDATE_A: a.id, CANDIDATE_B: b.id, INSTRUCTION: instruction.id,
    }


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_vote_row(row: Mapping[str, Any]) -> list[str]:
    """What is wrong with a votes-file row (empty when it is a usable vote)."""
    problems = [f"field '{name}': missing or not a string" for name in (AUDIO_A, AUDIO_B, CANDIDATE_A, CANDIDATE_B)
                if not isinstance(row.get(name), str) or not row.get(name)]
    labelled = 0
    for axis, label_field in AXIS_FIELDS.items():
        label = row.get(label_field)
        if label in (None, ""):
            continue
        labelled += 1
        if label not in LABELS.values():
            problems.append(f"field '{label_field}': unknown label {label!r} (expected {', '.join(LABELS.values())})")
        confidence = row.get(confidence_field(axis))
        if confidence is not None and confidence not in CONFIDENCES:
            problems.append(f"field '{confidence_field(axis)}': expected 1-5, got {confidence!r}")
    if not labelled:
        problems.append("no label: " + " and ".join(repr(f) for f in AXIS_FIELDS.values()) + " are missing")
    return problems


class VoteLog:
    """``RUN_DIR/votes.jsonl``: locked appends, and reads of every complete row."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / VOTES
        self._lock = Path(run_dir) / f".{VOTES}.lock"

    def append(self, row: Mapping[str, Any]) -> None:
        with _locked(self._lock), ManifestWriter(self.path) as writer:
            writer.append(dict(row))

    def rows(self) -> list[dict[str, Any]]:
        """The usable rows; `ConfigError` listing the bad lines (file:line: problem) if there are any.

        A last line without its newline is a write cut short by a crash: it is left out (the next
        append removes it), as manifests do.
        """
        if not self.path.exists():
            return []
        with _locked(self._lock):
            parsed, problems = read_json_lines(self.path)
            data = self.path.read_bytes()
        cut = data.count(b"\n") + 1 if data and not data.endswith(b"\n") else None
        problems = [p for p in problems if p.line != cut]
        rows = []
        for line, row in parsed:
            found = check_vote_row(row)
            problems.extend(f"{self.path}:{line}: {p}" for p in found)
            if not found:
                rows.append(row)
        if problems:
            listed = "".join(f"\n  {p}" for p in problems[:_MAX_LISTED])
            more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
            raise ConfigError(f"{len(problems)} problem(s) in {self.path}:{listed}{more}\n"
                              "Fix or remove those lines (each line is one vote).")
        return rows


def voted_pairs(rows: Iterable[Mapping[str, Any]], voter: str) -> set[tuple[str, str]]:
    """The pairs (unordered, as `Pair.key`) ``voter`` has voted on."""
    voter = voter.strip()
    return {Pair("", row[CANDIDATE_A], row[CANDIDATE_B]).key for row in rows if row.get(VOTER) == voter}


# ----------------------------------------------------------------------------------------------- agreement


@dataclass
class ModelAgreement:
    """How often the reward model's scores pick the clip the reviewers picked, on one axis.

    ``votes``: rows with a label on this axis; ``ties``: both / neither votes (not counted);
    ``decisive``: A / B votes on two candidates the model scored; ``agreed``: those where the
    model scores the chosen clip strictly higher.
    """

    votes: int = 0
    ties: int = 0
    decisive: int = 0
    agreed: int = 0

    @property
    def rate(self) -> float | None:
        return self.agreed / self.decisive if self.decisive else None


@dataclass
class ReviewerAgreement:
    """How often two reviewers who voted on the same pair gave it the same label, on one axis.

    Labels are compared after putting both votes in one A/B order, with both and neither as one
    tie label. Each reviewer's latest vote on a pair counts. ``pairs``: pairs with votes of two or
    more reviewers; ``comparisons``: reviewer pairs over them; ``agreed``: those with equal labels.
    """

    pairs: int = 0
    comparisons: int = 0
    agreed: int = 0

    @property
    def rate(self) -> float | None:
        return self.agreed / self.comparisons if self.comparisons else None


def _model_axes(run: ListenRun) -> dict[str, str]:
    """Vote axis -> the run scorer's axis that stands for it (none when the scorer has no such axes)."""
    if not run.axes or run.scorer is None:
        return {}
    try:
        from cmirm_plugin.scoring.contract import cmi_columns   # numpy: kept off the CLI's import path

        columns = cmi_columns(run.axes, run.scorer)
    except ConfigError:
        return {}
    return {axis: run.axes[column] for axis, column in zip(AXIS_FIELDS, columns)}


def model_agreement(rows: Iterable[Mapping[str, Any]], run: ListenRun,
                    by_modality: bool = False) -> dict[str, dict[str, ModelAgreement]]:
    """Reward model vs votes: {modality or `ALL`: {axis: ModelAgreement}} (only `ALL` unless ``by_modality``).

    An axis the scorer cannot stand for (`cmi_columns`) is left out.
    """
    axes = _model_axes(run)
    table: dict[str, dict[str, ModelAgreement]] = defaultdict(lambda: {axis: ModelAgreement() for axis in axes})
    for row in rows:
        groups = [ALL] + ([row.get(MODALITY) or "?"] if by_modality else [])
        try:
            a, b = run.candidate(row[CANDIDATE_A]), run.candidate(row[CANDIDATE_B])
        except ConfigError:
            a = b = None
        for axis, model_axis in axes.items():
            label = row.get(AXIS_FIELDS[axis])
            if label in (None, ""):
                continue
            score_a, score_b = (run.scores(a), run.scores(b)) if a and b else (None, None)
            for group in groups:
                entry = table[group][axis]
                entry.votes += 1
                if _tie(label):
                    entry.ties += 1
                elif score_a is not None and score_b is not None:
                    entry.decisive += 1
                    model = "model_a" if score_a[model_axis] > score_b[model_axis] else "model_b"
                    entry.agreed += model == label
    return dict(table)


def _canonical(row: Mapping[str, Any], axis: str) -> tuple[tuple[str, str, str], str | None]:
    """The row's pair as (run, first id, second id) in sorted order, and its label in that order."""
    a, b = row[CANDIDATE_A], row[CANDIDATE_B]
    label = row.get(AXIS_FIELDS[axis])
    if label in (None, ""):
        return (row.get(RUN, ""), *Pair("", a, b).key), None
    if _tie(label):
        label = "tie"
    elif a > b:
        label = {"model_a": "model_b", "model_b": "model_a"}[label]
    return (row.get(RUN, ""), *Pair("", a, b).key), label


def reviewer_agreement(rows: Sequence[Mapping[str, Any]],
                       by_modality: bool = True) -> dict[str, dict[str, ReviewerAgreement]]:
    """Reviewer vs reviewer: {modality or `ALL`: {axis: ReviewerAgreement}} (see `ReviewerAgreement`)."""
    table: dict[str, dict[str, ReviewerAgreement]] = defaultdict(
        lambda: {axis: ReviewerAgreement() for axis in AXIS_FIELDS})
    for axis in AXIS_FIELDS:
        latest: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
        modality: dict[tuple[str, str, str], str] = {}
        for row in rows:
            key, label = _canonical(row, axis)
            if label is not None:
                latest[key][str(row.get(VOTER, ""))] = label
                modality[key] = row.get(MODALITY) or "?"
        for key, labels in latest.items():
            if len(labels) < 2:
                continue
            groups = [ALL] + ([modality[key]] if by_modality else [])
            for group in groups:
                entry = table[group][axis]
                entry.pairs += 1
                for x, y in combinations(labels.values(), 2):
                    entry.comparisons += 1
                    entry.agreed += x == y
    return dict(table)


def agreement_line(table: Mapping[str, ModelAgreement]) -> str:
    """One sentence: how often the reward model agreed with the decisive (A / B) votes, per axis."""
    if not table:
        return "The run's scorer has no alignment / musicality axes, so no model agreement is shown."
    parts = []
    for axis, entry in table.items():
        rate = "-" if entry.rate is None else f"{entry.rate:.0%}"
        ties = f", {entry.ties} both/neither left out" if entry.ties else ""
        parts.append(f"{axis} {entry.agreed} of {entry.decisive} ({rate}{ties})")
    return "Reward model agreed with the A/B votes on " + ", ".join(parts) + "."

# -------------------------------------------------------------------------------------------------- merging


@dataclass
class MergedVotes:
    """What `merge_votes` read (and wrote, when given ``out``)."""

    rows: list[dict[str, Any]]
    sources: list[Path]
    out: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)


def votes_source(path: str | Path) -> tuple[Path, Path]:
    """(run directory, votes file) of a run directory or of its ``votes.jsonl``."""
    path = Path(path)
    if path.is_file() and path.name == VOTES:
        return require_run_dir(path.parent), path
    root = require_run_dir(path)
    votes = root / VOTES
    if not votes.is_file():
        raise ConfigError(f"'{root}': no {VOTES} here yet (vote with `cmirm review {root}`)")
    return root, votes


def _rebase(value: str, root: Path, out_dir: Path) -> str:
    """A row path (relative to the run directory, or absolute) made relative to ``out_dir``."""
    if not value:
        return value
    absolute = Path(os.path.normpath(os.path.join(os.path.abspath(root), value)))
    return os.path.relpath(absolute, os.path.abspath(out_dir))


def merge_votes(sources: Sequence[str | Path], out: str | Path | None = None) -> MergedVotes:
    """Read the votes of several runs (and reviewers) into one list, each row naming its run in ``run``.

    With ``out``, write them as one pairs file whose clip paths are relative to ``out``'s folder
    (so ``cmirm train --pairs OUT`` finds them).
    """
    if not sources:
        raise ConfigError("give at least one run directory (or votes.jsonl) to merge")
    rows: list[dict[str, Any]] = []
    roots: list[Path] = []
    counts: dict[str, int] = {}
    out_path = Path(out) if out is not None else None
    for source in sources:
        root, _ = votes_source(source)
        if root.resolve() in roots:
            raise ConfigError(f"'{source}': run directory {root} is given twice")
        roots.append(root.resolve())
        found = VoteLog(root).rows()
        counts[str(root)] = len(found)
        for row in found:
            merged = {**row, RUN: str(root.resolve())}
            if out_path is not None:
                for name in (AUDIO_A, AUDIO_B, REF_AUDIO):
                    merged[name] = _rebase(row.get(name) or "", root, out_path.parent)
            rows.append(merged)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        rewrite_records(out_path, rows)
    return MergedVotes(rows, roots, out_path, counts)


def agreement_report(merged: MergedVotes, runs: Mapping[Path, ListenRun]) -> dict[str, Any]:
    """The JSON report of ``cmirm votes``: votes per run, reviewer and model agreement per modality and axis."""
    model: dict[str, dict[str, ModelAgreement]] = defaultdict(dict)
    for root, run in runs.items():
        rows = [r for r in merged.rows if r[RUN] == str(root)]
        for group, axes in model_agreement(rows, run, by_modality=True).items():
            for axis, entry in axes.items():
                total = model[group].setdefault(axis, ModelAgreement())
                for name in ("votes", "ties", "decisive", "agreed"):
                    setattr(total, name, getattr(total, name) + getattr(entry, name))
    reviewers = reviewer_agreement(merged.rows)

    def _entry(entry: Any) -> dict[str, Any]:
        return {**asdict(entry), "rate": entry.rate}

    return {
        "votes": len(merged.rows), "runs": merged.counts, "out": str(merged.out) if merged.out else None,
        "voters": sorted({str(r.get(VOTER, "")) for r in merged.rows}),
        "model": {group: {axis: _entry(e) for axis, e in axes.items()} for group, axes in model.items()},
        "reviewers": {group: {axis: _entry(e) for axis, e in axes.items()} for group, axes in reviewers.items()},
    }

