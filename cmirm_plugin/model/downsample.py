"""Token downsamplers applied per stream before the prompt/joint transformers (spec §2.4).

Every downsampler maps ``TokenSeq [B, T, D] -> TokenSeq [B, T', D]``. Pooling/strided kinds trim
to a multiple of their stride first (per item, see `trim_to_stride`), windows start at 0, and an
output window is valid when any token in it is. Parameter names follow the released state dict.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.model.config import DownsamplerSpec
from cmirm_plugin.model.sequence import TokenSeq, trim_to_stride, window_mask

#: (stride 1, stride 2) of the two-stage kinds, per total factor (the reference's choice, spec §2.4).
TWO_STAGE_STRIDES = {1: (1, 1), 2: (1, 2), 3: (3, 1), 4: (2, 2), 5: (1, 5), 6: (3, 2), 8: (2, 4), 9: (3, 3),
                     10: (2, 5), 12: (3, 4), 16: (4, 4)}


def two_stage_strides(factor: int) -> tuple[int, int]:
    if factor not in TWO_STAGE_STRIDES:
        raise ConfigError(f"downsampler factor {factor} has no two-stage stride split; "
                          f"supported factors: {sorted(TWO_STAGE_STRIDES)}")
    return TWO_STAGE_STRIDES[factor]


def _masked_window_mean(seq: TokenSeq, factor: int) -> TokenSeq:
    """Masked mean over non-overlapping windows; empty windows give 0 and mask False."""
    seq = trim_to_stride(seq, factor)
    if factor == 1:
        return TokenSeq(seq.x * seq.mask.unsqueeze(-1).to(seq.x.dtype), seq.mask)
    b, length, d = seq.x.shape
    m = seq.mask.view(b, length // factor, factor, 1).to(seq.x.dtype)
    total = (seq.x.view(b, length // factor, factor, d) * m).sum(dim=2)
    count = m.sum(dim=2)
    return TokenSeq(total / count.clamp(min=1.0), window_mask(seq, factor))


class Identity(nn.Module):
    """``none``: tokens and mask unchanged (padded positions are not zeroed)."""

    def forward(self, seq: TokenSeq) -> TokenSeq:
        return seq


class MeanPool(nn.Module):
    """``meanpool``: masked mean over windows of ``factor``."""

    def __init__(self, factor: int = 1) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, seq: TokenSeq) -> TokenSeq:
        return _masked_window_mean(seq, self.factor)


class MeanPoolMLP(nn.Module):
    """``meanpool+mlp``: masked mean pool then an MLP (or the MLP per token first, ``pre_mlp``)."""

    def __init__(self, dim: int, factor: int = 1, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 pre_mlp: bool = False) -> None:
        super().__init__()
        self.factor = factor
        self.pre_mlp = pre_mlp
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, seq: TokenSeq) -> TokenSeq:
        if self.pre_mlp:
            return _masked_window_mean(TokenSeq(self.mlp(seq.x), seq.mask), self.factor)
        pooled = _masked_window_mean(seq, self.factor)
        return TokenSeq(self.mlp(pooled.x), pooled.mask)


class DepthwiseConvDown(nn.Module):
    """Trim -> zero padding -> depthwise strided conv -> LayerNorm -> SiLU -> mask (one stage)."""

    def __init__(self, dim: int, stride: int, kernel_size: int = 5, use_layernorm: bool = True,
                 gated_pointwise: bool = False) -> None:
        super().__init__()
        self.stride = stride
        if gated_pointwise:
            self.pw1 = nn.Conv1d(dim, dim * 2, kernel_size=1, bias=False)
        self.dw = nn.Conv1d(dim, dim, kernel_size, stride=stride, padding=kernel_size // 2, groups=dim, bias=False)
        self.ln = nn.LayerNorm(dim) if use_layernorm else nn.Identity()

    def forward(self, seq: TokenSeq) -> TokenSeq:
        seq = trim_to_stride(seq, self.stride)
        b, length, d = seq.x.shape
        if length == 0:
            return seq
        h = (seq.x * seq.mask.unsqueeze(-1).to(seq.x.dtype)).transpose(1, 2)
        if hasattr(self, "pw1"):
            h = F.glu(self.pw1(h), dim=1)
        h = F.silu(self.ln(self.dw(h).transpose(1, 2)))
        mask = window_mask(seq, self.stride)
        return TokenSeq(h * mask.unsqueeze(-1).to(h.dtype), mask)


class ConvSiLUTwice(nn.Module):
    """``conv*2``: two depthwise stages whose strides multiply to ``factor``."""

    def __init__(self, dim: int, factor: int, kernel_size: int = 5, use_layernorm: bool = True) -> None:
        super().__init__()
        s1, s2 = two_stage_strides(factor)
        self.block1 = DepthwiseConvDown(dim, s1, kernel_size, use_layernorm)
        self.block2 = DepthwiseConvDown(dim, s2, kernel_size, use_layernorm)

    def forward(self, seq: TokenSeq) -> TokenSeq:
        return self.block2(self.block1(seq))


class ConvSiLU(nn.Module):
    """``conv``: ``stage`` applications of ONE shared depthwise stage of stride ``factor``."""

    def __init__(self, dim: int, factor: int, stage: int = 1, kernel_size: int = 5, use_layernorm: bool = True) -> None:
        super().__init__()
        block = DepthwiseConvDown(dim, factor, kernel_size, use_layernorm)
        self.blocks = nn.ModuleList([block] * stage)  # the same module: weights are shared

    def forward(self, seq: TokenSeq) -> TokenSeq:
        for block in self.blocks:
            seq = block(seq)
        return seq


class GLUConvSiLUTwicePlusPointwise(nn.Module):
    """``gluconv*2+pw``: two [pointwise -> GLU -> depthwise] stages, then a pointwise conv and mask."""

    def __init__(self, dim: int, factor: int, kernel_size: int = 5, use_layernorm: bool = True) -> None:
        super().__init__()
        s1, s2 = two_stage_strides(factor)
        self.block1 = DepthwiseConvDown(dim, s1, kernel_size, use_layernorm, gated_pointwise=True)
        self.block2 = DepthwiseConvDown(dim, s2, kernel_size, use_layernorm, gated_pointwise=True)
        self.final_pw = nn.Conv1d(dim, dim, kernel_size=1, bias=False)

    def forward(self, seq: TokenSeq) -> TokenSeq:
        seq = self.block2(self.block1(seq))
        if seq.x.shape[1] == 0:
            return seq
        h = self.final_pw(seq.x.transpose(1, 2)).transpose(1, 2)
        return TokenSeq(h * seq.mask.unsqueeze(-1).to(h.dtype), seq.mask)


def build_downsampler(spec: DownsamplerSpec, dim: int) -> nn.Module:
    """Instantiate the downsampler a config names."""
    kind, opts = spec.canonical_kind, spec.options
    if kind == "none":
        return Identity()
    if kind == "meanpool":
        return MeanPool(spec.factor)
    if kind == "meanpool+mlp":
        return MeanPoolMLP(dim, spec.factor, float(opts.get("mlp_ratio", 2.0)), float(opts.get("dropout", 0.0)),
                           bool(opts.get("pre_mlp", False)))
    conv_opts = {"kernel_size": int(opts.get("kernel_size", 5)), "use_layernorm": bool(opts.get("use_layernorm", True))}
    if kind == "conv*2":
        return ConvSiLUTwice(dim, spec.factor, **conv_opts)
    if kind == "conv":
        return ConvSiLU(dim, spec.factor, stage=int(opts.get("stage", 1)), **conv_opts)
    if kind == "gluconv*2+pw":
        return GLUConvSiLUTwicePlusPointwise(dim, spec.factor, **conv_opts)
    raise ConfigError(f"unknown downsampler kind {spec.kind!r}")
