"""Generators by name, so the CLI and configs can say ``--generator musicgen-small``.

Names:

- ``musicgen-small`` / ``-medium`` / ``-large`` / ``musicgen-stereo-*``: transformers MusicGen.
- ``musicgen-melody`` / ``musicgen-melody-large`` / ``musicgen-stereo-melody*``: MusicGen-Melody.
- ``stable-audio-open``: Stable Audio Open 1.0 (diffusers).
- ``tiny-musicgen`` / ``tiny-musicgen-melody`` / ``tiny-stable-audio``: random toy models, offline.
- ``musicgen:<id or dir>``, ``musicgen-melody:<id or dir>``, ``stable-audio:<id or dir>``: any
  checkpoint of those architectures.
- ``<dir>``: a checkpoint folder whose backend is read from its config (`detect_backend`:
  ``config.json`` ``model_type`` musicgen / musicgen_melody, a diffusers ``model_index.json`` of
  Stable Audio, or audiocraft's ``state_dict.bin`` + ``compression_state_dict.bin``).
- ``audiocraft:<name or dir>``: audiocraft MusicGen / MAGNeT (e.g. ``audiocraft:facebook/magnet-small-10secs``).
- ``cmd:<template file>``: an external command (see `generators.command`).
- ``py:<module>:<function>``: a Python function or a `Generator` instance.

`build_generator(name, device=..., **options)` builds one; options are forwarded to the backend
(``dtype`` for the model backends, ``batch_size``, ``seed`` for the tiny models, and for ``py:``
functions ``sample_rate`` / ``inputs``); an option the backend does not take is a `ConfigError`.
A ``py:`` name that points at an already-built `Generator` takes no options.

`generator_needs` says which hub repos and files a name reads (for `cmirm_plugin.models_needed`,
which finds it through the ``cmirm.models`` entry point `MODELS`).
`recorded_name(name)` is the name its candidates record, and `declared_inputs(name)` the
instruction inputs it honours (`require_inputs` refuses an instruction it cannot), both found
without loading any model.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.hub import is_repo_id
from cmirm_plugin.importing import import_object
from cmirm_plugin.models_needed import FileNeed, ModelFiles, ModelProvider, RepoNeed, diffusers_needs, transformers_needs
from cmirm_plugin.records import Instruction
from generators.base import Capabilities, DeclaredInputs, Generator
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
#: Backends that load a checkpoint (a hub id or a folder), i.e. the prefixes that take one.
CHECKPOINT_BACKENDS = ("musicgen", "musicgen-melody", "stable-audio", "audiocraft")
#: ``config.json`` ``model_type`` -> backend, for checkpoint folders given without a prefix.
MODEL_TYPES = {"musicgen": "musicgen", "musicgen_melody": "musicgen-melody"}
#: diffusers ``model_index.json`` ``_class_name`` -> backend.
PIPELINE_CLASSES = {"StableAudioPipeline": "stable-audio"}
#: Files of an audiocraft checkpoint folder.
AUDIOCRAFT_FILES = ("state_dict.bin", "compression_state_dict.bin")


def known_generators() -> list[str]:
    """Every name `build_generator` accepts (prefixes end with ``:``)."""
    return [*CHECKPOINTS, *(f"tiny-{kind}" for kind in TINY_KINDS), *PREFIXES]


def _backend_class(backend: str) -> type[Generator]:
    """The `Generator` class of a backend, imported only when used (its model libraries load later still)."""
    if backend == "stable-audio":
        from generators.stable_audio import StableAudioGenerator

        return StableAudioGenerator
    if backend == "audiocraft":
        from generators.audiocraft_backend import AudiocraftGenerator

        return AudiocraftGenerator
    from generators.musicgen import MusicGenGenerator, MusicGenMelodyGenerator

    return MusicGenMelodyGenerator if backend == "musicgen-melody" else MusicGenGenerator


def _pretrained(backend: str) -> Callable[..., Generator]:
    """The ``from_pretrained`` of a backend."""
    return _backend_class(backend).from_pretrained  # type: ignore[attr-defined]


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


def detect_backend(folder: str | Path) -> str:
    """The backend of a checkpoint folder, read from its config; a `ConfigError` gives the prefixed syntax."""
    folder = Path(folder).expanduser()
    config = _json(folder / "config.json")
    index = _json(folder / "model_index.json")
    if config.get("model_type") in MODEL_TYPES:
        return MODEL_TYPES[config["model_type"]]
    if index.get("_class_name") in PIPELINE_CLASSES:
        return PIPELINE_CLASSES[index["_class_name"]]
    if all((folder / f).is_file() for f in AUDIOCRAFT_FILES):
        return "audiocraft"
    found = (f"config.json model_type {config['model_type']!r}" if "model_type" in config
             else f"model_index.json _class_name {index['_class_name']!r}" if "_class_name" in index
             else "no config.json model_type, model_index.json or audiocraft state_dict.bin")
    raise ConfigError(f"--generator '{folder}': not a generator folder cmirm recognises ({found}); name its backend: "
                      f"{', '.join(f'{b}:{folder}' for b in CHECKPOINT_BACKENDS)}")


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def checkpoint_of(name: str) -> tuple[str, str] | None:
    """(backend, hub id or folder) of a name that loads a checkpoint; None for tiny, ``cmd:`` and ``py:``
    names. An unknown name is a `ConfigError` that says which forms exist."""
    if name in CHECKPOINTS:
        return CHECKPOINTS[name]
    if name.startswith("tiny-") and name[len("tiny-"):] in TINY_KINDS:
        return None
    prefix, sep, rest = name.partition(":")
    if sep and rest and prefix in CHECKPOINT_BACKENDS:
        return prefix, rest
    if sep and rest and prefix in ("cmd", "py"):
        return None
    if Path(name).expanduser().is_dir():
        return detect_backend(name), name
    if is_repo_id(name) and "/" in name:
        hint = f"for a hub checkpoint name its backend, e.g. musicgen:{name} or stable-audio:{name}"
    elif "/" in name or name.startswith((".", "~")):
        hint = "no such folder"
    else:
        hint = "names ending in ':' take a hub id, folder, template file or module:function"
    raise ConfigError(f"unknown generator '{name}' ({hint}); known: {', '.join(known_generators())}")


def known_capabilities(name: str) -> Capabilities | None:
    """The `Capabilities` of generator ``name`` found without loading anything: its backend class declares
    them (None: known only once it is built: ``cmd:`` templates, ``py:`` functions, audiocraft, where
    MusicGen continues and MAGNeT does not). Unknown names are a `ConfigError`."""
    checkpoint = checkpoint_of(name)
    backend = checkpoint[0] if checkpoint is not None else name[len("tiny-"):] if name.startswith("tiny-") else None
    if backend not in (*CHECKPOINT_BACKENDS, *TINY_KINDS) or backend == "audiocraft":
        return None
    return _backend_class(backend).capabilities


def build_generator(name: str, device: str = "cpu", **options: Any) -> Generator:
    """Build the generator called ``name`` (see the module docstring); unknown names list the known ones.

    Options a backend does not take raise `ConfigError` naming them (never a bare ``TypeError``).
    """
    checkpoint = checkpoint_of(name)
    if checkpoint is not None:
        backend, source = checkpoint
        return _call(_pretrained(backend), name, source, device=device, name=name, **options)
    if name.startswith("tiny-"):
        return _call(tiny_generator, name, name[len("tiny-"):], device=device, **options)
    prefix, _, rest = name.partition(":")
    if prefix == "cmd":
        from generators.command import CommandGenerator

        return _call(CommandGenerator, name, rest, **options)
    return _python(rest, name, **options)


def declared_inputs(name: str) -> DeclaredInputs:
    """The instruction inputs generator ``name`` honours and requires, known without loading a model.

    Model backends declare them as class attributes (`DeclaredInputs.of` the backend class; an
    audiocraft checkpoint's by whether it is a MAGNeT, `checkpoint_is_magnet`); ``cmd:`` and ``py:``
    generators load no model, so they are built and asked. An unknown name is a `ConfigError`.
    """
    checkpoint = checkpoint_of(name)
    if checkpoint is None and not name.startswith("tiny-"):
        return DeclaredInputs.of(build_generator(name))
    backend, source = checkpoint if checkpoint is not None else (name[len("tiny-"):], "")
    if backend == "audiocraft":
        from generators.audiocraft_backend import AudiocraftGenerator, checkpoint_is_magnet

        return DeclaredInputs(AudiocraftGenerator.inputs_of(checkpoint_is_magnet(source)))
    return DeclaredInputs.of(_backend_class(backend))


def require_inputs(generator: str | Generator, instructions: Sequence[Instruction]) -> None:
    """Refuse (`UnsupportedInputError`) the first of ``instructions`` that ``generator`` (a name, or a
    built one) cannot honour, before any model loads (see `declared_inputs`)."""
    declared, name = (DeclaredInputs.of(generator), generator.name) if isinstance(generator, Generator) \
        else (declared_inputs(generator), generator)
    for instruction in instructions:
        declared.require(name, instruction)


def generator_needs(name: str, files: ModelFiles) -> list[RepoNeed]:
    """The hub repos (or folders) generator ``name`` reads and their files; none for tiny, ``cmd:`` and ``py:``
    generators (a ``cmd:`` template runs in its own environment with its own models)."""
    checkpoint = checkpoint_of(name)
    if checkpoint is None:
        return []
    backend, source = checkpoint
    role = f"generator {name}"
    if backend == "stable-audio":
        return [diffusers_needs(source, role, files)]
    if backend == "audiocraft":   # the two checkpoints; the T5 conditioner they name is resolved when it loads
        return [RepoNeed(source, role, tuple(FileNeed((f,)) for f in AUDIOCRAFT_FILES))]
    return [transformers_needs(source, role, files)]


def is_generator_name(name: str) -> bool:
    """Whether ``name`` is a generator name (not, e.g., a scorer spec such as a hub id of a reward model)."""
    if name in CHECKPOINTS or name.startswith(tuple(f"tiny-{k}" for k in TINY_KINDS)):
        return True
    prefix, sep, rest = name.partition(":")
    if sep and rest and f"{prefix}:" in PREFIXES:
        return True
    if not Path(name).expanduser().is_dir():
        return False
    try:
        detect_backend(name)
    except ConfigError:
        return False
    return True


#: This package's entry in the ``cmirm.models`` entry-point group (see `cmirm_plugin.models_needed`).
MODELS = ModelProvider(kind="generator", claims=is_generator_name, needs=generator_needs, known=tuple(CHECKPOINTS),
                       defaults=("musicgen-small",))


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
