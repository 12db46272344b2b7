"""Option groups shared by several commands: a dataclass whose fields are Typer options.

`with_options` adds every field of one or more such dataclasses to a command, which then receives
them as instances, so an option is declared once (type, flag, help, default) however many commands
take it. `ScoringOptions` is the scoring group (``--max-dur``, ``--missing``, ``--dtype``): each
defaults to "not given", which keeps the `ScoringSettings` default, the only home of those values.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields
from typing import Annotated, Any, Callable, Optional, Sequence, get_type_hints

import typer

from cmirm_plugin.scoring.settings import DTYPES, MISSING_POLICIES, ScoringSettings

SCORING_PANEL = "Scoring"
_DEFAULTS = ScoringSettings()

MaxDur = Annotated[Optional[float], typer.Option(
    "--max-dur", rich_help_panel=SCORING_PANEL, show_default=False,
    help=f"Seconds of each clip (and reference) that are scored. \\[default: {_DEFAULTS.max_dur:g}]")]
Missing = Annotated[Optional[str], typer.Option(
    "--missing", rich_help_panel=SCORING_PANEL, show_default=False,
    help=f"Absent text/lyrics/reference: {' or '.join(MISSING_POLICIES)} (learned null embeddings). "
         f"\\[default: {_DEFAULTS.missing}]")]
Dtype = Annotated[Optional[str], typer.Option(
    "--dtype", rich_help_panel=SCORING_PANEL, show_default=False,
    help=f"{' | '.join(DTYPES)}: auto is bf16 autocast on CUDA and fp32 on CPU; bf16 on CPU needs AVX-512 "
         f"BF16/AMX. \\[default: {_DEFAULTS.dtype}]")]


@dataclass
class ScoringOptions:
    """The scoring options of a command (see the module docstring)."""

    max_dur: MaxDur = None
    missing: Missing = None
    dtype: Dtype = None

    def settings(self, base: ScoringSettings | None = None) -> ScoringSettings:
        """``base`` (default `ScoringSettings()`) with the options that were given."""
        return (base or ScoringSettings()).with_options(max_dur=self.max_dur, missing=self.missing, dtype=self.dtype)

    def given(self) -> list[str]:
        """The option names of the fields that were given (e.g. ``--max-dur``)."""
        return [option_name(type(self), f.name) for f in fields(self) if getattr(self, f.name) is not None]


def option_name(cls: type, name: str) -> str:
    """The long option name (``--seed-base``) of the field ``name`` of the option group ``cls``."""
    info = get_type_hints(cls, include_extras=True)[name].__metadata__[0]
    return next(d for d in (info.default, *(info.param_decls or ())) if isinstance(d, str) and d.startswith("--"))


def changed_options(options: Any, names: Sequence[str]) -> list[str]:
    """The option names of the fields among ``names`` that differ from the group's defaults."""
    defaults = type(options)()
    return [option_name(type(options), name) for name in names if getattr(options, name) != getattr(defaults, name)]


def with_options(**groups: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command every field of each option group; it receives them as ``keyword=instance``.

    Typer reads a command's options from ``inspect.signature``, so the wrapper's ``__signature__``
    is the command's own parameters (the group keywords left out) followed by one parameter per field.
    """
    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        shared: dict[str, list[inspect.Parameter]] = {}
        for keyword, cls in groups.items():
            hints = get_type_hints(cls, include_extras=True)
            shared[keyword] = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                                 annotation=hints[f.name]) for f in fields(cls)]
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name not in groups]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> None:
            built = {keyword: groups[keyword](**{p.name: kwargs.pop(p.name) for p in params})
                     for keyword, params in shared.items()}
            command(**kwargs, **built)

        wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            own + [p for params in shared.values() for p in params])
        return wrapper

    return decorate
