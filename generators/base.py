"""The `Generator` contract every backend implements, and the records `sample()` returns.

A generator turns an `Instruction` and a list of seeds into one `Candidate` per seed. Candidate i
is defined by (generator, parameters, instruction, seed_i): each backend draws candidate i's
randomness from its own seed only, so regenerating seed_i alone reproduces it (bit-identically
on the same machine at ``batch_size=1``; see each backend for what batching guarantees).

A candidate that fails (an exception, a command exiting non-zero, no output file, NaN or empty
audio, a timeout) does not sink its siblings: `sample` returns a `GenerationResult`, which is
the list of successful candidates plus ``.failures``, typed `CandidateFailure` records that
serialise to the same manifests as candidates.

Every candidate carries its `Compute` (generator wall seconds, generated audio seconds, the
backend's work units, the device). Search methods (`rerank.search`) use two optional abilities a
backend declares in `Capabilities`: `Generator.extend` continues a clip by a segment from a new
seed (beam search), and `Generator.sample_from_latents` starts a diffusion sampler from a given
initial noise (noise search).
"""

from __future__ import annotations

import logging
import time
import traceback
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence, Union

import torch

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import CheckpointError, CmirmError, ConfigError
from cmirm_plugin.records import Candidate, Compute, Instruction
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


@dataclass(frozen=True)
class Capabilities:
    """What a generator can do beyond `Generator.sample`, for the search methods.

    ``can_continue``: `Generator.extend` continues a clip by a segment, each continuation from its
    own seed (beam search). ``accepts_latents``: `Generator.sample_from_latents` starts from a given
    initial noise and `Generator.initial_latents` gives a seed's own (noise search).
    """

    can_continue: bool = False
    accepts_latents: bool = False


#: Per capability: what it lets a caller do, and which generators have it (for refusals).
CAPABILITY_HELP = {
    "can_continue": ("continue a clip (extend)", "transformers MusicGen / MusicGen-Melody, audiocraft MusicGen, "
                     "cmd: templates with a 'continuation' field, Python functions taking prefix=(waveform, sr)"),
    "accepts_latents": ("start from given initial latents", "Stable Audio Open (diffusers)"),
}


def require_capability(capabilities: Capabilities, capability: str, name: str) -> None:
    """Raise `ConfigError` naming generator ``name`` unless ``capabilities`` have ``capability``."""
    if not getattr(capabilities, capability):
        use, able = CAPABILITY_HELP[capability]
        raise ConfigError(f"generator '{name}' cannot {use}; generators that can: {able}")


@dataclass(frozen=True)
class WorkUnits:
    """A backend's work for one candidate (the `Compute` fields ``work_unit``, ``work_units``, ``model_evals``)."""

    unit: str
    units: int
    model_evals: int


@dataclass(frozen=True)
class Clip:
    """A backend outcome with the generator's tokens for it (codec LMs: ``[codebooks, frames]``),
    kept on the candidate (`Candidate.codes`) so it can be continued without re-encoding."""

    audio: torch.Tensor | Audio
    codes: torch.Tensor | None = None


#: What a backend returns per seed: a waveform ``[channels, samples]`` at the generator's sample
#: rate, an `Audio` (resampled to it if needed), a `Clip`, or a `CandidateError`.
Outcome = Union[torch.Tensor, Audio, Clip, CandidateError]


def append_audio(prefix: Audio, new: Audio) -> Audio:
    """``prefix`` then ``new`` (resampled to the prefix's rate, with its channel count): the whole
    clip of a continuation whose backend returns only the new audio."""
    new = new.resample(prefix.sample_rate)
    wave = new.waveform if new.num_channels == prefix.num_channels else (
        new.to_mono().waveform.repeat(prefix.num_channels, 1))
    return Audio(torch.cat([prefix.waveform, wave], dim=1), prefix.sample_rate)


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
        capabilities: what the search methods may ask of it (`Capabilities`).
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
    capabilities: Capabilities = Capabilities()
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

    # ------------------------------------------------------------------ capabilities and cost
    @property
    def device_label(self) -> str | None:
        """Where this generator runs, as candidates record it (None when unknown, e.g. an external tool)."""
        return None

    def work_units(self, seconds: float, params: GenerationParams) -> WorkUnits | None:
        """The work one candidate of ``seconds`` new audio costs with ``params`` (None: unknown)."""
        return None

    def require_capability(self, capability: str) -> None:
        """Raise `ConfigError` naming this generator unless it has ``capability`` (a `Capabilities` field)."""
        require_capability(self.capabilities, capability, self.name)

    # ------------------------------------------------------------------ sampling
    def max_duration(self, params: GenerationParams) -> float | None:
        """The longest clip this backend can make with ``params`` (None: no limit known)."""
        return None

    def check_duration(self, duration: float, params: GenerationParams) -> None:
        """Raise `ConfigError` if this backend cannot make a ``duration``-second clip with ``params``.

        Runs before any sampling, so a wrong length fails the call, not every candidate. The
        default checks nothing beyond `max_duration`; backends with stricter rules override it.
        """

    def check_segment(self, segment: float, params: GenerationParams) -> None:
        """Raise `ConfigError` if this backend cannot continue a clip by ``segment`` seconds (default: any length)."""

    def _prepare(self, seeds: Sequence[int], duration: float, batch_size: int | None,
                 params: Mapping[str, Any]) -> tuple[list[int], GenerationParams, float, int]:
        """Validated seeds, typed parameters, duration and batch size (what `sample` and `check_request` check)."""
        seeds = self.check_seeds(seeds)
        typed = self.params_type.from_kwargs(self.name, params)
        duration = validate_duration(duration, self.max_duration(typed))
        self.check_duration(duration, typed)
        return seeds, typed, duration, self._batch_size(batch_size)

    def sample(self, instruction: Instruction, seeds: Sequence[int], duration: float, *,
               batch_size: int | None = None, **params: Any) -> GenerationResult:
        """Generate one candidate per seed; failed seeds go to ``result.failures``.

        ``duration`` is in seconds; ``params`` are this backend's `params_type` fields; they are
        validated up front and recorded (with ``duration``) on every candidate. ``batch_size``
        (default: the generator's) is how many seeds one backend call handles.
        """
        self.require_supported(instruction)
        seeds, typed, duration, size = self._prepare(seeds, duration, batch_size, params)
        return self._produce(instruction, seeds, size, typed, duration, duration,
                             lambda chunk, rows: self._generate(instruction, chunk, duration, typed))

    def extend(self, instruction: Instruction, prefix: Candidate, seeds: Sequence[int], segment: float, *,
               batch_size: int | None = None, **params: Any) -> GenerationResult:
        """Continue ``prefix`` by ``segment`` seconds, once per seed (each from its own seed).

        Each candidate is the whole clip, prefix then continuation (``prefix.audio.duration +
        segment`` seconds, recorded as its ``duration``); its `Compute` counts the segment only.
        Raises `ConfigError` if this generator cannot continue (``capabilities.can_continue``).
        """
        self.require_capability("can_continue")
        self.require_supported(instruction)
        if prefix.instruction_id != instruction.id:
            raise ConfigError(f"extend: candidate {prefix.id!r} belongs to instruction {prefix.instruction_id!r}, "
                              f"not {instruction.id!r}; continue it with its own instruction")
        seeds = self.check_seeds(seeds)
        typed = self.params_type.from_kwargs(self.name, params)
        segment = validate_duration(segment)
        self.check_segment(segment, typed)
        total = round(prefix.audio.duration + segment, 9)  # no 0.30000000000000004 in records
        limit = self.max_duration(typed)
        if limit is not None and total > limit + 1e-9:
            raise ConfigError(f"generator '{self.name}' makes clips of at most {limit:g} s; a {prefix.audio.duration:g} s "
                              f"prefix plus a {segment:g} s segment exceeds it")
        return self._produce(instruction, seeds, self._batch_size(batch_size), typed, total, segment,
                             lambda chunk, rows: self._continue(instruction, prefix, chunk, segment, typed))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one candidate's initial latents (generators that accept latents)."""
        self.require_capability("accepts_latents")
        raise NotImplementedError

    def initial_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """``[len(seeds), *latent_shape]``: the initial noise `sample` draws for each seed (float32, CPU)."""
        self.require_capability("accepts_latents")
        raise NotImplementedError

    def sample_from_latents(self, instruction: Instruction, latents: torch.Tensor, seeds: Sequence[int],
                            duration: float, *, sampler_seeds: Sequence[int] | None = None,
                            batch_size: int | None = None, **params: Any) -> GenerationResult:
        """Generate one candidate per row of ``latents`` (``[len(seeds), *latent_shape]``), each
        starting from that initial noise.

        ``seeds[i]`` names candidate i (its id); ``sampler_seeds[i]`` (default ``seeds[i]``) seeds
        the rest of its randomness (a stochastic sampler's noise, a reference's encoding). With
        ``latents = initial_latents(seeds)`` the candidates equal `sample`'s.
        """
        self.require_capability("accepts_latents")
        self.require_supported(instruction)
        seeds, typed, duration, size = self._prepare(seeds, duration, batch_size, params)
        sampler = list(seeds) if sampler_seeds is None else [int(s) for s in sampler_seeds]
        for seed in sampler:
            check_number("sampler seed", seed, low=0, high=MAX_SEED, integer=True)
        shape = (len(seeds), *self.latent_shape)
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape or len(sampler) != len(seeds):
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ConfigError(f"generator '{self.name}': latents must be a tensor of shape {shape} (one row per seed, "
                              f"and one sampler seed per row), got {got} with {len(sampler)} sampler seed(s)")
        if not torch.isfinite(latents).all():
            raise ConfigError(f"generator '{self.name}': latents hold NaN or infinite values")
        return self._produce(instruction, seeds, size, typed, duration, duration,
                             lambda chunk, rows: self._generate_from_latents(instruction, latents[rows], sampler[rows],
                                                                             duration, typed))

    def _batch_size(self, batch_size: int | None) -> int:
        return check_batch_size(self.name, self.batch_size if batch_size is None else batch_size, self.max_batch_size)

    def _produce(self, instruction: Instruction, seeds: list[int], size: int, params: GenerationParams,
                 clip_seconds: float, new_seconds: float,
                 generate: Callable[[list[int], slice], Sequence[Outcome]]) -> GenerationResult:
        """Run ``generate(chunk, rows)`` per batch of seeds and collect candidates with their `Compute`.

        A batch's wall time is split equally among its rows: they run in lockstep, one call.
        """
        record = {"duration": clip_seconds, **params.to_dict()}
        work = self.work_units(new_seconds, params)
        result = GenerationResult()
        for start in range(0, len(seeds), size):
            chunk = seeds[start:start + size]
            began = time.perf_counter()
            outcomes = self._run_batch(chunk, lambda: generate(chunk, slice(start, start + len(chunk))))
            compute = Compute((time.perf_counter() - began) / len(chunk), new_seconds, self.device_label,
                              *((work.unit, work.units, work.model_evals) if work else (None, None, None)))
            for seed, outcome in zip(chunk, outcomes, strict=True):
                self._collect(result, instruction, seed, outcome, clip_seconds, record, compute)
        return result

    def _run_batch(self, seeds: list[int], call: Callable[[], Sequence[Outcome]]) -> list[Outcome]:
        """Call the backend once; an exception fails every seed of this batch (and only them)."""
        try:
            outcomes = call()
        except Exception as exc:  # a backend crash must not lose the other batches
            error = CandidateError("exception", f"{type(exc).__name__}: {exc}", tail(traceback.format_exc()))
            return [error] * len(seeds)
        if len(outcomes) != len(seeds):
            error = CandidateError("exception", f"backend returned {len(outcomes)} outputs for {len(seeds)} seeds")
            return [error] * len(seeds)
        return list(outcomes)

    def _collect(self, result: GenerationResult, instruction: Instruction, seed: int, outcome: Outcome,
                 duration: float, record: dict[str, Any], compute: Compute) -> None:
        """Turn one outcome into a `Candidate` (validated, trimmed) or a `CandidateFailure`."""
        if not isinstance(outcome, CandidateError):
            clip = outcome if isinstance(outcome, Clip) else Clip(outcome)
            try:
                audio = self._to_audio(clip.audio, duration)
            except CmirmError as exc:  # Audio validation: empty, NaN/Inf, wrong shape
                outcome = CandidateError("invalid_audio", str(exc))
            else:
                codes = None if clip.codes is None else clip.codes.detach().cpu()
                result.append(Candidate(audio, instruction.id, self.name, seed, dict(record), compute, codes=codes))
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

    def _continue(self, instruction: Instruction, prefix: Candidate, seeds: list[int], segment: float,
                  params: GenerationParams) -> Sequence[Outcome]:
        """One whole clip (prefix then ``segment`` new seconds) per seed; backends that can continue override it."""
        raise NotImplementedError

    def _generate_from_latents(self, instruction: Instruction, latents: torch.Tensor, sampler_seeds: list[int],
                               duration: float, params: GenerationParams) -> Sequence[Outcome]:
        """One outcome per row of ``latents``; backends that accept latents override it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, sample_rate={self.sample_rate}, "
                f"inputs={sorted(self.inputs)})")
