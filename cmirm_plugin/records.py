"""The records every package exchanges: `Instruction`, `Candidate`, `Scores`, `Compute`, `Lineage`.

They are plain dataclasses with ``to_dict`` / ``from_dict`` so they can go to JSONL manifests.
CMI-RM's scores are ordered ``[alignment, musicality]`` (`AXES`) wherever they appear as arrays;
other scorers name their own axes (`Scores.axes`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from cmirm_plugin.errors import CmirmError

if TYPE_CHECKING:  # imported where used: records are read by light code (the CLI) that never needs torch
    import numpy as np
    import torch

    from cmirm_plugin.audio import Audio


def _audio_class() -> type["Audio"]:
    from cmirm_plugin.audio import Audio

    return Audio


#: The CMI-RewardBench modality categories (spec §5.2), in the benchmark's order.
MODALITIES = ("text", "text+lyrics", "text+ref", "text+lyrics+ref")

#: Column order of every score array.
AXES = ("alignment", "musicality")


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a file (``file not found`` / ``is a directory, expected a file``), or None."""
    path = Path(path)
    if path.is_dir():
        return "is a directory, expected a file"
    return None if path.is_file() else "file not found"


def _present(value: str | None) -> str | None:
    """Normalise an optional text field: None and blank strings both mean absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise CmirmError(f"expected a string or None, got {type(value).__name__}: {value!r}")
    return value if value.strip() else None


@dataclass(frozen=True)
class Instruction:
    """A compositional instruction: any combination of text, lyrics and a reference clip.

    ``ref_audio`` is a path (loaded on demand) or an `Audio`. ``id`` defaults to a stable hash of
    the content, so the same instruction gets the same id in every run (this is what resuming keys on).
    """

    text: str | None = None
    lyrics: str | None = None
    ref_audio: str | Path | Audio | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", _present(self.text))
        object.__setattr__(self, "lyrics", _present(self.lyrics))
        ref = self.ref_audio
        if isinstance(ref, str):
            ref = _present(ref)
        if ref is not None and not isinstance(ref, (str, Path)) and not isinstance(ref, _audio_class()):
            raise CmirmError(f"ref_audio must be a path or Audio, got {type(ref).__name__}")
        object.__setattr__(self, "ref_audio", str(ref) if isinstance(ref, Path) else ref)
        if self.id is None:
            object.__setattr__(self, "id", self._content_id())

    def _content_id(self) -> str:
        ref = self.ref_audio
        if ref is None or isinstance(ref, str):
            ref_key = ref
        else:  # an Audio
            ref_key = ref.source or hashlib.sha1(ref.waveform.numpy().tobytes()).hexdigest()
        blob = json.dumps([self.text, self.lyrics, ref_key], ensure_ascii=False)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def has_text(self) -> bool:
        return self.text is not None

    @property
    def has_lyrics(self) -> bool:
        return self.lyrics is not None

    @property
    def has_ref(self) -> bool:
        return self.ref_audio is not None

    @property
    def modality(self) -> str:
        """The benchmark category: ``text``, ``text+lyrics``, ``text+ref`` or ``text+lyrics+ref``."""
        return "text" + ("+lyrics" if self.has_lyrics else "") + ("+ref" if self.has_ref else "")

    @classmethod
    def from_cli(cls, text: str | None, lyrics: str | None = None, ref_audio: str | None = None) -> "Instruction":
        """Build from command-line values: ``lyrics`` may be literal text or the path of a text file."""
        if lyrics and len(lyrics) < 4096 and "\n" not in lyrics and Path(lyrics).is_file():
            try:
                lyrics = Path(lyrics).read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise CmirmError(f"'{lyrics}': lyrics file is not UTF-8 text ({exc})") from exc
        problem = file_problem(ref_audio) if ref_audio is not None else None
        if problem:
            raise CmirmError(f"'{ref_audio}': reference audio: {problem}")
        return cls(text=text, lyrics=lyrics, ref_audio=ref_audio)

    def load_ref(self) -> Audio | None:
        """The reference clip as `Audio` (loaded from its path once, then kept), or None."""
        if self.ref_audio is None:
            return None
        if "_ref" not in self.__dict__:   # frozen dataclass: memoise outside the fields
            self.__dict__["_ref"] = _audio_class().coerce(self.ref_audio)
        return self.__dict__["_ref"]

    def to_dict(self) -> dict[str, Any]:
        ref = self.ref_audio
        if ref is not None and not isinstance(ref, str):   # an Audio
            ref = ref.source
        return {"id": self.id, "text": self.text, "lyrics": self.lyrics, "ref_audio": ref}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Instruction":
        unknown = set(data) - {"id", "text", "lyrics", "ref_audio"}
        if unknown:
            raise CmirmError(f"unknown instruction field(s) {sorted(unknown)}; expected text, lyrics, ref_audio, id")
        return cls(text=data.get("text"), lyrics=data.get("lyrics"), ref_audio=data.get("ref_audio"), id=data.get("id"))


def format_score(value: float, digits: int = 4) -> str:
    """A score as printed everywhere (tables, summaries, reports): ``digits`` decimals, and never ``-0.0000``
    (a tiny negative that rounds to zero prints as a plain zero)."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


@dataclass(frozen=True)
class Scores:
    """One clip's raw (unbounded) scores, one value per axis, named by the scorer that made them.

    CMI-RM's axes are `AXES` (``alignment``, ``musicality``); other scorers name their own (e.g. a
    single ``aesthetics`` axis). ``scores["musicality"]`` reads one axis; ``scores.alignment`` and
    ``scores.musicality`` are shortcuts for CMI-RM's.
    """

    axes: tuple[str, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        axes, values = tuple(self.axes), tuple(float(v) for v in self.values)
        if not axes or len(axes) != len(values):
            raise CmirmError(f"scores need one value per axis, got axes {list(axes)} and values {list(values)}")
        if len(set(axes)) != len(axes) or not all(isinstance(a, str) and a for a in axes):
            raise CmirmError(f"score axes must be distinct non-empty names, got {list(axes)}")
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "values", values)

    def __getitem__(self, axis: str) -> float:
        if axis not in self.axes:
            raise CmirmError(f"no axis {axis!r} in these scores (axes: {', '.join(self.axes)})")
        return self.values[self.axes.index(axis)]

    @property
    def alignment(self) -> float:
        return self["alignment"]

    @property
    def musicality(self) -> float:
        return self["musicality"]

    def as_tuple(self) -> tuple[float, ...]:
        """The values in axis order (a row of a score array)."""
        return self.values

    def to_dict(self) -> dict[str, float]:
        return dict(zip(self.axes, self.values))

    @classmethod
    def from_array(cls, row: np.ndarray | Sequence[float], axes: Sequence[str] = AXES) -> "Scores":
        """Scores from a row of a score array whose columns are ``axes`` (default CMI-RM's)."""
        return cls(tuple(axes), tuple(float(v) for v in row))

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> "Scores":
        """Inverse of `to_dict` (axes in the mapping's order)."""
        return cls(tuple(data), tuple(data.values()))


#: What `Compute.work_units` count: decoder steps of an autoregressive model (one decoder forward
#: pass per step) or network function evaluations (NFEs) of a diffusion sampler.
WORK_UNITS = ("decoder_steps", "nfe")


def _check_amount(name: str, value: Any, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if value is not None and (not isinstance(value, kinds) or isinstance(value, bool) or not value >= 0
                              or value != value or value == float("inf")):
        kind = "an integer" if integer else "a finite number"
        raise CmirmError(f"compute field '{name}' must be {kind} >= 0 or null, got {value!r}")


def _known_fields(cls: type, data: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    """``data`` if every key is a field of dataclass ``cls``, else an error naming the unknown keys."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CmirmError(f"unknown {what} field(s) {unknown}; expected {sorted(known)}")
    return data


@dataclass(frozen=True)
class Compute:
    """What one candidate cost to make (and, once scored, to score).

    - ``generator_seconds``: wall seconds of the generator call that made it, on its worker. A call
      that makes B candidates together (one batch, in lockstep) is split equally: each gets 1/B.
    - ``audio_seconds``: seconds of new audio it generated (a continuation: its segment only).
    - ``work_unit``, ``work_units``: the generator's own count for this candidate (None where the
      generator cannot know it: external commands, Python functions): ``decoder_steps`` for an
      autoregressive model (new frames plus the codebook delay pattern), ``nfe`` for diffusion.
    - ``model_evals``: ``work_units`` times the rows each unit evaluates for this candidate: 2 with
      classifier-free guidance (a conditional and an unconditional row), else 1.
    - ``device``: where the generator ran (``cpu``, ``cuda:0``; None when unknown).
    - ``scorer_seconds``: the scorer's share of wall seconds, filled by whoever scores (None until then).
    """

    generator_seconds: float
    audio_seconds: float
    device: str | None = None
    work_unit: str | None = None
    work_units: int | None = None
    model_evals: int | None = None
    scorer_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("generator_seconds", "audio_seconds", "scorer_seconds"):
            _check_amount(name, getattr(self, name))
        for name in ("work_units", "model_evals"):
            _check_amount(name, getattr(self, name), integer=True)
        if self.generator_seconds is None or self.audio_seconds is None:
            raise CmirmError("compute needs generator_seconds and audio_seconds")
        if self.work_unit is not None and self.work_unit not in WORK_UNITS:
            raise CmirmError(f"compute field 'work_unit' must be one of {WORK_UNITS} or null, got {self.work_unit!r}")
        if (self.work_unit is None) != (self.work_units is None) or (self.work_units is None) != (self.model_evals is None):
            raise CmirmError("compute fields 'work_unit', 'work_units' and 'model_evals' go together: all set or all null")

    @property
    def total_seconds(self) -> float:
        """Generator plus scorer seconds (the scorer's counted as 0 until it is filled)."""
        return self.generator_seconds + (self.scorer_seconds or 0.0)

    def with_scorer_seconds(self, seconds: float) -> "Compute":
        """A copy with ``scorer_seconds`` set (what the scoring side calls)."""
        return replace(self, scorer_seconds=float(seconds))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Compute":
        """Inverse of `to_dict`; an unknown key is an error naming it."""
        return cls(**_known_fields(cls, data, "compute"))

    @classmethod
    def sum(cls, items: Sequence["Compute"]) -> "Compute":
        """The total of ``items``: seconds and counts add up; a count is None if any item lacks it,
        and ``device`` / ``work_unit`` are kept only when every item agrees."""
        items = list(items)
        if not items:
            return cls(0.0, 0.0)

        def common(name: str) -> Any:
            values = {getattr(item, name) for item in items}
            return values.pop() if len(values) == 1 else None

        def total(name: str) -> Any:
            values = [getattr(item, name) for item in items]
            return None if any(v is None for v in values) else sum(values)

        unit, units, evals = common("work_unit"), total("work_units"), total("model_evals")
        if unit is None or units is None:  # mixed or unknown units do not add up
            unit = units = evals = None
        return cls(float(sum(i.generator_seconds for i in items)), float(sum(i.audio_seconds for i in items)),
                   common("device"), unit, units, evals, total("scorer_seconds"))


@dataclass(frozen=True)
class Lineage:
    """How a search made a candidate: enough to regenerate it (`rerank.search.regenerate`).

    - ``method``: the search method that made it (``best-of-n``, ``beam``, ``noise``).
    - ``step``: the segment (beam) or round (noise) it was made in, counted from 0.
    - ``parent``: the id of the candidate it continues (beam) or whose noise it moved from (noise).
    - ``segment_seconds``, ``segment_seeds`` (beam): the first segment is ``sample(segment_seeds[0])``,
      each later one ``extend``s the clip so far from its own seed.
    - ``noise_seeds``, ``radius`` (noise): the initial latent is the first seed's own noise, moved
      once per later seed by ``radius`` times that seed's noise and renormalised to the Gaussian norm.
    - ``sampler_seed`` (noise): seeds the sampler's other randomness (the root pivot's seed, so every
      move from one root shares it and the reward is a function of the latent alone).
    - ``partial`` (beam): the clip so far, shorter than the run's duration; the search continues it,
      but it is not one of the run's candidates (never ranked nor selected).
    """

    method: str
    step: int = 0
    parent: str | None = None
    segment_seconds: float | None = None
    segment_seeds: tuple[int, ...] = ()
    noise_seeds: tuple[int, ...] = ()
    radius: float | None = None
    sampler_seed: int | None = None
    partial: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise CmirmError(f"lineage needs a method name, got {self.method!r}")
        object.__setattr__(self, "segment_seeds", tuple(int(s) for s in self.segment_seeds))
        object.__setattr__(self, "noise_seeds", tuple(int(s) for s in self.noise_seeds))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["segment_seeds"], data["noise_seeds"] = list(self.segment_seeds), list(self.noise_seeds)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Lineage":
        """Inverse of `to_dict`; an unknown key is an error naming it."""
        return cls(**_known_fields(cls, data, "lineage"))


@dataclass
class Candidate:
    """One generated clip and everything needed to reproduce it.

    Candidate i of a job is defined by (generator, params, instruction, seed): regenerating that
    seed alone gives the same audio. A candidate made by a search also carries its `lineage` (its
    ``seed`` is then the seed of its last segment or noise move, unique within the search).
    ``compute`` is what it cost; ``codes`` are the generator's tokens for this clip (codec LMs),
    kept in memory so the clip can be continued without re-encoding; they are not part of the record.
    """

    audio: Audio
    instruction_id: str
    generator: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    compute: Compute | None = None
    lineage: Lineage | None = None
    codes: "torch.Tensor | None" = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        """A stable, file-name-safe identifier."""
        return self.make_id(self.instruction_id, self.generator, self.seed)

    @staticmethod
    def make_id(instruction_id: str, generator: str, seed: int) -> str:
        """The id of candidate (instruction, generator, seed), also for one that failed and has no audio."""
        return f"{instruction_id}_{generator.replace('/', '-').replace(':', '-')}_s{seed}"

    def to_dict(self, audio_path: str | None = None) -> dict[str, Any]:
        """The manifest record (the waveform itself lives in ``audio_path``)."""
        return {
            "id": self.id,
            "instruction_id": self.instruction_id,
            "generator": self.generator,
            "seed": self.seed,
            "params": self.params,
            "audio_path": audio_path if audio_path is not None else self.audio.source,
            "sample_rate": self.audio.sample_rate,
            "duration": round(self.audio.duration, 6),
            "compute": None if self.compute is None else self.compute.to_dict(),
            "lineage": None if self.lineage is None else self.lineage.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], root: str | Path | None = None) -> "Candidate":
        """Rebuild a candidate from its manifest record, loading its audio (relative to ``root``)."""
        for key in ("instruction_id", "generator", "seed", "audio_path"):
            if data.get(key) is None:
                raise CmirmError(f"candidate record {data.get('id', '?')!r} lacks field '{key}'")
        path = Path(data["audio_path"])
        if root is not None and not path.is_absolute():
            path = Path(root) / path
        compute, lineage = data.get("compute"), data.get("lineage")
        return cls(_audio_class().load(path), data["instruction_id"], data["generator"], int(data["seed"]),
                   dict(data.get("params") or {}), None if compute is None else Compute.from_dict(compute),
                   None if lineage is None else Lineage.from_dict(lineage))
