"""Rank the candidates of a run directory and write the ranking files and ``top/`` (never scores anything).

`rank_run` is the last step of ``cmirm generate`` and all of ``cmirm rerank``. It ranks every
candidate of the manifest that has scores from the selection scorer, per instruction, with a
policy (`rerank.policies`), and writes

* ``ranking.jsonl``: one complete record per candidate (the manifest's view plus ``rank``,
  ``eligible``, ``selected``, ``composite``, ``top_path``, ``errors``, ``policy``, ``k``),
  rewritten atomically; ``ranking.csv``: the same, one row per candidate with the score axes as
  columns (`CSV_COLUMNS`), for spreadsheets;
* ``rankings/<policy>_k<k>_<scorer>/ranking.jsonl|csv`` (`ranking_name`): a copy kept per ranking,
  so ranking again with another policy, k or scorer does not lose the previous one;
* ``top/<instruction id>_rank<r>_s<seed>_<prompt>.wav`` (`top_name`): copies of the selected
  candidates of this ranking (each written under a temporary name and renamed), and
  ``top/README.txt``, which names the ranking ``top/`` holds; no other file.

`RankingWriter` does it one instruction at a time while a job runs (an instruction is ranked as
soon as its last candidate is scored: its rows are appended to ``ranking.jsonl`` and its ``top/``
files written), then settles the whole ranking in run order (`RankingWriter.finish`, which also
writes the CSV files, the kept copy and the README). Instructions are ranked independently, so the
streamed rows are the final ones. A file whose content would not change is not written, so
ranking a finished run again works on a read-only directory.

Candidates without scores (failed generation or scoring) get ``rank: null`` and are never selected.
An instruction with fewer than ``k`` eligible candidates keeps all it has (``k`` above the number
of candidates asked for is refused up front: `rerank.policies.check_k_of_n`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np

from cmirm_plugin.errors import ConfigError, check_output_path
from cmirm_plugin.manifest import ManifestWriter
from rerank.policies import Policy, rank_per_instruction
from rerank.run_dir import (copy_if_changed, disk_errors, folder_name_part, make_dir, write_if_changed,
                             write_text_atomic)
from rerank.run_records import RANKING, RANKING_CSV, CandidateView, RunPaths, instruction_record, score_axes

#: A policy, or how to choose one once the scorer's axes are known (the default policy depends on them).
PolicyChoice = Union[Policy, Callable[["Sequence[str] | None"], Policy]]


@dataclass(frozen=True)
class Ranking:
    """What `rank_run` wrote: the ranking records (manifest order) and where (``kept_dir``: its
    ``rankings/`` copy, `ranking_name`)."""

    records: list[dict[str, Any]]
    policy: str
    k: int
    scorer: str
    ranking_path: Path
    top_dir: Path
    csv_path: Path
    kept_dir: Path

    @property
    def selected(self) -> list[dict[str, Any]]:
        """The selected candidates' records, by instruction then rank."""
        return [r for r in self.records if r["selected"]]


#: The file in ``top/`` that says which ranking it holds.
TOP_README = "README.txt"
#: The longest prompt hint in a ``top/`` file name, and the longest parts of a ranking's folder name.
PROMPT_SLUG_CHARS = 40
POLICY_SLUG_CHARS = 60
SCORER_SLUG_CHARS = 40
#: Leading columns of ``ranking.csv``; the scorer's axes follow, then `CSV_TAIL`.
CSV_COLUMNS = ("instruction_id", "modality", "text", "lyrics", "ref_audio", "id", "index", "seed", "rank", "selected",
               "eligible", "composite")
CSV_TAIL = ("audio_path", "top_path", "errors", "generator", "scorer", "policy", "k")


def prompt_slug(instruction: dict[str, Any], limit: int = PROMPT_SLUG_CHARS) -> str:
    """A short file-name-safe hint of an instruction (``calm-piano-with-soft-strings``): its text, else its
    lyrics, in lowercase ASCII letters, digits and ``-``, cut at a word boundary within ``limit``; may be empty."""
    text = unicodedata.normalize("NFKD", instruction.get("text") or instruction.get("lyrics") or "")
    slug = re.sub(r"[^a-z0-9]+", "-", text.encode("ascii", "ignore").decode().lower()).strip("-")
    if len(slug) > limit:
        cut = slug[: limit + 1]
        slug = cut[: cut.rfind("-")] if "-" in cut else slug[:limit]
    return slug


def top_name(record: dict[str, Any]) -> str:
    """``<instruction id>_rank<r>_s<seed>_<prompt slug>.wav``: the ``top/`` file of a selected candidate."""
    slug = prompt_slug(record["instruction"])
    stem = f"{record['instruction']['id']}_rank{record['rank']}_s{record['seed']}"
    return f"{stem}_{slug}.wav" if slug else f"{stem}.wav"


def _top_pattern(instruction_id: str) -> re.Pattern[str]:
    """Every ``top/`` name an instruction's files may have had (`top_name`, and the older ``<id>_rank<r>.wav``)."""
    return re.compile(re.escape(instruction_id) + r"_rank\d+(?:_s\d+(?:_[a-z0-9-]+)?)?\.wav")


def ranking_name(policy: str, k: int, scorer: str) -> str:
    """The folder under ``rankings/`` of a ranking: ``<policy>_k<k>_<scorer>`` (e.g. ``axis-musicality_k2_CMI-RM``;
    the scorer by the last part of its label)."""
    scorer_tail = scorer.rstrip("/").rsplit("/", 1)[-1]
    return f"{folder_name_part(policy, POLICY_SLUG_CHARS)}_k{k}_{folder_name_part(scorer_tail, SCORER_SLUG_CHARS)}"


def rank_records(views: Sequence[CandidateView], scorer: str, policy: Policy, k: int) -> list[dict[str, Any]]:
    """One ranking record per candidate (paths still relative to the run directory); a search's partial
    clips (beam prefixes, `CandidateView.partial`) get no rank."""
    scored = [v for v in views if v.selectable(scorer)]
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


def _csv(records: Sequence[dict[str, Any]]) -> str:
    """``ranking.csv``: `CSV_COLUMNS`, the score axes, `CSV_TAIL` (an axis named like a column gets ``score_``)."""
    axes = list(dict.fromkeys(axis for r in records if r["scores"] for axis in r["scores"]))
    taken = set(CSV_COLUMNS) | set(CSV_TAIL)
    axis_columns = {axis: f"score_{axis}" if axis in taken else axis for axis in axes}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CSV_COLUMNS, *axis_columns.values(), *CSV_TAIL], lineterminator="\n")
    writer.writeheader()
    for r in records:
        instruction = r["instruction"]
        writer.writerow({
            "instruction_id": instruction["id"], "modality": instruction.get("modality"),
            "text": instruction.get("text"), "lyrics": instruction.get("lyrics"),
            "ref_audio": instruction.get("ref_audio"),
            **{key: r[key] for key in ("id", "index", "seed", "rank", "selected", "eligible", "composite",
                                       "audio_path", "top_path", "generator", "scorer", "policy", "k")},
            **{column: (r["scores"] or {}).get(axis) for axis, column in axis_columns.items()},
            "errors": "; ".join(r["errors"]),
        })
    return buffer.getvalue()


def _top_readme(ranking: "Ranking") -> str:
    kept = ranking.kept_dir.relative_to(ranking.ranking_path.parent).as_posix()
    return (f"This folder holds the top-{ranking.k} candidates per instruction of the ranking in {kept}/\n"
            f"(policy {ranking.policy}, k {ranking.k}, scorer {ranking.scorer}): the last `cmirm generate` or\n"
            f"`cmirm rerank` into this directory. Files: <instruction id>_rank<r>_s<seed>_<prompt>.wav.\n"
            f"Every candidate with its scores and rank: {RANKING_CSV} next to this folder.\n")


class RankingWriter:
    """Writes a run's ``ranking.jsonl`` and ``top/`` (see the module docstring), into ``out`` (default the run)."""

    def __init__(self, run_dir: str | Path, scorer: str, policy: PolicyChoice, k: int,
                 out: str | Path | None = None) -> None:
        self.run = RunPaths(Path(run_dir))
        target = check_output_path(out, "--out", directory=True) if out is not None else self.run.root
        self.target = RunPaths(target)
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
                    record["top_path"] = f"{self.target.top.name}/{top_name(record)}"
            by_instruction[record["instruction"]["id"]].append(record)
        for instruction_id, group in by_instruction.items():
            self._write_top(instruction_id, group)
        return records

    def _write_top(self, instruction_id: str, records: Sequence[dict[str, Any]]) -> None:
        """Make ``top/`` hold exactly this instruction's selected files (unchanged files are not rewritten)."""
        wanted = {top_name(r): self.target.root / r["audio_path"] for r in records if r["selected"]}
        make_dir(self.target.top, "the top/ folder of the run")
        for name, source in wanted.items():
            with disk_errors(self.target.top / name):
                copy_if_changed(source, self.target.top / name)
        mine = _top_pattern(instruction_id)
        with disk_errors(self.target.top):
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
        for record in records:          # ManifestWriter reports a failed append in one line itself
            self._appender.append(record)

    def finish(self, views: Sequence[CandidateView]) -> Ranking:
        """Rank every candidate (``views`` in run order): ``ranking.jsonl`` / ``.csv`` in run order and their kept
        copy under ``rankings/``, ``top/`` exactly the selection and its README."""
        if self._appender is not None:
            self._appender.close()
        policy = self._policy(views)
        if policy is None:   # nothing scored at all: the choice without axes (the scorer's known ones)
            policy = self._choice(None)  # type: ignore[operator]
        records = self._records(views, policy)
        kept = self.target.rankings / ranking_name(policy.spec(), self.k, self.scorer)
        ranking = Ranking(records, policy.spec(), self.k, self.scorer, self.target.ranking, self.target.top,
                          self.target.ranking_csv, kept)
        jsonl, table = _jsonl(records), _csv(records)
        write_if_changed(self.target.ranking, jsonl)
        write_if_changed(self.target.ranking_csv, table)
        write_if_changed(kept / RANKING, jsonl)
        write_if_changed(kept / RANKING_CSV, table)
        write_if_changed(self.target.top / TOP_README, _top_readme(ranking))
        wanted = {top_name(r) for r in records if r["selected"]} | {TOP_README}
        with disk_errors(self.target.top):
            for path in self.target.top.iterdir():
                if path.name not in wanted and path.is_file():
                    path.unlink()
        return ranking


def rank_run(run_dir: str | Path, views: Sequence[CandidateView], scorer: str, policy: Policy, k: int,
             out: str | Path | None = None) -> Ranking:
    """Rank ``views`` (the run's candidates, see `read_run`) and write ``ranking.jsonl`` and ``top/`` in ``out``.

    ``out`` defaults to the run directory. Audio paths in the records are relative to ``out``.
    """
    return RankingWriter(run_dir, scorer, policy, k, out).finish(views)
