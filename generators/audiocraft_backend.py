"""audiocraft's MusicGen, MusicGen-Melody and MAGNeT (optional; see `scripts/install_audiocraft.sh`).

- MusicGen: text; a reference clip is continued as an audio prompt (the candidate is the new
  audio only, as with the transformers backend).
- MusicGen-Melody (checkpoints with a chroma ``self_wav`` conditioner): text; the reference
  clip's chroma conditions the melody.
- MAGNeT: text only, at the checkpoint's fixed length (``duration`` must equal it).

MusicGen continues clips (`Generator.extend`, beam search) through audiocraft's
``generate_continuation``: the clip so far is the audio prompt (encoded again: audiocraft's API
takes audio), the result is the whole clip, prompt re-decoded. MusicGen-Melody continues text
instructions only (``generate_continuation`` takes no chroma). MAGNeT cannot continue.

Compute: MusicGen runs one decoder step per new frame plus the delay pattern's largest delay,
MAGNeT ``sum(decoding_steps)`` steps; audiocraft always evaluates a conditional and an
unconditional row per step (classifier-free guidance), so ``model_evals`` is twice the steps.

audiocraft samples from the global torch RNG, so each candidate runs alone (``batch_size`` 1)
under ``torch.manual_seed(seed)`` inside a forked RNG state: that makes every candidate
bit-identically reproducible from its seed and leaves the caller's RNG untouched. Batching
would let candidates share one random stream, so it is refused (``max_batch_size = 1``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import AudioError, ConfigError
from cmirm_plugin.hub import unavailable_as_error
from cmirm_plugin.records import Candidate, Instruction
from generators.base import (Capabilities, Generator, UnsupportedInputError, WorkUnits, bounded_tokenizer,
                             check_batch_size, require_dir_or_hub_id)
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


def checkpoint_is_magnet(id_or_path: str | Path) -> bool:
    """Whether ``id_or_path`` holds a MAGNeT (True) or a MusicGen (False) checkpoint.

    A local directory is judged by its saved training config: ``state_dict.bin`` holds the
    config under ``xp.cfg`` (a YAML string in audiocraft's exports), whose ``lm_model`` is
    ``transformer_lm_magnet`` for MAGNeT. It is read with ``torch.load(weights_only=True,
    mmap=True)``: no code runs and no weights are read into memory. A hub name (or a directory
    whose config cannot be read that way, e.g. an old pickled one) follows audiocraft's naming:
    MAGNeT names contain ``magnet`` (``facebook/magnet-*``, ``facebook/audio-magnet-*``).
    """
    path = Path(id_or_path).expanduser()
    state = path / "state_dict.bin"
    if path.is_dir() and state.is_file():
        try:
            cfg = torch.load(state, map_location="cpu", weights_only=True, mmap=True).get("xp.cfg")
            cfg = yaml.safe_load(cfg) if isinstance(cfg, str) else cfg
        except Exception:  # an unreadable config (old pickle, bad file) falls back to the name rule
            cfg = None
        if isinstance(cfg, dict) and cfg.get("lm_model"):
            return cfg["lm_model"] == "transformer_lm_magnet"
    return "magnet" in path.name.lower()


class AudiocraftGenerator(Generator):
    """An audiocraft ``MusicGen`` or ``MAGNeT`` model behind the `Generator` contract."""

    max_batch_size = 1  # audiocraft samples from the global RNG: see the module docstring

    def __init__(self, model: Any, name: str) -> None:
        self.model = model
        self.name = name
        self.sample_rate = int(model.sample_rate)
        self.is_magnet = type(model).__name__ == "MAGNeT"
        conditioners = model.lm.condition_provider.conditioners
        self.is_melody = "self_wav" in conditioners
        self.inputs = self.inputs_of(self.is_magnet)
        self.params_type = MagnetParams if self.is_magnet else LMParams
        self.capabilities = Capabilities(can_continue=not self.is_magnet)
        self.batch_size = 1

    @staticmethod
    def inputs_of(is_magnet: bool) -> frozenset[str]:
        """What a MAGNeT (text only) or a MusicGen (text, and a reference clip) checkpoint honours."""
        return frozenset({"text"} if is_magnet else {"text", "ref_audio"})

    @classmethod
    def from_pretrained(cls, id_or_path: str = "facebook/musicgen-small", *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, name: str | None = None,
                        batch_size: int = 1) -> "AudiocraftGenerator":
        """Load ``facebook/musicgen-*`` / ``facebook/magnet-*`` or a local directory holding
        ``state_dict.bin`` + ``compression_state_dict.bin`` (audiocraft's export format); which
        model it is comes from `checkpoint_is_magnet`. ``batch_size`` is accepted for a uniform
        signature and must be 1 (checked before anything is loaded)."""
        name = name or f"audiocraft:{id_or_path}"
        check_batch_size(name, batch_size, cls.max_batch_size)
        if dtype is not None:
            raise ConfigError(f"generator '{name}': the audiocraft backend picks its own dtype (float32 on CPU, "
                              f"float16 on GPU); drop the dtype option, got dtype={dtype}")
        models = import_audiocraft()
        require_dir_or_hub_id(str(id_or_path))
        model_class = models.MAGNeT if checkpoint_is_magnet(id_or_path) else models.MusicGen
        with unavailable_as_error(str(id_or_path), "generator", use_as="--generator audiocraft:DIR"):
            model = model_class.get_pretrained(str(id_or_path), device=str(device))
        return cls(model, name=name)

    @property
    def device_label(self) -> str:
        return str(self.model.device)

    def work_units(self, seconds: float, params: GenerationParams) -> WorkUnits:
        """Decoder steps as audiocraft runs them (see the module docstring); always two rows per step."""
        if isinstance(params, MagnetParams):
            steps = sum(params.decoding_steps)
        else:
            delays = getattr(self.model.lm.pattern_provider, "delays", None) or [self.model.lm.num_codebooks - 1]
            steps = math.ceil(seconds * self.model.frame_rate - 1e-6) + max(delays)
        return WorkUnits("decoder_steps", steps, 2 * steps)

    def text_token_limit(self) -> tuple[Any, int] | None:
        """A T5 text conditioner reads at most its tokenizer's ``model_max_length`` tokens (none for lookup tables)."""
        conditioners = self.model.lm.condition_provider.conditioners     # a ModuleDict: no .get
        conditioner = conditioners["description"] if "description" in conditioners else None
        tokenizer = getattr(conditioner, "t5_tokenizer", None)
        return bounded_tokenizer(tokenizer) if tokenizer is not None else None

    def check_duration(self, duration: float, params: GenerationParams) -> None:
        """MAGNeT makes clips of exactly its training length; MusicGen extends past it with windows."""
        if self.is_magnet and abs(duration - self.model.max_duration) > 1e-6:
            raise ConfigError(f"generator '{self.name}' (MAGNeT) makes exactly {self.model.max_duration:g} s clips; "
                              f"use duration={self.model.max_duration:g}, got {duration:g}")

    def _set_params(self, params: GenerationParams, duration: float) -> None:
        if isinstance(params, MagnetParams):  # its length is fixed (see `check_duration`)
            self.model.set_generation_params(use_sampling=True, **params.to_dict())
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

    def _continue(self, instruction: Instruction, prefix: Candidate, seeds: list[int], segment: float,
                  params: GenerationParams) -> Sequence[torch.Tensor]:
        if self.is_melody and instruction.has_ref:
            raise UnsupportedInputError(f"generator '{self.name}' (MusicGen-Melody) cannot continue a clip with its "
                                        "chroma reference (audiocraft's generate_continuation takes none); drop the "
                                        "reference or use the transformers musicgen-melody backend")
        (seed,) = seeds
        devices = [self.model.device] if torch.device(self.model.device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            prompt = self._prompt_wave(prefix.audio)
            self._set_params(params, prefix.audio.duration + segment)
            out = self.model.generate_continuation(prompt[None].to(self.model.device), self.sample_rate,
                                                   [instruction.text or ""], progress=False)[0]
        return [out.float().cpu()]

    def _prompt_wave(self, audio: Audio) -> torch.Tensor:
        """``audio`` at the model's rate and channel count, ``[channels, T]``, as an audio prompt."""
        return audio.resample(self.sample_rate).to_mono().waveform.repeat(self.model.audio_channels, 1)

    def _generate_one(self, instruction: Instruction, duration: float, params: GenerationParams) -> torch.Tensor:
        text = [instruction.text or ""]
        if not instruction.has_ref:
            self._set_params(params, duration)
            return self.model.generate(text, progress=False)[0]
        ref = self._prompt_wave(instruction.load_ref())  # [channels, T]
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
