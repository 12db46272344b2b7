"""Typed, validated generation parameters, one small frozen dataclass per family of backends.

Parameters arrive as ``sample(..., **params)`` keyword arguments (from Python or the CLI). Each
backend declares its dataclass; `GenerationParams.from_kwargs` rejects unknown names and every
field is checked in ``__post_init__``, so a bad value fails before any model runs, with an error
that names the generator, the parameter and the value. ``to_dict()`` is what every candidate
records in `Candidate.params`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

from cmirm_plugin.errors import ConfigError

P = TypeVar("P", bound="GenerationParams")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check(condition: bool, name: str, value: Any, expected: str) -> None:
    """Raise `ConfigError` naming ``name`` and ``value`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"parameter '{name}' must be {expected}, got {value!r}")


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, integer: bool = False) -> None:
    """Check that ``value`` is a finite number (an int if ``integer``) within the given bounds."""
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else _is_number(value)
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low}")
        ok = ok and (value > low if low_open else value >= low)
    if high is not None:
        bounds.append(f"<= {high}")
        ok = ok and value <= high
    check(ok, name, value, " ".join([kind, " and ".join(bounds)]).strip())


def validate_duration(duration: Any, max_duration: float | None = None) -> float:
    """The requested clip length in seconds, as a float > 0 (and <= ``max_duration`` if given)."""
    check_number("duration", duration, low=0.0, low_open=True, high=max_duration)
    return float(duration)


@dataclass(frozen=True)
class GenerationParams:
    """Base of the per-backend parameter dataclasses (no fields of its own)."""

    @classmethod
    def from_kwargs(cls: type[P], generator: str, kwargs: Mapping[str, Any]) -> P:
        """Build from keyword arguments, rejecting names this backend does not know and naming
        required ones (fields without a default) that are missing."""
        fields = dataclasses.fields(cls)
        known = [f.name for f in fields]
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise ConfigError(
                f"generator '{generator}' has no parameter(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(known) or '(none)'}"
            )
        missing = [f.name for f in fields if f.name not in kwargs
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"generator '{generator}' needs parameter(s) {', '.join(map(repr, missing))}; "
                              f"give them as sample(..., {missing[0]}=...) or --param {missing[0]}=...")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record stored on every candidate."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LMParams(GenerationParams):
    """Sampling parameters of the autoregressive codec LMs (MusicGen, MusicGen-Melody, audiocraft).

    Follows audiocraft's rule: ``top_p > 0`` selects nucleus sampling and then ``top_k`` is not
    used; otherwise ``top_k > 0`` keeps the k most likely tokens; both 0 samples the full softmax.
    ``guidance_scale`` is the classifier-free guidance weight (1 disables guidance).
    ``prompt_seconds`` is how much of the reference clip is used as an audio prompt, for the
    backends that continue the reference.
    """

    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    guidance_scale: float = 3.0
    prompt_seconds: float = 3.0

    def __post_init__(self) -> None:
        check_number("temperature", self.temperature, low=0.0, low_open=True)
        check_number("top_k", self.top_k, low=0, integer=True)
        check_number("top_p", self.top_p, low=0.0, high=1.0)
        check_number("guidance_scale", self.guidance_scale, low=1.0)
        check_number("prompt_seconds", self.prompt_seconds, low=0.0, low_open=True)


@dataclass(frozen=True)
class DiffusionParams(GenerationParams):
    """Parameters of the diffusion backends (Stable Audio Open).

    ``steps`` denoising steps; ``guidance_scale`` classifier-free guidance weight (1 disables it);
    ``negative_prompt`` what to steer away from.
    """

    steps: int = 100
    guidance_scale: float = 7.0
    negative_prompt: str | None = None

    def __post_init__(self) -> None:
        check_number("steps", self.steps, low=1, integer=True)
        check_number("guidance_scale", self.guidance_scale, low=1.0)
        check(self.negative_prompt is None or isinstance(self.negative_prompt, str), "negative_prompt",
              self.negative_prompt, "a string or None")
