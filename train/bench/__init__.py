"""CMI-RewardBench evaluation (spec §5): score any plug-in scorer on the benchmark, compute its metrics.

``run_benchmark`` scores and evaluates (resumable, writes results.jsonl and the metrics files);
``compute_metrics`` evaluates rows held in memory, e.g. a trainer's held-out predictions.
"""

from train.bench.dataset import BenchmarkData, BenchRow, load_benchmark
from train.bench.errors import DatasetError, ScorerError
from train.bench.metrics import MetricsConfig, compute_metrics
from train.bench.outputs import MetricsFiles, write_metrics
from train.bench.report import print_summary, summary_tables
from train.bench.runner import BenchConfig, BenchResult, run_benchmark
from train.bench.scorer import DEFAULT_MODEL_CLASS, load_scorer

__all__ = [
    "BenchConfig", "BenchResult", "BenchRow", "BenchmarkData", "DEFAULT_MODEL_CLASS", "DatasetError",
    "MetricsConfig", "MetricsFiles", "ScorerError", "compute_metrics", "load_benchmark", "load_scorer",
    "print_summary", "run_benchmark", "summary_tables", "write_metrics",
]
