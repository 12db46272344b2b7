"""Loss and pairwise accuracy per axis, overall and per modality, accumulated over batches.

Accuracy counts the pairs with a decisive label (``model_a`` / ``model_b``) on an axis: the
prediction is the benchmark runner's (`train.bench.labels.predicted_label`: A when ``s_a > s_b``,
else B; a NaN score predicts nothing and is not counted). ``both`` votes are left out of accuracy
(the benchmark instead gives them 0.5 credit, which moves every model equally). Losses are the
weighted means the training loss uses (`train.losses`).

Metric names (the keys of `PairwiseMetrics.compute`), for ``axis`` in alignment / musicality and
``modality`` in text / text+lyrics / text+ref / text+lyrics+ref (or a row's own ``modality``):

* ``loss``, ``loss/<axis>``, ``loss/<axis>/<modality>``: Bradley-Terry loss;
* ``acc``, ``acc/<axis>``, ``acc/<axis>/<modality>``: pairwise accuracy (``acc`` = mean over axes);
* ``n/<axis>``: decisive pairs counted in ``acc/<axis>``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import torch
from torch.nn import functional as F

from cmirm_plugin.model.reward_model import CMIRewardModel
from cmirm_plugin.records import AXES
from cmirm_plugin.scoring import MissingPolicy
from train.batching import AudioSource, TextSource, score_pairs
from train.bench.labels import predicted_label
from train.data import Label, PreferencePair
from train.losses import LossConfig, Targets, make_targets


class PairwiseMetrics:
    """Running sums over an epoch or an evaluation pass; `compute` turns them into a flat dict.

    `state` / `from_state` carry the sums through JSON exactly (a run resumed mid-epoch goes on
    summing where the interrupted one stopped).
    """

    def __init__(self) -> None:
        self._loss: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])  # (axis, group) -> [sum, weight]
        self._acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])        # (axis, group) -> [correct, n]

    def update(self, diff: torch.Tensor, targets: Targets, labels: Sequence[Sequence[Label | None]],
               modalities: Sequence[str]) -> None:
        """Add a batch: ``diff = s_a - s_b`` ``[B, 2]``, its targets, labels and modality per pair.

        Pass CPU tensors where they are at hand: anything else is copied to the CPU here.
        """
        diff = diff.detach().float().cpu()
        bce = F.binary_cross_entropy_with_logits(diff, targets.target.cpu(), reduction="none").tolist()
        weights, diffs = targets.weight.cpu().tolist(), diff.tolist()
        for i, modality in enumerate(modalities):
            groups = ("all", modality)
            for j, axis in enumerate(AXES):
                w = weights[i][j]
                if w > 0:
                    for group in groups:
                        self._loss[axis, group][0] += w * bce[i][j]
                        self._loss[axis, group][1] += w
                label = labels[i][j]
                predicted = predicted_label(diffs[i][j], 0.0) if label in ("model_a", "model_b") else None
                if predicted is not None:
                    for group in groups:
                        self._acc[axis, group][0] += int(predicted == label)
                        self._acc[axis, group][1] += 1

    def state(self) -> dict[str, list[list[Any]]]:
        """The running sums, JSON-ready.

        ``{"loss": [[axis, group, sum, weight], ...], "acc": [[axis, group, correct, n], ...]}``.
        """
        return {"loss": [[*key, *sums] for key, sums in self._loss.items()],
                "acc": [[*key, *counts] for key, counts in self._acc.items()]}

    @classmethod
    def from_state(cls, state: Mapping[str, Sequence[Sequence[Any]]]) -> "PairwiseMetrics":
        """Running sums saved by `state` (an empty mapping gives empty sums)."""
        metrics = cls()
        for axis, group, total, weight in state.get("loss", ()):
            metrics._loss[axis, group] = [float(total), float(weight)]
        for axis, group, correct, n in state.get("acc", ()):
            metrics._acc[axis, group] = [int(correct), int(n)]
        return metrics

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
