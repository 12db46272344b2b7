"""MuLan-style transformer blocks used by every CMI-RM transformer (spec §2.3).

Pre-norm residual blocks with a bias-free LayerNorm, bias-free projections, QK L2-norm with
learned per-dimension scales, a fixed softmax scale of 8 and a GEGLU feed-forward; no final norm
and no positional embeddings. Module and parameter names follow the released state dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

#: Additive key-padding mask value of the self-attention (the reference uses -1e9, not -inf).
MASK_VALUE = -1e9


class LayerNorm(nn.Module):
    """LayerNorm with a learned gain, a fixed zero bias and eps 1e-5."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.learned_gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.learned_gamma.to(x.dtype), self.beta.to(x.dtype), eps=1e-5)


class GEGLU(nn.Module):
    """Split the last dim into (x, gate) in that order and return ``gelu(gate) * x``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


def feed_forward(dim: int, mult: int = 4, dropout: float = 0.0) -> nn.Sequential:
    """LayerNorm -> Linear(dim, 2*inner) -> GEGLU -> Dropout -> Linear(inner, dim), inner = int(dim*mult*2/3)."""
    inner = int(dim * mult * 2 / 3)
    return nn.Sequential(
        LayerNorm(dim), nn.Linear(dim, inner * 2, bias=False), GEGLU(), nn.Dropout(dropout),
        nn.Linear(inner, dim, bias=False),
    )


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def key_padding_bias(mask: torch.Tensor | None, dtype: torch.dtype, fill: float = MASK_VALUE) -> torch.Tensor | None:
    """``[B, N]`` bool (True = valid) -> additive ``[B, 1, 1, N]`` bias for SDPA."""
    if mask is None:
        return None
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, fill)
    return bias[:, None, None, :]


class Attention(nn.Module):
    """Pre-norm self-attention with QK L2-norm, learned q/k scales and softmax scale 8."""

    scale = 8.0

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.dropout = dropout
        self.norm = LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)
        q = _split_heads(self.to_q(x), self.heads)
        k, v = (_split_heads(t, self.heads) for t in self.to_kv(x).chunk(2, dim=-1))
        q = F.normalize(q, dim=-1) * self.q_scale.to(q.dtype)
        k = F.normalize(k, dim=-1) * self.k_scale.to(k.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_padding_bias(mask, q.dtype),
            dropout_p=self.dropout if self.training else 0.0, scale=self.scale,
        )
        return self.to_out(_merge_heads(out))


class CrossAttentionLayer(nn.Module):
    """Cross-attention (CA mode): separate q/kv norms, no QK-norm, scale dim_head**-0.5, -inf key mask."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.dropout = dropout
        self.norm_q = LayerNorm(dim)
        self.norm_kv = LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), nn.Dropout(dropout))
        self.scale = dim_head ** -0.5

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask_kv: torch.Tensor | None = None) -> torch.Tensor:
        q = _split_heads(self.to_q(self.norm_q(x)), self.heads)
        k, v = (_split_heads(t, self.heads) for t in self.to_kv(self.norm_kv(context)).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_padding_bias(mask_kv, q.dtype, float("-inf")),
            dropout_p=self.dropout if self.training else 0.0, scale=self.scale,
        )
        return self.to_out(_merge_heads(out))


class _Checkpointable(nn.Module):
    """Runs sub-blocks through activation checkpointing when enabled and training."""

    gradient_checkpointing = False

    def _run(self, block: nn.Module, *args: torch.Tensor | None) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)


class Transformer(_Checkpointable):
    """``depth`` x [Attention, FeedForward] with pre-norm residuals and no final norm."""

    def __init__(self, dim: int, depth: int, dim_head: int = 64, heads: int = 8, attn_dropout: float = 0.0,
                 ff_mult: int = 4, ff_dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, dim_head, heads, attn_dropout), feed_forward(dim, ff_mult, ff_dropout)])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[1] == 0:
            return x
        for attn, ff in self.layers:
            x = self._run(attn, x, mask) + x
            x = self._run(ff, x) + x
        return x


class TransformerDecoderLayer(_Checkpointable):
    """CA-mode joint layer: self-attention over eval tokens, cross-attention to the prompt, feed-forward."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8, attn_dropout: float = 0.0,
                 ff_mult: int = 4, ff_dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = Attention(dim, dim_head, heads, attn_dropout)
        self.cross_attn = CrossAttentionLayer(dim, dim_head, heads, attn_dropout)
        self.ffn = feed_forward(dim, ff_mult, ff_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, context: torch.Tensor,
                context_mask: torch.Tensor | None) -> torch.Tensor:
        x = self._run(self.self_attn, x, mask) + x
        x = self._run(self.cross_attn, x, context, context_mask) + x
        return self._run(self.ffn, x) + x


def score_head(dim: int, hidden: int, out: int) -> nn.Sequential:
    """LayerNorm -> Linear -> ReLU -> Linear, the shape of every CMI-RM head (spec §2.7)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out))
