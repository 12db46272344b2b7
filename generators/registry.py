"""Generators by name, so the CLI and configs can say ``--generator musicgen-small``.

Names:

- ``musicgen-small`` / ``-medium`` / ``-large`` / ``musicgen-stereo-*``: transformers MusicGen.
- ``musicgen-melody`` / ``musicgen-melody-large`` / ``musicgen-stereo-melody*``: MusicGen-Melody.
- ``stable-audio-open``: Stable Audio Open 1.0 (diffusers).
- ``tiny-musicgen`` / ``tiny-musicgen-melody`` / ``tiny-stable-audio``: random toy models, offline.
- ``musicgen:<id or dir>``, ``musicgen-melody:<id or dir>``, ``stable-audio:<id or dir>``: any
  checkpoint of those architectures.
- ``audiocraft:<name or dir>``: audiocraft MusicGen / MAGNeT (e.g. ``audiocraft:facebook/magnet-small-10secs``).
- ``cmd:<template file>``: an external command (see `generators.command`).
- ``py:<module>:<function>``: a Python function or a `Generator` instance.

`build_generator(name, device=..., **options)` builds one; options are forwarded to the backend
(``dtype`` for the model backends, ``batch_size``, ``seed`` for the tiny models, and for ``py:``
functions ``sample_rate`` / ``inputs``); an option the backend does not take is a `ConfigError`.
A ``py:`` name that points at an already-built `Generator` takes no options.
`recorded_name(name)` is the name its candidates record, found without loading any model.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.importing import import_object
from generators.base import Generator
from generators.tiny import TINY_KINDS, tiny_generator

#: Short names of released checkpoints: name -> (backend, hub id).
CHECKPOINTS: dict[str, tuple[str, str]] = {
    **{f"musicgen-{size}": ("musicgen", f"facebook/musicgen-{size}") for size in ("small", "medium", "large")},
    **{f"musicgen-stereo-{size}": ("musicgen", f"facebook/musicgen-stereo-{size}")
       for size in ("small", "medium", "large")},
    "musicgen-melody": ("musicgen-melody", "facebook/musicgen-melody"),
    "musicgen-melody-large": ("musicgen-melody", "facebook/musicgen-melody-large"),
    "musicgen-stereo-melody": ("musicgen-melody", "facebook/musicgen-stereo-melody"),
    "musicgen-stereo-melody-large": ("musicgen-melody", "facebook/musicgen-stereo-melody-large"),
    "stable-audio-open": ("stable-audio", "stabilityai/stable-audio-open-1.0"),
}
PREFIXES = ("musicgen:", "musicgen-melody:", "stable-audio:", "audiocraft:", "cmd:", "py:")


def known_generators() -> list[str]:
    """Every name `build_generator` accepts (prefixes end with ``:``)."""
    return [*CHECKPOINTS, *(f"tiny-{kind}" for kind in TINY_KINDS), *PREFIXES]


def _pretrained(backend: str) -> Callable[..., Generator]:
    """The ``from_pretrained`` of a backend, imported only when used (diffusers is optional)."""
    if backend == "stable-audio":
        from generators.stable_audio import StableAudioGenerator

        return StableAudioGenerator.from_pretrained
    if backend == "audiocraft":
        from generators.audiocraft_backend import AudiocraftGenerator

        return AudiocraftGenerator.from_pretrained
    from generators.musicgen import MusicGenGenerator, MusicGenMelodyGenerator

    return (MusicGenMelodyGenerator if backend == "musicgen-melody" else MusicGenGenerator).from_pretrained


def _call(factory: Callable[..., Generator], generator: str, /, *args: Any, **options: Any) -> Generator:
    """``factory(*args, **options)``, refusing options it does not take with a `ConfigError` naming them."""
    parameters = inspect.signature(factory).parameters
    taken = [p.name for p in parameters.values() if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                               inspect.Parameter.KEYWORD_ONLY)][len(args):]
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise ConfigError(f"generator '{generator}' takes no option(s) {', '.join(map(repr, unknown))}; "
                          f"its options: {', '.join(t for t in taken if t != 'name')}")
    return factory(*args, **options)


def _python(spec: str, name: str, **options: Any) -> Generator:
    """``py:<module>:<function>`` (wrapped in `CallableGenerator`) or ``py:<module>:<Generator instance>``."""
    from generators.python_fn import CallableGenerator

    target = import_object(spec, "generation function", ConfigError)
    if not isinstance(target, Generator):
        return _call(CallableGenerator, name, target, name=name, **options)
    if options:
        raise ConfigError(f"generator '{name}' is an already-built {type(target).__name__}, so option(s) "
                          f"{', '.join(map(repr, sorted(options)))} cannot apply to it; set them where it is built "
                          "(or name a function instead)")
    return target


def build_generator(name: str, device: str = "cpu", **options: Any) -> Generator:
    """Build the generator called ``name`` (see the module docstring); unknown names list the known ones.

    Options a backend does not take raise `ConfigError` naming them (never a bare ``TypeError``).
    """
    if name in CHECKPOINTS:
        backend, hub_id = CHECKPOINTS[name]
        return _call(_pretrained(backend), name, hub_id, device=device, name=name, **options)
    if name.startswith("tiny-") and name[len("tiny-"):] in TINY_KINDS:
        return _call(tiny_generator, name, name[len("tiny-"):], device=device, **options)
    prefix, sep, rest = name.partition(":")
    if sep and rest:
        if prefix in ("musicgen", "musicgen-melody", "stable-audio", "audiocraft"):
            return _call(_pretrained(prefix), name, rest, device=device, name=name, **options)
        if prefix == "cmd":
            from generators.command import CommandGenerator

            return _call(CommandGenerator, name, rest, **options)
        if prefix == "py":
            return _python(rest, name, **options)
    raise ConfigError(f"unknown generator '{name}'; known: {', '.join(known_generators())} "
                      "(names ending in ':' take a hub id, path, template file or module:function)")


def recorded_name(name: str) -> str:
    """The generator name the candidates of ``name`` record, without loading a model.

    The registry name, except for a ``cmd:`` template (its own ``name``) and a ``py:`` name that
    points at an already-built `Generator` (that generator's ``name``).
    """
    prefix, sep, rest = name.partition(":")
    if sep and rest and prefix == "cmd":
        from generators.command import CommandTemplate

        return CommandTemplate.load(rest).name
    if sep and rest and prefix == "py":
        target = import_object(rest, "generation function", ConfigError)
        return target.name if isinstance(target, Generator) else name
    return name
