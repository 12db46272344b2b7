"""cmirm_plugin: the core every cmirm package shares.

Records (`Instruction`, `Candidate`, `Scores`), audio I/O (`Audio`), JSONL manifests, the
CMI-RM reward model and its scoring API, and the `cmirm` CLI.

The names below are imported on first use, so importing a submodule (the CLI above all) does
not load torch.
"""

from __future__ import annotations

from cmirm_plugin.importing import lazy_exports

_EXPORTS = {
    "Audio": "cmirm_plugin.audio",
    **{name: "cmirm_plugin.errors" for name in ("AudioError", "CheckpointError", "CmirmError", "ConfigError",
                                                "ManifestError")},
    **{name: "cmirm_plugin.manifest" for name in ("ManifestWriter", "iter_records", "read_records")},
    **{name: "cmirm_plugin.records" for name in ("AXES", "MODALITIES", "Candidate", "Compute", "Instruction",
                                                  "Lineage", "Scores")},
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("cmirm_plugin", _EXPORTS)
