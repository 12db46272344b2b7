"""cmirm_plugin: the core every cmirm package shares.

Records (`Instruction`, `Candidate`, `Scores`), audio I/O (`Audio`), JSONL manifests, the
CMI-RM reward model and its scoring API, and the `cmirm` CLI.
"""

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import AudioError, CheckpointError, CmirmError, ConfigError, ManifestError
from cmirm_plugin.manifest import ManifestWriter, iter_records, read_records
from cmirm_plugin.records import AXES, MODALITIES, Candidate, Compute, Instruction, Lineage, Scores

__all__ = [
    "AXES", "MODALITIES", "Audio", "AudioError", "Candidate", "CheckpointError", "CmirmError", "Compute",
    "ConfigError", "Instruction", "Lineage", "ManifestError", "ManifestWriter", "Scores", "iter_records", "read_records",
]
