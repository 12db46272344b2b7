"""Exceptions raised at the boundaries of cmirm.

Every error names the file, field or value that is wrong and, where possible, says what to do.
They subclass ``ValueError`` so callers that only know the standard library can still catch them.
"""

from __future__ import annotations


class CmirmError(ValueError):
    """Base class of all cmirm input errors."""


class AudioError(CmirmError):
    """Audio that cannot be used: missing, unreadable, empty, non-finite or unsupported."""


class ManifestError(CmirmError):
    """A JSONL manifest line that is not a JSON object (other than a truncated last line)."""


class ConfigError(CmirmError):
    """A model or job configuration value that is unknown or out of range."""


class CheckpointError(CmirmError):
    """A checkpoint that cannot be loaded: missing files, unsafe format or mismatched shapes."""


class ScorerUnavailable(CmirmError):
    """A scorer that cannot score anything right now (e.g. its reward server is gone, too slow, or refuses
    the token). Never blamed on a clip: `score_isolated` lets it propagate instead of isolating items."""
