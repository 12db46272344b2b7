"""Scorer specs: the strings that name a scorer (``--reward``, ``--eval-reward``, ``--judge-model``,
``bench --model``, ``load_scorer``) and the label its scores carry in records.

A spec is one of

* ``tiny``: the offline tiny random CMI-RM (scores are meaningless; for smoke runs and tests);
* a local folder holding a released-layout CMI-RM checkpoint (``config.yaml`` + ``model.safetensors``);
* a hub repo id of such a checkpoint (default `DEFAULT_MODEL`, ``HaiwenXia/CMI-RM``);
* ``package.module:Name``: any scorer of the user's that follows the contract
  (`cmirm_plugin.scoring.contract`): a class, a factory function or an instance, imported where
  it scores (on every Ray worker too, so the module must be importable there).

Parsing never loads anything and imports nothing heavy, so commands check specs before any work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cmirm_plugin.cache import TINY_MODEL_VERSION
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.hub import DEFAULT_MODEL, is_repo_id
from cmirm_plugin.importing import import_object
from cmirm_plugin.records import AXES

#: The spec of the offline tiny CMI-RM.
TINY = "tiny"

SpecKind = Literal["tiny", "folder", "hub", "plugin"]
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
            raise ConfigError(f"{option}: expected a scorer spec (tiny, a checkpoint folder, a hub id or "
                              f"package.module:Name), got {spec!r}")
        spec = spec.strip()
        if spec == TINY:
            return cls("tiny", TINY)
        path = Path(spec).expanduser()
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"{option} '{spec}' is a file; give a checkpoint folder (config.yaml + "
                                  "model.safetensors), a hub id, or package.module:Name")
            return cls("folder", str(path.resolve()))
        if _PLUGIN.match(spec):
            return cls("plugin", spec)
        if not is_repo_id(spec):
            raise ConfigError(f"{option} '{spec}': no such folder, and not a hub id (owner/name) or "
                              "package.module:Name")
        return cls("hub", spec)

    @classmethod
    def from_options(cls, spec: str | None, tiny: bool, option: str = "--reward") -> "ScorerSpec":
        """The spec of a command's ``option`` and ``--tiny`` (which means ``tiny``; both at once are refused)."""
        if tiny and spec is not None:
            raise ConfigError(f"{option} {spec!r} and --tiny both name a scorer; give one of them")
        return cls.parse(TINY if tiny else spec, option)

    @property
    def label(self) -> str:
        """What score records name this scorer by: the hub id, the absolute folder, the plug-in spec, or
        ``tiny-v<version>`` (so a rebuilt tiny model is never mixed with an older one)."""
        return f"tiny-v{TINY_MODEL_VERSION}" if self.kind == "tiny" else self.location

    @property
    def is_cmi_rm(self) -> bool:
        """Whether this names a CMI-RM checkpoint (loaded as `RewardScorer`)."""
        return self.kind in ("tiny", "folder", "hub")

    def known_axes(self) -> tuple[str, ...] | None:
        """The scorer's axes when they are known without loading it, else None.

        CMI-RM's are `AXES`; a plug-in's are its ``axes`` attribute when the class (or instance)
        declares them as a plain tuple, which imports its module (a bad spec fails here, early).
        """
        if self.is_cmi_rm:
            return AXES
        axes = getattr(import_object(self.location, "scorer", ConfigError), "axes", None)
        if isinstance(axes, (tuple, list)) and axes and all(isinstance(a, str) for a in axes):
            return tuple(axes)
        return None

    def __str__(self) -> str:
        return self.location
