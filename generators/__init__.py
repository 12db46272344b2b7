"""generators: reproducible candidates from music generators.

Every backend implements `Generator.sample(instruction, seeds, duration, **params)`, which returns
a `GenerationResult`: the successful `Candidate`s (it is a list) plus ``.failures``
(`CandidateFailure` records). Build one by name with `build_generator` (see `generators.registry`).
Heavy backends (transformers, diffusers, audiocraft) are imported only when used.
"""

from generators.base import (
    FAILURE_KINDS,
    INPUT_KINDS,
    CandidateError,
    CandidateFailure,
    GenerationResult,
    Generator,
    UnsupportedInputError,
)
from generators.params import DiffusionParams, GenerationParams, LMParams
from generators.registry import build_generator, known_generators, recorded_name

__all__ = [
    "FAILURE_KINDS", "INPUT_KINDS", "CandidateError", "CandidateFailure", "DiffusionParams", "GenerationParams",
    "GenerationResult", "Generator", "LMParams", "UnsupportedInputError", "build_generator", "known_generators",
    "recorded_name",
]
