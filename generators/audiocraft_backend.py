"""audiocraft's MusicGen, MusicGen-Melody and MAGNeT (optional; see `scripts/install_audiocraft.sh`).

- MusicGen: text; a reference clip is continued as an audio prompt (the candidate is the new
  audio only, as with the transformers backend).
- MusicGen-Melody (checkpoints with a chroma ``self_wav`` conditioner): text; the reference
  clip's chroma conditions the melody.
- MAGNeT: text only, at the checkpoint's fixed length (``duration`` must equal it).

audiocraft samples from the global torch RNG, so each candidate runs alone (``batch_size`` 1)
under ``torch.manual_seed(seed)`` inside a forked RNG state: that makes every candidate
bit-identically reproducible from its seed and leaves the caller's RNG untouched. Batching
would let candidates share one random stream, so it is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from cmirm_plugin.errors import AudioError, ConfigError
from cmirm_plugin.hub import unavailable_as_error
from cmirm_plugin.records import Instruction
from generators.base import Generator
from generators.params import GenerationParams, LMParams, check, check_number

INSTALL_HINT = ("the audiocraft backend needs the optional audiocraft package, which pins an old torch: "
                "install it without touching torch with `scripts/install_audiocraft.sh`")


def import_audiocraft() -> Any:
    """Import ``audiocraft.models`` or raise `ConfigError` saying how to install it."""
    try:
        import audiocraft.models as models
    except Exception as exc:  # ImportError, or a broken optional install failing at import time
        raise ConfigError(f"{INSTALL_HINT} ({type(exc).__name__}: {exc})") from exc
    return models


@dataclass(frozen=True)
class MagnetParams(GenerationParams):
    """MAGNeT's sampling parameters (defaults are audiocraft's for music)."""

    temperature: float = 3.0
    top_k: int = 0
    top_p: float = 0.9
    max_cfg_coef: float = 10.0
    min_cfg_coef: float = 1.0
    decoding_steps: tuple[int, ...] = (20, 10, 10, 10)
    span_arrangement: str = "nonoverlap"

    def __post_init__(self) -> None:
        check_number("temperature", self.temperature, low=0.0, low_open=True)
        check_number("top_k", self.top_k, low=0, integer=True)
        check_number("top_p", self.top_p, low=0.0, high=1.0)
        check_number("max_cfg_coef", self.max_cfg_coef, low=0.0)
        check_number("min_cfg_coef", self.min_cfg_coef, low=0.0, high=self.max_cfg_coef)
        steps = tuple(self.decoding_steps) if isinstance(self.decoding_steps, (list, tuple)) else None
        check(bool(steps) and all(isinstance(s, int) and s > 0 for s in steps), "decoding_steps",
              self.decoding_steps, "a list of positive integers, one per codebook")
        object.__setattr__(self, "decoding_steps", steps)
        check(self.span_arrangement in ("nonoverlap", "stride1"), "span_arrangement", self.span_arrangement,
              "'nonoverlap' or 'stride1'")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "decoding_steps": list(self.decoding_steps)}


def _require_single(name: str, batch_size: int | None) -> None:
    if batch_size not in (None, 1):
        raise ConfigError(f"generator '{name}' samples from the global RNG, so batched candidates would not "
                          f"be reproducible from their seeds; use batch_size=1, got {batch_size}")


class AudiocraftGenerator(Generator):
    """An audiocraft ``MusicGen`` or ``MAGNeT`` model behind the `Generator` contract."""

    def __init__(self, model: Any, name: str) -> None:
        self.model = model
        self.name = name
        self.sample_rate = int(model.sample_rate)
        self.is_magnet = type(model).__name__ == "MAGNeT"
        conditioners = model.lm.condition_provider.conditioners
        self.is_melody = "self_wav" in conditioners
        self.inputs = frozenset({"text"} if self.is_magnet else {"text", "ref_audio"})
        self.params_type = MagnetParams if self.is_magnet else LMParams
        self.batch_size = 1

    @classmethod
    def from_pretrained(cls, id_or_path: str = "facebook/musicgen-small", *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, name: str | None = None,
                        batch_size: int = 1) -> "AudiocraftGenerator":
        """Load ``facebook/musicgen-*`` / ``facebook/magnet-*`` or a local directory holding
        ``state_dict.bin`` + ``compression_state_dict.bin`` (audiocraft's export format).
        ``batch_size`` is accepted for a uniform signature and must be 1."""
        _require_single(name or str(id_or_path), batch_size)
        if dtype is not None:
            raise ConfigError("the audiocraft backend picks its own dtype (float32 on CPU, float16 on GPU); "
                              f"got dtype={dtype}")
        models = import_audiocraft()
        model_class = models.MAGNeT if "magnet" in str(id_or_path).lower() else models.MusicGen
        with unavailable_as_error(str(id_or_path), "generator"):
            model = model_class.get_pretrained(str(id_or_path), device=str(device))
        return cls(model, name=name or f"audiocraft:{id_or_path}")

    def max_duration(self, params: GenerationParams) -> float | None:
        # MusicGen extends past its training length with windows; MAGNeT only makes its own length.
        return float(self.model.max_duration) if self.is_magnet else None

    def sample(self, instruction: Instruction, seeds: Sequence[int], duration: float, *,
               batch_size: int | None = None, **params: Any):
        """As `Generator.sample`, but one seed at a time (audiocraft samples from the global RNG)."""
        _require_single(self.name, batch_size)
        return super().sample(instruction, seeds, duration, batch_size=1, **params)

    def _set_params(self, params: GenerationParams, duration: float) -> None:
        if isinstance(params, MagnetParams):
            if abs(duration - self.model.max_duration) > 1e-6:
                raise ConfigError(f"MAGNeT '{self.name}' makes exactly {self.model.max_duration:g} s clips; "
                                  f"got duration={duration:g}")
            values = params.to_dict()
            self.model.set_generation_params(use_sampling=True, **values)
            return
        assert isinstance(params, LMParams)
        self.model.set_generation_params(use_sampling=True, top_k=params.top_k, top_p=params.top_p,
                                         temperature=params.temperature, duration=duration,
                                         cfg_coef=params.guidance_scale)

    def _generate(self, instruction: Instruction, seeds: list[int], duration: float,
                  params: GenerationParams) -> Sequence[torch.Tensor]:
        (seed,) = seeds
        devices = [self.model.device] if torch.device(self.model.device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return [self._generate_one(instruction, duration, params).float().cpu()]

    def _generate_one(self, instruction: Instruction, duration: float, params: GenerationParams) -> torch.Tensor:
        text = [instruction.text or ""]
        if not instruction.has_ref:
            self._set_params(params, duration)
            return self.model.generate(text, progress=False)[0]
        ref = instruction.load_ref().resample(self.sample_rate).to_mono().waveform
        ref = ref.repeat(self.model.audio_channels, 1)  # [channels, T]
        if self.is_melody:
            self._set_params(params, duration)
            return self.model.generate_with_chroma(text, ref[None], self.sample_rate, progress=False)[0]
        assert isinstance(params, LMParams)
        hop = round(self.sample_rate / self.model.frame_rate)
        frames = min(int(params.prompt_seconds * self.model.frame_rate), ref.shape[-1] // hop)
        if frames < 1:
            raise AudioError(f"reference clip {instruction.ref_audio!r} is shorter than one codec frame")
        prompt = ref[:, : frames * hop]
        # audiocraft's duration counts the prompt; the candidate is what comes after it.
        self._set_params(params, duration + frames * hop / self.sample_rate)
        out = self.model.generate_continuation(prompt[None].to(self.model.device), self.sample_rate, text,
                                               progress=False)[0]
        return out[:, frames * hop:]
