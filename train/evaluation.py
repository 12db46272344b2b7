"""Loss and pairwise accuracy per axis, overall and per modality, accumulated over batches.

Accuracy counts the pairs with a decisive label (``model_a`` / ``model_b``) on an axis: the
prediction is A when ``s_a > s_b`` and B otherwise (ties go to B, as the benchmark runner does).
``both`` votes are left out of accuracy (the benchmark instead gives them 0.5 credit, which moves
every model equally). Losses are the weighted means the training loss uses (`train.losses`).

Metric names (the keys of `PairwiseMetrics.compute`), for ``axis`` in alignment / musicality and
``modality`` in text / text+lyrics / text+ref / text+lyrics+ref (or a row's own ``modality``):

* ``loss``, ``loss/<axis>``, ``loss/<axis>/<modality>``: Bradley-Terry loss;
* ``acc``, ``acc/<axis>``, ``acc/<axis>/<modality>``: pairwise accuracy (``acc`` = mean over axes);
* ``n/<axis>``: decisive pairs counted in ``acc/<axis>``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch
from torch.nn import functional as F

from cmirm_plugin.model.reward_model import CMIRewardModel
from cmirm_plugin.records import AXES
from train.batching import AudioSource, MissingPolicy, TextSource, score_pairs
from train.data import Label, PreferencePair
from train.losses import LossConfig, Targets, make_targets


class PairwiseMetrics:
    """Running sums over an epoch or an evaluation pass; `compute` turns them into a flat dict."""

    def __init__(self) -> None:
        self._loss: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])  # (axis, group) -> [sum, weight]
        self._acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])        # (axis, group) -> [correct, n]

    def update(self, diff: torch.Tensor, targets: Targets, labels: Sequence[Sequence[Label | None]],
               modalities: Sequence[str]) -> None:
        """Add a batch: ``diff = s_a - s_b`` ``[B, 2]``, its targets, labels and modality per pair."""
        diff = diff.detach().float().cpu()
        bce = F.binary_cross_entropy_with_logits(diff, targets.target.cpu(), reduction="none")
        weight = targets.weight.cpu()
        for i, modality in enumerate(modalities):
            for j, axis in enumerate(AXES):
                w = float(weight[i, j])
                if w > 0:
                    for group in ("all", modality):
                        self._loss[axis, group][0] += w * float(bce[i, j])
                        self._loss[axis, group][1] += w
                label = labels[i][j]
                if label in ("model_a", "model_b"):
                    correct = int((float(diff[i, j]) > 0) == (label == "model_a"))
                    for group in ("all", modality):
                        self._acc[axis, group][0] += correct
                        self._acc[axis, group][1] += 1

    def compute(self) -> dict[str, float | int | None]:
        """The metrics named in the module docstring (None where nothing was counted)."""
        out: dict[str, float | int | None] = {}
        loss = {key: total / weight for key, (total, weight) in self._loss.items()}
        acc = {key: correct / n for key, (correct, n) in self._acc.items()}
        axis_loss = [loss[a, "all"] for a in AXES if (a, "all") in loss]
        axis_acc = [acc[a, "all"] for a in AXES if (a, "all") in acc]
        out["loss"] = sum(axis_loss) / len(axis_loss) if axis_loss else None
        out["acc"] = sum(axis_acc) / len(axis_acc) if axis_acc else None
        for axis in AXES:
            out[f"n/{axis}"] = self._acc[axis, "all"][1] if (axis, "all") in self._acc else 0
        for name, values in (("loss", loss), ("acc", acc)):
            for (axis, group), value in sorted(values.items()):
                out[f"{name}/{axis}" if group == "all" else f"{name}/{axis}/{group}"] = value
        return out


def evaluate_pairs(model: CMIRewardModel, pairs: Sequence[PreferencePair], text: TextSource, audio: AudioSource,
                   loss_config: LossConfig, batch_size: int = 32, missing: MissingPolicy = "mask") -> dict[str, float | int | None]:
    """`PairwiseMetrics` of ``model`` over ``pairs``; leaves the model in eval mode (no modality dropout)."""
    model.eval()
    metrics = PairwiseMetrics()
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            score_a, score_b = score_pairs(model, batch, text, audio, missing)
            labels = [p.labels for p in batch]
            targets = make_targets(labels, [p.confidences for p in batch], loss_config)
            metrics.update(score_a - score_b, targets, labels, [p.modality for p in batch])
    return metrics.compute()
