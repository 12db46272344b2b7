"""The run directory as a shared, fallible resource: one job at a time, whole files, clear I/O errors.

- `RunDirLock`: an exclusive lock on the directory for the whole job (``fcntl.flock`` on
  ``DIR/.lock``, which names its holder's pid, host and start time). A second job into the same
  ``--out`` fails at once, naming the holder, instead of generating the same seeds twice. A
  read-only directory cannot be written by anyone, so it is used without a lock.
- `write_text_atomic` / `write_bytes_atomic`: the file is written under a temporary name of its
  own (pid and random suffix, so two writers never share one) in the same folder and renamed over
  the target; a failed write removes its temporary file. `write_if_changed` leaves a file whose
  content is already right untouched (a finished run can be rerun on a read-only directory).
- `save_wav`: the clip is encoded in memory and written like any other file, so a full disk is an
  ``OSError`` naming the problem, not libsndfile's "System error".
- `wav_problem`: why a candidate wav found on disk cannot be reused (missing, empty, unreadable,
  another length or rate than its record says); the caller regenerates it.
- `disk_errors`: turns ``OSError`` into a one-line `RunDirError` naming the path and the problem
  (`cmirm_plugin.errors.output_errors`).
- `make_dir`: creates an output directory, after refusing in one line one that is a file or lies
  under one (`cmirm_plugin.errors.check_output_path`); any ``OSError`` is one line too.
- `remove_stale_temps`: temporary files left by a killed job (only called under the lock).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import fcntl
import io
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cmirm_plugin.errors import OutputError, check_output_path, describe_os_error, output_errors

if TYPE_CHECKING:   # run.json writing reaches this module from the CLI: keep soundfile/torch off that path
    import torch

    from cmirm_plugin.audio import Audio

LOCK = ".lock"
#: Suffix of every temporary file of a run directory (see `remove_stale_temps`).
TEMP_SUFFIX = ".tmp"


class RunDirError(OutputError):
    """A run directory that cannot be used: locked by another job, or a file that cannot be written."""


def disk_errors(path: Path | str | None = None) -> contextlib.AbstractContextManager[None]:
    """Re-raise an ``OSError`` of the block as a one-line `RunDirError` naming the file and the problem."""
    return output_errors(path, RunDirError)


def folder_name_part(text: str, limit: int) -> str:
    """``text`` as part of a folder name: ``:`` -> ``-``, ``;`` -> ``+``, other unsafe runs -> ``-``; a long one is
    cut and ends in a hash of the whole, so different texts keep different names."""
    part = re.sub(r"[^A-Za-z0-9._=,+-]+", "-", text.replace(":", "-").replace(";", "+")).strip("-.") or "x"
    if len(part) > limit:
        part = part[: limit - 9] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return part


def make_dir(path: Path | str, option: str = "--out") -> Path:
    """Create the output directory ``path`` (`check_output_path` first); an ``OSError`` is one line naming it."""
    path = check_output_path(path, option, directory=True)
    with disk_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def _temp_path(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    return Path(name)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Replace ``path`` with ``data``: readers see the old or the new file, never half of one."""
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_path(path)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """`write_bytes_atomic` of UTF-8 ``text``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` (atomically) unless the file already holds exactly it; True if written."""
    path = Path(path)
    data = text.encode("utf-8")
    with contextlib.suppress(OSError):
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    write_bytes_atomic(path, data)
    return True


def copy_if_changed(source: Path, target: Path) -> bool:
    """Make ``target`` a copy of ``source`` (atomically) unless it already is one; True if written."""
    data = Path(source).read_bytes()
    with contextlib.suppress(OSError):
        if target.stat().st_size == len(data) and target.read_bytes() == data:
            return False
    write_bytes_atomic(target, data)
    return True


def save_wav(audio: Audio, path: Path) -> Path:
    """Write ``audio`` as a float wav at ``path``, whole or not at all (see the module docstring)."""
    buffer = io.BytesIO()
    import soundfile as sf

    sf.write(buffer, audio.waveform.numpy().T, audio.sample_rate, format="WAV", subtype="FLOAT")
    return write_bytes_atomic(path, buffer.getvalue())


def save_codes(codes: "torch.Tensor", path: Path) -> Path:
    """Write a candidate's codec tokens (``[codebooks, frames]``) as safetensors at ``path``, whole or not at all."""
    from safetensors.torch import save

    return write_bytes_atomic(path, save({"codes": codes.detach().cpu().contiguous()}))


def load_codes(path: Path) -> "torch.Tensor | None":
    """The codes `save_codes` wrote at ``path`` (None when there is no such file); a file that cannot be
    read back is one line naming it."""
    if not path.is_file():
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(path.read_bytes())["codes"]
    except (OSError, SafetensorError, KeyError) as exc:
        raise RunDirError(f"cannot read the codec tokens '{path}' ({type(exc).__name__}: {exc}); delete it and "
                          "rerun the same command: that prefix is then continued from its audio, re-encoded") from exc


def wav_problem(path: Path, sample_rate: int | None = None, duration: float | None = None) -> str | None:
    """Why the wav at ``path`` cannot be trusted as the candidate its record describes (None: it can)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if size == 0:
        return "empty (0 bytes)"
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        return f"not a readable audio file ({exc})"
    if info.frames <= 0:
        return "holds no samples"
    if sample_rate is not None and info.samplerate != sample_rate:
        return f"sample rate {info.samplerate} Hz, its record says {sample_rate} Hz"
    if duration is not None and abs(info.frames - duration * info.samplerate) > 1.0:
        return f"{info.frames / info.samplerate:.6f} s long, its record says {duration:.6f} s (cut short?)"
    return None


def remove_stale_temps(*folders: Path) -> int:
    """Delete the temporary files killed jobs left in ``folders``; the number removed.

    Call it only while holding the directory's lock: a running job's temporary files look the same.
    """
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX) and path.is_file():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
    return removed


def _holder(text: str) -> str:
    try:
        data = json.loads(text)
        return f"pid {data['pid']} on host {data['host']} (since {data['since']})"
    except (json.JSONDecodeError, KeyError, TypeError):
        return "another process"


class RunDirLock:
    """An exclusive lock on a run directory for one job (see the module docstring). A context manager.

    The lock belongs to the open file, so it is released however the process ends (even SIGKILL);
    the holder's details stay in the file for the next job's error message only.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK
        self._fh: io.TextIOWrapper | None = None

    def acquire(self) -> "RunDirLock":
        make_dir(self.root)
        try:
            fh = self.path.open("a+", encoding="utf-8")
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and self.root.is_dir():
                return self   # nobody can write a read-only directory: nothing to exclude
            raise RunDirError(describe_os_error(exc, self.path)) from exc
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = _holder(fh.read())
            fh.close()
            raise RunDirError(f"'{self.root}' is in use by another cmirm job: {holder}; wait for it to finish "
                              "or use another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()   # closing the file releases the lock
            self._fh = None

    def __enter__(self) -> "RunDirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
