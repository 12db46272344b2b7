"""The Bradley-Terry loss against hand-computed values, and the pairwise metrics."""

from __future__ import annotations

import math

import pytest
import torch

from cmirm_plugin.errors import ConfigError
from train.evaluation import PairwiseMetrics
from train.losses import LossConfig, bradley_terry_loss, confidence_weight, make_targets


def bce(logit: float, target: float) -> float:
    """-(t log sigmoid(d) + (1 - t) log(1 - sigmoid(d))), written out."""
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(target * math.log(p) + (1.0 - target) * math.log(1.0 - p))


def scores(diffs: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores whose A - B differences are ``diffs`` ``[B, 2]`` (B is the zero clip)."""
    a = torch.tensor(diffs, dtype=torch.float32)
    return a, torch.zeros_like(a)


def test_label_smoothed_loss_matches_the_closed_form():
    eps = 0.1
    a, b = scores([[2.0, -1.0], [0.5, 3.0]])
    labels = [("model_a", "model_b"), ("model_b", "model_a")]
    targets = make_targets(labels, [(None, None)] * 2, LossConfig(label_smoothing=eps))
    total, per_axis = bradley_terry_loss(a, b, targets)
    alignment = (bce(2.0, 1 - eps) + bce(0.5, eps)) / 2
    musicality = (bce(-1.0, eps) + bce(3.0, 1 - eps)) / 2
    assert per_axis.tolist() == pytest.approx([alignment, musicality], rel=1e-6)
    assert float(total) == pytest.approx((alignment + musicality) / 2, rel=1e-6)
    # Without smoothing it is plain RankNet: -log sigmoid(s_winner - s_loser).
    targets = make_targets(labels, [(None, None)] * 2, LossConfig())
    _, per_axis = bradley_terry_loss(a, b, targets)
    assert float(per_axis[0]) == pytest.approx((-math.log(1 / (1 + math.exp(-2.0))) - math.log(1 / (1 + math.exp(0.5)))) / 2)


def test_both_as_half_target_or_skipped_and_unlabelled_axes_masked():
    a, b = scores([[1.0, 2.0], [-1.5, 0.7]])
    labels = [("both", "model_a"), ("model_a", None)]
    _, per_axis = bradley_terry_loss(a, b, make_targets(labels, [(None, None)] * 2, LossConfig(both="target")))
    assert per_axis.tolist() == pytest.approx([(bce(1.0, 0.5) + bce(-1.5, 1.0)) / 2, bce(2.0, 1.0)], rel=1e-6)
    total, per_axis = bradley_terry_loss(a, b, make_targets(labels, [(None, None)] * 2, LossConfig(both="skip")))
    assert per_axis.tolist() == pytest.approx([bce(-1.5, 1.0), bce(2.0, 1.0)], rel=1e-6)
    # An axis with no usable label in the batch does not count towards the total.
    only_both = make_targets([("both", None)], [(None, None)], LossConfig(both="skip"))
    total, per_axis = bradley_terry_loss(*scores([[1.0, 1.0]]), only_both)
    assert float(total) == 0.0 and per_axis.tolist() == [0.0, 0.0]
    total, _ = bradley_terry_loss(*scores([[1.0, 1.0]]), make_targets([(None, "model_b")], [(None, None)], LossConfig()))
    assert float(total) == pytest.approx(bce(1.0, 0.0))


def test_confidence_weighting_is_confidence_over_five():
    assert [confidence_weight(c) for c in (1.0, 2.5, 5.0, None)] == [0.2, 0.5, 1.0, 1.0]
    a, b = scores([[1.0, 0.0], [-2.0, 0.0]])
    labels = [("model_a", "model_a"), ("model_a", "model_a")]
    confidences = [(5.0, 1.0), (1.0, None)]
    targets = make_targets(labels, confidences, LossConfig(confidence_weighting=True))
    assert torch.allclose(targets.weight, torch.tensor([[1.0, 0.2], [0.2, 1.0]]))
    _, per_axis = bradley_terry_loss(a, b, targets)
    assert float(per_axis[0]) == pytest.approx((1.0 * bce(1.0, 1.0) + 0.2 * bce(-2.0, 1.0)) / 1.2, rel=1e-6)
    unweighted = make_targets(labels, confidences, LossConfig())
    assert unweighted.weight.tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_loss_gradient_pushes_the_winner_up():
    a = torch.zeros(1, 2, requires_grad=True)
    b = torch.zeros(1, 2, requires_grad=True)
    total, _ = bradley_terry_loss(a, b, make_targets([("model_a", "model_b")], [(None, None)], LossConfig()))
    total.backward()
    assert a.grad[0, 0] < 0 < a.grad[0, 1] and torch.allclose(a.grad, -b.grad)


def test_invalid_loss_options_are_rejected():
    with pytest.raises(ConfigError, match="label_smoothing"):
        LossConfig(label_smoothing=0.5)
    with pytest.raises(ConfigError, match="both"):
        LossConfig(both="half")


def test_pairwise_metrics_per_axis_and_modality():
    metrics = PairwiseMetrics()
    diff = torch.tensor([[1.0, -1.0], [0.0, 2.0], [-3.0, 1.0], [2.0, 0.5]])
    labels = [("model_a", "model_b"), ("model_a", "model_a"), ("model_a", "both"), ("model_b", None)]
    modalities = ["text", "text", "text+ref", "text+ref"]
    targets = make_targets(labels, [(None, None)] * 4, LossConfig())
    metrics.update(diff, targets, labels, modalities)
    out = metrics.compute()
    # alignment: right, tie -> B (wrong), wrong, wrong; musicality: right, right ('both' / unlabelled not counted)
    assert out["acc/alignment"] == 0.25 and out["n/alignment"] == 4
    assert out["acc/musicality"] == 1.0 and out["n/musicality"] == 2
    assert out["acc"] == pytest.approx(0.625)
    assert out["acc/alignment/text"] == 0.5 and out["acc/alignment/text+ref"] == 0.0
    assert "acc/musicality/text+ref" not in out
    # 'both' counts in the loss (target 0.5), not in accuracy.
    assert out["loss/musicality/text+ref"] == pytest.approx(bce(1.0, 0.5))
    assert out["loss/musicality"] == pytest.approx((bce(-1.0, 0.0) + bce(2.0, 1.0) + bce(1.0, 0.5)) / 3)
    assert PairwiseMetrics().compute()["acc"] is None


def test_nan_scores_are_left_out_of_accuracy():
    """A NaN difference predicts nothing: it is neither right nor wrong, and not in ``n``."""
    nan = float("nan")
    diff = torch.tensor([[1.0, nan], [nan, nan], [-2.0, 3.0], [nan, -1.0]])
    labels = [("model_a", "model_b"), ("model_b", "model_b"), ("model_a", "model_a"), ("model_b", "model_b")]
    targets = make_targets(labels, [(None, None)] * 4, LossConfig())
    metrics = PairwiseMetrics()
    metrics.update(diff, targets, labels, ["text", "text", "text+ref", "text+ref"])
    out = metrics.compute()
    # alignment: pairs 1 (right) and 3 (wrong) count; musicality: pairs 3 (right) and 4 (right).
    # Were NaN counted (as the tie rule's B), 'model_b' labels would make pairs 2 and 4 "right".
    assert out["n/alignment"] == 2 and out["acc/alignment"] == 0.5
    assert out["n/musicality"] == 2 and out["acc/musicality"] == 1.0
    assert out["acc/alignment/text"] == 1.0 and out["acc/alignment/text+ref"] == 0.0
    assert out["acc/musicality/text+ref"] == 1.0 and "acc/musicality/text" not in out
    only_nan = PairwiseMetrics()
    only_nan.update(diff[1:2], make_targets(labels[1:2], [(None, None)], LossConfig()), labels[1:2], ["text"])
    assert only_nan.compute()["acc"] is None and only_nan.compute()["n/alignment"] == 0
