"""Hub ids of the released models, and one way to report a model that cannot be fetched.

Light enough for any CLI to import (no torch, no transformers).
"""

from __future__ import annotations

import contextlib
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


def download_hint(repo: str, files: Sequence[str] = ()) -> str:
    """What to do when ``repo`` is neither a local folder nor reachable on the hub.

    ``files``: the file names looked for, any one of which will do (e.g. a tower's
    ``model.safetensors`` or ``pytorch_model.bin``), named as the repo spells them.
    """
    wanted = f" cmirm needs {' or '.join(files)} from it." if files else ""
    return (f"On a machine with access run `huggingface-cli download {repo} --local-dir DIR` and pass DIR instead "
            f"of '{repo}', or point HF_HOME at a cache that holds it.{wanted}")


@contextlib.contextmanager
def unavailable_as_error(repo: str, what: str = "model") -> Iterator[None]:
    """Turn "cannot load ``repo``" failures of a library's ``from_pretrained`` into one clear `CheckpointError`."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        yield
    except (OSError, LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"could not load {what} '{repo}' ({type(exc).__name__}: {first}). "
                              f"{download_hint(repo)}") from exc
