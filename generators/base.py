"""The `Generator` contract every backend implements, and the records `sample()` returns.

A generator turns an `Instruction` and a list of seeds into one `Candidate` per seed. Candidate i
is defined by (generator, parameters, instruction, seed_i): each backend draws candidate i's
randomness from its own seed only, so regenerating seed_i alone reproduces it (bit-identically
on the same machine at ``batch_size=1``; see each backend for what batching guarantees).

A candidate that fails (an exception, a command exiting non-zero, no output file, NaN or empty
audio, a timeout) does not sink its siblings: `sample` returns a `GenerationResult`, which is
the list of successful candidates plus ``.failures``, typed `CandidateFailure` records that
serialise to the same manifests as candidates.
"""

from __future__ import annotations

import logging
import traceback
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence, Union

import torch

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import CheckpointError, CmirmError, ConfigError
from cmirm_plugin.records import Candidate, Instruction
from generators.params import GenerationParams, check_number, validate_duration

logger = logging.getLogger(__name__)

#: The instruction inputs a generator may honour, in display order.
INPUT_KINDS = ("text", "lyrics", "ref_audio")

#: Why a candidate failed (`CandidateFailure.kind`).
FAILURE_KINDS = ("exception", "nonzero_exit", "no_output", "invalid_audio", "timeout")

#: Largest seed accepted (seeds go to torch.Generator.manual_seed and to external commands).
MAX_SEED = 2**63 - 1

#: How much of a command's stderr or a traceback a failure keeps.
DETAIL_CHARS = 2000

#: The longest instruction text and lyrics (characters) a generator takes unless its backend sets
#: its own limit: a long prompt must fail at once, not make a text encoder attend over every token.
MAX_TEXT_CHARS = 4000
MAX_LYRICS_CHARS = 20000


def instruction_inputs(instruction: Instruction) -> tuple[str, ...]:
    """The inputs ``instruction`` carries, in `INPUT_KINDS` order."""
    present = {"text": instruction.has_text, "lyrics": instruction.has_lyrics, "ref_audio": instruction.has_ref}
    return tuple(kind for kind in INPUT_KINDS if present[kind])


def tail(text: str, limit: int = DETAIL_CHARS) -> str:
    """The last ``limit`` characters of ``text`` (stderr tails, traceback tails)."""
    text = text.rstrip()
    return text if len(text) <= limit else "..." + text[-limit:]


def require_dir_or_hub_id(id_or_path: str) -> None:
    """Raise `CheckpointError` unless ``id_or_path`` is an existing directory or a valid hub id.

    The model libraries report a mistyped local path as an invalid repo id (a bare ``ValueError``);
    checked first, it is named as the path it is.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if Path(id_or_path).is_dir():
        return
    try:
        validate_repo_id(id_or_path)
    except HFValidationError:
        raise CheckpointError(f"'{id_or_path}' is neither a local directory nor a hub id ('namespace/name'); "
                              "check the path") from None


class UnsupportedInputError(CmirmError):
    """The instruction carries an input the generator cannot honour (or lacks one it needs)."""


@dataclass(frozen=True)
class DeclaredInputs:
    """The instruction inputs a generator honours and those it cannot run without.

    A backend declares them as class attributes (``inputs``, ``required_inputs``), so they are
    known before any model loads (`generators.registry.declared_inputs`): a job refuses an
    instruction its generator cannot honour before it loads anything or writes a file.
    """

    inputs: frozenset[str]
    required: frozenset[str] = frozenset()

    @classmethod
    def of(cls, generator: "Generator | type[Generator]") -> "DeclaredInputs":
        """What a generator (or a backend class) declares."""
        return cls(frozenset(generator.inputs), frozenset(generator.required_inputs))

    def problems(self, instruction: Instruction) -> list[str]:
        """Why these inputs do not fit ``instruction`` (empty when they do)."""
        present = set(instruction_inputs(instruction))
        found = [f"cannot honour {kind}" for kind in INPUT_KINDS if kind in present and kind not in self.inputs]
        return found + [f"needs {kind}" for kind in INPUT_KINDS if kind in self.required and kind not in present]

    def require(self, generator: str, instruction: Instruction) -> None:
        """Raise `UnsupportedInputError` naming the input and ``generator`` when ``instruction`` does not fit."""
        problems = self.problems(instruction)
        if problems:
            honoured = ", ".join(k for k in INPUT_KINDS if k in self.inputs) or "nothing"
            raise UnsupportedInputError(
                f"generator '{generator}' {' and '.join(problems)} (instruction {instruction.id}); "
                f"it honours: {honoured}. Choose a generator that does, or drop that input."
            )


class InstructionTooLongError(ConfigError):
    """The instruction's text or lyrics exceed what the generator reads (the limit is in the message)."""


class CandidateError(Exception):
    """Raised (or returned) by a backend when one candidate fails; becomes a `CandidateFailure`."""

    def __init__(self, kind: str, message: str, detail: str = "") -> None:
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; expected one of {FAILURE_KINDS}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.detail = detail


@dataclass(frozen=True)
class CandidateFailure:
    """A candidate that could not be generated: which one, why, and the evidence.

    ``detail`` is the tail of the command's stderr, or of the Python traceback.
    """

    instruction_id: str
    generator: str
    seed: int
    kind: str
    message: str
    detail: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record (manifests add their own record-type field)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CandidateFailure":
        """Inverse of `to_dict`; extra keys (a manifest's own fields) are ignored."""
        for key in ("instruction_id", "generator", "seed", "kind", "message"):
            if data.get(key) is None:
                raise CmirmError(f"failure record lacks field '{key}': {dict(data)!r}")
        return cls(data["instruction_id"], data["generator"], int(data["seed"]), data["kind"], data["message"],
                   data.get("detail") or "", dict(data.get("params") or {}))

    def __str__(self) -> str:
        last = self.detail.strip().splitlines()[-1] if self.detail.strip() else ""
        return f"{self.generator} seed {self.seed}: {self.kind}: {self.message}" + (f" [{last}]" if last else "")


class GenerationResult(list):
    """The successful candidates, in seed order (it *is* the list), plus ``failures``."""

    def __init__(self, candidates: Iterable[Candidate] = (), failures: Iterable[CandidateFailure] = ()) -> None:
        super().__init__(candidates)
        self.failures: list[CandidateFailure] = list(failures)

    def raise_for_failures(self) -> "GenerationResult":
        """Raise `CmirmError` listing every failure, if any; otherwise return self (for chaining)."""
        if self.failures:
            raise CmirmError(f"{len(self.failures)} candidate(s) failed:\n" + "\n".join(map(str, self.failures)))
        return self


#: What a backend returns per seed: a waveform ``[channels, samples]`` at the generator's sample
#: rate, an `Audio` (resampled to it if needed), or a `CandidateError`.
Outcome = Union[torch.Tensor, Audio, CandidateError]


def validate_seeds(seeds: Sequence[int]) -> list[int]:
    """Seeds as a list of distinct ints in [0, 2**63 - 1] (a duplicate would collide candidate ids)."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise ConfigError(f"seeds must be a list of integers, got {seeds!r}")
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("seeds is empty: give at least one seed")
    for seed in seeds:
        check_number("seed", seed, low=0, high=MAX_SEED, integer=True)
    duplicates = sorted(seed for seed, count in Counter(seeds).items() if count > 1)
    if duplicates:
        raise ConfigError(f"seeds must be distinct; repeated: {duplicates}")
    return seeds


def bounded_tokenizer(tokenizer: Any) -> tuple[Any, int] | None:
    """``(tokenizer, its model_max_length)``, or None when it declares no real limit (transformers' 1e30 sentinel)."""
    most = getattr(tokenizer, "model_max_length", None)
    return (tokenizer, int(most)) if isinstance(most, int) and 0 < most < 1_000_000 else None


def check_batch_size(generator: str, size: Any, limit: int | None) -> int:
    """``size`` as a validated batch size: an integer >= 1 and, if ``limit`` is set, <= ``limit``."""
    check_number("batch_size", size, low=1, integer=True)
    if limit is not None and size > limit:
        raise ConfigError(f"generator '{generator}' takes at most {limit} seed(s) per backend call; "
                          f"use batch_size={limit} or smaller, got {size}")
    return size


def batches(items: Sequence[int], size: int) -> Iterator[list[int]]:
    """Consecutive chunks of ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


class Generator(ABC):
    """A music generator: ``sample(instruction, seeds, duration, **params) -> GenerationResult``.

    Subclasses set the class attributes, a `GenerationParams` subclass as ``params_type``, and
    implement `_generate`; `sample` does the rest (input checks, parameter validation, batching,
    per-candidate failure capture, length trimming, `Candidate` records).

    Attributes:
        name: what candidates record as their generator (the registry name by default).
        sample_rate: the rate of every candidate's audio.
        inputs: the instruction inputs this generator honours (subset of `INPUT_KINDS`).
        required_inputs: inputs it cannot run without.
        batch_size: default number of seeds per backend call.
        max_batch_size: the most seeds one backend call may take (None: no limit), e.g. 1 for
            backends that sample from the global RNG, where batched seeds would share one stream.
        trims_to_duration: whether outputs are cut to exactly ``duration`` (model backends); external
            commands and functions own their output length.
        max_text_chars / max_lyrics_chars: the longest text and lyrics taken (`MAX_TEXT_CHARS`,
            `MAX_LYRICS_CHARS` unless a backend says otherwise); backends whose text encoder reads a
            bounded number of tokens also give `text_token_limit`.
    """

    name: str
    sample_rate: int
    inputs: ClassVar[frozenset[str]] = frozenset({"text"})
    required_inputs: ClassVar[frozenset[str]] = frozenset()
    params_type: ClassVar[type[GenerationParams]] = GenerationParams
    max_batch_size: ClassVar[int | None] = None
    trims_to_duration: ClassVar[bool] = True
    max_text_chars: ClassVar[int] = MAX_TEXT_CHARS
    max_lyrics_chars: ClassVar[int] = MAX_LYRICS_CHARS
    batch_size: int = 1

    # ------------------------------------------------------------------ inputs
    def unsupported_inputs(self, instruction: Instruction) -> list[str]:
        """Problems that stop this generator honouring ``instruction`` (empty when it can)."""
        return DeclaredInputs.of(self).problems(instruction)

    def supports(self, instruction: Instruction) -> bool:
        """Whether every input of ``instruction`` (text, lyrics, reference audio) is honoured."""
        return not self.unsupported_inputs(instruction)

    def require_supported(self, instruction: Instruction) -> None:
        """Raise `UnsupportedInputError` naming the input and this generator, instead of ignoring it, and
        `InstructionTooLongError` (with the limit) for a text or lyrics longer than it reads."""
        DeclaredInputs.of(self).require(self.name, instruction)
        too_long = self.length_problems(instruction)
        if too_long:
            raise InstructionTooLongError(f"generator '{self.name}' refuses instruction {instruction.id}: "
                                          f"{'; '.join(too_long)}; shorten it")

    def text_token_limit(self) -> tuple[Any, int] | None:
        """``(tokenizer, most tokens)`` when this backend's text encoder reads a bounded number of tokens."""
        return None

    def length_problems(self, instruction: Instruction) -> list[str]:
        """Why ``instruction`` is too long for this generator (empty when it is not).

        Characters are counted first, so an enormous text is refused before any tokenizer sees it.
        """
        found = [f"{kind} is {len(value)} characters, it takes at most {limit}"
                 for kind, value, limit in (("text", instruction.text, self.max_text_chars),
                                            ("lyrics", instruction.lyrics, self.max_lyrics_chars))
                 if value is not None and len(value) > limit]
        token_limit = self.text_token_limit()
        if not found and token_limit is not None and instruction.text is not None:
            tokenizer, most = token_limit
            count = len(tokenizer(instruction.text, verbose=False)["input_ids"])
            if count > most:
                found.append(f"text is {count} tokens, its text encoder reads at most {most}")
        return found

    def check_seeds(self, seeds: Sequence[int]) -> list[int]:
        """``seeds`` validated (`validate_seeds`); backends whose tool takes fewer seeds refuse the others here."""
        return validate_seeds(seeds)

    def check_request(self, instructions: Sequence[Instruction], seeds: Sequence[int], duration: float,
                      batch_size: int | None = None, **params: Any) -> None:
        """Refuse now whatever `sample` would refuse for any of ``instructions`` with these ``seeds``.

        A job calls it once with all its instructions and seeds before generating anything, so a bad
        seed, parameter, duration or instruction costs seconds, not a half-finished job.
        """
        for instruction in instructions:
            self.require_supported(instruction)
        self._prepare(seeds, duration, batch_size, params)

    # ------------------------------------------------------------------ sampling
    def max_duration(self, params: GenerationParams) -> float | None:
        """The longest clip this backend can make with ``params`` (None: no limit known)."""
        return None

    def check_duration(self, duration: float, params: GenerationParams) -> None:
        """Raise `ConfigError` if this backend cannot make a ``duration``-second clip with ``params``.

        Runs before any sampling, so a wrong length fails the call, not every candidate. The
        default checks nothing beyond `max_duration`; backends with stricter rules override it.
        """

    def _prepare(self, seeds: Sequence[int], duration: float, batch_size: int | None,
                 params: Mapping[str, Any]) -> tuple[list[int], GenerationParams, float, int]:
        """Validated seeds, typed parameters, duration and batch size (what `sample` and `check_request` check)."""
        seeds = self.check_seeds(seeds)
        typed = self.params_type.from_kwargs(self.name, params)
        duration = validate_duration(duration, self.max_duration(typed))
        self.check_duration(duration, typed)
        size = check_batch_size(self.name, self.batch_size if batch_size is None else batch_size,
                                self.max_batch_size)
        return seeds, typed, duration, size

    def sample(self, instruction: Instruction, seeds: Sequence[int], duration: float, *,
               batch_size: int | None = None, **params: Any) -> GenerationResult:
        """Generate one candidate per seed; failed seeds go to ``result.failures``.

        ``duration`` is in seconds; ``params`` are this backend's `params_type` fields; they are
        validated up front and recorded (with ``duration``) on every candidate. ``batch_size``
        (default: the generator's) is how many seeds one backend call handles.
        """
        self.require_supported(instruction)
        seeds, typed, duration, size = self._prepare(seeds, duration, batch_size, params)
        record = {"duration": duration, **typed.to_dict()}
        result = GenerationResult()
        for chunk in batches(seeds, size):
            for seed, outcome in zip(chunk, self._run_batch(instruction, chunk, duration, typed), strict=True):
                self._collect(result, instruction, seed, outcome, duration, record)
        return result

    def _run_batch(self, instruction: Instruction, seeds: list[int], duration: float,
                   params: GenerationParams) -> list[Outcome]:
        """Call the backend once; an exception fails every seed of this batch (and only them)."""
        try:
            outcomes = self._generate(instruction, seeds, duration, params)
        except Exception as exc:  # a backend crash must not lose the other batches
            error = CandidateError("exception", f"{type(exc).__name__}: {exc}", tail(traceback.format_exc()))
            return [error] * len(seeds)
        if len(outcomes) != len(seeds):
            error = CandidateError("exception", f"backend returned {len(outcomes)} outputs for {len(seeds)} seeds")
            return [error] * len(seeds)
        return list(outcomes)

    def _collect(self, result: GenerationResult, instruction: Instruction, seed: int, outcome: Outcome,
                 duration: float, record: dict[str, Any]) -> None:
        """Turn one outcome into a `Candidate` (validated, trimmed) or a `CandidateFailure`."""
        if not isinstance(outcome, CandidateError):
            try:
                audio = self._to_audio(outcome, duration)
            except CmirmError as exc:  # Audio validation: empty, NaN/Inf, wrong shape
                outcome = CandidateError("invalid_audio", str(exc))
            else:
                result.append(Candidate(audio, instruction.id, self.name, seed, dict(record)))
                return
        failure = CandidateFailure(instruction.id, self.name, seed, outcome.kind, outcome.message, outcome.detail,
                                   dict(record))
        logger.warning("candidate failed: %s", failure)
        result.failures.append(failure)

    def _to_audio(self, outcome: torch.Tensor | Audio, duration: float) -> Audio:
        """The outcome as validated `Audio` at this generator's rate, cut to ``duration`` if it trims."""
        audio = outcome if isinstance(outcome, Audio) else Audio(outcome, self.sample_rate)
        audio = audio.resample(self.sample_rate)
        return audio.crop(duration) if self.trims_to_duration else audio

    @abstractmethod
    def _generate(self, instruction: Instruction, seeds: list[int], duration: float,
                  params: GenerationParams) -> Sequence[Outcome]:
        """Generate one outcome per seed, each from that seed's randomness only."""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, sample_rate={self.sample_rate}, "
                f"inputs={sorted(self.inputs)})")
