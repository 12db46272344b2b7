"""Where cmirm keeps what it builds or computes once (tiny test models, training features).

Kept free of heavy imports, so any module may ask for the folder without loading torch.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The environment variable that moves the cache.
CACHE_ENV = "CMIRM_CACHE"
#: Version of the tiny random CMI-RM (`cmirm_plugin.model.tiny`): its cache folder is
#: ``tiny-v<version>`` and records name it ``tiny-v<version>``; bump it when its construction changes.
TINY_MODEL_VERSION = "2"


def cache_root() -> Path:
    """``$CMIRM_CACHE`` if set (and not empty), else ``~/.cache/cmirm``; ``~`` is expanded."""
    value = os.environ.get(CACHE_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "cmirm"
