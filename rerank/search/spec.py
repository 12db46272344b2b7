"""Parse search-method specs: ``best-of-n``, ``beam:width=4,expand=2,segment=5``,
``noise:rounds=4,neighbors=4,radius=0.3``, ``smc:particles=8,segment=5,lambda=10`` (the syntax of the CLI's ``--search`` and of run records).

One parser for every method: the name picks the `SearchMethod` class, each ``key=value`` sets
the field of that name, converted to the field's type; errors name the bad key or value and list
what the method takes.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from cmirm_plugin.errors import ConfigError
from rerank.search.beam import BeamSearch
from rerank.search.best_of_n import BestOfNSearch
from rerank.search.method import SearchMethod, spec_key
from rerank.search.noise import NoiseSearch
from rerank.search.smc import SmcSearch

#: The search methods by name, with an example spec each.
METHODS: dict[str, type[SearchMethod]] = {cls.name: cls for cls in (BestOfNSearch, BeamSearch, NoiseSearch, SmcSearch)}
EXAMPLES = {"best-of-n": "best-of-n:n=8", "beam": "beam:width=4,expand=2,segment=5",
            "noise": "noise:rounds=4,neighbors=4,radius=0.3", "smc": "smc:particles=8,segment=5,lambda=10"}


def settings_of(cls: type[SearchMethod]) -> dict[str, tuple[str, type]]:
    """The settings a spec may give for ``cls``: spec key -> (field name, int or float)."""
    hints = typing.get_type_hints(cls)
    settings = {}
    for f in dataclasses.fields(cls):
        if f.repr:
            kinds = [t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None)]
            settings[spec_key(f)] = (f.name, kinds[0])
    return settings


def _convert(method: str, key: str, raw: str, kind: type) -> Any:
    try:
        if kind is int:
            return int(raw)
        return float(raw)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"search '{method}': {key} must be {expected}, got {raw!r}") from None


def parse_search(spec: str | SearchMethod) -> SearchMethod:
    """The `SearchMethod` a spec names (a method passes through); `ConfigError` naming any bad part."""
    if isinstance(spec, SearchMethod):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a search spec must be a non-empty string such as {EXAMPLES['beam']!r}, got {spec!r}")
    name, _, args = spec.strip().partition(":")
    name = name.strip()
    if name not in METHODS:
        raise ConfigError(f"unknown search method {name!r}; known: {', '.join(EXAMPLES.values())}")
    cls = METHODS[name]
    settings = settings_of(cls)
    values: dict[str, Any] = {}
    for item in (part.strip() for part in args.split(",") if args.strip()):
        key, eq, raw = (s.strip() for s in item.partition("="))
        if not eq or not key or not raw:
            raise ConfigError(f"search '{name}': expected key=value, got {item!r} (e.g. {EXAMPLES[name]!r})")
        if key not in settings:
            raise ConfigError(f"search '{name}' has no setting {key!r}; its settings: {', '.join(settings)}")
        if settings[key][0] in values:
            raise ConfigError(f"search '{name}': {key} is given twice")
        field_name, kind = settings[key]
        values[field_name] = _convert(name, key, raw, kind)
    return cls(**values)
