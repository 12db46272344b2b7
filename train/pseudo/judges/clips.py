"""Clips as the audio-language-model judges need them: mono, resampled, cropped, optionally as WAV bytes."""

from __future__ import annotations

import io
from pathlib import Path

import soundfile as sf

from cmirm_plugin.audio import Audio


def load_clip(path: str | Path, sample_rate: int, max_dur: float) -> Audio:
    """``path`` as mono ``sample_rate`` audio, cropped to its first ``max_dur`` seconds."""
    return Audio.load(path).to_mono().resample(sample_rate).crop(max_dur)


def wav_bytes(clip: Audio) -> bytes:
    """``clip`` as a 16-bit PCM WAV file in memory (what chat endpoints' ``input_audio`` expects)."""
    buffer = io.BytesIO()
    sf.write(buffer, clip.waveform.clamp(-1.0, 1.0).numpy().T, clip.sample_rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()
