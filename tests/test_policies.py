import re

import numpy as np
import pytest

from cmirm_plugin.errors import CmirmError
from rerank.policies import (
    AxisPolicy,
    LexPolicy,
    ParetoPolicy,
    Thresholded,
    WeightedPolicy,
    ZSumPolicy,
    check_scores,
    pareto_fronts,
    parse_policy,
    rank_per_instruction,
    zscores,
)

# columns: alignment, musicality
POOL = np.array([
    [1.0, 2.0],  # 0
    [3.0, 1.0],  # 1
    [3.0, 1.0],  # 2  (same as 1)
    [0.0, 5.0],  # 3
    [2.0, 2.0],  # 4
])


# ---------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("bad,where", [(np.nan, "scores[2, musicality] is nan"), (np.inf, "scores[2, musicality] is inf")])
def test_non_finite_scores_are_rejected_with_index_and_axis(bad, where):
    scores = POOL.copy()
    scores[2, 1] = bad
    for call in (lambda: ZSumPolicy().select(scores, 1), lambda: AxisPolicy("alignment").order(scores),
                 lambda: ParetoPolicy().composite(scores)):
        with pytest.raises(CmirmError, match=where.replace("[", r"\[").replace("]", r"\]")):
            call()


@pytest.mark.parametrize("scores,message", [
    (np.zeros(3), r"shape \[N, 2\]"),
    (np.zeros((3, 3)), r"shape \[N, 2\]"),
    (np.zeros((0, 2)), "empty"),
])
def test_bad_shapes(scores, message):
    with pytest.raises(CmirmError, match=message):
        check_scores(scores)


@pytest.mark.parametrize("k,message", [(0, "k must be an integer >= 1, got 0"), (-2, "k must be an integer >= 1, got -2"), (True, "integer"),
                                       (1.5, "integer"), (6, r"k=6 exceeds the pool size N=5; use k <= 5")])
def test_bad_k(k, message):
    with pytest.raises(CmirmError, match=message):
        ZSumPolicy().select(POOL, k)


def test_k_above_n_with_allow_fewer_takes_everything():
    chosen = AxisPolicy("alignment").select(POOL, 9, allow_fewer=True)
    assert chosen.indices.tolist() == [1, 2, 4, 0, 3]
    assert not chosen.complete and chosen.k == 9
    assert AxisPolicy("alignment").select(POOL, np.int64(2)).complete  # numpy integers are fine


# ------------------------------------------------------------------------------------ policies

def test_axis_policy_ranking_and_ties_by_index():
    policy = AxisPolicy("alignment")
    chosen = policy(POOL, 3)
    assert chosen.indices.tolist() == [1, 2, 4]  # 1 and 2 tie: lower index first
    assert chosen.composite.tolist() == [3.0, 3.0, 2.0]
    assert AxisPolicy("musicality").order(POOL).tolist() == [3, 0, 4, 1, 2]
    assert policy.composite(POOL).tolist() == POOL[:, 0].tolist()


def test_all_ties_keep_input_order_for_every_policy():
    flat = np.ones((6, 2))
    for policy in (AxisPolicy("musicality"), WeightedPolicy((("alignment", 1), ("musicality", 2))), ZSumPolicy(), LexPolicy("alignment", 0.5),
                   ParetoPolicy(), Thresholded(ZSumPolicy(), (("alignment", 0.0),))):
        assert policy.order(flat).tolist() == list(range(6)), policy
        assert policy(flat, 2).indices.tolist() == [0, 1]


def test_weighted_policy():
    policy = WeightedPolicy((("alignment", 1.0), ("musicality", 0.5)))
    np.testing.assert_allclose(policy.composite(POOL), [2.0, 3.5, 3.5, 2.5, 3.0])
    assert policy.order(POOL).tolist() == [1, 2, 4, 3, 0]
    assert WeightedPolicy((("musicality", 1),)).order(POOL).tolist() == AxisPolicy("musicality").order(POOL).tolist()


@pytest.mark.parametrize("weights,message", [
    ((("alignment", -1), ("musicality", 1)), "weight of alignment must be finite and >= 0"),
    ((("alignment", 0), ("musicality", 0)), "all zero"), ((("alignment", 1), ("musicality", np.nan)), "weight of musicality"),
    ((("alignment", 1), ("alignment", 2)), "given twice"), ((("bad axis", 1),), "axis names are words")])
def test_weighted_policy_rejects_bad_weights(weights, message):
    with pytest.raises(CmirmError, match=message):
        WeightedPolicy(weights)


def test_zsum_policy_matches_hand_computation():
    z = (POOL - POOL.mean(0)) / POOL.std(0)
    np.testing.assert_allclose(ZSumPolicy().composite(POOL), z.sum(1))
    assert ZSumPolicy().order(POOL).tolist() == [3, 1, 2, 4, 0]


def test_zsum_is_invariant_to_per_axis_affine_rescaling():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(40, 2))
    rescaled = scores * np.array([1000.0, 0.01]) + np.array([-7.0, 42.0])
    np.testing.assert_allclose(ZSumPolicy().composite(rescaled), ZSumPolicy().composite(scores), atol=1e-9)
    assert ZSumPolicy().order(rescaled).tolist() == ZSumPolicy().order(scores).tolist()
    assert ParetoPolicy().order(rescaled).tolist() == ParetoPolicy().order(scores).tolist()


def test_zsum_zero_variance_and_single_candidate():
    constant_alignment = np.array([[0.3, 1.0], [0.3, 3.0], [0.3, 2.0]])
    np.testing.assert_allclose(zscores(constant_alignment)[:, 0], 0.0)
    assert ZSumPolicy().order(constant_alignment).tolist() == [1, 2, 0]
    assert ZSumPolicy().composite(np.array([[5.0, -2.0]])).tolist() == [0.0]
    assert ZSumPolicy()(np.array([[5.0, -2.0]]), 1).indices.tolist() == [0]


def test_lex_policy_plain_and_with_tolerance():
    # tol=0: alignment first, musicality settles exact ties.
    scores = np.array([[2.0, 0.0], [2.0, 1.0], [1.95, 9.0], [0.0, 3.0], [-0.05, 4.0]])
    assert LexPolicy("alignment").order(scores).tolist() == [1, 0, 2, 3, 4]
    # tol=0.1: {0, 1, 2} form tier 1 (ordered by musicality), then {3, 4}.
    assert LexPolicy("alignment", 0.1).order(scores).tolist() == [2, 1, 0, 4, 3]
    assert LexPolicy("alignment", 0.1).composite(scores).tolist() == scores[:, 0].tolist()
    assert LexPolicy("musicality").order(POOL).tolist() == [3, 4, 0, 1, 2]
    with pytest.raises(CmirmError, match="tol"):
        LexPolicy("alignment", -0.1)
    with pytest.raises(CmirmError, match="policy 'lex:melody,tol=0.0' names 'melody' but the scorer's axes are "
                                         "alignment, musicality"):
        LexPolicy("melody").order(POOL)


def test_pareto_fronts_and_order():
    scores = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [0.5, 0.5], [1.0, 1.0], [0.0, 0.0]])
    assert pareto_fronts(scores).tolist() == [0, 0, 0, 1, 0, 2]  # duplicates share a front
    order = ParetoPolicy().order(scores)
    assert set(order[:4].tolist()) == {0, 1, 2, 4} and order[4:].tolist() == [3, 5]
    # within the front: z-sum (0 and 4 tie with the highest), then index
    assert order[:2].tolist() == [0, 4]
    np.testing.assert_allclose(ParetoPolicy().composite(scores), ZSumPolicy().composite(scores))


def test_thresholds_exclude_and_may_return_fewer_than_k():
    policy = Thresholded(AxisPolicy("musicality"), (("alignment", 2.0),))  # inclusive minimum
    assert policy.eligible(POOL).tolist() == [False, True, True, False, True]
    chosen = policy(POOL, 4)
    assert chosen.indices.tolist() == [4, 1, 2] and chosen.n_eligible == 3 and not chosen.complete
    assert policy.order(POOL).tolist() == [4, 1, 2, 3, 0]  # ineligible ranked last, in base order
    nobody = Thresholded(ZSumPolicy(), (("alignment", 10.0), ("musicality", 0.0)))(POOL, 2)
    assert nobody.indices.tolist() == [] and nobody.n_eligible == 0
    with pytest.raises(CmirmError, match="minimum for alignment given more than once"):
        Thresholded(ZSumPolicy(), (("alignment", 1.0), ("alignment", 2.0)))


# -------------------------------------------------------------------------------------- parser

@pytest.mark.parametrize("spec,expected", [
    ("axis:musicality", AxisPolicy("musicality")),
    ("weighted:alignment=0.5,musicality=0.5", WeightedPolicy((("alignment", 0.5), ("musicality", 0.5)))),
    ("weighted: musicality = 2", WeightedPolicy((("musicality", 2.0),))),
    ("zsum", ZSumPolicy()),
    ("lex:alignment,musicality,tol=0.1", LexPolicy("alignment", 0.1, "musicality")),
    ("lex:musicality", LexPolicy("musicality", 0.0)),
    ("pareto", ParetoPolicy()),
    ("zsum;min:alignment=0.2", Thresholded(ZSumPolicy(), (("alignment", 0.2),))),
    ("pareto ; min:musicality=-1,alignment=0", Thresholded(ParetoPolicy(), (("alignment", 0.0), ("musicality", -1.0)))),
])
def test_parse_valid_policies_and_round_trip(spec, expected):
    policy = parse_policy(spec)
    assert policy == expected
    assert parse_policy(policy.spec()) == policy


def test_parse_merges_cli_minimums():
    policy = parse_policy("axis:alignment;min:alignment=0.2", ["musicality=0.1"])
    assert policy == Thresholded(AxisPolicy("alignment"), (("alignment", 0.2), ("musicality", 0.1)))
    assert policy.spec() == "axis:alignment;min:alignment=0.2,musicality=0.1"
    assert parse_policy("zsum", ["alignment=1,musicality=2"]).minimums == (("alignment", 1.0), ("musicality", 2.0))


@pytest.mark.parametrize("spec,minimums,message", [
    ("best", (), "unknown policy 'best'; valid policies: axis .*weighted.*zsum.*lex.*pareto"),
    ("", (), "non-empty"),
    ("axis", (), "policy 'axis' needs arguments, e.g. 'axis:musicality'"),
    ("axis:mel ody", (), "axis names are words"),
    ("zsum:alignment", (), "takes no arguments"),
    ("weighted:alignment", (), "expected 'axis=value'"),
    ("weighted:alignment=x", (), "must be a number, got 'x'"),
    ("weighted:alignment=1,alignment=2", (), "axis 'alignment' given twice"),
    ("weighted:alignment=-1", (), "weight of alignment must be finite and >= 0"),
    ("lex:alignment,alignment", (), "lex needs the primary axis"),
    ("lex:alignment,musicality,melody", (), "lex needs the primary axis"),
    ("lex:tol=0.1", (), "lex needs the primary axis"),
    ("lex:alignment,tol=nan", (), "must be finite"),
    ("zsum;pareto", (), "more than one base policy"),
    ("min:alignment=0.2", (), "no base policy"),
    ("zsum;min:alignment=0.2", ("alignment=0.3",), "minimum for alignment given more than once"),
    ("zsum", ("alignment",), "--min: expected 'axis=value'"),
])
def test_parse_errors(spec, minimums, message):
    with pytest.raises(CmirmError, match=message):
        parse_policy(spec, minimums)


# ---------------------------------------------------------------------------- per instruction

def test_rank_per_instruction_on_interleaved_pools():
    ids = ["a", "b", "a", "b", "a", "b"]
    scores = np.array([[1, 0], [5, 0], [3, 0], [5, 0], [2, 0], [4, 0]], dtype=float)
    result = rank_per_instruction(ids, scores, AxisPolicy("alignment"), 2)
    assert result.rank.tolist() == [3, 1, 1, 2, 2, 3]  # b: candidates 1 and 3 tie, 1 comes first
    assert result.selected.tolist() == [False, True, True, True, True, False]
    assert result.eligible.all()


def test_rank_per_instruction_thresholds_and_errors():
    ids = ["a", "a", "b"]
    scores = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    result = rank_per_instruction(ids, scores, parse_policy("axis:alignment;min:alignment=0.5"), 1)
    assert result.eligible.tolist() == [True, False, True]
    assert result.selected.tolist() == [True, False, True]
    with pytest.raises(CmirmError, match="instruction 'b': k=2 exceeds the pool size N=1"):
        rank_per_instruction(ids, scores, ZSumPolicy(), 2)
    assert rank_per_instruction(ids, scores, ZSumPolicy(), 2, allow_fewer=True).selected.all()
    with pytest.raises(CmirmError, match="2 instruction ids for 3 score rows"):
        rank_per_instruction(ids[:2], scores, ZSumPolicy(), 1)
    scores[2, 0] = np.nan  # the message names the index in the flat list, not within the pool
    with pytest.raises(CmirmError, match=r"scores\[2, alignment\] is nan"):
        rank_per_instruction(ids, scores, ZSumPolicy(), 1)


def test_rank_per_instruction_matches_select_and_reports_the_pool_composite():
    rng = np.random.default_rng(0)
    ids = ["a", "b"] * 6
    scores = rng.normal(size=(12, 2))
    for spec in ("zsum", "pareto", "lex:alignment,tol=0.3", "weighted:alignment=0.2;min:musicality=0"):
        policy = parse_policy(spec)
        result = rank_per_instruction(ids, scores, policy, 2, allow_fewer=True)
        for name in ("a", "b"):
            positions = np.array([i for i, x in enumerate(ids) if x == name])
            pool = scores[positions]
            np.testing.assert_allclose(result.composite[positions], policy.composite(pool))   # z-scores per pool
            chosen = policy.select(pool, 2, allow_fewer=True).indices
            assert sorted(np.flatnonzero(result.selected[positions]).tolist()) == sorted(chosen.tolist()), spec
            assert result.rank[positions][chosen].tolist() == list(range(1, len(chosen) + 1)), spec


def test_counts_are_checked_in_one_place_with_the_name_and_value():
    from cmirm_plugin.errors import ConfigError, check_count

    assert check_count("k", np.int64(3)) == 3 and type(check_count("k", np.int64(3))) is int
    for bad in (0, -1, True, 2.0, "2", None):
        with pytest.raises(ConfigError, match=rf"^--num-actors must be an integer >= 1, got {re.escape(repr(bad))}$"):
            check_count("--num-actors", bad)
