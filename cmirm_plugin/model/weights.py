"""Read weight files safely: safetensors, weights-only ``pytorch_model.bin``, and a conversion cache.

Safetensors files are memory-mapped and never run code. A ``.bin`` (what ``torch.save`` of a state
dict writes, e.g. the MuQ-MuLan hub checkpoint) is read with torch's weights-only unpickler
(``torch.load(..., weights_only=True)``), which rebuilds tensors and plain containers (dict, list,
tuple, OrderedDict, numbers, strings) and refuses every other global or reduce call before calling
it: nothing in the file runs. A ``.bin`` read once is converted to safetensors in the cmirm cache
(`cmirm_plugin.cache.cache_root`), keyed by the sha256 of its bytes, so later loads are memory-mapped:

    <cache>/converted-weights/<sha256>.safetensors   the tensors of a .bin with that content hash
    <cache>/converted-weights/by-file/<key>.json     path, size, mtime and sha256 of a .bin already
                                                      hashed (so an unchanged file is hashed once)

When the cache cannot be written the ``.bin`` is read directly each time (with a warning).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cmirm_plugin.cache import cache_root
from cmirm_plugin.errors import CheckpointError

#: Hub-mixin weight files in the order `PyTorchModelHubMixin` tries them.
WEIGHTS_NAME = "model.safetensors"
PICKLE_WEIGHTS_NAME = "pytorch_model.bin"
#: Folder of the conversion cache under `cache_root`.
CONVERTED_DIR = "converted-weights"


@dataclass(frozen=True)
class WeightsRead:
    """The tensors of a weights file, and the file they were read from (itself or its cached copy)."""

    state: dict[str, torch.Tensor]
    path: Path
    read_from: Path


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (memory-mapped, on CPU)."""
    if path.suffix != ".safetensors":
        raise CheckpointError(f"'{path}': expected a .safetensors file")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"'{path}': not a readable safetensors file ({exc})") from exc


def read_torch_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save``, unpickled weights-only (see the module docstring)."""
    try:
        # mmap needs the zip format torch.save writes since torch 1.6; older files are read whole
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"'{path}': refused: torch's weights-only unpickler accepts only tensors and plain containers and stopped "
            f"at: {_unpickler_reason(exc)}; nothing in the file was run. Get the weights as safetensors, or from a "
            f"source you trust") from exc
    except Exception as exc:
        raise CheckpointError(f"'{path}': not a readable torch checkpoint ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from exc
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        raise CheckpointError(f"'{path}': expected a state dict (parameter names -> tensors), "
                              f"found {type(state).__name__}")
    return dict(state)


def _unpickler_reason(exc: Exception) -> str:
    """The sentence of torch's long weights-only error that says what was refused (not its how-to-allow advice)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    lines = [line.strip() for line in text.split(marker, 1)[-1].splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(exc).__name__


def read_weights(path: Path) -> WeightsRead:
    """The tensors of ``path``: a ``.safetensors`` file directly, anything else as a weights-only ``.bin``
    through the conversion cache."""
    if path.suffix == ".safetensors":
        return WeightsRead(read_safetensors(path), path, path)
    return _read_converted(path)


def _read_converted(path: Path) -> WeightsRead:
    from filelock import FileLock

    stat = path.stat()
    real = path.resolve()
    file_key = hashlib.sha256(f"{real}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    folder = cache_root() / CONVERTED_DIR
    index = folder / "by-file" / f"{file_key}.json"
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f"{file_key}.lock"))
        lock.acquire()
    except OSError as exc:
        _warn_uncached(path, folder, exc)
        return WeightsRead(read_torch_weights(path), path, path)
    try:   # one process converts; concurrent loaders (e.g. Ray actors) wait and then read its copy
        known = _read_index(index, str(real), stat)
        digest = known or _sha256(path)
        converted = folder / f"{digest}.safetensors"
        if converted.is_file():
            if known is None:
                _write_index(index, str(real), stat, digest)
            return WeightsRead(_read_cached(converted), path, converted)
        state = read_torch_weights(path)
        try:
            _write_atomically(converted, state, {"format": "pt", "producer": "cmirm", "source": str(real),
                                                 "sha256": digest})
            _write_index(index, str(real), stat, digest)
        except (OSError, SafetensorError) as exc:   # e.g. a full disk: the tensors are loaded all the same
            _warn_uncached(path, folder, exc)
        return WeightsRead(state, path, path)
    finally:
        lock.release()


def _warn_uncached(path: Path, folder: Path, exc: Exception) -> None:
    warnings.warn(f"could not keep a safetensors copy of '{path}' in '{folder}' ({type(exc).__name__}: {exc}); "
                  f"reading the .bin directly (set CMIRM_CACHE to a writable folder to convert it once)", stacklevel=3)


def _read_cached(converted: Path) -> dict[str, torch.Tensor]:
    try:
        return read_safetensors(converted)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; it is a cached conversion: delete it to convert again") from exc


def _read_index(index: Path, real: str, stat: os.stat_result) -> str | None:
    """The sha256 recorded for this exact file (same path, size and mtime), if any."""
    try:
        record = json.loads(index.read_text())
    except (OSError, ValueError):
        return None
    if record.get("path") == real and record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
        return record.get("sha256")
    return None


def _write_index(index: Path, real: str, stat: os.stat_result, digest: str) -> None:
    tmp = index.with_name(f".tmp-{os.getpid()}-{index.name}")
    tmp.write_text(json.dumps({"path": real, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}))
    os.replace(tmp, index)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(target: Path, state: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``state`` as safetensors next to ``target`` and rename it into place (never half a file)."""
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    try:
        save_file(unshared({k: v.contiguous() for k, v in state.items()}), str(tmp), metadata=metadata)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def unshared(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every tensor that shares memory with an earlier one cloned (safetensors stores each once).

    Tied parameters (e.g. the ``conv`` downsampler's stage shared under several names, or tensors
    a ``.bin`` stored as views of one storage) are written under each of their names.
    """
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        storage = value.untyped_storage().data_ptr()
        out[key] = value.clone() if storage in seen and value.numel() else value
        seen.add(storage)
    return out
