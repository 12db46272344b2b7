"""Hub ids of the released models, and one way to report a model that cannot be fetched.

Light enough for any CLI to import (no torch, no transformers).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

from cmirm_plugin.errors import CheckpointError

#: The released CMI-RM checkpoint (``model.safetensors`` + ``config.yaml``).
DEFAULT_MODEL = "HaiwenXia/CMI-RM"


def is_repo_id(name: str) -> bool:
    """Whether ``name`` is a hub repo id (``name`` or ``owner/name``; dots allowed, e.g. ``Qwen/Qwen2.5-7B``)
    rather than a path (``/``, ``./``, ``../``, ``~`` or anything the hub would refuse)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.startswith(("/", "./", "../", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def download_hint(repo: str, files: Sequence[str] = (), use_as: str | None = None) -> str:
    """What to do when hub repo ``repo`` is neither in the hub cache nor reachable on the hub.

    ``files``: the file names looked for, any one of which will do (e.g. a tower's
    ``model.safetensors`` or ``pytorch_model.bin``; ``hf download`` with several names fetches those
    the repo has). ``use_as``: how a downloaded folder is passed instead (e.g. ``--generator musicgen:DIR``).
    """
    fetch = " ".join(["hf download", repo, *files])
    folder = f" Or run `hf download {repo} --local-dir DIR` there and pass {use_as}." if use_as else ""
    return (f"On a machine with the hub run `{fetch}` (or `cmirm download`), copy its hub cache (HF_HOME) here and set "
            f"HF_HUB_OFFLINE=1 to run from it without network.{folder}")


@contextlib.contextmanager
def unavailable_as_error(repo: str, what: str = "model", use_as: str | None = None) -> Iterator[None]:
    """Turn "cannot load ``repo``" failures of a library's ``from_pretrained`` into one clear `CheckpointError`.

    A local folder is named as the folder it is (never as something to download from the hub).
    """
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        yield
    except (OSError, LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if Path(repo).expanduser().is_dir() or not is_repo_id(repo):
            raise CheckpointError(f"could not load {what} from folder '{repo}' ({type(exc).__name__}: {first}); "
                                  "check that it holds a complete checkpoint") from exc
        raise CheckpointError(f"could not load {what} '{repo}' ({type(exc).__name__}: {first}). "
                              f"{download_hint(repo, use_as=use_as)}") from exc
