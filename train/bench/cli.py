"""``cmirm bench`` and ``cmirm bench-metrics`` (registered through the ``cmirm.commands`` entry points).

The benchmark machinery (scipy, torch) is imported inside the commands, so ``cmirm --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from cmirm_plugin.cli_options import ScoringOptions, with_options
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.hub import DEFAULT_MODEL

if TYPE_CHECKING:
    from rich.console import Console

    from train.bench.metrics import MetricsConfig

SplitOption = Annotated[str, typer.Option(help="Keep only rows whose 'split' field equals this.")]
ByDurationOption = Annotated[bool, typer.Option(
    "--by-duration", help="Also report metrics per clip-duration bin (lengths measured from the clips' headers).")]
BinsOption = Annotated[str, typer.Option(help="Duration bin edges in seconds, comma-separated; the last bin is closed.")]


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option}: not valid JSON ({exc.msg}): {text!r}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{option}: expected a JSON object like '{{\"key\": 1}}', got {text!r}")
    return value


def _metrics_config(split: str, by_duration: bool, duration_bins: str) -> "MetricsConfig":
    from train.bench.metrics import MetricsConfig

    try:
        bins = tuple(float(edge) for edge in duration_bins.split(","))
    except ValueError as exc:
        raise ConfigError(f"--duration-bins: expected comma-separated seconds, got {duration_bins!r}") from exc
    return MetricsConfig(split=split, by_duration=by_duration, duration_bins=bins)


def _report(console: "Console", metrics: dict[str, Any], label: str, files: dict[str, str]) -> None:
    from train.bench.report import print_summary

    print_summary(metrics, label, console)
    for name, path in files.items():
        console.print(f"{name}: {path}")


@with_options(scoring=ScoringOptions)
def bench(
    out: Annotated[Path, typer.Option(help="Output folder: results.jsonl, metrics files, metadata.json.")],
    dataset_jsonl: Annotated[Path, typer.Option(help="The benchmark file.")] = Path("data/all_test.jsonl"),
    dataset_root: Annotated[Path, typer.Option(help="Folder the file's relative clip paths start from.")] = Path("data"),
    model: Annotated[Optional[str], typer.Option(
        help="Scorer: tiny, a CMI-RM folder or hub id, or package.module:Name (a cmirm scorer or a plug-in "
             f"written for the official runner). \\[default: {DEFAULT_MODEL}]", show_default=False)] = None,
    model_init_json: Annotated[str, typer.Option(
        help="JSON object of constructor arguments of a package.module:Name scorer.")] = "{}",
    score_kwargs_json: Annotated[str, typer.Option(
        help="JSON object of extra score_batch arguments of an official-runner plug-in.")] = "{}",
    subset: Annotated[str, typer.Option(help="PAM, MusicEval, MusicArena, CMI-Pref or all.")] = "all",
    split: SplitOption = "test",
    batch_size: Annotated[int, typer.Option(help="Rows per score_batch call.")] = 12,
    device: Annotated[Optional[str], typer.Option(help="Device for the scorer (default: cuda:0 if present, else cpu).")] = None,
    skip_invalid: Annotated[bool, typer.Option(
        "--skip-invalid", help="Leave out bad lines and rows (listed) instead of stopping.")] = False,
    retry_errors: Annotated[bool, typer.Option(
        "--retry-errors", help="Rescore finished rows whose record has an error (e.g. a clip now downloaded).")] = False,
    by_duration: ByDurationOption = False,
    duration_bins: BinsOption = "10,30,60,120,500",
    *,
    scoring: ScoringOptions,
) -> None:
    """Evaluate a scorer on CMI-RewardBench (PAM, MusicEval, Music Arena, CMI-Pref); resumable."""
    from rich.console import Console

    from cmirm_plugin.models_needed import check_available
    from train.bench.runner import BenchConfig, run_benchmark

    config = BenchConfig(
        dataset_jsonl=dataset_jsonl, dataset_root=dataset_root, out_dir=out, model=model,
        init_kwargs=_json_object(model_init_json, "--model-init-json"),
        score_kwargs=_json_object(score_kwargs_json, "--score-kwargs-json"),
        split=split, subset=subset, batch_size=batch_size, scoring=scoring.settings(), device=device,
        skip_invalid=skip_invalid, retry_errors=retry_errors,
        metrics=_metrics_config(split, by_duration, duration_bins))
    check_available(scorers=[(config.spec, "--model")])
    console = Console()
    result = run_benchmark(config, console=console)
    for problem in result.skipped:
        console.print(f"[yellow]skipped[/yellow] {problem}", highlight=False)
    console.print(f"rows scored now: {result.scored}, already in results.jsonl: {result.reused}")
    _report(console, result.metrics, config.spec.label, {"results": str(result.results_path), **result.files.as_dict()})


def bench_metrics(
    results: Annotated[Path, typer.Argument(help="A results.jsonl written by 'cmirm bench' (or the official runner).")],
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: <results folder>/evaluation_output).")] = None,
    split: SplitOption = "test",
    by_duration: ByDurationOption = False,
    duration_bins: BinsOption = "10,30,60,120,500",
) -> None:
    """Recompute the CMI-RewardBench metrics of a results.jsonl, without scoring anything."""
    from rich.console import Console

    from cmirm_plugin.manifest import read_records
    from train.bench.metrics import compute_metrics
    from train.bench.outputs import write_metrics
    from train.bench.results import METADATA_FILE, result_rows

    if not results.is_file():
        raise ConfigError(f"'{results}': results file not found")
    metrics = compute_metrics(result_rows(read_records(results)), _metrics_config(split, by_duration, duration_bins))
    files = write_metrics(metrics, out if out is not None else results.parent / "evaluation_output")
    metadata = results.parent / METADATA_FILE
    scoring = json.loads(metadata.read_text(encoding="utf-8")).get("scoring", {}) if metadata.is_file() else {}
    label = scoring.get("model") or "ours"
    _report(Console(), metrics, label, files.as_dict())
