"""`CallableGenerator`: plug an existing Python generation function in with a few lines.

The function is called once per seed as ``fn(instruction, seed, duration=..., **params)`` and
returns ``(waveform, sample_rate)`` (array or tensor, ``[samples]`` or ``[channels, samples]``)
or an `Audio`. Anything it raises, and NaN or empty audio, fails only that seed. Reproducibility
is the function's: it must draw all randomness from ``seed`` (e.g. a ``torch.Generator``).

Its parameters are the keywords its signature takes after ``(instruction, seed, duration)``:
`sample` refuses any other name up front (a function taking ``**kwargs`` accepts any name), and
candidates record the values the caller gave (the function's own defaults are its business and
need not be JSON).

`generation_function` attaches the metadata (sample rate, inputs) to a function so the registry
can build it from ``py:module:function`` alone.

A function with a ``prefix`` keyword (default None) can continue clips (`Generator.extend`,
beam search): it is then called with ``prefix=(waveform [channels, samples], sample_rate)``, the
clip so far, and ``duration`` = the segment to add, and returns the new audio only; cmirm
appends it to the clip. ``prefix`` is not a parameter (never recorded).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import AudioError, ConfigError
from cmirm_plugin.records import Instruction
from cmirm_plugin.records import Candidate
from generators.base import INPUT_KINDS, CandidateError, Capabilities, Generator, Outcome, append_audio, tail
from generators.params import GenerationParams

GenerationFn = Callable[..., Any]

#: The keyword through which a function receives the clip it continues.
PREFIX_KEYWORD = "prefix"


class _Unset:
    """Default of a function parameter the caller did not give: not passed, not recorded."""

    def __repr__(self) -> str:
        return "<function default>"


UNSET: Any = _Unset()


def _check_json(values: Mapping[str, Any]) -> None:
    """Every value must be JSON-serialisable, because candidates record it."""
    for key, value in values.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"parameter '{key}' must be JSON-serialisable (it is recorded), "
                              f"got {value!r}") from exc


@dataclass(frozen=True)
class FunctionParams(GenerationParams):
    """Base of the parameter types built from a function's signature (see `params_type_for`)."""

    def __post_init__(self) -> None:
        _check_json(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The values the caller gave (what is passed to the function and recorded)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {key: value for key, value in values.items() if value is not UNSET}


class FreeParams(GenerationParams):
    """Parameters of a function taking ``**kwargs``: any name, passed through as given."""

    def __init__(self, **values: Any) -> None:
        _check_json(values)
        object.__setattr__(self, "_values", dict(values))

    @classmethod
    def from_kwargs(cls, generator: str, kwargs: Mapping[str, Any]) -> "FreeParams":
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)


def params_type_for(fn: GenerationFn, generator: str) -> type[GenerationParams]:
    """The parameter type of ``fn``: one field per keyword after ``(instruction, seed, duration)``.

    A keyword without a default is a required parameter; `FreeParams` when ``fn`` takes
    ``**kwargs`` or has no readable signature (a builtin). Raises `ConfigError` when ``fn`` cannot
    take ``duration``.
    """
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return FreeParams
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return FreeParams
    keywords = [p for p in parameters[2:] if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                        inspect.Parameter.KEYWORD_ONLY)]
    if "duration" not in {p.name for p in keywords}:
        raise ConfigError(f"generator '{generator}': '{getattr(fn, '__qualname__', fn)}' must accept a 'duration' "
                          "keyword (signature: fn(instruction, seed, duration, **params))")
    fields = [(p.name, Any) if p.default is inspect.Parameter.empty else (p.name, Any, dataclasses.field(default=UNSET))
              for p in keywords if p.name not in ("duration", PREFIX_KEYWORD)]
    return dataclasses.make_dataclass(f"{getattr(fn, '__name__', 'fn')}_params", fields, bases=(FunctionParams,),
                                      frozen=True, kw_only=True)


def takes_prefix(fn: GenerationFn, generator: str) -> bool:
    """Whether ``fn`` declares a ``prefix`` keyword (so it can continue clips); it must default to None."""
    try:
        parameter = inspect.signature(fn).parameters.get(PREFIX_KEYWORD)
    except (TypeError, ValueError):
        return False
    if parameter is None or parameter.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                   inspect.Parameter.KEYWORD_ONLY):
        return False
    if parameter.default is not None:
        raise ConfigError(f"generator '{generator}': '{getattr(fn, '__qualname__', fn)}' takes '{PREFIX_KEYWORD}', "
                          f"so it must default to None (the function also starts clips); got "
                          f"{'no default' if parameter.default is inspect.Parameter.empty else repr(parameter.default)}")
    return True


def generation_function(sample_rate: int, inputs: Iterable[str] = ("text",)) -> Callable[[GenerationFn], GenerationFn]:
    """Decorator: declare a generation function's sample rate and the inputs it honours."""
    def mark(fn: GenerationFn) -> GenerationFn:
        fn.sample_rate = sample_rate  # type: ignore[attr-defined]
        fn.inputs = tuple(inputs)  # type: ignore[attr-defined]
        return fn
    return mark


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
    """Wrap ``fn(instruction, seed, duration=..., **params) -> (waveform, sample_rate) | Audio``.

    ``batch_size`` exists so that every generator takes the same options (``build_generator``,
    ``--gen-batch-size``); the function still runs once per seed, so it changes nothing here.
    """

    trims_to_duration = False  # the function owns its output length

    def __init__(self, fn: GenerationFn, *, sample_rate: int | None = None, inputs: Iterable[str] | None = None,
                 name: str | None = None, batch_size: int = 1) -> None:
        if not callable(fn):
            raise ConfigError(f"CallableGenerator needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.batch_size = batch_size
        self.name = name or f"py:{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        rate = sample_rate if sample_rate is not None else getattr(fn, "sample_rate", None)
        if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            raise ConfigError(f"generator '{self.name}' needs a sample rate: decorate the function with "
                              f"@generation_function(sample_rate=...) (from Python, "
                              f"CallableGenerator(fn, sample_rate=...) also works); got {rate!r}")
        self.sample_rate = rate
        kinds = frozenset(inputs if inputs is not None else getattr(fn, "inputs", ("text",)))
        if not kinds <= set(INPUT_KINDS):
            raise ConfigError(f"generator '{self.name}': inputs must be among {INPUT_KINDS}, got {sorted(kinds)}")
        self.inputs = kinds
        self.params_type = params_type_for(fn, self.name)
        self.capabilities = Capabilities(can_continue=takes_prefix(fn, self.name))

    def _generate(self, instruction: Instruction, seeds: list[int], duration: float,
                  params: GenerationParams) -> Sequence[Outcome]:
        kwargs = {"duration": duration, **params.to_dict()}
        return [self._call(instruction, seed, kwargs) for seed in seeds]

    def _continue(self, instruction: Instruction, prefix: Candidate, seeds: list[int], segment: float,
                  params: GenerationParams) -> Sequence[Outcome]:
        kwargs = {"duration": segment, **params.to_dict()}
        # Each call gets its own copy of the clip, so a function editing it in place harms no sibling.
        new = [self._call(instruction, seed, {**kwargs, PREFIX_KEYWORD: (prefix.audio.waveform.clone(),
                                                                         prefix.audio.sample_rate)})
               for seed in seeds]
        return [out if isinstance(out, CandidateError) else append_audio(prefix.audio, out) for out in new]

    def _call(self, instruction: Instruction, seed: int, kwargs: dict[str, Any]) -> Outcome:
        try:
            return _as_audio(self.fn(instruction, seed, **kwargs))
        except CandidateError as error:
            return error
        except Exception as exc:  # the user's function failing must not sink the other seeds
            return CandidateError("exception", f"{type(exc).__name__}: {exc}", tail(traceback.format_exc()))
