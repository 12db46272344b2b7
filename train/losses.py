"""Per-axis Bradley-Terry (RankNet) loss on score differences, with label smoothing, ties and confidences.

For a pair (A, B) and an axis, the model's probability that A wins is ``sigmoid(s_a - s_b)``
(spec §7). The loss is binary cross-entropy with logits against a target:

* ``model_a`` -> ``1 - eps``, ``model_b`` -> ``eps`` (``eps`` = label smoothing);
* ``both`` -> ``0.5`` (``both="target"``: the two clips should score the same), or the axis is
  masked for that pair (``both="skip"``);
* no label on an axis -> masked for that axis.

With ``confidence_weighting`` each labelled axis is weighted by ``confidence / 5`` (the CMI-Pref
1-5 scale: a 5.0 vote counts fully, a 1.0 vote a fifth); an axis without a confidence weighs 1.
Each axis loss is the weighted mean over its unmasked pairs; the total is the mean over the axes
that have at least one unmasked pair in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch.nn import functional as F

from cmirm_plugin.errors import ConfigError
from train.data import CONFIDENCE_RANGE, Label

BothPolicy = Literal["target", "skip"]


@dataclass(frozen=True)
class LossConfig:
    """How labels become targets and weights (see the module docstring)."""

    label_smoothing: float = 0.0
    both: BothPolicy = "target"
    confidence_weighting: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.both not in ("target", "skip"):
            raise ConfigError(f"both must be 'target' or 'skip', got {self.both!r}")


def confidence_weight(confidence: float | None) -> float:
    """``confidence / 5``: 1.0 for a 5.0 vote, 0.2 for a 1.0 vote; 1.0 when no confidence was given."""
    return 1.0 if confidence is None else confidence / CONFIDENCE_RANGE[1]


@dataclass
class Targets:
    """BT targets and per-pair weights ``[B, 2]`` (axes in `AXES` order); weight 0 = masked."""

    target: torch.Tensor
    weight: torch.Tensor

    def to(self, device: torch.device | str) -> "Targets":
        return Targets(self.target.to(device), self.weight.to(device))


def make_targets(labels: Sequence[Sequence[Label | None]], confidences: Sequence[Sequence[float | None]],
                 config: LossConfig) -> Targets:
    """Targets and weights for a batch of per-axis labels and confidences."""
    eps = config.label_smoothing
    value = {"model_a": 1.0 - eps, "model_b": eps, "both": 0.5}
    target, weight = [], []
    for row_labels, row_conf in zip(labels, confidences, strict=True):
        t_row, w_row = [], []
        for label, conf in zip(row_labels, row_conf, strict=True):
            used = label is not None and not (label == "both" and config.both == "skip")
            t_row.append(value[label] if used else 0.5)
            w_row.append((confidence_weight(conf) if config.confidence_weighting else 1.0) if used else 0.0)
        target.append(t_row)
        weight.append(w_row)
    return Targets(torch.tensor(target, dtype=torch.float32), torch.tensor(weight, dtype=torch.float32))


def bradley_terry_loss(score_a: torch.Tensor, score_b: torch.Tensor, targets: Targets) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total, per_axis [2])`` for scores ``[B, 2]`` of the A and B clips (see the module docstring).

    An axis with no unmasked pair has loss 0 and does not count towards the total.
    """
    logits = (score_a - score_b).float()
    bce = F.binary_cross_entropy_with_logits(logits, targets.target, reduction="none")
    weight_sum = targets.weight.sum(dim=0)
    per_axis = (bce * targets.weight).sum(dim=0) / weight_sum.clamp(min=1e-12)
    present = weight_sum > 0
    total = per_axis[present].mean() if bool(present.any()) else logits.sum() * 0.0
    return total, per_axis.detach()
