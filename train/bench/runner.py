"""Scoring the benchmark with any plug-in scorer, resumably, then computing its metrics (spec §5.3).

Order and batching follow the official runner: subsets PAM, MusicEval, MusicArena, CMI-Pref; in
each, side A of every row, then side B of the pairwise rows, in batches of ``batch_size`` rows that
share each row's prompt, lyrics and reference. A missing reference is recorded as
``ref_audio_not_found:<path>`` and the row scored without it, as officially.

A row's record is appended to results.jsonl (flushed) as soon as its last side is scored, so a rerun
skips finished rows, and batches the remaining rows among themselves. Side-A scores of pairwise rows
live in memory until side B is scored: an interruption during a side-B pass rescores them.

Differences from the official runner, on purpose:
* a missing clip does not stop the run: that side is not scored (its predictions are null, its
  ``inference_valid_*`` False, ``audio_not_found:<path>`` in ``inference_error``), and the batch
  is sent without it;
* the Music Arena path fallback of the evaluator is applied when selecting rows (see `schema.subset_of`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import soundfile as sf
import torch
from rich.console import Console
from rich.progress import Progress

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import ManifestWriter, read_records
from cmirm_plugin.records import Instruction
from cmirm_plugin.scoring.contract import Scorer
from cmirm_plugin.scoring.settings import ScoringSettings
from cmirm_plugin.scoring.spec import ScorerSpec
from train.bench.dataset import BenchRow, load_benchmark
from train.bench.metrics import MetricsConfig, compute_metrics
from train.bench.outputs import MetricsFiles, write_metrics
from train.bench.results import METADATA_FILE, RESULTS_FILE, SideResult, build_record, latest_by_row_id
from train.bench.schema import ERROR, SUBSETS
from train.bench.scorer import BenchScorer


@dataclass
class BenchConfig:
    """A benchmark run. Defaults are the official CLI's (batch 12, the scoring defaults' first 120 s,
    split ``test``).

    ``model`` is any scorer spec (`cmirm_plugin.scoring.spec`; default the released CMI-RM),
    ``scoring`` its `ScoringSettings` (``max_dur`` is what the scorer sees of each clip).
    ``init_kwargs`` are a ``module:Name`` scorer's constructor arguments; ``score_kwargs`` go to
    every ``score_batch`` call of a plug-in written for the official runner. ``skip_invalid``
    leaves bad lines out instead of failing; ``retry_errors`` rescores finished rows whose record
    carries an error (e.g. a clip that was missing and has since been downloaded).
    """

    dataset_jsonl: Path
    dataset_root: Path
    out_dir: Path
    model: str | None = None
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    score_kwargs: dict[str, Any] = field(default_factory=dict)
    split: str | None = "test"
    subset: str = "all"
    batch_size: int = 12
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    device: str | None = None
    skip_invalid: bool = False
    retry_errors: bool = False
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"--batch-size must be an integer >= 1, got {self.batch_size!r}")
        self.spec = ScorerSpec.parse(self.model, "--model")


@dataclass
class BenchResult:
    """What a run produced: its files, the metrics, and how many rows were scored now or earlier."""

    results_path: Path
    files: MetricsFiles
    metrics: dict[str, Any]
    scored: int
    reused: int
    skipped: list[str]


def default_device() -> str:
    """``cuda:0`` when a GPU is visible (the official default), else ``cpu``."""
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _scoring_identity(config: BenchConfig, scorer: Scorer | None, device: str) -> dict[str, Any]:
    """What determines the scores; resuming into a folder scored differently is refused."""
    model = config.spec.label if scorer is None else f"{type(scorer).__module__}:{type(scorer).__qualname__}"
    identity = {"model": model, "init_kwargs": config.init_kwargs, "score_kwargs": config.score_kwargs,
                "batch_size": config.batch_size, **config.scoring.score_identity(device)}
    return json.loads(json.dumps(identity, default=str))


def _check_resume(out_dir: Path, identity: dict[str, Any]) -> None:
    path = out_dir / METADATA_FILE
    if not path.is_file() or not (out_dir / RESULTS_FILE).exists():
        return
    previous = json.loads(path.read_text(encoding="utf-8")).get("scoring")
    if previous != identity:
        raise ConfigError(f"'{out_dir}' holds results scored with {previous}, but this run uses {identity}; "
                          "use another --out (or delete its results.jsonl) to start over")


def _write_metadata(out_dir: Path, content: dict[str, Any]) -> None:
    (out_dir / METADATA_FILE).write_text(json.dumps(content, indent=2, default=str) + "\n", encoding="utf-8")


def _chunks(rows: Sequence[BenchRow], size: int) -> Iterator[Sequence[BenchRow]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def _existing(path: Path | None) -> Path | None:
    return path if path is not None and path.is_file() else None


def _duration(path: Path) -> float | None:
    """The clip's length from its header (None when soundfile cannot read it; the scorer may)."""
    try:
        return float(sf.info(str(path)).duration)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None


class _SubsetScorer:
    """Scores the rows of one subset in the official order and appends their records."""

    def __init__(self, model: BenchScorer, config: BenchConfig, writer: ManifestWriter,
                 progress: Progress, task: Any) -> None:
        self.model, self.config, self.writer = model, config, writer
        self.progress, self.task = progress, task

    def _side(self, batch: Sequence[BenchRow], side: str, refs: Mapping[str, Path | None]) -> dict[str, SideResult]:
        """Score one side (``a`` or ``b``) of a batch; rows whose clip is missing are not sent."""
        results: dict[str, SideResult] = {}
        clips, instructions, sent = [], [], []
        for row in batch:
            clip = row.audio_a if side == "a" else row.audio_b
            if _existing(clip) is None:
                name = "audio" if side == "a" else "audio2"
                results[row.id] = SideResult(errors=[f"{name}_not_found:{clip}"])
                continue
            clips.append(str(clip))
            instructions.append(Instruction(text=row.text, lyrics=row.lyrics,
                                            ref_audio=None if refs[row.id] is None else str(refs[row.id])))
            sent.append((row, clip))
        if clips:
            where = f"{batch[0].subset}, side {side.upper()}, lines {[row.line for row, _ in sent]}"
            scores = self.model.score(clips, instructions, where)
            for (row, clip), (alignment, musicality) in zip(sent, scores):
                results[row.id] = SideResult.scored(alignment, musicality, _duration(clip))
        return results

    def run(self, rows: Sequence[BenchRow]) -> None:
        size = self.config.batch_size
        refs = {row.id: _existing(row.ref_audio) for row in rows}
        missing_ref = {row.id: row.ref_audio if refs[row.id] is None else None for row in rows}
        side_a: dict[str, SideResult] = {}
        for batch in _chunks(rows, size):
            side_a.update(self._side(batch, "a", refs))
            for row in batch:
                if not row.pairwise:
                    self.writer.append(build_record(row, side_a.pop(row.id), None, missing_ref[row.id]))
                self.progress.advance(self.task, 0.5 if row.pairwise else 1.0)
        for batch in _chunks([row for row in rows if row.pairwise], size):
            side_b = self._side(batch, "b", refs)
            for row in batch:
                self.writer.append(build_record(row, side_a.pop(row.id), side_b[row.id], missing_ref[row.id]))
                self.progress.advance(self.task, 0.5)


def run_benchmark(config: BenchConfig, scorer: Scorer | None = None, *, show_progress: bool = True,
                  console: Console | None = None) -> BenchResult:
    """Score every unfinished selected row, then write and return the metrics of all selected rows.

    ``scorer`` (a contract scorer, or an official-runner plug-in object) replaces loading
    ``config.model``; a trainer passes its in-memory model this way. The scorer is only loaded when
    rows remain.
    """
    data = load_benchmark(config.dataset_jsonl, config.dataset_root, split=config.split,
                          subset=config.subset, skip_invalid=config.skip_invalid)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = config.device or default_device()
    identity = _scoring_identity(config, scorer, device)
    _check_resume(out_dir, identity)
    metadata = {"scoring": identity, "dataset_jsonl": str(config.dataset_jsonl),
                "dataset_root": str(config.dataset_root), "split": config.split, "subset": config.subset,
                "device": device, "skipped": data.skipped}
    _write_metadata(out_dir, metadata)

    results_path = out_dir / RESULTS_FILE
    done = latest_by_row_id(read_records(results_path))
    pending = [row for row in data.rows if row.id not in done or (config.retry_errors and done[row.id].get(ERROR))]
    if pending:
        from cmirm_plugin.scoring.loader import as_scorer, load_scorer

        if scorer is None:
            scorer = load_scorer(config.spec, config.scoring, device, init_kwargs=config.init_kwargs,
                                 score_kwargs=config.score_kwargs)
        model = BenchScorer(as_scorer(scorer, identity["model"], config.scoring), identity["model"])
        with ManifestWriter(results_path) as writer, \
                Progress(console=console, disable=not show_progress, transient=False) as progress:
            task = progress.add_task("scoring rows", total=len(pending))
            subset_scorer = _SubsetScorer(model, config, writer, progress, task)
            for subset in SUBSETS:
                progress.update(task, description=f"scoring {subset}")
                subset_scorer.run([row for row in pending if row.subset == subset])

    records = latest_by_row_id(read_records(results_path))
    rows = [records[row.id] for row in data.rows if row.id in records]
    metrics = compute_metrics(rows, dataclasses.replace(config.metrics, split=config.split))
    files = write_metrics(metrics, out_dir)
    _write_metadata(out_dir, {**metadata, "rows": len(rows), "scored": len(pending),
                              "reused": len(data.rows) - len(pending),
                              "outputs": {"results": str(results_path), **files.as_dict()}})
    return BenchResult(results_path=results_path, files=files, metrics=metrics, scored=len(pending),
                       reused=len(data.rows) - len(pending), skipped=data.skipped)
