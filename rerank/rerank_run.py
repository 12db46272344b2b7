"""Rank the candidates of a run directory and write ``ranking.jsonl`` and ``top/`` (never scores anything).

`rank_run` is the last step of ``cmirm generate`` and all of ``cmirm rerank``. It ranks every
candidate of the manifest that has scores from the selection scorer, per instruction, with a
policy (`rerank.policies`), and writes

* ``ranking.jsonl``: one complete record per candidate (the manifest's view plus ``rank``,
  ``eligible``, ``selected``, ``composite``, ``top_path``, ``errors``, ``policy``, ``k``),
  rewritten atomically;
* ``top/<instruction id>_rank<r>.wav``: copies of the selected candidates (each written under a
  temporary name and renamed), and no other file.

`RankingWriter` does it one instruction at a time while a job runs (an instruction is ranked as
soon as its last candidate is scored: its rows are appended to ``ranking.jsonl`` and its ``top/``
files written), then settles the whole ranking in run order (`RankingWriter.finish`). Instructions
are ranked independently, so the streamed rows are the final ones. A file whose content would not
change is not written, so ranking a finished run again works on a read-only directory.

Candidates without scores (failed generation or scoring) get ``rank: null`` and are never selected.
An instruction with fewer than ``k`` eligible candidates keeps all it has.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import ManifestWriter
from rerank.policies import Policy, rank_per_instruction
from rerank.run_dir import copy_if_changed, disk_errors, write_if_changed, write_text_atomic
from rerank.run_records import CandidateView, RunPaths, instruction_record, score_axes

#: A policy, or how to choose one once the scorer's axes are known (the default policy depends on them).
PolicyChoice = Union[Policy, Callable[["Sequence[str] | None"], Policy]]


@dataclass(frozen=True)
class Ranking:
    """What `rank_run` wrote: the ranking records (manifest order) and where."""

    records: list[dict[str, Any]]
    policy: str
    k: int
    scorer: str
    ranking_path: Path
    top_dir: Path

    @property
    def selected(self) -> list[dict[str, Any]]:
        """The selected candidates' records, by instruction then rank."""
        return [r for r in self.records if r["selected"]]


def _top_name(record: dict[str, Any]) -> str:
    return f"{record['instruction']['id']}_rank{record['rank']}.wav"


def rank_records(views: Sequence[CandidateView], scorer: str, policy: Policy, k: int) -> list[dict[str, Any]]:
    """One ranking record per candidate (paths still relative to the run directory); a search's partial
    clips (beam prefixes, `CandidateView.partial`) get no rank."""
    scored = [v for v in views if v.generated and scorer in v.scores and not v.partial]
    ranks: dict[str, tuple[int, bool, bool, float]] = {}
    axes = score_axes(scored, scorer)
    if axes is not None:
        ids = [v.instruction.id for v in scored]
        scores = np.array([v.scores[scorer].as_tuple() for v in scored], dtype=np.float64)
        ranking = rank_per_instruction(ids, scores, policy, k, axes=axes, allow_fewer=True)
        ranks = {v.id: (int(ranking.rank[i]), bool(ranking.eligible[i]), bool(ranking.selected[i]),
                        float(ranking.composite[i]))
                 for i, v in enumerate(scored)}
    records = []
    for view in views:
        rank, eligible, selected, composite_value = ranks.get(view.id, (None, False, False, None))
        scores = view.scores.get(scorer)
        records.append({
            "id": view.id, "instruction": instruction_record(view.instruction), "index": view.index,
            "seed": view.seed, "generator": view.generator, "params": view.params, "audio_path": view.audio_path,
            "scorer": scorer, "scores": scores.to_dict() if scores else None, "composite": composite_value,
            "rank": rank, "eligible": eligible, "selected": selected, "top_path": None,
            "errors": view.errors(), "policy": policy.spec(), "k": k,
        })
    return records


def _jsonl(records: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)


class RankingWriter:
    """Writes a run's ``ranking.jsonl`` and ``top/`` (see the module docstring), into ``out`` (default the run)."""

    def __init__(self, run_dir: str | Path, scorer: str, policy: PolicyChoice, k: int,
                 out: str | Path | None = None) -> None:
        self.run = RunPaths(Path(run_dir))
        self.target = RunPaths(Path(out) if out is not None else self.run.root)
        self.scorer, self.k = scorer, k
        self._choice = policy
        self.policy: Policy | None = policy if isinstance(policy, Policy) else None
        self._appender: ManifestWriter | None = None

    def _policy(self, views: Sequence[CandidateView]) -> Policy | None:
        """The policy (resolved from the scores' axes the first time they are seen; None before that)."""
        if self.policy is None:
            axes = score_axes(views, self.scorer)
            if axes is not None:
                self.policy = self._choice(axes)  # type: ignore[operator]
        return self.policy

    def _records(self, views: Sequence[CandidateView], policy: Policy) -> list[dict[str, Any]]:
        """The ranking records of ``views``, audio paths relative to the target, top files written."""
        records = rank_records(views, self.scorer, policy, self.k)
        by_instruction: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            if record["audio_path"] is not None:
                source = self.run.root / record["audio_path"]
                record["audio_path"] = os.path.relpath(source, self.target.root)
                if record["selected"]:
                    if not source.is_file():
                        raise ConfigError(f"{source}: the audio of selected candidate {record['id']!r} is missing; "
                                          "rerun `cmirm generate` into this directory to regenerate it")
                    record["top_path"] = f"{self.target.top.name}/{_top_name(record)}"
            by_instruction[record["instruction"]["id"]].append(record)
        for instruction_id, group in by_instruction.items():
            self._write_top(instruction_id, group)
        return records

    def _write_top(self, instruction_id: str, records: Sequence[dict[str, Any]]) -> None:
        """Make ``top/`` hold exactly this instruction's selected files (unchanged files are not rewritten)."""
        wanted = {_top_name(r): self.target.root / r["audio_path"] for r in records if r["selected"]}
        with disk_errors(self.target.top):
            self.target.top.mkdir(parents=True, exist_ok=True)
            for name, source in wanted.items():
                copy_if_changed(source, self.target.top / name)
            mine = re.compile(re.escape(instruction_id) + r"_rank\d+\.wav")
            for path in self.target.top.iterdir():
                if mine.fullmatch(path.name) and path.name not in wanted:
                    path.unlink()

    def rank_instruction(self, views: Sequence[CandidateView]) -> None:
        """Rank one instruction whose candidates are all finished: its rows and its ``top/`` files, now.

        Before the scorer's axes are known (no candidate scored yet) an instruction is left to `finish`.
        """
        policy = self._policy(views)
        if policy is None:
            return
        records = self._records(views, policy)
        if self._appender is None:   # the job's first ranked instruction starts a new ranking file
            write_text_atomic(self.target.ranking, _jsonl(records))
            self._appender = ManifestWriter(self.target.ranking)
            return
        with disk_errors(self.target.ranking):
            for record in records:
                self._appender.append(record)

    def finish(self, views: Sequence[CandidateView]) -> Ranking:
        """Rank every candidate (``views`` in run order): ``ranking.jsonl`` in run order, ``top/`` exactly the selection."""
        if self._appender is not None:
            self._appender.close()
        policy = self._policy(views)
        if policy is None:   # nothing scored at all: the choice without axes (the scorer's known ones)
            policy = self._choice(None)  # type: ignore[operator]
        records = self._records(views, policy)
        selected = {_top_name(r) for r in records if r["selected"]}
        with disk_errors(self.target.top):
            self.target.top.mkdir(parents=True, exist_ok=True)
            for path in self.target.top.iterdir():
                if path.name not in selected and path.is_file():
                    path.unlink()
        write_if_changed(self.target.ranking, _jsonl(records))
        return Ranking(records, policy.spec(), self.k, self.scorer, self.target.ranking, self.target.top)


def rank_run(run_dir: str | Path, views: Sequence[CandidateView], scorer: str, policy: Policy, k: int,
             out: str | Path | None = None) -> Ranking:
    """Rank ``views`` (the run's candidates, see `read_run`) and write ``ranking.jsonl`` and ``top/`` in ``out``.

    ``out`` defaults to the run directory. Audio paths in the records are relative to ``out``.
    """
    return RankingWriter(run_dir, scorer, policy, k, out).finish(views)
