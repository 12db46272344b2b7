"""Reward against compute per search method: the rows, the ``compute.png`` plot, the toy benchmark script."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cmirm_plugin import CmirmError, Compute
from rerank.plots import PNG_SIZE, plot_compute_curves
from rerank.search.curves import compute_curves

ROOT = Path(__file__).resolve().parent.parent


def _outcomes():
    rng = np.random.default_rng(0)
    outcomes = {}
    for method, gain in (("best-of-n", 0.0), ("beam:width=2,segment=0.25", 0.1)):
        for budget in (4, 8, 16):
            outcomes[(method, budget)] = [
                (0.5 + gain * np.log2(budget) + 0.05 * rng.standard_normal(),
                 Compute(0.1 * budget + i, float(budget), "cpu", "decoder_steps", 100 * budget, 200 * budget, 0.5))
                for i in range(6)]
    return outcomes


def test_rows_hold_mean_reward_band_and_mean_compute():
    outcomes = _outcomes()
    rows = compute_curves(outcomes, reward="quality", n_boot=200)
    assert [(r.method, r.budget) for r in rows] == list(outcomes)
    for row in rows:
        rewards = [value for value, _ in outcomes[(row.method, row.budget)]]
        assert row.mean == pytest.approx(np.mean(rewards)) and row.ci_low <= row.mean <= row.ci_high
        assert row.n_instructions == 6 and row.reward == "quality"
        assert (row.audio_seconds, row.work_units, row.model_evals) == (row.budget, 100 * row.budget, 200 * row.budget)
        assert row.generator_seconds == pytest.approx(0.1 * row.budget + 2.5)
        assert row.total_seconds == pytest.approx(row.generator_seconds + 0.5)
    external = {("cmd", 4): [(0.5, Compute(1.0, 4.0))]}
    (row,) = compute_curves(external, reward="quality")
    assert row.work_units is None and row.audio_seconds == 4.0


def test_compute_plot_is_written_and_refuses_unknown_axes(tmp_path):
    rows = compute_curves(_outcomes(), reward="quality", n_boot=50)
    path = plot_compute_curves(rows, tmp_path / "compute.png")
    with Image.open(path) as image:
        assert image.size == PNG_SIZE
    with pytest.raises(CmirmError, match="unknown compute axis \\['flops'\\]"):
        plot_compute_curves(rows, tmp_path / "x.png", compute_axes=("flops",))
    external = compute_curves({("cmd", 4): [(0.5, Compute(1.0, 4.0))]}, reward="quality")
    with pytest.raises(CmirmError, match="no compute axis among \\['work_units'\\] has values"):
        plot_compute_curves(external, tmp_path / "x.png", compute_axes=("work_units",))


def test_toy_benchmark_script_runs_small(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["search_vs_best_of_n.py", "--budgets", "4,8", "--instructions", "3",
                                      "--out", str(tmp_path)])
    runpy.run_path(str(ROOT / "benchmarks" / "search_vs_best_of_n.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "| toy_segments: budget (clips) | audio s | `best-of-n` | `beam:width=2,segment=0.25` |" in printed
    assert "| toy_diffusion: budget (clips) | audio s | `best-of-n` | `noise:neighbors=4,radius=0.5` |" in printed
    rows = json.loads((tmp_path / "search_toy_segments.json").read_text())
    assert {(r["method"], r["budget"]) for r in rows} >= {("beam:width=2,segment=0.25", 8), ("best-of-n", 4),
                                                          ("smc:segment=0.25,lambda=20", 8)}
    for name in ("search_toy_segments.png", "search_toy_diffusion.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size == PNG_SIZE


def test_compute_columns_are_the_same_fields_in_both_curve_tables():
    from rerank.scaling import COMPUTE_COLUMNS
    from rerank.search.curves import COMPUTE_AXES

    assert tuple(COMPUTE_AXES) == COMPUTE_COLUMNS
