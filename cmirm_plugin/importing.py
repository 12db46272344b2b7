"""Import user plug-ins named ``package.module:Attr`` (scorer classes, generation functions)."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from cmirm_plugin.errors import CmirmError


def import_object(spec: str, what: str = "object", error: type[CmirmError] = CmirmError) -> Any:
    """The object named by ``package.module:Attr`` (``Attr`` may be dotted); errors name ``what`` and the spec."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise error(f"{what} {spec!r} must look like 'package.module:Name'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"{what} {spec!r}: cannot import module '{module_name}' ({exc})") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise error(f"{what} {spec!r}: '{part}' not found in module '{module_name}'") from exc
    return obj


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from ``exports[name]`` on first use.

    Keeps ``import package`` light (no torch / scipy until a heavy name is actually used).
    """
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
