import csv
import json
from dataclasses import asdict
from itertools import combinations

import numpy as np
import pytest

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import MODALITIES
from rerank.plots import PNG_SIZE, plot_curves
from rerank.policies import AxisPolicy, ParetoPolicy, WeightedPolicy, ZSumPolicy, parse_policy
from rerank.scaling import (
    COMPOSITE,
    CURVE_COLUMNS,
    expected_best_of_n,
    expected_top_k_of_n,
    inclusion_weights,
    n_grid,
    scaling_curves,
    write_curve_csv,
    write_curve_json,
)


def brute_force(select, evaluate, n, k):
    """Average over every n-subset of the mean E of its top k by S (ties: lower index)."""
    totals = []
    for subset in combinations(range(len(select)), n):
        top = sorted(subset, key=lambda i: (-select[i], i))[:k]
        totals.append(np.mean([evaluate[i] for i in top]))
    return float(np.mean(totals))


def pool(seed, m, ties):
    rng = np.random.default_rng(seed)
    select = rng.normal(size=m)
    if ties:
        select = np.round(select)  # many exact ties
    return select, rng.normal(size=m)


# ------------------------------------------------------------------------- exact estimators

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("m", [1, 2, 5, 9, 12])
@pytest.mark.parametrize("ties", [False, True])
def test_exact_estimators_equal_brute_force(seed, m, ties):
    select, evaluate = pool(seed, m, ties)
    for n in range(1, m + 1):
        assert expected_best_of_n(select, evaluate, n) == pytest.approx(brute_force(select, evaluate, n, 1), abs=1e-9)
        for k in range(2, min(n, 3) + 1):
            got = expected_top_k_of_n(select, evaluate, n, k)
            assert got == pytest.approx(brute_force(select, evaluate, n, k), abs=1e-9)


def test_ties_in_the_selection_scorer_go_to_the_lower_index():
    select = np.array([1.0, 1.0, 1.0])
    evaluate = np.array([10.0, 20.0, 30.0])
    # candidate 0 wins every subset containing it (2/3), else candidate 1
    assert expected_best_of_n(select, evaluate, 2) == pytest.approx((2 * 10 + 20) / 3)


def test_n_equal_one_is_the_pool_mean_and_n_equal_m_the_pool_max():
    select, evaluate = pool(7, 10, ties=False)
    both = np.column_stack([select, evaluate])
    np.testing.assert_allclose(expected_best_of_n(select, both, 1), both.mean(0), atol=1e-12)
    np.testing.assert_allclose(expected_best_of_n(select, both, 10), both[np.argmax(select)], atol=1e-12)
    assert expected_best_of_n(select, select, 10) == pytest.approx(select.max())
    assert expected_top_k_of_n(select, select, 10, 3) == pytest.approx(np.sort(select)[-3:].mean())


def test_inclusion_weights():
    assert inclusion_weights(1, 1).tolist() == [1.0]
    np.testing.assert_allclose(inclusion_weights(4, 2), [3 / 6, 2 / 6, 1 / 6, 0])
    for m, n, k in [(12, 5, 3), (3000, 1000, 1), (3000, 1500, 8), (3000, 3000, 2)]:
        weights = inclusion_weights(m, n, k)
        assert np.all(weights >= 0) and np.all(np.isfinite(weights))
        assert weights.sum() == pytest.approx(k, rel=1e-9)
    assert inclusion_weights(3000, 3000, 1)[0] == pytest.approx(1.0)
    with pytest.raises(CmirmError, match="n=5 exceeds the pool size m=4"):
        inclusion_weights(4, 5)
    with pytest.raises(CmirmError, match="k=3 exceeds n=2"):
        inclusion_weights(4, 2, 3)
    with pytest.raises(CmirmError, match="n must be an integer >= 1, got 0"):
        inclusion_weights(4, 0)


def test_estimator_input_errors():
    with pytest.raises(CmirmError, match="evaluate must have shape"):
        expected_best_of_n(np.zeros(3), np.zeros(4), 1)
    with pytest.raises(CmirmError, match="select has a non-finite value at candidate 1"):
        expected_best_of_n(np.array([0.0, np.nan]), np.zeros(2), 1)


@pytest.mark.parametrize("m,grid", [(1, [1]), (2, [1, 2]), (8, [1, 2, 4, 8]), (12, [1, 2, 4, 8, 12])])
def test_n_grid(m, grid):
    assert n_grid(m) == grid


# ---------------------------------------------------------------------------------- curves

def flat_pools(n_instructions=16, m=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"inst{i}" for i in range(n_instructions) for _ in range(m)]
    modalities = {f"inst{i}": MODALITIES[i % 3] for i in range(n_instructions)}  # text+lyrics+ref absent
    return rng.normal(size=(n_instructions * m, 2)), ids, modalities


def rows_of(curves, **where):
    return {row.n: row for row in curves.where(**where)}


def test_curve_points_match_per_instruction_brute_force():
    scores, ids, modalities = flat_pools(n_instructions=4, m=6)
    policy = WeightedPolicy((("alignment", 1.0), ("musicality", 2.0)))
    curves = scaling_curves(scores, ids, modalities, policy, ks=(1, 2), n_boot=50)
    assert curves.ns == (1, 2, 4, 6)
    for k in (1, 2):
        for axis_index, axis in enumerate(curves.axes):
            for n, row in rows_of(curves, k=k, axis=axis, modality="all").items():
                expected = []
                for i in range(4):
                    pool_scores = scores[6 * i: 6 * i + 6]
                    reported = np.column_stack([pool_scores, policy.composite(pool_scores)])[:, axis_index]
                    expected.append(brute_force(policy.composite(pool_scores), reported, n, k))
                assert row.mean == pytest.approx(np.mean(expected), abs=1e-9)
                assert row.n_instructions == 4
    assert min(row.n for row in curves.where(k=2)) == 2  # rows with k > N are omitted


def test_selecting_by_one_axis_and_reporting_another_shows_over_optimisation():
    rng = np.random.default_rng(1)
    alignment = rng.normal(size=(10, 32))
    scores = np.stack([alignment, -alignment + 0.1 * rng.normal(size=alignment.shape)], axis=-1).reshape(-1, 2)
    ids = [f"i{i}" for i in range(10) for _ in range(32)]
    curves = scaling_curves(scores, ids, {f"i{i}": "text" for i in range(10)}, AxisPolicy("alignment"), n_boot=20)
    align = [row.mean for row in curves.where(axis="alignment", modality="all")]
    music = [row.mean for row in curves.where(axis="musicality", modality="all")]
    assert np.all(np.diff(align) > 0) and np.all(np.diff(music) < 0)


def test_separate_evaluation_scorer():
    scores, ids, modalities = flat_pools()
    judge = np.random.default_rng(9).normal(size=scores.shape)
    curves = scaling_curves(scores, ids, modalities, ZSumPolicy(), evaluation_scores=judge,
                            selection_scorer="cmirm-small", evaluation_scorer="judge", n_boot=10)
    row = rows_of(curves, k=1, axis="musicality", modality="all")[8]
    expected = np.mean([judge[8 * i: 8 * i + 8][ZSumPolicy().order(scores[8 * i: 8 * i + 8])[0], 1] for i in range(16)])
    assert row.mean == pytest.approx(expected)
    assert (row.selection_scorer, row.evaluation_scorer, row.policy) == ("cmirm-small", "judge", "zsum")
    with pytest.raises(CmirmError, match="name the evaluation_scorer"):
        scaling_curves(scores, ids, modalities, ZSumPolicy(), evaluation_scores=judge)


def test_bootstrap_bands_contain_the_estimate_and_are_seeded():
    scores, ids, modalities = flat_pools()
    run = lambda seed: scaling_curves(scores, ids, modalities, ParetoPolicy(), n_boot=200, seed=seed)  # noqa: E731
    first, again, other = run(0), run(0), run(1)
    assert first == again
    assert [r.ci_low for r in first.rows] != [r.ci_low for r in other.rows]
    assert [r.mean for r in first.rows] == [r.mean for r in other.rows]
    for row in first.rows:
        assert row.ci_low <= row.mean <= row.ci_high
        if row.axis != "composite":  # the z-sum's pool mean (N = 1) is 0 for every instruction
            assert row.ci_low < row.ci_high
    wider = scaling_curves(scores, ids, modalities, ParetoPolicy(), n_boot=200, ci=0.99)
    narrow = rows_of(first, axis="alignment", modality="all")[4]
    wide = rows_of(wider, axis="alignment", modality="all")[4]
    assert wide.ci_low <= narrow.ci_low and wide.ci_high >= narrow.ci_high


def test_per_modality_breakdown():
    scores, ids, modalities = flat_pools()
    curves = scaling_curves(scores, ids, modalities, AxisPolicy("musicality"), n_boot=10)
    assert curves.modalities == ["all", "text", "text+lyrics", "text+ref"]  # absent modality: no rows
    for modality in ("text", "text+lyrics", "text+ref"):
        members = [i for i in range(16) if modalities[f"inst{i}"] == modality]
        row = rows_of(curves, axis="musicality", modality=modality)[8]
        assert row.n_instructions == len(members)
        assert row.mean == pytest.approx(np.mean([scores[8 * i: 8 * i + 8, 1].max() for i in members]))
    assert rows_of(curves, axis="musicality", modality="all")[8].n_instructions == 16


def test_curve_input_errors():
    scores, ids, modalities = flat_pools(n_instructions=3, m=4)
    with pytest.raises(CmirmError, match="no modality given for instruction 'inst2'"):
        scaling_curves(scores, ids, {"inst0": "text", "inst1": "text"}, ZSumPolicy())
    with pytest.raises(CmirmError, match="has modality 'audio'"):
        scaling_curves(scores, ids, dict.fromkeys(modalities, "audio"), ZSumPolicy())
    with pytest.raises(CmirmError, match="N=5 exceeds the pool of instruction 'inst0' \\(4 candidates\\)"):
        scaling_curves(scores, ids, modalities, ZSumPolicy(), ns=[1, 5])
    with pytest.raises(CmirmError, match="k=8 exceeds the largest N=4"):
        scaling_curves(scores, ids, modalities, ZSumPolicy(), ks=[8])
    with pytest.raises(CmirmError, match="ci must be a level strictly between 0 and 1"):
        scaling_curves(scores, ids, modalities, ZSumPolicy(), ci=95)
    short = scaling_curves(scores[:-1], ids[:-1], modalities, ZSumPolicy(), n_boot=5)
    assert short.ns == (1, 2, 3)  # the grid follows the smallest pool


# ---------------------------------------------------------------------------------- writers

def test_csv_and_json_writers(tmp_path):
    scores, ids, modalities = flat_pools()
    curves = scaling_curves(scores, ids, modalities, parse_policy("zsum;min:alignment=-1"), ks=(1, 2), n_boot=20)
    with write_curve_csv(curves, tmp_path / "out" / "curve.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CURVE_COLUMNS
        table = list(reader)
    assert len(table) == len(curves.rows) == 4 * 3 * (4 + 3)  # modalities x axes x (N in 1,2,4,8 for k=1; 2,4,8 for k=2)
    for line, row in zip(table, curves.rows):
        assert (int(line["n"]), int(line["k"]), line["axis"], line["modality"]) == (row.n, row.k, row.axis, row.modality)
        assert (float(line["mean"]), float(line["ci_low"]), float(line["ci_high"])) == (row.mean, row.ci_low, row.ci_high)
        assert line["policy"] == "zsum;min:alignment=-1.0" and line["evaluation_scorer"] == "cmirm"
    document = json.loads(write_curve_json(curves, tmp_path / "curve.json").read_text())
    assert document["columns"] == list(CURVE_COLUMNS)
    assert document["settings"] == {"policy": "zsum;min:alignment=-1.0", "selection_scorer": "cmirm",
                                    "evaluation_scorer": "cmirm", "ns": [1, 2, 4, 8], "ks": [1, 2],
                                    "ci": 0.95, "n_boot": 20, "seed": 0,
                                    "axes": ["alignment", "musicality", COMPOSITE], "warnings": []}
    assert document["rows"] == [asdict(row) for row in curves.rows]


def test_png_has_the_documented_size(tmp_path):
    import matplotlib.image

    scores, ids, modalities = flat_pools()
    curves = scaling_curves(scores, ids, modalities, ZSumPolicy(), ks=(1, 2), n_boot=20)
    for k in (1, 2):
        path = plot_curves(curves, tmp_path / f"curve_k{k}.png", k=k)
        image = matplotlib.image.imread(path)
        assert image.shape[:2] == (PNG_SIZE[1], PNG_SIZE[0])
        assert image[..., :3].std() > 0  # something was drawn
    with pytest.raises(CmirmError, match="no curves for k=3; available k: 1, 2"):
        plot_curves(curves, tmp_path / "x.png", k=3)
