"""An on-disk cache of frozen-tower token embeddings, so each clip and text is encoded once.

The MuQ-MuLan towers are frozen, so their outputs for a clip or a text never change while the
trainable ~33M part learns: training on cached features costs only the trainable part, across
epochs, runs and stages (pseudo-pretraining and fine-tuning share the cache).

Layout (one folder per tower *fingerprint*, so a changed encoder never reads stale features)::

    CACHE/
      file-digests.jsonl                  # (path, file identity) -> sha256 of the bytes (speeds up re-runs)
      audio-<fingerprint>/meta.json       # what the fingerprint covers (for humans)
      audio-<fingerprint>/shard-<id>.safetensors   # {item key: [T_i, dim]}
      text-<fingerprint>/...

* **Fingerprint** of a tower: a hash of all its weights (names, shapes, dtypes, bytes), plus for
  text the tokenizer, and for audio the chunk length and sample rate; also the stored dtype.
  Any change to the encoder (other weights, tokenizer, dtype) gives another folder.
* **Item key**: audio = sha256 of the file bytes + the preprocessing (sample rate, ``max_dur``),
  exactly what `cmirm_plugin.scoring.RewardScorer.prepare_audio` does to a clip (mono, whole-file
  resample, crop), so training sees what inference sees; text = sha256 of the string.
* **File digests** are remembered per path and file *identity* (`FileIdentity`: size, mtime,
  ctime and inode), so a re-run reads no clip whose identity is unchanged. Any write to a file
  (and any ``os.utime`` that restores its mtime) sets its ctime, which no program can set back, and
  a file replaced by another has another inode: a file changed in place is hashed again, so its
  stale features are never served. A `FeatureCache` hashes each path once: features are fixed for
  the run at `FeatureCache.precompute`.
* **Crash safety**: a shard is written to a temporary file and renamed into place, so a shard
  that exists is complete; the folder itself is the index (shard headers are read at start).
  An interruption loses at most the shard being written; the next run encodes only what is missing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence, TypeVar

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from cmirm_plugin.audio import prepare_waveform
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import ManifestWriter, read_records
from cmirm_plugin.model.muq import MIN_SAMPLES
from cmirm_plugin.model.reward_model import CHUNK_SECONDS, CMIRewardModel

#: Bump when the meaning of cached features changes without any weight changing.
CACHE_FORMAT = 1
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
#: A shard is written once the pending features reach this size.
SHARD_BYTES = 64 * 2**20
#: Temporary shard files older than this are left-overs of killed runs and are removed.
STALE_TMP_SECONDS = 24 * 3600
T = TypeVar("T")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileIdentity(NamedTuple):
    """What tells a file's versions apart without reading it (see "File digests" in the module docstring)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, path: str | Path) -> "FileIdentity":
        stat = os.stat(path)
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)

    @classmethod
    def in_record(cls, record: Mapping[str, Any]) -> bool:
        return all(name in record for name in cls._fields)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "FileIdentity":
        return cls(*(int(record[name]) for name in cls._fields))


def module_fingerprint(module: nn.Module, extra: Mapping[str, Any]) -> str:
    """A hash of every tensor of ``module`` (name, dtype, shape, bytes) and of ``extra`` (JSON)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps({"format": CACHE_FORMAT, **extra}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _tokenizer_identity(model: CMIRewardModel) -> str:
    """A hash of the tokenizer's vocabulary and pipeline (not of the padding / truncation each call sets)."""
    tok = model.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("padding", "truncation")}
    else:
        spec = sorted(tok.get_vocab().items())
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class FeatureStore:
    """A folder of safetensors shards mapping item keys to ``[n, dim]`` tensors (see the module docstring)."""

    def __init__(self, directory: str | Path, meta: Mapping[str, Any], max_open: int = 32) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        meta_path = self.directory / "meta.json"
        if not meta_path.exists():
            tmp = self.directory / f".tmp-{uuid.uuid4().hex}.json"
            tmp.write_text(json.dumps(dict(meta), indent=1, default=str))
            os.replace(tmp, meta_path)
        self._remove_stale_tmp()
        self._index: dict[str, Path] = {}
        for shard in sorted(self.directory.glob("shard-*.safetensors")):
            with safe_open(str(shard), framework="pt") as fh:
                for key in fh.keys():
                    self._index.setdefault(key, shard)
        self._open: OrderedDict[Path, Any] = OrderedDict()
        self._max_open = max_open

    def _remove_stale_tmp(self) -> None:
        now = time.time()
        for tmp in self.directory.glob(".tmp-*"):
            try:
                if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                    tmp.unlink()
            except FileNotFoundError:
                pass  # another process cleaned it up first

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: str) -> torch.Tensor:
        """The stored tensor of ``key`` (KeyError if absent)."""
        shard = self._index[key]
        handle = self._open.get(shard)
        if handle is None:
            handle = safe_open(str(shard), framework="pt")
            self._open[shard] = handle
            if len(self._open) > self._max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(shard)
        return handle.get_tensor(key)

    def write_shard(self, items: Mapping[str, torch.Tensor]) -> Path:
        """Write ``items`` as one new shard (temporary file, then an atomic rename) and index it."""
        name = uuid.uuid4().hex
        tmp = self.directory / f".tmp-{name}.safetensors"
        final = self.directory / f"shard-{name}.safetensors"
        save_file({k: v.detach().to("cpu").contiguous() for k, v in items.items()}, str(tmp))
        os.replace(tmp, final)
        for key in items:
            self._index.setdefault(key, final)
        return final


def _prefetch(batches: Iterable[Sequence[T]], load: Callable[[T], Any], workers: int = 4) -> Iterator[list[Any]]:
    """Load batch i+1 in background threads while the caller encodes batch i."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = None
        for batch in batches:
            submitted = [pool.submit(load, item) for item in batch]
            if pending is not None:
                yield [f.result() for f in pending]
            pending = submitted
        if pending is not None:
            yield [f.result() for f in pending]


class FeatureCache:
    """Cached frozen-tower features of one model: text embeddings by string, audio by file content.

    Args:
        root: the cache folder (shared by runs; see the module docstring for its layout).
        model: the model whose towers encode (its towers must be the frozen ones being cached).
        max_dur: seconds of each clip that are encoded (part of the audio item key).
        dtype: storage dtype, ``float16`` (half the disk, the default), ``bfloat16`` or ``float32``.
        encode_batch_size: clips per `CMIRewardModel.encode_audio` call (texts: 8x as many).
        progress: show rich progress bars while encoding.
    """

    def __init__(self, root: str | Path, model: CMIRewardModel, max_dur: float, dtype: str = "float16",
                 encode_batch_size: int = 8, progress: bool = True) -> None:
        if dtype not in DTYPES:
            raise ConfigError(f"cache dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.root = Path(root)
        self.model = model
        self.max_dur = float(max_dur)
        self.dtype = DTYPES[dtype]
        self.encode_batch_size = encode_batch_size
        self.progress = progress
        self.sr = model.config.sr
        self._common = {"dtype": dtype, "dim": model.config.dim}
        self._digests_path = self.root / "file-digests.jsonl"
        # Records of older cmirm versions (no ctime / inode) never match: those files are hashed once more.
        self._digests = {(r["path"], *FileIdentity.from_record(r)): r["sha256"]
                         for r in read_records(self._digests_path) if FileIdentity.in_record(r)}
        self._audio_keys: dict[str, str] = {}
        self._unsaved_digests: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ stores (built on first use:
    # fingerprinting reads every weight of a tower, and a tower that trains is never cached)
    @functools.cached_property
    def text_store(self) -> FeatureStore:
        spec = {**self._common, "tower": "text", "tokenizer": _tokenizer_identity(self.model)}
        return self._store(self.model.text_module, spec)

    @functools.cached_property
    def audio_store(self) -> FeatureStore:
        spec = {**self._common, "tower": "audio", "sr": self.sr, "chunk_seconds": CHUNK_SECONDS}
        return self._store(self.model.audio_module, spec)

    def _store(self, tower: nn.Module, spec: dict[str, Any]) -> FeatureStore:
        """The store of ``tower``'s fingerprint (``meta.json`` also names the towers' source, for humans)."""
        folder = self.root / f"{spec['tower']}-{module_fingerprint(tower, spec)}"
        return FeatureStore(folder, {**spec, "model_name": self.model.config.model_name})

    # ------------------------------------------------------------------ keys
    def audio_key(self, path: str | Path) -> str:
        """sha256 of the file's bytes and of the preprocessing (sample rate, max_dur)."""
        key = self._audio_keys.get(str(path))
        if key is None:
            resolved = str(Path(path).resolve())
            identity = FileIdentity.of(resolved)
            memo = (resolved, *identity)
            digest = self._digests.get(memo)
            if digest is None:
                digest = self._digests[memo] = file_sha256(path)
                self._unsaved_digests.append({"path": resolved, **identity._asdict(), "sha256": digest})
            key = hashlib.sha256(f"{digest}|sr={self.sr}|max_dur={self.max_dur!r}".encode()).hexdigest()
            self._audio_keys[str(path)] = key
        return key

    @staticmethod
    def text_key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # ------------------------------------------------------------------ filling
    def _bar(self) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        disable=not self.progress)

    def _fill(self, store: FeatureStore, todo: list[tuple[str, Any]], batch_size: int, description: str,
              encode: Callable[[list[Any]], list[torch.Tensor]], load: Callable[[Any], Any]) -> int:
        """Encode the ``(key, item)`` pairs in batches and write shards of about `SHARD_BYTES`."""
        if not todo:
            return 0
        batches = [todo[s : s + batch_size] for s in range(0, len(todo), batch_size)]
        pending: dict[str, torch.Tensor] = {}
        size = 0
        was_training = self.model.training
        self.model.eval()
        try:
            with self._bar() as bar, torch.inference_mode():
                task = bar.add_task(description, total=len(todo))
                for batch, loaded in zip(batches, _prefetch([[item for _, item in b] for b in batches], load)):
                    for (key, item), features in zip(batch, encode(loaded)):
                        stored = features.to(self.dtype)
                        if not bool(torch.isfinite(stored).all()):
                            raise ConfigError(f"features of {item!r} overflow the cache dtype {self.dtype} "
                                              f"(use cache_dtype float32)")
                        pending[key] = stored
                        size += stored.numel() * stored.element_size()
                    bar.advance(task, len(batch))
                    if size >= SHARD_BYTES:
                        store.write_shard(pending)
                        pending, size = {}, 0
            if pending:
                store.write_shard(pending)
        finally:
            self.model.train(was_training)
        return len(todo)

    def precompute(self, texts: Iterable[str] = (), audio: Iterable[str | Path] = ()) -> dict[str, int]:
        """Encode every text and clip not cached yet; return how many of each were encoded."""
        text_items = {self.text_key(t): t for t in texts}
        audio_items = {self.audio_key(p): p for p in audio}
        if self._unsaved_digests:
            with ManifestWriter(self._digests_path) as writer:
                for record in self._unsaved_digests:
                    writer.append(record)
            self._unsaved_digests.clear()
        done = {"text": 0, "audio": 0}
        if text_items:   # (a tower whose items are not asked for is never fingerprinted)
            todo = [(k, t) for k, t in text_items.items() if k not in self.text_store]
            done["text"] = self._fill(self.text_store, todo, 8 * self.encode_batch_size, "caching text features",
                                      lambda batch: self.model.encode_text(batch).items(), lambda t: t)
        if audio_items:
            todo = [(k, p) for k, p in audio_items.items() if k not in self.audio_store]
            done["audio"] = self._fill(self.audio_store, todo, self.encode_batch_size, "caching audio features",
                                       lambda waves: self.model.encode_audio(waves, self.encode_batch_size),
                                       lambda p: prepare_waveform(p, self.sr, self.max_dur, MIN_SAMPLES))
        return done

    # ------------------------------------------------------------------ reading
    def text(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Cached ``[n_i, dim]`` embeddings of ``texts`` (KeyError naming the text if one is missing)."""
        out = []
        for text in texts:
            try:
                out.append(self.text_store.get(self.text_key(text)))
            except KeyError as exc:
                raise KeyError(f"text {text[:200]!r} not in the feature cache (call precompute first)") from exc
        return out

    def audio(self, paths: Sequence[str | Path]) -> list[torch.Tensor]:
        """Cached ``[T_i, dim]`` embeddings of the clips at ``paths``."""
        out = []
        for path in paths:
            try:
                out.append(self.audio_store.get(self.audio_key(path)))
            except KeyError as exc:
                raise KeyError(f"'{path}' not in the feature cache (call precompute first)") from exc
        return out
