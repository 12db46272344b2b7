"""The files of a run directory, the records of its manifest, and the per-candidate view of them.

A run directory (what ``cmirm generate --out DIR`` writes)::

    DIR/run.json            how candidates were made and scored (see `rerank.run_config`)
    DIR/manifest.jsonl      append-only event log (below)
    DIR/candidates/<id>.wav every generated candidate
    DIR/candidates/<id>.codes.safetensors  a beam prefix's codec tokens (what a resumed search continues)
    DIR/search_state.json   each instruction's search state (``--search`` other than best-of-n)
    DIR/ranking.jsonl       one complete record per candidate: rewritten atomically by each ranking
    DIR/ranking.csv         the same, one row per candidate, score axes as columns
    DIR/rankings/<policy>_k<k>_<scorer>/ranking.jsonl|csv   every ranking made, kept
    DIR/top/<instruction id>_rank<r>_s<seed>_<prompt>.wav   the selected candidates of the last ranking
    DIR/top/README.txt      which ranking top/ holds

The manifest is written while the job runs and never rewritten, so a crash loses nothing that
finished. Every record names its candidate by ``id`` (`Candidate.id`) and says what it is:

* ``"record": "candidate"``: a generated clip: `Candidate.to_dict` (audio path relative to DIR)
  plus ``index`` (its position in the instruction's seed list) and ``instruction`` (the
  instruction's dict with its ``modality``).
* ``"record": "generation_failed"``: the same identity fields plus `CandidateFailure` fields
  (``kind``, ``message``, ``detail``).
* ``"record": "scores"``: ``scorer`` (the scorer's label, `ScorerSpec.label`), ``scores``
  (``{axis: value}`` in the scorer's axis order) and ``seconds`` (the candidate's share of its
  scoring batch's wall seconds on the scorer worker; absent in records of earlier versions).
  Records of earlier versions carry ``alignment`` and ``musicality`` at the top level instead;
  they are read the same way.
* ``"record": "score_failed"``: ``scorer`` and ``error`` (e.g. unreadable audio).

`fold_records` replays the log into one `CandidateView` per candidate: a later generation record
replaces an earlier one and drops the scores made of the old audio; a later score record for the
same scorer replaces an earlier one. `load_views` does that for a directory; `in_run_order` puts
views in a stable order (instructions in order of first appearance, then candidate index), which
is the order every ranking sees, so ties always go to the lower candidate index. `read_run` is both.
A job reads its manifest once and folds the records it appends into the same views.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from cmirm_plugin.errors import CmirmError, ConfigError, ManifestError
from cmirm_plugin.manifest import iter_records
from cmirm_plugin.records import Candidate, Compute, Instruction, Lineage, Scores

if TYPE_CHECKING:
    from generators.base import CandidateFailure

MANIFEST = "manifest.jsonl"
RUN_CONFIG = "run.json"
RANKING = "ranking.jsonl"
SEARCH_STATE = "search_state.json"
RANKING_CSV = "ranking.csv"
RANKINGS = "rankings"
CANDIDATES = "candidates"
TOP = "top"

GENERATION_RECORDS = ("candidate", "generation_failed")
SCORE_RECORDS = ("scores", "score_failed")


@dataclass(frozen=True)
class RunPaths:
    """Where each file of a run directory lives."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def run_config(self) -> Path:
        return self.root / RUN_CONFIG

    @property
    def ranking(self) -> Path:
        return self.root / RANKING

    @property
    def ranking_csv(self) -> Path:
        return self.root / RANKING_CSV

    @property
    def rankings(self) -> Path:
        return self.root / RANKINGS

    @property
    def candidates(self) -> Path:
        return self.root / CANDIDATES

    @property
    def top(self) -> Path:
        return self.root / TOP

    @property
    def search_state(self) -> Path:
        return self.root / SEARCH_STATE

    def candidate_wav(self, candidate_id: str) -> Path:
        return self.candidates / f"{candidate_id}.wav"

    def candidate_codes(self, candidate_id: str) -> Path:
        return self.candidates / f"{candidate_id}.codes.safetensors"


def instruction_record(instruction: Instruction) -> dict[str, Any]:
    """The instruction as stored in every candidate record: its dict plus its modality."""
    return {**instruction.to_dict(), "modality": instruction.modality}


def instruction_from_record(data: Mapping[str, Any]) -> Instruction:
    """Inverse of `instruction_record` (the modality is derived, so it is dropped)."""
    return Instruction.from_dict({key: value for key, value in data.items() if key != "modality"})


def candidate_record(candidate: Candidate, instruction: Instruction, index: int, audio_path: str) -> dict[str, Any]:
    """The manifest record of a generated candidate (``audio_path`` relative to the run directory)."""
    return {"record": "candidate", **candidate.to_dict(audio_path=audio_path), "index": index,
            "instruction": instruction_record(instruction)}


def failure_record(failure: CandidateFailure, instruction: Instruction, index: int) -> dict[str, Any]:
    """The manifest record of a candidate whose generation failed."""
    return {"record": "generation_failed", "id": Candidate.make_id(failure.instruction_id, failure.generator, failure.seed),
            **failure.to_dict(), "index": index, "instruction": instruction_record(instruction)}


def score_record(candidate: str, scorer: str, scores: Scores | None, error: str | None,
                 seconds: float | None = None) -> dict[str, Any]:
    """The manifest record of one candidate's scores by ``scorer`` (or of the error that stopped them);
    ``seconds``: the candidate's share of the scoring wall time (kept when known)."""
    if scores is None:
        return {"record": "score_failed", "id": candidate, "scorer": scorer, "error": error or "no scores"}
    record = {"record": "scores", "id": candidate, "scorer": scorer, "scores": scores.to_dict()}
    if seconds is not None:
        record["seconds"] = float(seconds)
    return record


def _record_scores(record: Mapping[str, Any]) -> Scores:
    """The scores of a ``scores`` record (or of the flat alignment/musicality form of earlier versions)."""
    if "scores" in record:
        values = record["scores"]
        if not isinstance(values, dict):
            raise TypeError(f"'scores' must be an object of axis: value, got {values!r}")
        return Scores.from_dict({str(axis): float(value) for axis, value in values.items()})
    return Scores.from_dict({"alignment": float(record["alignment"]), "musicality": float(record["musicality"])})


@dataclass
class CandidateView:
    """Everything the manifest says about one candidate (see the module docstring)."""

    id: str
    instruction: Instruction
    index: int
    seed: int
    generator: str
    params: dict[str, Any]
    audio_path: str | None = None
    sample_rate: int | None = None
    duration: float | None = None
    generation_error: dict[str, str] | None = None
    scores: dict[str, Scores] = field(default_factory=dict)
    score_errors: dict[str, str] = field(default_factory=dict)
    compute: Compute | None = None
    lineage: Lineage | None = None
    score_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def generated(self) -> bool:
        """Whether the candidate has audio (its generation did not fail)."""
        return self.audio_path is not None

    @property
    def partial(self) -> bool:
        """Whether it is a search's intermediate clip (a beam prefix): never ranked nor selected."""
        return self.lineage is not None and self.lineage.partial

    def selectable(self, *scorers: str) -> bool:
        """Whether it can be ranked with ``scorers``' scores: a whole clip (generated, not a search's
        prefix) that every one of them scored."""
        return self.generated and not self.partial and all(s in self.scores for s in scorers)

    def compute_with(self, scorer: str) -> Compute | None:
        """Its generation compute with ``scorer``'s seconds as ``scorer_seconds`` (when recorded)."""
        if self.compute is None or scorer not in self.score_seconds:
            return self.compute
        return self.compute.with_scorer_seconds(self.score_seconds[scorer])

    def errors(self) -> list[str]:
        """Human-readable errors: the generation failure and every scorer's error."""
        out = []
        if self.generation_error:
            out.append(f"generation {self.generation_error['kind']}: {self.generation_error['message']}")
        out += [f"scoring ({scorer}): {error}" for scorer, error in self.score_errors.items()]
        return out


def _generation_view(record: Mapping[str, Any], instructions: dict[str, Instruction]) -> CandidateView:
    inst_data = record["instruction"]
    instruction = instructions.get(inst_data.get("id"))
    if instruction is None:
        instruction = instructions.setdefault(inst_data["id"], instruction_from_record(inst_data))
    view = CandidateView(record["id"], instruction, int(record["index"]), int(record["seed"]), record["generator"],
                         dict(record.get("params") or {}))
    if record.get("lineage") is not None:
        view.lineage = Lineage.from_dict(record["lineage"])
    if record["record"] == "candidate":
        view.audio_path = record["audio_path"]
        view.sample_rate, view.duration = record["sample_rate"], record["duration"]
        if record.get("compute") is not None:
            view.compute = Compute.from_dict(record["compute"])
    else:
        view.generation_error = {key: record.get(key) or "" for key in ("kind", "message", "detail")}
    return view


def fold_records(records: Iterable[Mapping[str, Any]], source: str = "manifest",
                 views: dict[str, CandidateView] | None = None) -> dict[str, CandidateView]:
    """Replay manifest records into one `CandidateView` per candidate id (insertion = first-seen order).

    ``views`` continues an earlier fold (e.g. score records of another file on top of a manifest).
    """
    views = {} if views is None else views
    instructions: dict[str, Instruction] = {v.instruction.id: v.instruction for v in views.values()}
    for number, record in enumerate(records, start=1):
        kind, key = record.get("record"), record.get("id")
        if not key or kind not in GENERATION_RECORDS + SCORE_RECORDS:
            raise ManifestError(f"{source}: record {number} is not a run record (record={kind!r}, id={key!r})")
        try:
            if kind in GENERATION_RECORDS:
                views.pop(key, None)      # a regeneration replaces the candidate and its old scores
                views[key] = _generation_view(record, instructions)
                continue
            view = views.get(key)
            if view is None:
                raise ManifestError(f"{source}: record {number} scores candidate {key!r} before it was generated")
            scorer = record["scorer"]
            view.scores.pop(scorer, None)
            view.score_errors.pop(scorer, None)
            view.score_seconds.pop(scorer, None)
            if kind == "scores":
                view.scores[scorer] = _record_scores(record)
                if record.get("seconds") is not None:
                    view.score_seconds[scorer] = float(record["seconds"])
            else:
                view.score_errors[scorer] = str(record.get("error"))
        except ManifestError:
            raise
        except (KeyError, TypeError, ValueError, CmirmError) as exc:
            raise ManifestError(f"{source}: record {number} ({kind} of {key!r}) is malformed: {exc!r}") from exc
    return views


def score_axes(views: Iterable[CandidateView], scorer: str) -> tuple[str, ...] | None:
    """The axes of ``scorer``'s scores in ``views`` (None when it scored none); mixed axes are an error."""
    found = {v.scores[scorer].axes for v in views if scorer in v.scores}
    if len(found) > 1:
        raise ManifestError(f"scorer {scorer!r} recorded scores with different axes: {sorted(found)}")
    return found.pop() if found else None


def require_run_dir(path: str | Path, option: str | None = None) -> Path:
    """The run directory ``path`` names (the directory itself or its manifest).

    Raises `ConfigError` (naming ``option``, e.g. ``--from``, when given) for anything else.
    """
    path = Path(path)
    where = f"{option} '{path}'" if option else f"'{path}'"
    if path.is_file():
        if path.name != MANIFEST:
            raise ConfigError(f"{where}: expected a run directory or its {MANIFEST}")
        return path.parent
    if not (path / MANIFEST).is_file():
        raise ConfigError(f"{where}: not a `cmirm generate` output directory (no {MANIFEST} there)")
    return path


def load_views(root: str | Path, score_files: Sequence[str | Path] = ()) -> dict[str, CandidateView]:
    """`fold_records` of a run directory's manifest, then of each of ``score_files`` (keyed by candidate id).

    ``score_files`` are further logs of score records (e.g. an evaluation model's, kept outside the
    run directory).
    """
    views: dict[str, CandidateView] = {}
    for source in [RunPaths(Path(root)).manifest, *map(Path, score_files)]:
        fold_records(iter_records(source), str(source), views)
    return views


def views_by_seed(views: Iterable[CandidateView]) -> dict[tuple[str, int], CandidateView]:
    """The candidates by (instruction id, seed): run.json holds one generator per directory, so the pair
    names a candidate (the recorded generator name may differ from the registry name)."""
    return {(v.instruction.id, v.seed): v for v in views}


def in_run_order(views: Iterable[CandidateView]) -> list[CandidateView]:
    """``views`` with instructions in first-seen order, then by candidate index (see the module docstring)."""
    views = list(views)
    first_seen: dict[str, int] = {}
    for view in views:
        first_seen.setdefault(view.instruction.id, len(first_seen))
    return sorted(views, key=lambda v: (first_seen[v.instruction.id], v.index, v.seed))


def read_run(root: str | Path, score_files: Sequence[str | Path] = ()) -> list[CandidateView]:
    """Every candidate of a run directory, in run order: `in_run_order` of `load_views`."""
    return in_run_order(load_views(root, score_files).values())


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl_atomic(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write ``records`` as JSONL, atomically (see `write_atomic`)."""
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records))
