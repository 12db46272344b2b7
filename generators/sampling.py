"""Per-candidate random streams for samplers that would otherwise use the global RNG.

transformers' MusicGen samples every row of a batch from the one global RNG, so a candidate's
tokens would depend on its batch neighbours. `PerRowSampler` is a logits processor that does the
sampling itself (guidance, temperature, top-k/top-p, multinomial), drawing row r's token from
the `torch.Generator` of the candidate that row belongs to, and returns logits whose argmax is
the drawn token. ``generate`` then runs greedily (``do_sample=False``), so it draws no random
numbers of its own. It keeps the tokens it drew (``steps``), from which a codec LM backend
recovers the candidate's codes without decoding and re-encoding audio.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import LogitsProcessor

from generators.params import LMParams

#: What the non-chosen tokens get: finite, so a guidance step after us (cond - uncond) stays finite.
_FILL = -1e9


def seeded_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One freshly seeded `torch.Generator` per seed, on ``device``."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def filter_logits(logits: torch.Tensor, params: LMParams) -> torch.Tensor:
    """Apply temperature then top-p (if > 0) or top-k (if > 0), audiocraft's rule, to ``[rows, vocab]``."""
    logits = logits.float() / params.temperature
    if params.top_p > 0.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        sorted_probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the mass before it already reaches top_p (the top token always stays).
        drop_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    elif params.top_k > 0:
        k = min(params.top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


class PerRowSampler(LogitsProcessor):
    """Sample each row's next token from its own candidate's generator.

    Rows are laid out candidate-major, ``rows_per_candidate`` consecutive rows each (MusicGen: one
    row per codebook). With classifier-free guidance transformers stacks the conditional rows
    over the unconditional ones; this processor applies the guidance itself, samples, and returns
    both halves identical, so the guidance processor transformers runs after it is a no-op.
    ``steps`` holds the tokens drawn at each call, ``[rows]`` each (conditional rows only).
    """

    def __init__(self, generators: Sequence[torch.Generator], rows_per_candidate: int, params: LMParams) -> None:
        self.generators = list(generators)
        self.rows_per_candidate = rows_per_candidate
        self.params = params
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = len(self.generators) * self.rows_per_candidate
        guided = scores.shape[0] == 2 * rows
        if not guided and scores.shape[0] != rows:
            raise RuntimeError(f"PerRowSampler expected {rows} or {2 * rows} rows of logits, got {scores.shape[0]}")
        logits = scores.float()
        if guided:
            cond, uncond = logits.split(rows)
            logits = uncond + (cond - uncond) * self.params.guidance_scale
        probs = filter_logits(logits, self.params).softmax(dim=-1)
        # One draw per candidate over its own rows: on CPU this consumes the generator exactly as one
        # draw per row would (same tokens, same generator state; tests/test_generators_base.py checks it).
        tokens = torch.cat([torch.multinomial(block, 1, generator=generator)
                            for block, generator in zip(probs.split(self.rows_per_candidate), self.generators)])
        self.steps.append(tokens[:, 0])
        chosen = torch.full_like(scores[:rows], _FILL).scatter_(1, tokens, 0.0)
        return torch.cat([chosen, chosen]) if guided else chosen
