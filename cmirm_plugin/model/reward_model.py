"""CMI-RM: ``[text][lyrics][ref] -> prompt transformer -> joint transformer over [prompt ; eval]
-> masked mean over eval tokens -> score head -> [alignment, musicality]`` (spec §2.5-§2.8).

The model is split along what can be cached: `encode_text` / `encode_audio` run the frozen
towers, `encode_prompt` turns an instruction's tokens into prompt tokens, and `score` runs the
joint transformer for evaluated clips. A prompt encoded once serves any number of candidates.
Every step keeps an item's result independent of the other items in its batch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, XLMRobertaConfig

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.model.blocks import Transformer, TransformerDecoderLayer, score_head
from cmirm_plugin.model.config import CMIRMConfig
from cmirm_plugin.model.downsample import build_downsampler
from cmirm_plugin.model.muq import MIN_SAMPLES, MuQConfig
from cmirm_plugin.model.mulan import MuLanAudioTower, MuLanConfig, MuLanTextTower
from cmirm_plugin.model.sequence import TokenSeq

#: Audio is encoded in independent chunks of this length (the reference's training-consistent mode).
CHUNK_SECONDS = 30.0
#: Prefixes of the frozen towers in the state dict.
TOWER_PREFIXES = ("audio_module.", "text_module.")


@dataclass
class TowerConfigs:
    """Everything needed to build the MuQ-MuLan towers without weights."""

    mulan: MuLanConfig
    muq: MuQConfig
    xlmr: XLMRobertaConfig

    @classmethod
    def default(cls) -> "TowerConfigs":
        """MuQ-MuLan-large as published (for building the full-size architecture offline)."""
        xlmr = XLMRobertaConfig(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                                pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
        return cls(MuLanConfig(), MuQConfig(), xlmr)


@dataclass
class NullFlags:
    """Per-item flags [B] (bool) of modalities to replace with their learned null embedding."""

    text: torch.Tensor | None = None
    lyrics: torch.Tensor | None = None
    ref: torch.Tensor | None = None

    @classmethod
    def for_absent(cls, instructions: Sequence[Any], device: torch.device | str) -> "NullFlags":
        """Flag every modality an instruction lacks (``has_text`` / ``has_lyrics`` / ``has_ref``)."""
        def absent(attr: str) -> torch.Tensor:
            return torch.tensor([not getattr(i, attr) for i in instructions], dtype=torch.bool, device=device)

        return cls(text=absent("has_text"), lyrics=absent("has_lyrics"), ref=absent("has_ref"))


class CMIRewardModel(nn.Module):
    """The CMI-RM reward model with its MuQ-MuLan towers; parameter names follow the release (§3.4)."""

    def __init__(self, config: CMIRMConfig, towers: TowerConfigs,
                 tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        super().__init__()
        self.config = config
        self.towers = towers
        self.tokenizer = tokenizer
        for name, tower_dim in (("audio", towers.mulan.audio_transformer.dim), ("text", towers.mulan.text_transformer.dim)):
            if tower_dim != config.dim:
                raise ConfigError(f"config field 'dim' ({config.dim}) must equal the MuLan {name} tower width "
                                  f"({tower_dim}) of '{config.model_name}'")
        c = config
        tf = dict(dim_head=c.dim_head, heads=c.heads, attn_dropout=c.attn_dropout, ff_mult=c.ff_mult,
                  ff_dropout=c.ff_dropout)
        self.prompt_transformer = Transformer(c.dim, c.prompt_tf_depth, **tf)
        if c.attention_mode == "SA":
            self.joint_transformer: nn.Module = Transformer(c.dim, c.joint_tf_depth, **tf)
        else:
            self.joint_transformer = nn.ModuleList(TransformerDecoderLayer(c.dim, **tf) for _ in range(c.joint_tf_depth))
        self.score_projector = score_head(c.dim, c.mlp_dim, c.output_dim)
        self.single_score_projector = score_head(c.dim, c.mlp_dim, 1)   # released but unused at inference
        self.alignment_head = score_head(c.dim, c.mlp_dim, 1)           # idem
        self.quality_head = score_head(c.dim, c.mlp_dim, 1)             # idem
        self.audio_module = MuLanAudioTower(towers.muq, towers.mulan)
        self.text_module = MuLanTextTower(towers.xlmr, towers.mulan)
        ds = c.downsample
        self.text_downsampler = build_downsampler(ds.spec_for("text"), c.dim)
        self.lyrics_downsampler = build_downsampler(ds.spec_for("lyrics"), c.dim)
        self.eval_downsampler = build_downsampler(ds.spec_for("eval"), c.dim)
        self.ref_downsampler = build_downsampler(ds.spec_for("ref"), c.dim)
        nulls = c.null_embedding
        self.null_text_embedding = nn.Parameter(torch.zeros(1, nulls.text.length, c.dim))
        self.null_lyrics_embedding = nn.Parameter(torch.zeros(1, nulls.lyrics.length, c.dim))
        self.null_audio_embedding = nn.Parameter(torch.zeros(1, nulls.audio.length, c.dim))
        self.apply_freezing()

    # ------------------------------------------------------------------ parameters
    def apply_freezing(self) -> None:
        """Freeze the towers as configured (``freeze_*``, ``train_muq_depth``, ``text_encoder.tune``)."""
        c = self.config
        self.audio_module.requires_grad_(not c.freeze_audio)
        if c.train_muq_depth:
            for layer in self.audio_module.model.model.conformer.layers[-c.train_muq_depth:]:
                layer.requires_grad_(True)
        tune = c.text_encoder_options.get("tune")
        self.text_module.requires_grad_(not c.freeze_text or tune == "all")
        if tune == "transformer":
            self.text_module.transformer.requires_grad_(True)

    def _tower_trainable(self, tower: nn.Module) -> bool:
        return any(p.requires_grad for p in tower.parameters())

    def train(self, mode: bool = True) -> "CMIRewardModel":
        """Train mode for what trains; the frozen parts of the towers keep running as at inference.

        A fully frozen tower stays in eval mode. Inside a partly trainable tower (unfrozen MuQ
        layers, LoRA): every fully frozen sub-module and every BatchNorm stays in eval mode (running
        statistics must not move: they are not saved with the released weights). Trainable layers
        apply their dropout; MuQ's conformer is built without LayerDrop (see `MuQConfig`).
        """
        super().train(mode)
        if not mode:
            return self
        for tower in (self.audio_module, self.text_module):
            if not self._tower_trainable(tower):
                tower.eval()
                continue
            for module in tower.modules():
                params = list(module.parameters())
                if (params and not any(p.requires_grad for p in params)) or isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def gradient_checkpointing_enable(self) -> None:
        """Checkpoint each attention / feed-forward block of the prompt and joint transformers."""
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = True

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a released ``model.safetensors`` holds: every non-tower tensor, plus tower tensors that train."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if not k.startswith(TOWER_PREFIXES) or k in trainable}

    @property
    def device(self) -> torch.device:
        return self.null_text_embedding.device

    # ------------------------------------------------------------------ towers
    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """XLM-R token ids and attention mask, padded to the longest, truncated at 512."""
        if self.tokenizer is None:
            raise RuntimeError("this CMIRewardModel has no tokenizer; load it with from_pretrained")
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.text_module.max_length,
                             return_tensors="pt", return_token_type_ids=False)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def encode_text(self, texts: Sequence[str]) -> TokenSeq:
        """Per-token text embeddings ``[B, Lt, dim]`` (an empty string gives the 2 tokens ``<s></s>``)."""
        ids, mask = self.tokenize(texts)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._tower_trainable(self.text_module)):
            return self.text_module(ids, mask)

    def encode_audio(self, waves: Sequence[torch.Tensor], batch_size: int = 8,
                     chunk_seconds: float = CHUNK_SECONDS) -> list[torch.Tensor]:
        """Per-token audio embeddings ``[T_i, dim]`` of 24 kHz mono waveforms ``[L_i]``.

        Each waveform is cut into non-overlapping ``chunk_seconds`` chunks encoded independently and
        concatenated (a 100 s clip gives 750+750+750+250 frames). Chunks of *equal length* are
        batched together, so no chunk is ever padded and an item's frames never depend on the other
        items. A trailing chunk shorter than the front end's minimum (~43 ms, under one frame) is
        dropped.
        """
        chunk = int(chunk_seconds * self.config.sr)
        pieces: list[torch.Tensor] = []
        owners: list[int] = []
        for i, wave in enumerate(waves):
            if wave.dim() != 1 or wave.shape[0] < MIN_SAMPLES:
                raise ValueError(f"audio item {i}: expected a 1-D waveform of at least {MIN_SAMPLES} samples "
                                 f"at {self.config.sr} Hz, got shape {tuple(wave.shape)}")
            for start in range(0, wave.shape[0], chunk):
                piece = wave[start : start + chunk]
                if piece.shape[0] >= MIN_SAMPLES:
                    pieces.append(piece)
                    owners.append(i)
        by_length: dict[int, list[int]] = defaultdict(list)
        for k, piece in enumerate(pieces):
            by_length[int(piece.shape[0])].append(k)
        encoded: list[torch.Tensor | None] = [None] * len(pieces)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._tower_trainable(self.audio_module)):
            for group in by_length.values():
                for s in range(0, len(group), batch_size):
                    ids = group[s : s + batch_size]
                    frames = self.audio_module(torch.stack([pieces[k] for k in ids]).to(self.device))
                    for k, row in zip(ids, frames):
                        encoded[k] = row
        per_item: list[list[torch.Tensor]] = [[] for _ in waves]
        for k, owner in enumerate(owners):
            per_item[owner].append(encoded[k])
        return [torch.cat(parts, dim=0) for parts in per_item]

    # ------------------------------------------------------------------ CMI-RM
    def _null_or_dropped(self, seq: TokenSeq, null: nn.Parameter, p: float, flags: torch.Tensor | None) -> TokenSeq:
        """Replace flagged items (and, in training, a random ``p`` of items) by the null embedding.

        Unlike the reference, which cuts the null embedding to the padded batch length, a replaced
        item always gets the full null embedding (the batch is padded as needed), so the result
        does not depend on the other items. With ``skip_null`` a replaced item becomes empty.
        """
        b = seq.batch_size
        drop = torch.zeros(b, dtype=torch.bool, device=seq.x.device) if flags is None else flags.to(seq.x.device)
        if self.training and p > 0:
            drop = drop | (torch.rand(b, device=seq.x.device) < p)
        if not bool(drop.any()):
            return seq
        if self.config.null_embedding.skip_null:
            return TokenSeq(seq.x, seq.mask & ~drop[:, None])
        n = null.shape[1]
        length = max(seq.x.shape[1], n)
        x = nn.functional.pad(seq.x, (0, 0, 0, length - seq.x.shape[1]))
        mask = nn.functional.pad(seq.mask, (0, length - seq.mask.shape[1]))
        null_x = nn.functional.pad(null.to(x.dtype).expand(b, n, -1), (0, 0, 0, length - n))
        null_mask = (torch.arange(length, device=x.device) < n).expand(b, length)
        return TokenSeq(torch.where(drop[:, None, None], null_x, x), torch.where(drop[:, None], null_mask, mask))

    def encode_prompt(self, text: TokenSeq, lyrics: TokenSeq, ref: TokenSeq, null: NullFlags | None = None) -> TokenSeq:
        """``[text][lyrics][ref]`` tokens -> downsample -> (null / modality dropout) -> prompt transformer.

        An absent reference is a zero-length (or fully masked) ``ref``; it then contributes nothing.
        """
        null = null or NullFlags()
        dtype = self.null_text_embedding.dtype
        nulls = self.config.null_embedding
        text = self._null_or_dropped(self.text_downsampler(text.to(dtype=dtype)), self.null_text_embedding,
                                     nulls.text.dropout, null.text)
        parts = [text]
        if self.config.mode != "text_only":
            parts.append(self._null_or_dropped(self.lyrics_downsampler(lyrics.to(dtype=dtype)),
                                               self.null_lyrics_embedding, nulls.lyrics.dropout, null.lyrics))
        parts.append(self._null_or_dropped(self.ref_downsampler(ref.to(dtype=dtype)), self.null_audio_embedding,
                                           nulls.audio.dropout, null.ref))
        prompt = TokenSeq.cat(parts)
        return TokenSeq(self.prompt_transformer(prompt.x, prompt.mask), prompt.mask)

    def score(self, prompt: TokenSeq, evaluated: TokenSeq) -> torch.Tensor:
        """Joint transformer over ``[prompt ; eval]`` -> masked mean over eval -> ``[B, 2]`` raw scores."""
        e = self.eval_downsampler(evaluated.to(dtype=self.null_text_embedding.dtype))
        if self.config.attention_mode == "SA":
            joint = TokenSeq.cat([prompt, e])
            out = self.joint_transformer(joint.x, joint.mask)
            pooled = TokenSeq(out[:, prompt.x.shape[1]:], e.mask).masked_mean()
        else:
            x = e.x
            for layer in self.joint_transformer:
                x = layer(x, e.mask, prompt.x, prompt.mask)
            pooled = TokenSeq(x, e.mask).masked_mean()
        return self.score_projector(pooled)

    def forward(self, text: TokenSeq, lyrics: TokenSeq, ref: TokenSeq, evaluated: TokenSeq,
                null: NullFlags | None = None) -> torch.Tensor:
        """Scores ``[B, 2]`` (alignment, musicality) from tower outputs (the training path)."""
        return self.score(self.encode_prompt(text, lyrics, ref, null), evaluated)

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_pretrained(cls, path_or_id: str, device: str | torch.device = "cpu", verbose: bool = True) -> "CMIRewardModel":
        """Load the released layout (``model.safetensors`` + ``config.yaml``) from a folder or hub repo.

        The load report (missing / unexpected keys, dtype casts) is kept on ``model.load_report``
        and logged as one summary.
        """
        from cmirm_plugin.model.loading import load_pretrained

        model, report = load_pretrained(path_or_id, device=device)
        model.load_report = report
        if verbose and not report.clean:
            import warnings

            warnings.warn(report.summary())
        return model

    def save_pretrained(self, directory: str) -> None:
        """Write the released layout, loadable by `from_pretrained` and by the reference loader."""
        from cmirm_plugin.model.loading import save_pretrained

        save_pretrained(self, directory)
