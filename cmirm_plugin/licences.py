"""The licences of the model weights cmirm downloads: one table, used by model cards and downloads.

cmirm's own code is Apache-2.0 (LICENSE), but each model it fetches carries its own terms, and
several are non-commercial. ``MODEL_LICENCES`` maps a hub repo id (or a ``*`` pattern for a family
of repos) to its licence as the hub spells it (``cc-by-nc-4.0``, ``mit``, ``other`` ...) and a short
note. The README's "Model licences" table states the same entries (a test compares them). These
were checked against the models' cards as far as possible; the card on the hub is what counts.

Light to import (standard library only).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Licence:
    """A model's licence: the hub's licence id and what a user should know about it."""

    id: str
    note: str


#: Hub repo id (or ``*`` pattern) -> licence of its weights. Exact ids win over patterns.
MODEL_LICENCES: dict[str, Licence] = {
    "HaiwenXia/CMI-RM": Licence(
        "cc-by-nc-sa-4.0", "CMI-RM weights: non-commercial; the licence the official CMI-RewardBench "
        "repository states (it builds on MuQ-MuLan, CC-BY-NC 4.0); check the model card"),
    "OpenMuQ/MuQ-MuLan-large": Licence(
        "cc-by-nc-4.0", "MuQ-MuLan towers of CMI-RM: non-commercial (the MuQ code is MIT, the weights are not)"),
    "OpenMuQ/MuQ-large-msd-iter": Licence(
        "cc-by-nc-4.0", "MuQ audio backbone (the towers read its config): non-commercial"),
    "FacebookAI/xlm-roberta-base": Licence(
        "mit", "XLM-R base, the text backbone of MuQ-MuLan (config and tokenizer)"),
    "facebook/musicgen-*": Licence(
        "cc-by-nc-4.0", "MusicGen weights, every size, stereo and melody: non-commercial (the audiocraft "
        "code is MIT)"),
    "stabilityai/stable-audio-open-1.0": Licence(
        "other", "Stability AI Community License: free for research, non-commercial use and organisations "
        "under USD 1M annual revenue, enterprise licence above; gated on the hub; check the model card"),
    "Qwen/Qwen2-Audio-7B*": Licence("apache-2.0", "Qwen2-Audio pseudo-label judge"),
    "Qwen/Qwen2.5-Omni-7B": Licence(
        "apache-2.0", "Qwen2.5-Omni pseudo-label judge; other sizes may have other terms: check the model card"),
    "Qwen/Qwen3-Omni-*": Licence("apache-2.0", "Qwen3-Omni pseudo-label judge; check the model card"),
}
#: Legacy hub ids that redirect to a namespaced repo (configs still name them).
ALIASES = {"xlm-roberta-base": "FacebookAI/xlm-roberta-base"}


def licence_for(repo_id: str) -> Licence | None:
    """The licence of ``repo_id`` (exact id or alias first, then the first matching pattern); None if unknown."""
    repo_id = ALIASES.get(repo_id, repo_id)
    if repo_id in MODEL_LICENCES:
        return MODEL_LICENCES[repo_id]
    for pattern, licence in MODEL_LICENCES.items():
        if "*" in pattern and fnmatch.fnmatchcase(repo_id, pattern):
            return licence
    return None
