"""Training CMI-RM on preference pairs, and (``train.bench``) evaluating it on CMI-RewardBench.

``train_reward_model(TrainConfig(...))`` runs one stage (``cmirm train`` on the command line):
pairs (`train.data`) -> held-out split (`train.splits`) -> frozen-tower feature cache
(`train.feature_cache`) -> per-axis Bradley-Terry loss (`train.losses`) -> AdamW with warm-up and
cosine decay -> ``best/`` and ``last/`` in the released layout (`train.checkpoint`), resumable.

The names below are imported on first use, so ``import train.bench`` does not pay for the model
stack (torch + transformers) that training needs.
"""

from __future__ import annotations

from cmirm_plugin.importing import lazy_exports

_EXPORTS = {
    "TrainConfig": "train.config", "TrainResult": "train.trainer", "train_reward_model": "train.trainer",
    "PairDataError": "train.data", "PairSet": "train.data", "PreferencePair": "train.data", "load_pairs": "train.data",
    "FeatureCache": "train.feature_cache", "LossConfig": "train.losses", "bradley_terry_loss": "train.losses",
    "make_targets": "train.losses",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("train", _EXPORTS)
