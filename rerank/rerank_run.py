"""Rank the candidates of a run directory and write ``ranking.jsonl`` and ``top/`` (never scores anything).

`rank_run` is the last step of ``cmirm generate`` and all of ``cmirm rerank``. It ranks every
candidate of the manifest that has scores from the selection scorer, per instruction, with a
policy (`rerank.policies`), and writes

* ``ranking.jsonl``: one complete record per candidate (the manifest's view plus ``rank``,
  ``eligible``, ``selected``, ``composite``, ``top_path``, ``errors``, ``policy``, ``k``),
  rewritten atomically;
* ``top/<instruction id>_rank<r>.wav``: copies of the selected candidates, rebuilt beside the old
  folder and swapped in, so ``top/`` always matches one ranking.

Candidates without scores (failed generation or scoring) get ``rank: null`` and are never selected.
An instruction with fewer than ``k`` eligible candidates keeps all it has.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmirm_plugin.errors import ConfigError
from rerank.policies import Policy, rank_per_instruction
from rerank.run_records import CandidateView, RunPaths, instruction_record, score_axes, write_jsonl_atomic


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
    """One ranking record per candidate (paths still relative to the run directory)."""
    scored = [v for v in views if v.generated and scorer in v.scores]
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


def _replace_top(top: Path, files: dict[str, Path]) -> None:
    """Make ``top`` hold exactly ``files`` (name -> source), swapping a fresh folder in."""
    fresh = top.with_name(f".{top.name}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    for name, source in files.items():
        shutil.copyfile(source, fresh / name)
    old = top.with_name(f".{top.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if top.exists():
        os.replace(top, old)
    os.replace(fresh, top)
    shutil.rmtree(old, ignore_errors=True)


def rank_run(run_dir: str | Path, views: Sequence[CandidateView], scorer: str, policy: Policy, k: int,
             out: str | Path | None = None) -> Ranking:
    """Rank ``views`` (the run's candidates, see `read_run`) and write ``ranking.jsonl`` and ``top/`` in ``out``.

    ``out`` defaults to the run directory. Audio paths in the records are relative to ``out``.
    """
    run = RunPaths(Path(run_dir))
    target = RunPaths(Path(out) if out is not None else run.root)
    records = rank_records(views, scorer, policy, k)
    target.root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for record in records:
        if record["audio_path"] is None:
            continue
        source = run.root / record["audio_path"]
        record["audio_path"] = os.path.relpath(source, target.root)
        if record["selected"]:
            if not source.is_file():
                raise ConfigError(f"{source}: the audio of selected candidate {record['id']!r} is missing; "
                                  "rerun `cmirm generate` into this directory to regenerate it")
            files[_top_name(record)] = source
            record["top_path"] = f"{target.top.name}/{_top_name(record)}"
    _replace_top(target.top, files)
    write_jsonl_atomic(target.ranking, records)
    return Ranking(records, policy.spec(), k, scorer, target.ranking, target.top)
