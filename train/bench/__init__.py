"""CMI-RewardBench evaluation (spec §5): score any cmirm scorer (or official-runner plug-in) on the benchmark, compute its metrics.

``run_benchmark`` scores and evaluates (resumable, writes results.jsonl and the metrics files);
``compute_metrics`` evaluates rows held in memory, e.g. a trainer's held-out predictions.

The names below are imported on first use, so that reading rows (``train.bench.schema``, which
`train.data` uses) does not load the runner, scipy or the scorer machinery.
"""

from __future__ import annotations

from cmirm_plugin.importing import lazy_exports

_EXPORTS = {
    "BenchConfig": "train.bench.runner", "BenchResult": "train.bench.runner", "run_benchmark": "train.bench.runner",
    "BenchRow": "train.bench.dataset", "BenchmarkData": "train.bench.dataset", "load_benchmark": "train.bench.dataset",
    "DatasetError": "train.bench.errors", "ScorerError": "train.bench.errors",
    "MetricsConfig": "train.bench.metrics", "compute_metrics": "train.bench.metrics",
    "MetricsFiles": "train.bench.outputs", "write_metrics": "train.bench.outputs",
    "print_summary": "train.bench.report", "summary_tables": "train.bench.report",
    "BenchScorer": "train.bench.scorer",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("train.bench", _EXPORTS)
