"""From a batch of preference pairs to the model's scores for both clips of every pair.

Tower outputs come from a *source* per tower: the feature cache when the tower is frozen, the
live tower when it trains (LoRA on the text encoder, unfrozen MuQ layers). The prompt is encoded
once per pair and serves both clips, so the modality dropout applied to it is the same for A and
B, as the Bradley-Terry comparison needs. Inputs are assembled as the scorer assembles them at
inference (`cmirm_plugin.scoring.RewardScorer`): absent text or lyrics are the empty string, an
absent reference is an empty (masked) sequence, and with ``missing="null"`` the absent ones are
replaced by the learned null embeddings.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Protocol, Sequence

import torch

from cmirm_plugin.audio import prepare_waveform
from cmirm_plugin.model.muq import MIN_SAMPLES
from cmirm_plugin.model.reward_model import CMIRewardModel, NullFlags
from cmirm_plugin.model.sequence import TokenSeq
from cmirm_plugin.scoring import MissingPolicy
from train.data import PreferencePair
from train.feature_cache import FeatureCache


class TextSource(Protocol):
    """Token embeddings of a batch of strings, padded, on the model's device."""

    def __call__(self, texts: Sequence[str]) -> TokenSeq: ...


class AudioSource(Protocol):
    """Token embeddings of a batch of clips (None = absent: an empty sequence), padded, on the model's device."""

    def __call__(self, paths: Sequence[Path | str | None]) -> TokenSeq: ...


def _pad(model: CMIRewardModel, items: Sequence[torch.Tensor | None]) -> TokenSeq:
    dim = model.config.dim
    empty = torch.zeros(0, dim)
    return TokenSeq.pad([empty if t is None else t for t in items], dim, model.device, torch.float32)


class CachedText:
    """Text embeddings read from a `FeatureCache` (the text tower is frozen)."""

    def __init__(self, model: CMIRewardModel, cache: FeatureCache) -> None:
        self.model, self.cache = model, cache

    def __call__(self, texts: Sequence[str]) -> TokenSeq:
        return _pad(self.model, self.cache.text(texts))


class CachedAudio:
    """Audio embeddings read from a `FeatureCache` (the audio tower is frozen)."""

    def __init__(self, model: CMIRewardModel, cache: FeatureCache) -> None:
        self.model, self.cache = model, cache

    def __call__(self, paths: Sequence[Path | str | None]) -> TokenSeq:
        present = [p for p in paths if p is not None]
        found = iter(self.cache.audio(present))
        return _pad(self.model, [None if p is None else next(found) for p in paths])


class LiveText:
    """Text embeddings from the text tower, run on every batch (with gradients when it trains)."""

    def __init__(self, model: CMIRewardModel) -> None:
        self.model = model

    def __call__(self, texts: Sequence[str]) -> TokenSeq:
        return self.model.encode_text(list(texts))


class LiveAudio:
    """Audio embeddings from the audio tower, run on every batch (for unfrozen MuQ layers).

    Decoding and resampling do not depend on the weights, so up to ``cache_bytes`` of prepared
    waveforms (least recently used dropped first) are kept across batches and epochs; 0 prepares
    every clip again each time (``--no-feature-cache`` timing comparisons).
    """

    def __init__(self, model: CMIRewardModel, max_dur: float, encode_batch_size: int = 8, cache_bytes: int = 0) -> None:
        self.model, self.max_dur, self.encode_batch_size = model, max_dur, encode_batch_size
        self.cache_bytes = cache_bytes
        self._waves: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._held = 0

    def waveform(self, path: Path | str) -> torch.Tensor:
        """The clip as the scorer prepares it (mono, 24 kHz, cropped), from the cache when it is there."""
        key = str(path)
        wave = self._waves.get(key)
        if wave is not None:
            self._waves.move_to_end(key)
            return wave
        wave = prepare_waveform(path, self.model.config.sr, self.max_dur, MIN_SAMPLES)
        size = wave.numel() * wave.element_size()
        if size <= self.cache_bytes:
            self._waves[key] = wave
            self._held += size
            while self._held > self.cache_bytes:
                _, old = self._waves.popitem(last=False)
                self._held -= old.numel() * old.element_size()
        return wave

    def __call__(self, paths: Sequence[Path | str | None]) -> TokenSeq:
        present = [p for p in paths if p is not None]
        waves = [self.waveform(p) for p in present]
        found = iter(self.model.encode_audio(waves, self.encode_batch_size) if waves else [])
        return _pad(self.model, [None if p is None else next(found) for p in paths])


def score_pairs(model: CMIRewardModel, pairs: Sequence[PreferencePair], text: TextSource, audio: AudioSource,
                missing: MissingPolicy = "mask") -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[B, 2]`` of the A clips and of the B clips, under one prompt per pair."""
    insts = [p.instruction for p in pairs]
    prompt = model.encode_prompt(text([i.text or "" for i in insts]), text([i.lyrics or "" for i in insts]),
                                 audio([i.ref_audio for i in insts]),
                                 NullFlags.for_absent(insts, model.device) if missing == "null" else None)
    b = len(pairs)
    evaluated = audio([p.audio_a for p in pairs] + [p.audio_b for p in pairs])
    scores = model.score(prompt.select(list(range(b)) * 2), evaluated)
    return scores[:b], scores[b:]


def needed_inputs(pairs: Sequence[PreferencePair]) -> tuple[set[str], set[Path]]:
    """Every string and clip the pairs' forward passes read (what the feature cache must hold)."""
    texts, clips = set(), set()
    for p in pairs:
        texts.update((p.instruction.text or "", p.instruction.lyrics or ""))
        clips.update((p.audio_a, p.audio_b))
        if p.instruction.ref_audio is not None:
            clips.add(Path(p.instruction.ref_audio))
    return texts, clips
