"""MuQ-MuLan towers as CMI-RM uses them (spec §2.2): per-token audio and text embeddings.

* `MuLanAudioTower`: MuQ -> Linear(1024 -> 768) -> a depth-0 MuLan transformer; 25 tokens/s.
* `MuLanTextTower`: XLM-R last hidden state -> (projection) -> the 8-layer MuLan transformer,
  run WITH the padding mask; tokenizer truncation at 512.

Both are frozen by default; their weights come from the MuQ-MuLan checkpoint
(``mulan.audio.*`` / ``mulan.text.*``), never from the vanilla MuQ / XLM-R repositories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn
from transformers import XLMRobertaConfig, XLMRobertaModel

from cmirm_plugin.model.blocks import Transformer
from cmirm_plugin.model.muq import MuQ, MuQConfig
from cmirm_plugin.model.sequence import TokenSeq

#: XLM-R positions allow 512 tokens; MuLan caps ``max_seq_len`` (1024) at that.
MAX_TEXT_TOKENS = 512


@dataclass
class MuLanTransformerConfig:
    """One ``audio_transformer`` / ``text_transformer`` section of the MuQ-MuLan hub config."""

    dim: int = 768
    tf_depth: int = 8
    heads: int = 8
    dim_head: int = 64
    ff_mult: int = 4
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    max_seq_len: int = 1024

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MuLanTransformerConfig":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data and data[k] is not None})

    def build(self) -> Transformer:
        return Transformer(self.dim, self.tf_depth, self.dim_head, self.heads, self.attn_dropout, self.ff_mult,
                           self.ff_dropout)


@dataclass
class MuLanConfig:
    """The MuQ-MuLan hub ``config.json``: which backbones, their widths, and the MuLan transformers."""

    audio_model_name: str = "OpenMuQ/MuQ-large-msd-iter"
    audio_model_dim: int = 1024
    text_model_name: str = "xlm-roberta-base"
    text_model_dim: int | None = None
    audio_transformer: MuLanTransformerConfig = field(default_factory=lambda: MuLanTransformerConfig(tf_depth=0))
    text_transformer: MuLanTransformerConfig = field(default_factory=MuLanTransformerConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MuLanConfig":
        audio, text = data.get("audio_model", {}), data.get("text_model", {})
        return cls(
            audio_model_name=audio.get("name", cls.audio_model_name),
            audio_model_dim=int(audio.get("model_dim") or cls.audio_model_dim),
            text_model_name=text.get("name", cls.text_model_name),
            text_model_dim=text.get("model_dim"),
            audio_transformer=MuLanTransformerConfig.from_dict(data.get("audio_transformer", {"tf_depth": 0})),
            text_transformer=MuLanTransformerConfig.from_dict(data.get("text_transformer", {})),
        )


class MuLanAudioTower(nn.Module):
    """MuQ frames projected to the MuLan width: ``[B, L]`` waveforms -> ``[B, T, dim]`` tokens."""

    def __init__(self, muq_config: MuQConfig, mulan: MuLanConfig) -> None:
        super().__init__()
        self.model = MuQ(muq_config)
        self.proj = nn.Linear(mulan.audio_model_dim, mulan.audio_transformer.dim)
        self.transformer = mulan.audio_transformer.build()
        self.aggregator = nn.Conv1d(25, 1, 1)  # MuLan's clip pooling; unused per token, kept for the checkpoint

    @property
    def hop_length(self) -> int:
        return self.model.model.config.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Equal-length ``[B, L]`` chunks -> ``[B, T, dim]`` (every frame valid)."""
        return self.transformer(self.proj(self.model(wave)))


class MuLanTextTower(nn.Module):
    """XLM-R + the MuLan text transformer (with the padding mask): token ids -> ``[B, Lt, dim]``."""

    def __init__(self, xlmr_config: XLMRobertaConfig, mulan: MuLanConfig) -> None:
        super().__init__()
        self.model = XLMRobertaModel(xlmr_config, add_pooling_layer=True)
        text_dim = mulan.text_transformer.dim
        self.proj = nn.Identity() if mulan.text_model_dim is None else nn.Linear(mulan.text_model_dim, text_dim)
        self.transformer = mulan.text_transformer.build()
        self.max_length = min(mulan.text_transformer.max_seq_len, MAX_TEXT_TOKENS)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TokenSeq:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.bool()
        return TokenSeq(self.transformer(self.proj(hidden), mask), mask)
