"""Which pairs train and which are held out, and seeded subsets of the training pairs.

Both decisions use a seeded hash of the pair's content (`PreferencePair.key`) rather than its
position, so they do not change when lines are added or reordered, repeated votes on the same
pair always land on the same side, and ``max_pairs`` subsets are nested: with one seed, the first
1,000 pairs are part of the first 2,000 (what a data-scaling study needs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from cmirm_plugin.errors import ConfigError
from train.data import PairDataError, PreferencePair


def seeded_rank(key: str, seed: int, salt: str) -> float:
    """A uniform number in [0, 1) fixed by (key, seed, salt)."""
    digest = hashlib.sha256(f"{salt}\0{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass
class Split:
    """Training and held-out pairs, and a sentence saying how they were chosen (for the log)."""

    train: list[PreferencePair]
    eval: list[PreferencePair]
    how: str


def split_pairs(pairs: Sequence[PreferencePair], train_split: str | None = "train", eval_split: str | None = "test",
                eval_fraction: float = 0.1, seed: int = 0) -> Split:
    """Split ``pairs`` into training and held-out pairs.

    Pairs whose ``split`` equals ``eval_split`` are held out. When there are none, a seeded
    ``eval_fraction`` of the training candidates is held out instead (0 = no evaluation).
    Training candidates are the pairs whose ``split`` equals ``train_split`` or is absent
    (``train_split=None``: every pair that is not held out); pairs of other splits are unused.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ConfigError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    held = [p for p in pairs if eval_split is not None and p.split == eval_split]
    candidates = [p for p in pairs if (eval_split is None or p.split != eval_split)
                  and (train_split is None or p.split in (train_split, None))]
    if held:
        how = f"{len(held)} pairs with split == {eval_split!r} held out"
        train = candidates
    elif eval_fraction > 0:
        is_held = [seeded_rank(p.key, seed, "eval") < eval_fraction for p in candidates]
        held = [p for p, h in zip(candidates, is_held) if h]
        train = [p for p, h in zip(candidates, is_held) if not h]
        how = (f"no pairs with split == {eval_split!r}: held out {len(held)} pairs "
               f"({eval_fraction:.0%} by seeded hash, seed {seed})")
    else:
        train, how = candidates, "no held-out evaluation (eval_fraction 0 and no eval split)"
    if not train:
        raise PairDataError(f"no training pairs: none with split == {train_split!r} (or no split) outside the "
                            f"held-out set ({how})")
    return Split(train=train, eval=held, how=how)


def subsample(pairs: Sequence[PreferencePair], max_pairs: int | None, seed: int = 0) -> list[PreferencePair]:
    """At most ``max_pairs`` pairs chosen by seeded hash (nested across sizes), in their original order."""
    if max_pairs is None or max_pairs >= len(pairs):
        return list(pairs)
    if max_pairs < 1:
        raise ConfigError(f"max_pairs must be >= 1, got {max_pairs}")
    ranked = sorted(range(len(pairs)), key=lambda i: (seeded_rank(pairs[i].key, seed, "subsample"), i))
    keep = sorted(ranked[:max_pairs])
    return [pairs[i] for i in keep]
