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
(``dtype``, ``batch_size``, and for ``py:`` functions ``sample_rate`` / ``inputs``).
"""

from __future__ import annotations

from typing import Any, Callable

from cmirm_plugin.errors import ConfigError
from generators.base import Generator

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
TINY = ("tiny-musicgen", "tiny-musicgen-melody", "tiny-stable-audio")
PREFIXES = ("musicgen:", "musicgen-melody:", "stable-audio:", "audiocraft:", "cmd:", "py:")


def known_generators() -> list[str]:
    """Every name `build_generator` accepts (prefixes end with ``:``)."""
    return [*CHECKPOINTS, *TINY, *PREFIXES]


def _pretrained(backend: str) -> Callable[..., Generator]:
    """The ``from_pretrained`` of a backend, imported only when used (diffusers is optional)."""
    if backend == "stable-audio":
        from generators.stable_audio import StableAudioGenerator

        return StableAudioGenerator.from_pretrained
    from generators.musicgen import MusicGenGenerator, MusicGenMelodyGenerator

    return (MusicGenMelodyGenerator if backend == "musicgen-melody" else MusicGenGenerator).from_pretrained


def _tiny(name: str, device: str, batch_size: int = 1, seed: int = 0) -> Generator:
    from generators import tiny

    if name == "tiny-stable-audio":
        from generators.stable_audio import StableAudioGenerator

        return StableAudioGenerator(tiny.tiny_stable_audio(seed).to(device), name=name, batch_size=batch_size)
    from generators.musicgen import MusicGenGenerator, MusicGenMelodyGenerator

    cls, build = ((MusicGenMelodyGenerator, tiny.tiny_musicgen_melody) if name == "tiny-musicgen-melody"
                  else (MusicGenGenerator, tiny.tiny_musicgen))
    model, processor = build(seed)
    return cls(model.to(device), processor, name=name, batch_size=batch_size)


def _python(spec: str, name: str, **options: Any) -> Generator:
    from generators.python_fn import CallableGenerator, load_object

    target = load_object(spec)
    if isinstance(target, Generator):
        return target
    return CallableGenerator(target, name=name, **options)


def build_generator(name: str, device: str = "cpu", **options: Any) -> Generator:
    """Build the generator called ``name`` (see the module docstring); unknown names list the known ones."""
    if name in CHECKPOINTS:
        backend, hub_id = CHECKPOINTS[name]
        return _pretrained(backend)(hub_id, device=device, name=name, **options)
    if name in TINY:
        return _tiny(name, device, **options)
    prefix, sep, rest = name.partition(":")
    if sep and rest:
        if prefix in ("musicgen", "musicgen-melody", "stable-audio"):
            return _pretrained(prefix)(rest, device=device, name=name, **options)
        if prefix == "audiocraft":
            from generators.audiocraft_backend import AudiocraftGenerator

            return AudiocraftGenerator.from_pretrained(rest, device=device, name=name, **options)
        if prefix == "cmd":
            from generators.command import CommandGenerator

            return CommandGenerator(rest, **options)
        if prefix == "py":
            return _python(rest, name, **options)
    raise ConfigError(f"unknown generator '{name}'; known: {', '.join(known_generators())} "
                      "(names ending in ':' take a hub id, path, template file or module:function)")
