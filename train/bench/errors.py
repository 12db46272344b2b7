"""Exceptions of the benchmark: a bad benchmark file, or a scorer that breaks the contract.

Both subclass `CmirmError`, so the `cmirm` entry point prints them as one readable line.
"""

from __future__ import annotations

from cmirm_plugin.errors import CmirmError


class DatasetError(CmirmError):
    """Benchmark rows that cannot be used: bad JSON, missing or mistyped fields, unknown source."""


class ScorerError(CmirmError):
    """A scorer that cannot be loaded, or whose `score_batch` output breaks the plug-in contract."""
