"""Clips as the audio-language-model judges need them: mono, resampled, cropped, optionally as WAV bytes."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import soundfile as sf

from cmirm_plugin.audio import Audio, prepare_waveform

#: Prepared clips kept: a pair's two clips and its reference, asked for in both orders.
CLIP_CACHE_SIZE = 8


@functools.lru_cache(maxsize=CLIP_CACHE_SIZE)
def _prepared(path: str, size: int, mtime_ns: int, sample_rate: int, max_dur: float) -> Audio:
    return Audio(prepare_waveform(path, sample_rate, max_dur), sample_rate)


def load_clip(path: str | Path, sample_rate: int, max_dur: float) -> Audio:
    """``path`` as mono ``sample_rate`` audio, cropped to its first ``max_dur`` seconds.

    The last `CLIP_CACHE_SIZE` clips are kept (keyed by path, size and modification time), so the
    second order of a pair does not decode and resample its clips again. Raises `AudioError`
    naming the file when it is missing or unreadable.
    """
    try:
        stat = os.stat(path)
    except OSError:
        return Audio(prepare_waveform(path, sample_rate, max_dur), sample_rate)   # raises, naming the file
    return _prepared(str(path), stat.st_size, stat.st_mtime_ns, sample_rate, float(max_dur))


def wav_bytes(clip: Audio) -> bytes:
    """``clip`` as a 16-bit PCM WAV file in memory (what chat endpoints' ``input_audio`` expects)."""
    buffer = io.BytesIO()
    sf.write(buffer, clip.waveform.clamp(-1.0, 1.0).numpy().T, clip.sample_rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()
