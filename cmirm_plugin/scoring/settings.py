"""`ScoringSettings`: how a scorer turns clips into scores. The only home of the scoring defaults.

Every entry point (``cmirm score``, ``generate``, ``rerank``'s pool workers, ``scaling
--eval-reward``, ``bench``, ``pseudo-label --judge reward``, `best_of_n`, the reward server) builds
its scorer from one `ScoringSettings`; a command-line option that is not given keeps the default
here. Kept free of heavy imports (torch is imported only to resolve device-dependent defaults).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Mapping

from cmirm_plugin.errors import ConfigError, check_count

MissingPolicy = Literal["mask", "null"]
Dtype = Literal["auto", "fp32", "bf16"]
#: The values of ``missing``: ``mask`` (released behaviour: absent inputs are left out) or
#: ``null`` (the learned null embeddings stand in for them).
MISSING_POLICIES: tuple[str, ...] = ("mask", "null")
#: The values of ``dtype``: ``auto`` is bf16 autocast on CUDA (as the released model ran) and fp32 elsewhere.
DTYPES: tuple[str, ...] = ("auto", "fp32", "bf16")
#: Audio-tower batch (equal-length 30 s chunks per call) by device type when ``encode_batch_size``
#: is not set. Measured with benchmarks/score_throughput.py (see its docstring): on CPU, two chunks
#: per call were fastest in both quiet runs (8 overflow the cache in MuQ's 512-channel conv front
#: end); on GPUs bigger batches fill the device.
ENCODE_BATCH_SIZE = {"cpu": 2, "cuda": 8}
#: Fallback for other device types (mps, xpu ...).
DEFAULT_ENCODE_BATCH_SIZE = 8


@dataclass(frozen=True)
class ScoringSettings:
    """How clips are scored (see the module docstring).

    Attributes:
        max_dur: seconds of each clip (and reference) that are scored; the rest is cropped.
        missing: absent text / lyrics / reference: ``mask`` (released behaviour) or ``null``.
        dtype: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere), ``fp32``, or ``bf16`` (autocast;
            on CPU only where the CPU has native bf16, i.e. AVX-512 BF16 or AMX).
        batch_size: candidates per joint-transformer batch.
        encode_batch_size: equal-length 30 s chunks per audio-tower call; None: `ENCODE_BATCH_SIZE`
            of the device.
        cache_size: encoded instructions kept by the prompt cache.

    ``max_dur``, ``missing`` and the resolved dtype change scores (`score_identity`); the batch
    sizes and the cache never do (an item's score does not depend on its batch).
    """

    max_dur: float = 120.0
    missing: MissingPolicy = "mask"
    dtype: Dtype = "auto"
    batch_size: int = 16
    encode_batch_size: int | None = None
    cache_size: int = 256

    def __post_init__(self) -> None:
        max_dur = self.max_dur
        if isinstance(max_dur, bool) or not isinstance(max_dur, (int, float)) or not math.isfinite(max_dur) \
                or max_dur <= 0:
            raise ConfigError(f"scoring setting max_dur must be a number of seconds > 0, got {max_dur!r}")
        object.__setattr__(self, "max_dur", float(max_dur))
        if self.missing not in MISSING_POLICIES:
            raise ConfigError(f"scoring setting missing must be one of {', '.join(MISSING_POLICIES)}, "
                              f"got {self.missing!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"scoring setting dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        check_count("scoring setting batch_size", self.batch_size)
        check_count("scoring setting cache_size", self.cache_size)
        if self.encode_batch_size is not None:
            check_count("scoring setting encode_batch_size", self.encode_batch_size)

    def with_options(self, **options: Any) -> "ScoringSettings":
        """A copy with the given fields replaced; None values (an option not given) keep the current value."""
        unknown = sorted(set(options) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigError(f"unknown scoring setting(s) {unknown}; known: {', '.join(f.name for f in fields(self))}")
        given = {key: value for key, value in options.items() if value is not None}
        return replace(self, **given) if given else self

    def resolved_dtype(self, device: Any) -> Literal["fp32", "bf16"]:
        """The dtype scoring runs in on ``device`` (a torch.device or its string)."""
        kind = _device_type(device)
        if self.dtype == "auto":
            return "bf16" if kind == "cuda" else "fp32"
        if self.dtype == "bf16" and kind == "cpu" and not cpu_has_native_bf16():
            raise ConfigError("--dtype bf16: this CPU has no native bf16 instructions (AVX-512 BF16 or AMX), where "
                              "bf16 autocast is slower than fp32; use --dtype fp32")
        return self.dtype  # type: ignore[return-value]

    def resolved_encode_batch_size(self, device: Any) -> int:
        """``encode_batch_size``, or the measured default of ``device``'s type."""
        if self.encode_batch_size is not None:
            return self.encode_batch_size
        return ENCODE_BATCH_SIZE.get(_device_type(device), DEFAULT_ENCODE_BATCH_SIZE)

    def score_identity(self, device: Any) -> dict[str, Any]:
        """The settings that change scores on ``device`` (what ``run.json`` records and reruns must repeat)."""
        return {"max_dur": self.max_dur, "missing": self.missing, "dtype": self.resolved_dtype(device)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "settings") -> "ScoringSettings":
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"{source}: unknown scoring setting(s) {unknown}")
        return cls(**dict(data))


def _device_type(device: Any) -> str:
    if device is None:
        return default_device_type()
    return getattr(device, "type", None) or str(device).split(":")[0]


def default_device_type() -> str:
    """``cuda`` when a GPU is visible, else ``cpu`` (the default device of every scorer)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX-512 BF16 or AMX), so CPU bf16 autocast pays off."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
