"""Audio records and file I/O.

`Audio` is an immutable float32 waveform ``[channels, samples]`` with its sample rate. Files are
read and written with soundfile (wav, flac, ogg, mp3); DSP (resampling) uses torchaudio, which
works without FFmpeg. Every constructor validates its input, so a waveform that exists is finite,
non-empty and has a positive sample rate; silence is valid.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio

from cmirm_plugin.errors import AudioError

#: File suffixes we read, with the soundfile format that decodes them.
SUPPORTED_SUFFIXES = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".mp3": "MP3"}

AudioLike = Union["Audio", str, Path, bytes, np.ndarray, torch.Tensor]


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    """torchaudio's default resampler (its precomputed kernel matches the reference loader bit for bit)."""
    return torchaudio.transforms.Resample(orig, new)


def _describe(source: str | None) -> str:
    return f"'{source}'" if source else "audio"


def _validate_waveform(wave: torch.Tensor, sample_rate: int, source: str | None) -> torch.Tensor:
    """Return ``wave`` as a contiguous float32 ``[C, T]`` tensor, or raise naming the problem."""
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise AudioError(f"{_describe(source)}: sample rate must be a positive integer, got {sample_rate!r}")
    if wave.dim() == 1:
        wave = wave.unsqueeze(0)
    if wave.dim() != 2:
        raise AudioError(
            f"{_describe(source)}: expected a waveform of shape [samples] or [channels, samples], "
            f"got shape {tuple(wave.shape)}"
        )
    if wave.shape[0] == 0 or wave.shape[1] == 0:
        raise AudioError(f"{_describe(source)}: audio contains no samples (shape {tuple(wave.shape)})")
    if wave.is_complex():
        raise AudioError(f"{_describe(source)}: complex samples are not audio")
    wave = wave.detach().to(device="cpu", dtype=torch.float32).contiguous()
    finite = torch.isfinite(wave)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 1])
        raise AudioError(f"{_describe(source)}: contains NaN or Inf samples (first at sample {bad})")
    return wave


@dataclass(frozen=True, eq=False)
class Audio:
    """A validated float32 waveform ``[channels, samples]`` at ``sample_rate`` Hz.

    ``source`` remembers where it came from (a path), for messages and manifests.
    """

    waveform: torch.Tensor
    sample_rate: int
    source: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "waveform", _validate_waveform(self.waveform, self.sample_rate, self.source))
        object.__setattr__(self, "sample_rate", int(self.sample_rate))

    # ----------------------------------------------------------------- constructors
    @classmethod
    def load(cls, path: str | Path) -> "Audio":
        """Read a wav/flac/ogg/mp3 file; raise `AudioError` naming the file on any problem."""
        path = Path(path)
        if not path.exists():
            raise AudioError(f"'{path}': file not found")
        if path.is_dir():
            raise AudioError(f"'{path}': is a directory, expected an audio file")
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            raise AudioError(
                f"'{path}': unsupported audio format '{suffix or '(no suffix)'}'; "
                f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
            )
        try:
            with path.open("rb") as fh:
                data, sr = sf.read(fh, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise AudioError(f"'{path}': unreadable or corrupt audio ({exc})") from exc
        return cls(torch.from_numpy(np.ascontiguousarray(data.T)), int(sr), source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> "Audio":
        """Decode an encoded audio file held in memory (any format soundfile detects)."""
        if len(data) == 0:
            raise AudioError(f"'{name}': audio contains no bytes")
        try:
            arr, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise AudioError(f"'{name}': unreadable or corrupt audio ({exc})") from exc
        return cls(torch.from_numpy(np.ascontiguousarray(arr.T)), int(sr), source=name)

    @classmethod
    def from_array(cls, samples: np.ndarray | torch.Tensor, sample_rate: int, source: str | None = None) -> "Audio":
        """Wrap a ``[samples]`` or ``[channels, samples]`` array or tensor (copied to float32 CPU)."""
        tensor = samples if isinstance(samples, torch.Tensor) else torch.from_numpy(np.asarray(samples))
        return cls(tensor, sample_rate, source=source)

    @classmethod
    def coerce(cls, value: AudioLike, sample_rate: int | None = None) -> "Audio":
        """Turn a path, bytes, array/tensor (with ``sample_rate``) or `Audio` into `Audio`."""
        if isinstance(value, Audio):
            return value
        if isinstance(value, (str, Path)):
            return cls.load(value)
        if isinstance(value, (bytes, bytearray)):
            return cls.from_bytes(bytes(value))
        if isinstance(value, (np.ndarray, torch.Tensor)):
            if sample_rate is None:
                raise AudioError("an array or tensor waveform needs an explicit sample_rate")
            return cls.from_array(value, sample_rate)
        raise AudioError(f"cannot interpret {type(value).__name__} as audio (use a path, bytes, array or Audio)")

    # ----------------------------------------------------------------- properties
    @property
    def num_channels(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.waveform.shape[1])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sample_rate

    # ----------------------------------------------------------------- transforms
    def _derive(self, waveform: torch.Tensor, sample_rate: int | None = None) -> "Audio":
        # A transformed clip is no longer the file: it keeps no ``source``, so nothing (instruction
        # ids, manifests, workers reloading it) mistakes it for the file's content.
        return Audio(waveform, self.sample_rate if sample_rate is None else sample_rate)

    def to_mono(self) -> "Audio":
        """Average the channels (what the CMI-RM loader does)."""
        if self.num_channels == 1:
            return self
        return self._derive(self.waveform.mean(dim=0, keepdim=True))

    def resample(self, sample_rate: int) -> "Audio":
        """Resample the whole signal with torchaudio's default windowed-sinc (Hann) ``Resample``."""
        if sample_rate == self.sample_rate:
            return self
        if sample_rate <= 0:
            raise AudioError(f"{_describe(self.source)}: cannot resample to {sample_rate} Hz")
        return self._derive(_resampler(self.sample_rate, int(sample_rate))(self.waveform), sample_rate)

    def crop(self, seconds: float) -> "Audio":
        """Keep the first ``seconds`` (``int(seconds * sr)`` samples, as the reference loader)."""
        if not seconds > 0:
            raise AudioError(f"{_describe(self.source)}: crop length must be > 0 s, got {seconds}")
        n = int(seconds * self.sample_rate)
        if n >= self.num_samples:
            return self
        return self._derive(self.waveform[:, :n])

    def chunks(self, seconds: float) -> Iterator["Audio"]:
        """Consecutive non-overlapping chunks of ``seconds``; the last one may be shorter."""
        size = int(round(seconds * self.sample_rate))
        if size <= 0:
            raise AudioError(f"{_describe(self.source)}: chunk length must be > 0 s, got {seconds}")
        for start in range(0, self.num_samples, size):
            yield self._derive(self.waveform[:, start : start + size])

    # ----------------------------------------------------------------- output
    def save(self, path: str | Path, subtype: str | None = None) -> Path:
        """Write to ``path`` (format from the suffix). WAV is written as 32-bit float (lossless)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            raise AudioError(f"'{path}': cannot write format '{suffix}'; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")
        if subtype is None and suffix == ".wav":
            subtype = "FLOAT"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), self.waveform.numpy().T, self.sample_rate, subtype=subtype,
                 format=SUPPORTED_SUFFIXES[suffix])
        return path

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return f"Audio(channels={self.num_channels}, samples={self.num_samples}, sr={self.sample_rate}{src})"


def prepare_waveform(audio: AudioLike, sample_rate: int, max_dur: float, min_samples: int = 1,
                     input_rate: int | None = None) -> torch.Tensor:
    """Mono, the whole signal resampled to ``sample_rate``, cropped to ``max_dur`` s: a 1-D tensor.

    This is how the reward model sees every clip (scoring, the training feature cache, judges).
    Raw arrays/tensors need ``input_rate``. A result shorter than ``min_samples`` is an
    `AudioError` naming the clip's file.
    """
    clip = Audio.coerce(audio, input_rate)
    name = _describe(clip.source)
    clip = clip.to_mono().resample(sample_rate).crop(max_dur)
    if clip.num_samples < min_samples:
        raise AudioError(f"{name}: too short to score ({clip.num_samples} samples at {sample_rate} Hz; need at "
                         f"least {min_samples}, about {min_samples / sample_rate * 1000:.0f} ms)")
    return clip.waveform[0]
