"""A synthetic preference set with known answers, for tests, smoke runs and the throughput benchmark.

Every pair compares two short harmonic tones of *opposite* pitch register (low: 100-250 Hz,
high: 800-2000 Hz), one clean and one buried in white noise:

* **musicality**: the clean tone wins;
* **alignment**: the tone whose register matches the text (``"high pitch"`` / ``"low pitch"``) wins.

Which clip is A, which register is clean and what the text asks for are drawn independently, so
the two labels are uncorrelated and balanced, and only a model that reads both the prompt and the
audio can get alignment right. A quarter of the pairs carry lyrics and a quarter a (clean)
reference clip, so every benchmark modality occurs. Training and test pairs use disjoint clips
(different frequencies and noise), so held-out accuracy measures generalisation. Loudness of
noise and pitch register survive random projections, so even the tiny random towers separate them.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from cmirm_plugin.audio import Audio
from cmirm_plugin.records import AXES
from cmirm_plugin.testing import noise, sine

REGISTERS = {"low": (100.0, 250.0), "high": (800.0, 2000.0)}


@dataclass(frozen=True)
class SyntheticClip:
    path: str
    register: str
    clean: bool


def _make_clips(root: Path, prefix: str, count: int, seconds: float, rng: random.Random, sample_rate: int,
                suffix: str) -> list[SyntheticClip]:
    clips = []
    for i in range(count):
        register = "low" if i % 2 == 0 else "high"
        clean = (i // 2) % 2 == 0
        lo, hi = REGISTERS[register]
        freq = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        wave = sine(freq, seconds, sample_rate, amplitude=rng.uniform(0.3, 0.6), harmonics=4).waveform
        if not clean:
            wave = wave + noise(seconds, sample_rate, amplitude=rng.uniform(0.3, 0.5), seed=rng.randrange(2**31)).waveform
        rel = f"clips/{prefix}{i:04d}.{suffix}"
        Audio(wave.clamp(-1.0, 1.0), sample_rate).save(root / rel)
        clips.append(SyntheticClip(rel, register, clean))
    return clips


def _pairs(clips: list[SyntheticClip], count: int, split: str, rng: random.Random, swap_labels: bool) -> list[dict]:
    by_kind: dict[tuple[str, bool], list[SyntheticClip]] = {}
    for clip in clips:
        by_kind.setdefault((clip.register, clip.clean), []).append(clip)
    rows = []
    for _ in range(count):
        register = rng.choice(("low", "high"))
        clean_first = rng.random() < 0.5
        first = rng.choice(by_kind[register, clean_first])
        second = rng.choice(by_kind["high" if register == "low" else "low", not clean_first])
        a, b = (first, second) if rng.random() < 0.5 else (second, first)
        wanted = rng.choice(("low", "high"))
        winners = {"alignment": a.register == wanted, "musicality": a.clean}
        if swap_labels:
            winners = {axis: not won for axis, won in winners.items()}
        kind = rng.randrange(4)
        rows.append({
            "audio-path": a.path, "audio2": b.path, "prompt": f"{wanted} pitch",
            "lyrics": "la la la sing with me" if kind in (1, 3) else "",
            "ref-audio-path": rng.choice([c for c in clips if c.clean]).path if kind in (2, 3) else "",
            **{f"preference-{axis}": "model_a" if winners[axis] else "model_b" for axis in AXES},
            "confidence_preference-alignment": "4.0", "confidence_preference-musicality": 5,
            "split": split,
        })
    return rows


def write_synthetic_pairs(root: str | Path, n_train: int = 400, n_test: int = 200, clips_per_split: int = 32,
                          seconds: float = 1.0, seed: int = 0, swap_labels: bool = False,
                          name: str = "pairs.jsonl", sample_rate: int = 24000, audio_format: str = "wav") -> Path:
    """Write clips under ``root/clips`` and the pair file ``root/name`` (CMI-Pref layout); return its path.

    The output is a function of the arguments: a call that differs only in ``swap_labels`` /
    ``name`` writes the same clips (byte for byte, so they share cached features) and the same
    pairs with every label flipped. ``sample_rate`` / ``audio_format`` (``wav``, ``flac``, ``mp3`` ...)
    shape the files, e.g. 44.1 kHz mp3 like CMI-Pref's, which must be decoded and resampled.
    """
    root = Path(root)
    rng = random.Random(seed)
    rows = []
    for split, count in (("train", n_train), ("test", n_test)):
        if count:
            clips = _make_clips(root, split, clips_per_split, seconds, rng, sample_rate, audio_format)
            rows += _pairs(clips, count, split, rng, swap_labels)
    path = root / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
