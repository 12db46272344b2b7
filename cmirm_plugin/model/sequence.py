"""Padded token sequences with a validity mask, the currency between CMI-RM modules.

Masks are *prefix* masks (True for the first ``n_i`` positions of item i, padding at the end),
which is what padding a batch produces. All batch operations here keep every item's result
identical to processing that item alone, which is what makes scores independent of batch
composition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class TokenSeq:
    """``x [B, L, D]`` with ``mask [B, L]`` (bool, True = valid token)."""

    x: torch.Tensor
    mask: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])

    @classmethod
    def pad(cls, items: Sequence[torch.Tensor], dim: int, device: torch.device | str | None = None,
            dtype: torch.dtype | None = None) -> "TokenSeq":
        """Stack ``[L_i, D]`` tensors into a zero-padded batch (an empty list of items is not allowed).

        The batch is assembled where the items are and moved to ``device`` in one copy.
        """
        if not items:
            raise ValueError("TokenSeq.pad needs at least one item")
        device = device if device is not None else items[0].device
        dtype = dtype if dtype is not None else items[0].dtype
        source = items[0].device
        length = max(int(t.shape[0]) for t in items)
        x = torch.zeros(len(items), length, dim, device=source, dtype=dtype)
        mask = torch.zeros(len(items), length, dtype=torch.bool, device=source)
        for i, t in enumerate(items):
            x[i, : t.shape[0]] = t.to(device=source, dtype=dtype)
            mask[i, : t.shape[0]] = True
        return cls(x.to(device), mask.to(device))

    @classmethod
    def empty(cls, batch: int, dim: int, device: torch.device | str, dtype: torch.dtype) -> "TokenSeq":
        """A batch of zero-length sequences (an absent modality that contributes nothing)."""
        return cls(torch.zeros(batch, 0, dim, device=device, dtype=dtype),
                   torch.zeros(batch, 0, dtype=torch.bool, device=device))

    @classmethod
    def cat(cls, seqs: Sequence["TokenSeq"]) -> "TokenSeq":
        """Concatenate along the token axis (padding stays inside; attention masks it out)."""
        return cls(torch.cat([s.x for s in seqs], dim=1), torch.cat([s.mask for s in seqs], dim=1))

    def items(self) -> list[torch.Tensor]:
        """The valid tokens of each item, ``[n_i, D]``."""
        return [self.x[i, : int(n)] for i, n in enumerate(self.lengths)]

    def select(self, index: torch.Tensor | Sequence[int]) -> "TokenSeq":
        """Rows ``index`` (repeats allowed: this is how one cached prompt serves N candidates)."""
        index = torch.as_tensor(index, device=self.x.device, dtype=torch.long)
        return TokenSeq(self.x.index_select(0, index), self.mask.index_select(0, index))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "TokenSeq":
        return TokenSeq(self.x.to(device=device, dtype=dtype), self.mask.to(device=device))

    def masked_mean(self) -> torch.Tensor:
        """Mean over the valid tokens, ``[B, D]`` (zero for an item with none)."""
        m = self.mask.unsqueeze(-1).to(self.x.dtype)
        return (self.x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def trim_to_stride(seq: TokenSeq, stride: int) -> TokenSeq:
    """Drop the positions a stride-``stride`` window cannot fill, batch-wide and per item.

    The reference trims the padded batch length to a multiple of the stride; processing an item
    alone therefore drops its own trailing ``n_i mod stride`` tokens. Masking those tokens per item
    as well gives every item exactly its stand-alone result inside any batch.
    """
    if stride == 1:
        return seq
    length = (seq.x.shape[1] // stride) * stride
    keep = (seq.lengths // stride) * stride
    mask = torch.arange(length, device=seq.mask.device)[None, :] < keep[:, None]
    return TokenSeq(seq.x[:, :length], mask)


def window_mask(seq: TokenSeq, stride: int) -> torch.Tensor:
    """Output mask after stride-``stride`` pooling of a trimmed sequence: a window is valid if any token is."""
    b, length = seq.mask.shape
    return seq.mask.view(b, length // stride, stride).any(dim=-1)
