"""Toy search problems with known structure, for tests and `benchmarks/search_vs_best_of_n.py`.

Both toys write a 440 Hz tone whose amplitude is the clip's hidden quality, and `ToyQualityScorer`
reads it back from the audio (``sqrt(2 * mean(x^2))``: the quadratic mean of the amplitudes of a
clip's segments). They show what each search method exploits; gains on them are not music gains.

- `SegmentToy` (autoregressive, can continue): each segment's quality is a uniform draw that
  depends only on the seed that made it. A clip's reward averages its segments, so best-of-N
  picks among N averages (whose spread shrinks with the number of segments) while beam search
  picks each segment among ``width x expand`` draws.
- `DiffusionToy` (accepts latents): quality is a smooth function of the initial latent, ``(1 +
  cos(z, u)) / 2`` for a hidden direction ``u``, so neighbours of a good latent are good too and
  zero-order search climbs where random search only samples.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from cmirm_plugin.audio import Audio
from cmirm_plugin.records import Candidate, Instruction
from generators.base import Capabilities, Generator, WorkUnits, append_audio
from generators.params import DiffusionParams, GenerationParams

#: The toys' sample rate and tone frequency (a whole number of cycles in every 0.25 s).
TOY_SAMPLE_RATE = 8000
TOY_FREQUENCY = 440.0


@functools.lru_cache(maxsize=8)
def _sine(samples: int, sample_rate: int) -> np.ndarray:
    return np.sin(2 * math.pi * TOY_FREQUENCY * np.arange(samples) / sample_rate)


def tone(amplitudes: Sequence[float], seconds_each: float, sample_rate: int = TOY_SAMPLE_RATE) -> torch.Tensor:
    """``[1, samples]``: consecutive stretches of a 440 Hz sine, one per amplitude."""
    wave = _sine(round(seconds_each * sample_rate), sample_rate)
    return torch.from_numpy(np.concatenate([a * wave for a in amplitudes]).astype(np.float32))[None]


class SegmentToy(Generator):
    """A toy autoregressive generator: every ``segment_seconds`` of audio has a seed-given quality.

    ``sample(seed)`` makes its segments' qualities from draws of ``seed``; ``extend`` adds
    segments whose qualities are draws of the continuation's seed. Work: 100 "decoder steps" per
    second of new audio (no delay, no guidance), so equal audio is equal work.
    """

    capabilities = Capabilities(can_continue=True)
    trims_to_duration = False

    def __init__(self, segment_seconds: float = 0.25, name: str = "toy-segments") -> None:
        self.segment_seconds = segment_seconds
        self.name = name
        self.sample_rate = TOY_SAMPLE_RATE

    def qualities(self, seed: int, seconds: float) -> list[float]:
        """The hidden qualities of the segments ``seed`` makes for ``seconds`` of audio."""
        count = round(seconds / self.segment_seconds)
        return torch.rand(count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()

    def work_units(self, seconds: float, params: GenerationParams) -> WorkUnits:
        steps = round(100 * seconds)
        return WorkUnits("decoder_steps", steps, steps)

    def _generate(self, instruction: Instruction, seeds: list[int], duration: float,
                  params: GenerationParams) -> Sequence[torch.Tensor]:
        return [tone(self.qualities(seed, duration), self.segment_seconds) for seed in seeds]

    def _continue(self, instruction: Instruction, prefix: Candidate, seeds: list[int], segment: float,
                  params: GenerationParams) -> Sequence[Audio]:
        return [append_audio(prefix.audio, Audio(tone(self.qualities(seed, segment), self.segment_seconds),
                                                 self.sample_rate)) for seed in seeds]


class DiffusionToy(Generator):
    """A toy diffusion generator: the clip's quality is ``(1 + cos(z, u)) / 2`` of its initial latent ``z``.

    ``u`` is a hidden direction (drawn from ``hidden_seed``); latents are ``latent_shape``
    standard Gaussians drawn from each seed. Work: ``steps`` NFEs, doubled with guidance, as the
    real diffusion backend counts them. The sampler seed plays no part (a deterministic sampler).
    """

    capabilities = Capabilities(accepts_latents=True)
    params_type: ClassVar[type[DiffusionParams]] = DiffusionParams

    def __init__(self, latent_shape: tuple[int, ...] = (8, 8), hidden_seed: int = 1234,
                 name: str = "toy-diffusion") -> None:
        self._shape = tuple(latent_shape)
        self.direction = torch.randn(self._shape, generator=torch.Generator().manual_seed(hidden_seed))
        self.direction /= self.direction.norm()
        self.name = name
        self.sample_rate = TOY_SAMPLE_RATE

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self._shape

    def initial_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        return torch.stack([torch.randn(self._shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])

    def quality(self, latent: torch.Tensor) -> float:
        """The hidden quality of a clip started from ``latent``."""
        return float((1 + (latent.flatten() @ self.direction.flatten()) / latent.norm()) / 2)

    def work_units(self, seconds: float, params: DiffusionParams) -> WorkUnits:
        return WorkUnits("nfe", params.steps, params.steps * (2 if params.guidance_scale > 1 else 1))

    def _generate(self, instruction: Instruction, seeds: list[int], duration: float,
                  params: DiffusionParams) -> Sequence[torch.Tensor]:
        return self._generate_from_latents(instruction, self.initial_latents(seeds), seeds, duration, params)

    def _generate_from_latents(self, instruction: Instruction, latents: torch.Tensor, sampler_seeds: list[int],
                               duration: float, params: DiffusionParams) -> Sequence[torch.Tensor]:
        return [tone([self.quality(latent)], duration) for latent in latents]


@dataclass
class ToyQualityScorer:
    """A contract scorer with one axis, ``quality``: the tone's quadratic-mean amplitude, read from the audio."""

    sr: int = TOY_SAMPLE_RATE
    axes: tuple[str, ...] = ("quality",)

    def score_batch(self, audios: Sequence[Any], instructions: Any, sample_rate: int | None = None) -> np.ndarray:
        rows = []
        for audio in audios:
            wave = Audio.coerce(audio, sample_rate).to_mono().waveform.double()
            rows.append([math.sqrt(2 * float(wave.pow(2).mean()))])
        return np.array(rows, dtype=np.float64)
