"""One run directory as the listening tools see it: each candidate joined with its ranking record.

The candidates, their audio, scores and errors come from the manifest (`rerank.run_records.read_run`);
rank, composite and the selected mark from ``ranking.jsonl`` (what the last ``cmirm generate`` /
``cmirm rerank`` wrote). The selection scorer is the ranking's, else the run's reward model
(`rerank.scaling_run.selection_scorer`). Fields a record carries beyond the ones this module
knows (search lineage, compute, ...) are kept as `ListenCandidate.extras`, so the report shows
them without knowing what they mean.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import iter_records
from cmirm_plugin.records import Instruction, Scores
from rerank.run_config import RunConfig, load_run_config
from rerank.run_records import CandidateView, RunPaths, read_run, require_run_dir, score_axes
from rerank.run_config import selection_scorer

#: Fields of a ``ranking.jsonl`` record that `ListenCandidate` shows in their own columns.
RANKING_FIELDS = frozenset({"id", "instruction", "index", "seed", "generator", "params", "audio_path", "scorer",
                            "scores", "composite", "rank", "eligible", "selected", "top_path", "errors", "policy",
                            "k"})
#: `CandidateView` fields shown in their own columns (any field added later is an extra).
VIEW_FIELDS = frozenset({"id", "instruction", "index", "seed", "generator", "params", "audio_path", "sample_rate",
                         "duration", "generation_error", "scores", "score_errors"})


@dataclass(frozen=True)
class ListenCandidate:
    """A candidate of the run: its manifest view, its audio file and its ranking record (if ranked)."""

    view: CandidateView
    audio: Path | None
    ranking: Mapping[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.view.id

    @property
    def instruction(self) -> Instruction:
        return self.view.instruction

    @property
    def audio_missing(self) -> bool:
        """Whether the candidate was generated but its audio file is gone."""
        return self.audio is not None and not self.audio.is_file()

    @property
    def playable(self) -> bool:
        """Whether it has an audio file on disk now."""
        return self.audio is not None and self.audio.is_file()

    @property
    def rank(self) -> int | None:
        return None if self.ranking is None else self.ranking.get("rank")

    @property
    def composite(self) -> float | None:
        return None if self.ranking is None else self.ranking.get("composite")

    @property
    def selected(self) -> bool:
        return bool(self.ranking and self.ranking.get("selected"))

    def errors(self) -> list[str]:
        """The manifest's errors (generation, scoring) and a missing audio file."""
        missing = [f"audio file missing: {self.audio}"] if self.audio_missing else []
        return self.view.errors() + missing

    def extras(self) -> dict[str, Any]:
        """Fields of the view and the ranking record beyond the known ones (e.g. search lineage, compute)."""
        out = {f.name: getattr(self.view, f.name) for f in dataclasses.fields(self.view)
               if f.name not in VIEW_FIELDS and getattr(self.view, f.name) not in (None, {}, [])}
        out.update({key: value for key, value in (self.ranking or {}).items()
                    if key not in RANKING_FIELDS and value not in (None, {}, [])})
        return out


@dataclass
class ListenRun:
    """A run directory's candidates in run order, the selection scorer and its axes."""

    root: Path
    config: RunConfig | None
    scorer: str | None
    axes: tuple[str, ...]
    candidates: list[ListenCandidate]
    policy: str | None = None
    k: int | None = None
    _by_id: dict[str, ListenCandidate] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {c.id: c for c in self.candidates}

    def candidate(self, candidate_id: str) -> ListenCandidate:
        """The candidate ``candidate_id``; `ConfigError` naming the run when it has none."""
        try:
            return self._by_id[candidate_id]
        except KeyError:
            raise ConfigError(f"{self.root}: no candidate {candidate_id!r} in this run") from None

    def instructions(self) -> list[tuple[Instruction, list[ListenCandidate]]]:
        """Each instruction with its candidates, in run order."""
        groups: dict[str, tuple[Instruction, list[ListenCandidate]]] = {}
        for candidate in self.candidates:
            groups.setdefault(candidate.instruction.id, (candidate.instruction, []))[1].append(candidate)
        return list(groups.values())

    def scores(self, candidate: ListenCandidate) -> Scores | None:
        """The selection scorer's scores of ``candidate`` (None when it has none)."""
        return candidate.view.scores.get(self.scorer) if self.scorer else None

    def scorers(self) -> list[str]:
        """Every scorer with scores in the run, the selection scorer first."""
        found = sorted({s for c in self.candidates for s in c.view.scores} - {self.scorer})
        return ([self.scorer] if self.scorer else []) + found


def _ranking_records(paths: RunPaths) -> dict[str, Mapping[str, Any]]:
    return {record["id"]: record for record in iter_records(paths.ranking) if "id" in record}


def _scorer(root: Path, views: list[CandidateView], config: RunConfig | None,
            ranking: dict[str, Mapping[str, Any]], asked: str | None) -> str | None:
    """``asked``, else the ranking's scorer, else the run's reward model; None when nothing was scored."""
    if asked:
        return asked
    ranked = {r.get("scorer") for r in ranking.values()} - {None}
    if len(ranked) == 1:
        return ranked.pop()
    if config is None and not any(v.scores for v in views):
        return None
    return selection_scorer(root, views, config)


def load_listen_run(run_dir: str | Path, scorer: str | None = None) -> ListenRun:
    """Read a run directory (or its manifest) for the report and the review app.

    ``scorer`` picks the scorer whose scores count (default: the one the ranking used, else the
    run's reward model). Ranking records of another scorer are ignored (no rank, no composite).
    """
    root = require_run_dir(run_dir)
    paths = RunPaths(root)
    views = read_run(root)
    config = load_run_config(root)
    ranking = _ranking_records(paths)
    chosen = _scorer(root, views, config, ranking, scorer)
    axes = score_axes(views, chosen) if chosen else None
    if scorer and axes is None:
        known = sorted({s for v in views for s in v.scores})
        raise ConfigError(f"--scorer {scorer!r}: no candidate of {root} has its scores "
                          f"(scorers with scores: {', '.join(known) or 'none'})")
    candidates = []
    for view in views:
        record = ranking.get(view.id)
        if record is not None and record.get("scorer") != chosen:
            record = None
        audio = root / view.audio_path if view.audio_path is not None else None
        candidates.append(ListenCandidate(view, audio, record))
    first = next((r for r in ranking.values() if r.get("scorer") == chosen), {})
    return ListenRun(root, config, chosen, axes or (), candidates, first.get("policy"), first.get("k"))
