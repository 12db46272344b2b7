"""Scorer specs: the strings that name a scorer (``--reward``, ``--eval-reward``, ``--judge-model``,
``bench --model``, ``load_scorer``) and the label its scores carry in records.

A spec is one of

* ``tiny``: the offline tiny random CMI-RM (scores are meaningless; for smoke runs and tests);
* a local folder holding a released-layout CMI-RM checkpoint (``config.yaml`` + ``model.safetensors``);
* a hub repo id of such a checkpoint (default `DEFAULT_MODEL`, ``HaiwenXia/CMI-RM``);
* ``package.module:Name``: any scorer of the user's that follows the contract
  (`cmirm_plugin.scoring.contract`): a class, a factory function or an instance, imported where
  it scores (on every Ray worker too, so the module must be importable there);
* ``http://host:port`` (or ``https://``): a reward server started with ``cmirm serve``, scored
  through `cmirm_plugin.scoring.http_client.HttpScorer`.

Parsing never loads anything and imports nothing heavy, so commands check specs before any work.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cmirm_plugin.cache import TINY_MODEL_VERSION
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.hub import DEFAULT_MODEL, is_repo_id
from cmirm_plugin.importing import import_object
from cmirm_plugin.records import AXES

#: The spec of the offline tiny CMI-RM.
TINY = "tiny"

SpecKind = Literal["tiny", "folder", "hub", "plugin", "http"]
_PLUGIN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class ScorerSpec:
    """A parsed scorer spec (see the module docstring): what kind, and where it is."""

    kind: SpecKind
    location: str

    @classmethod
    def parse(cls, spec: "str | ScorerSpec | None", option: str = "--reward") -> "ScorerSpec":
        """Parse ``spec`` (None: the released CMI-RM); errors name ``option``."""
        if isinstance(spec, ScorerSpec):
            return spec
        if spec is None:
            return cls("hub", DEFAULT_MODEL)
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError(f"{option}: expected a scorer spec (tiny, a checkpoint folder, a hub id, "
                              f"package.module:Name or http://host:port), got {spec!r}")
        spec = spec.strip()
        if spec == TINY:
            return cls("tiny", TINY)
        if spec.lower().startswith(("http://", "https://")):
            return cls("http", normalise_url(spec, option))
        path = Path(spec).expanduser()
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"{option} '{spec}' is a file; give a checkpoint folder (config.yaml + "
                                  "model.safetensors), a hub id, or package.module:Name")
            return cls("folder", str(path.resolve()))
        if _PLUGIN.match(spec):
            return cls("plugin", spec)
        if not is_repo_id(spec):
            raise ConfigError(f"{option} '{spec}': no such folder, and not a hub id (owner/name), "
                              "package.module:Name or http://host:port")
        return cls("hub", spec)

    @classmethod
    def from_options(cls, spec: str | None, tiny: bool, option: str = "--reward") -> "ScorerSpec":
        """The spec of a command's ``option`` and ``--tiny`` (which means ``tiny``; both at once are refused)."""
        if tiny and spec is not None:
            raise ConfigError(f"{option} {spec!r} and --tiny both name a scorer; give one of them")
        return cls.parse(TINY if tiny else spec, option)

    @property
    def label(self) -> str:
        """What score records name this scorer by: the hub id, the absolute folder, the plug-in spec, the
        server's normalised URL, or ``tiny-v<version>`` (so a rebuilt tiny model is never mixed with an older one)."""
        return f"tiny-v{TINY_MODEL_VERSION}" if self.kind == "tiny" else self.location

    @property
    def is_cmi_rm(self) -> bool:
        """Whether this names a CMI-RM checkpoint (loaded as `RewardScorer`)."""
        return self.kind in ("tiny", "folder", "hub")

    def known_axes(self) -> tuple[str, ...] | None:
        """The scorer's axes when they are known without loading it, else None.

        CMI-RM's are `AXES`; a plug-in's are its ``axes`` attribute when the class (or instance)
        declares them as a plain tuple, which imports its module (a bad spec fails here, early); a
        reward server's come from its ``GET /info`` (an unreachable server fails here, early).
        """
        if self.is_cmi_rm:
            return AXES
        if self.kind == "http":
            from cmirm_plugin.scoring.http_client import HttpClient, fetch_info

            return fetch_info(HttpClient(self.location, retry_for_s=5.0)).axes
        axes = getattr(import_object(self.location, "scorer", ConfigError), "axes", None)
        if isinstance(axes, (tuple, list)) and axes and all(isinstance(a, str) for a in axes):
            return tuple(axes)
        return None

    def served_settings(self) -> dict[str, Any] | None:
        """A reward server's score-changing settings from its ``GET /info`` (``max_dur``, ``missing``,
        ``dtype``: what its scores are made with); None for scorers loaded here (their settings are ours)."""
        if self.kind != "http":
            return None
        from cmirm_plugin.scoring.http_client import HttpClient, fetch_info

        return dict(fetch_info(HttpClient(self.location, retry_for_s=5.0)).settings or {})

    def __str__(self) -> str:
        return self.location


def normalise_url(url: str, option: str = "--reward") -> str:
    """``scheme://host[:port][/prefix]`` of a reward server, lower-cased scheme and host, no trailing slash.

    Credentials, queries and fragments are refused (a token goes in ``$CMIRM_SERVE_TOKEN``, never in a
    label that records carry).
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{option} '{url}': not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{option} '{url}': expected http://host:port of a reward server (cmirm serve)")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{option} '{url}': put the token in $CMIRM_SERVE_TOKEN, not in the URL")
    if parts.query or parts.fragment:
        raise ConfigError(f"{option} '{url}': a reward server URL takes no query or fragment")
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"
