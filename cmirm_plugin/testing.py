"""Test dummies that users' own tests can reuse: deterministic tones and noise.

(Tiny random models live next to the code they mimic, e.g. `cmirm_plugin.model.tiny`.)
"""

from __future__ import annotations

import math

import torch

from cmirm_plugin.audio import Audio


def sine(freq: float = 440.0, seconds: float = 1.0, sample_rate: int = 24000, amplitude: float = 0.5,
         channels: int = 1, harmonics: int = 1) -> Audio:
    """A (harmonic) sine tone: ``harmonics`` partials with 1/k amplitudes."""
    t = torch.arange(int(round(seconds * sample_rate)), dtype=torch.float64) / sample_rate
    wave = sum(torch.sin(2 * math.pi * freq * k * t) / k for k in range(1, harmonics + 1))
    wave = amplitude * wave / float(wave.abs().max())
    return Audio(wave.float().unsqueeze(0).repeat(channels, 1), sample_rate)


def noise(seconds: float = 1.0, sample_rate: int = 24000, amplitude: float = 0.1, seed: int = 0) -> Audio:
    """Reproducible white noise."""
    gen = torch.Generator().manual_seed(seed)
    n = int(round(seconds * sample_rate))
    return Audio(amplitude * torch.randn(1, n, generator=gen), sample_rate)
