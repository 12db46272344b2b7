"""Reward against compute, per search method: the rows behind ``compute.png``.

For each (method, budget), every instruction contributes the reward of the candidate the search
selected and the total `Compute` it spent (pruned candidates included). A `ComputeRow` holds the
mean reward over instructions with its percentile bootstrap band (`rerank.scaling.bootstrap_ci`,
the same resampling as the best-of-N curves) and the mean compute per instruction on every
compute axis (`COMPUTE_AXES`), so one row places the method's point on any of them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import Compute
from rerank import defaults
from rerank.scaling import COMPOSITE, bootstrap_ci

#: The compute a curve may be drawn against: field of `ComputeRow` -> axis label.
COMPUTE_AXES = {
    "audio_seconds": "generated audio seconds per instruction",
    "work_units": "generator work units per instruction (decoder steps / NFEs)",
    "model_evals": "model evaluations per instruction (work units x CFG rows)",
    "generator_seconds": "generator wall seconds per instruction",
    "total_seconds": "generator + scorer wall seconds per instruction",
}


@dataclass(frozen=True)
class ComputeRow:
    """One point of a method's curve: its budget, mean reward with band, and mean compute per instruction.

    A compute field is None when some instruction's compute lacks it (e.g. work units of an
    external command). ``reward`` names the scorer, ``axis`` the value reported (one of its axes,
    or the policy's composite).
    """

    method: str
    budget: int
    reward: str
    mean: float
    ci_low: float
    ci_high: float
    n_instructions: int
    audio_seconds: float | None
    work_units: float | None
    model_evals: float | None
    generator_seconds: float | None
    total_seconds: float | None
    axis: str = COMPOSITE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_compute(computes: Sequence[Compute | None]) -> dict[str, float | None]:
    """The mean of each compute field over ``computes`` (None where any lacks it, or any compute is None)."""
    values: dict[str, float | None] = {}
    for name in COMPUTE_AXES:
        column = [None if c is None else getattr(c, name) for c in computes]
        values[name] = None if not column or any(v is None for v in column) else float(np.mean(column))
    return values


def compute_curves(outcomes: Mapping[tuple[str, int], Sequence[tuple[float, Compute]]], *, reward: str,
                   axis: str = COMPOSITE, n_boot: int = defaults.N_BOOT, ci: float = defaults.CI,
                   seed: int = defaults.SCALING_SEED) -> list[ComputeRow]:
    """Rows for ``outcomes[(method, budget)] = [(selected reward, search compute) per instruction]``.

    Rows come out in the mapping's order; every (method, budget) resamples its instructions with
    the same seed, so bands of different budgets over the same instructions are paired.
    """
    rows = []
    for (method, budget), results in outcomes.items():
        if not results:
            raise CmirmError(f"no instructions for method {method!r} at budget {budget}")
        rewards = np.array([[value] for value, _ in results], dtype=np.float64)
        mean, low, high = bootstrap_ci(rewards, n_boot=n_boot, ci=ci, rng=np.random.default_rng(seed))
        rows.append(ComputeRow(method, int(budget), reward, float(mean[0]), float(low[0]), float(high[0]),
                               len(results), **mean_compute([c for _, c in results]), axis=axis))
    return rows


#: Columns of a methods run's ``curve.csv`` (and keys of each row of its ``curve.json``).
COMPUTE_COLUMNS = tuple(f.name for f in fields(ComputeRow))


def write_compute_csv(rows: Sequence[ComputeRow], path: str | Path) -> Path:
    """Write ``rows`` as CSV with the header `COMPUTE_COLUMNS`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COMPUTE_COLUMNS)
        writer.writeheader()
        writer.writerows(row.to_dict() for row in rows)
    return path


def write_compute_json(rows: Sequence[ComputeRow], settings: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``{"settings", "columns", "rows"}`` as indented JSON (the layout of `rerank.scaling`'s curve.json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": dict(settings), "columns": list(COMPUTE_COLUMNS),
                                "rows": [row.to_dict() for row in rows]}, indent=2) + "\n")
    return path
