"""Exceptions raised at the boundaries of cmirm.

Every error names the file, field or value that is wrong and, where possible, says what to do.
They subclass ``ValueError`` so callers that only know the standard library can still catch them.
"""

from __future__ import annotations

import contextlib
import errno
import operator
from pathlib import Path
from typing import Iterator


class CmirmError(ValueError):
    """Base class of all cmirm input errors."""


class AudioError(CmirmError):
    """Audio that cannot be used: missing, unreadable, empty, non-finite or unsupported."""


class ManifestError(CmirmError):
    """A JSONL manifest line that is not a JSON object (other than a truncated last line)."""


class ConfigError(CmirmError):
    """A model or job configuration value that is unknown or out of range."""


def check_count(name: str, value: object) -> int:
    """``value`` as an integer >= 1 (numpy integers too; bools and floats refused), else a `ConfigError`
    naming ``name`` (an option, ``--num-actors``, or a field, ``scoring setting batch_size``)."""
    if not isinstance(value, bool):
        try:
            count = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            pass
        else:
            if count >= 1:
                return count
    raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


class CheckpointError(CmirmError):
    """A checkpoint that cannot be loaded: missing files, unsafe format or mismatched shapes."""


class ScorerUnavailable(CmirmError):
    """A scorer that cannot score anything right now (e.g. its reward server is gone, too slow, or refuses
    the token). Never blamed on a clip: `score_isolated` lets it propagate instead of isolating items."""


class OutputError(CmirmError):
    """An output that cannot be written: a path of the wrong kind (a file where a folder goes, or the other
    way round), or one the system refuses (read-only, permission, disk full); the message names the path."""


#: What to tell the user per errno (the rest get the system's own words).
_OS_ADVICE = {
    errno.ENOSPC: "free some space, then rerun the same command to resume",
    errno.EDQUOT: "free some space, then rerun the same command to resume",
    errno.EROFS: "use a writable --out",
    errno.EACCES: "check its permissions or use another --out",
    errno.EPERM: "check its permissions or use another --out",
}


def describe_os_error(exc: OSError, path: Path | str | None = None) -> str:
    """``cannot write 'PATH': problem; advice`` (PATH: ``path`` if given, the file the caller writes rather
    than a temporary name, else the error's own file name)."""
    where = path if path is not None else exc.filename
    advice = _OS_ADVICE.get(exc.errno or 0)
    return f"cannot write '{where}': {exc.strerror or exc}" + (f"; {advice}" if advice else "")


@contextlib.contextmanager
def output_errors(path: Path | str | None = None, error: type[OutputError] = OutputError) -> Iterator[None]:
    """Re-raise an ``OSError`` of the block as a one-line ``error`` (`describe_os_error`)."""
    try:
        yield
    except OSError as exc:
        raise error(describe_os_error(exc, path)) from exc


def check_output_path(path: Path | str, option: str, *, directory: bool) -> Path:
    """``path`` as an output folder (``directory``) or file, refused in one line naming it and ``option``
    when it is of the other kind or lies under a file. Nothing is created, so a job checks it before any work.
    """
    path = Path(path)
    with output_errors(path):   # a folder on the way that cannot be looked into
        for where in (path, *path.parents):
            if where.exists():
                if where == path and path.is_dir() != directory:
                    kind = "is a directory" if path.is_dir() else "is a file"
                    wanted = "a directory" if directory else "a file path"
                    raise OutputError(f"{option} '{path}' {kind}: give {wanted}")
                if where != path and not where.is_dir():
                    raise OutputError(f"{option} '{path}' lies under '{where}', which is a file: give another path")
                break
    return path
