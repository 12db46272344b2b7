"""`CallableGenerator`: plug an existing Python generation function in with a few lines.

The function is called once per seed as ``fn(instruction, seed, duration=..., **params)`` and
returns ``(waveform, sample_rate)`` (array or tensor, ``[samples]`` or ``[channels, samples]``)
or an `Audio`. Anything it raises, and NaN or empty audio, fails only that seed. Reproducibility
is the function's: it must draw all randomness from ``seed`` (e.g. a ``torch.Generator``).

`generation_function` attaches the metadata (sample rate, inputs) to a function so the registry
can build it from ``py:module:function`` alone.
"""

from __future__ import annotations

import importlib
import inspect
import json
import traceback
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import AudioError, ConfigError
from cmirm_plugin.records import Instruction
from generators.base import INPUT_KINDS, CandidateError, Generator, Outcome, tail
from generators.params import GenerationParams

GenerationFn = Callable[..., Any]


class FreeParams(GenerationParams):
    """Parameters passed through to the function as they are (JSON-serialisable values only)."""

    def __init__(self, **values: Any) -> None:
        for key, value in values.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"parameter '{key}' must be JSON-serialisable (it is recorded), "
                                  f"got {value!r}") from exc
        object.__setattr__(self, "_values", dict(values))

    @classmethod
    def from_kwargs(cls, generator: str, kwargs: dict[str, Any]) -> "FreeParams":
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)


def generation_function(sample_rate: int, inputs: Iterable[str] = ("text",)) -> Callable[[GenerationFn], GenerationFn]:
    """Decorator: declare a generation function's sample rate and the inputs it honours."""
    def mark(fn: GenerationFn) -> GenerationFn:
        fn.sample_rate = sample_rate  # type: ignore[attr-defined]
        fn.inputs = tuple(inputs)  # type: ignore[attr-defined]
        return fn
    return mark


def load_object(spec: str) -> Any:
    """Import ``module:attribute`` (e.g. ``my_pkg.gen:generate``), with errors naming the spec."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"'{spec}': expected 'module:function', e.g. 'my_pkg.music:generate'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"'{spec}': cannot import module '{module_name}' ({exc})") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"'{spec}': module '{module_name}' has no attribute '{attr}'") from exc


def _as_audio(value: Any) -> Audio:
    """Accept `Audio` or ``(waveform, sample_rate)``; anything else is an ``invalid_audio`` failure."""
    if isinstance(value, Audio):
        return value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], (np.ndarray, torch.Tensor)):
        try:
            return Audio.from_array(value[0], int(value[1]))
        except AudioError as exc:
            raise CandidateError("invalid_audio", str(exc)) from exc
    raise CandidateError("invalid_audio", f"expected (waveform, sample_rate) or Audio, got {type(value).__name__}")


class CallableGenerator(Generator):
    """Wrap ``fn(instruction, seed, duration=..., **params) -> (waveform, sample_rate) | Audio``."""

    params_type = FreeParams
    trims_to_duration = False  # the function owns its output length

    def __init__(self, fn: GenerationFn, *, sample_rate: int | None = None, inputs: Iterable[str] | None = None,
                 name: str | None = None, batch_size: int = 1) -> None:
        if not callable(fn):
            raise ConfigError(f"CallableGenerator needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.batch_size = batch_size  # seeds per `_generate` call; the function still runs once per seed
        self.name = name or f"py:{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        rate = sample_rate if sample_rate is not None else getattr(fn, "sample_rate", None)
        if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            raise ConfigError(f"generator '{self.name}': give sample_rate= (or decorate the function with "
                              f"@generation_function(sample_rate=...)); got {rate!r}")
        self.sample_rate = rate
        kinds = frozenset(inputs if inputs is not None else getattr(fn, "inputs", ("text",)))
        if not kinds <= set(INPUT_KINDS):
            raise ConfigError(f"generator '{self.name}': inputs must be among {INPUT_KINDS}, got {sorted(kinds)}")
        self.inputs = kinds
        self._accepts = _accepted_keywords(fn)

    def _generate(self, instruction: Instruction, seeds: list[int], duration: float,
                  params: GenerationParams) -> Sequence[Outcome]:
        kwargs = {"duration": duration, **params.to_dict()}
        return [self._call(instruction, seed, kwargs) for seed in seeds]

    def _call(self, instruction: Instruction, seed: int, kwargs: dict[str, Any]) -> Outcome:
        try:
            return _as_audio(self.fn(instruction, seed, **kwargs))
        except CandidateError as error:
            return error
        except Exception as exc:  # the user's function failing must not sink the other seeds
            return CandidateError("exception", f"{type(exc).__name__}: {exc}", tail(traceback.format_exc()))

    def sample(self, instruction: Instruction, seeds: Sequence[int], duration: float, *,
               batch_size: int | None = None, **params: Any):
        """As `Generator.sample`; parameters the function does not accept are refused up front."""
        if self._accepts is not None:
            unknown = sorted(set(params) - self._accepts)
            if unknown:
                raise ConfigError(f"generator '{self.name}' has no parameter(s) {', '.join(map(repr, unknown))}; "
                                  f"the function accepts: {', '.join(sorted(self._accepts - {'duration'}))}")
        return super().sample(instruction, seeds, duration, batch_size=batch_size, **params)


def _accepted_keywords(fn: GenerationFn) -> set[str] | None:
    """The keyword names ``fn`` accepts after (instruction, seed); None when it takes ``**kwargs``."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keywords = {p.name for p in parameters[2:] if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                             inspect.Parameter.KEYWORD_ONLY)}
    if "duration" not in keywords:
        raise ConfigError(f"'{getattr(fn, '__qualname__', fn)}' must accept a 'duration' keyword "
                          "(signature: fn(instruction, seed, duration, **params))")
    return keywords
