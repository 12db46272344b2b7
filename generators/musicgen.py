"""MusicGen and MusicGen-Melody through transformers.

- `MusicGenGenerator` (``MusicgenForConditionalGeneration``, e.g. ``facebook/musicgen-small``):
  text, and a reference clip used as an audio prompt that the model continues (the candidate
  holds only the continuation, ``duration`` seconds of new audio).
- `MusicGenMelodyGenerator` (``MusicgenMelodyForConditionalGeneration``,
  ``facebook/musicgen-melody``): text, and a reference clip whose chroma conditions the melody.

Sampling goes through `PerRowSampler`, so every candidate draws its tokens from its own seeded
generator. Reproducibility: bit-identical at ``batch_size=1``; batched runs keep the per-candidate
random streams, but batched matrix products round differently from single-row ones (oneDNN/MKL
and cuBLAS pick kernels by shape), so a batched candidate matches its lone regeneration only to
float rounding, and a near-tie can occasionally flip a sampled token.
"""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from cmirm_plugin.errors import AudioError
from cmirm_plugin.hub import unavailable_as_error
from cmirm_plugin.log_filters import quiet_musicgen_special_tokens
from cmirm_plugin.records import Instruction
from generators.base import Generator, bounded_tokenizer, require_dir_or_hub_id
from generators.params import LMParams
from generators.sampling import PerRowSampler, seeded_generators


class _TransformersMusicGen(Generator):
    """What both transformers MusicGens share: loading, frame arithmetic, the sampling call."""

    inputs = frozenset({"text", "ref_audio"})  # what the reference means differs per subclass
    params_type: ClassVar[type[LMParams]] = LMParams
    model_class_name: ClassVar[str]
    #: The registry prefix that loads a checkpoint of this class (``musicgen:DIR``).
    registry_prefix: ClassVar[str]
    default_model: ClassVar[str]

    def __init__(self, model: Any, processor: Any, name: str, batch_size: int = 1) -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.batch_size = batch_size
        codec = model.config.audio_encoder
        self.sample_rate = int(codec.sampling_rate)
        self.hop_length = int(np.prod(codec.upsampling_ratios))
        self.frame_rate = self.sample_rate / self.hop_length
        self.num_codebooks = int(model.decoder.num_codebooks)
        # Stereo checkpoints interleave left/right codebooks: a candidate still owns num_codebooks rows.
        self.audio_channels = int(getattr(model.decoder.config, "audio_channels", 1))
        self.max_positions = int(model.decoder.config.max_position_embeddings)

    @classmethod
    def from_pretrained(cls, id_or_path: str | None = None, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, name: str | None = None,
                        batch_size: int = 1) -> "_TransformersMusicGen":
        """Load model and processor from a hub id or a local directory (safetensors, no remote code)."""
        import transformers

        id_or_path = str(id_or_path or cls.default_model)
        model_class = getattr(transformers, cls.model_class_name)
        require_dir_or_hub_id(id_or_path)
        with unavailable_as_error(id_or_path, "generator", use_as=f"--generator {cls.registry_prefix}:DIR"), \
                quiet_musicgen_special_tokens():
            model = model_class.from_pretrained(id_or_path, dtype=dtype).to(device)
            processor = transformers.AutoProcessor.from_pretrained(id_or_path)
        return cls(model, processor, name=name or id_or_path, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def text_token_limit(self) -> tuple[Any, int] | None:
        """The T5 text encoder reads at most its tokenizer's ``model_max_length`` tokens (512 for the released ones)."""
        return bounded_tokenizer(self.processor.tokenizer)

    def max_duration(self, params: LMParams) -> float:
        # Every generated frame plus the codebook delay and the start token needs a position.
        return (self.max_positions - self.num_codebooks) / self.frame_rate

    @abstractmethod
    def _model_inputs(self, instruction: Instruction, n: int, params: LMParams) -> tuple[dict[str, Any], int]:
        """Processor outputs for ``n`` copies of the instruction, and the prompt length in frames."""

    def _ref_wave(self, instruction: Instruction, sample_rate: int, channels: int) -> np.ndarray:
        """The reference clip resampled, with the model's channel count (``[samples]`` or ``[samples, 2]``)."""
        ref = instruction.load_ref()
        if channels == 1:
            return ref.to_mono().resample(sample_rate).waveform[0].numpy()
        wave = ref.resample(sample_rate).waveform
        return (wave if wave.shape[0] == 2 else wave[:1].repeat(2, 1)).T.numpy()

    def _generate(self, instruction: Instruction, seeds: list[int], duration: float,
                  params: LMParams) -> Sequence[torch.Tensor]:
        n = len(seeds)
        inputs, prompt_frames = self._model_inputs(instruction, n, params)
        inputs = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        if "input_values" in inputs or "input_features" in inputs:
            key = "input_values" if "input_values" in inputs else "input_features"
            inputs[key] = inputs[key].to(self.model.dtype)
        frames = math.ceil(duration * self.frame_rate)
        sampler = PerRowSampler(seeded_generators(seeds, self.device), self.num_codebooks, params)
        config = copy.deepcopy(self.model.generation_config)
        config.update(do_sample=False, temperature=None, top_k=None, top_p=None,
                      guidance_scale=params.guidance_scale, max_length=None,
                      max_new_tokens=frames + self.num_codebooks - 1)
        with torch.inference_mode():
            audio = self.model.generate(**inputs, generation_config=config, logits_processor=[sampler])
        start = prompt_frames * self.hop_length
        return list(audio[:, :, start:].float().cpu())


class MusicGenGenerator(_TransformersMusicGen):
    """MusicGen: text, and a reference clip continued as an audio prompt (``prompt_seconds`` of it)."""

    model_class_name = "MusicgenForConditionalGeneration"
    registry_prefix = "musicgen"
    default_model = "facebook/musicgen-small"

    def _model_inputs(self, instruction: Instruction, n: int, params: LMParams) -> tuple[dict[str, Any], int]:
        text = [instruction.text or ""] * n
        if not instruction.has_ref:
            return dict(self.processor(text=text, padding=True, return_tensors="pt")), 0
        wave = self._ref_wave(instruction, self.sample_rate, self.audio_channels)
        # A whole number of codec frames, so the continuation starts exactly after the prompt.
        frames = min(int(params.prompt_seconds * self.frame_rate), wave.shape[0] // self.hop_length)
        if frames < 1:
            raise AudioError(f"reference clip {instruction.ref_audio!r} is shorter than one codec frame "
                             f"({self.hop_length} samples at {self.sample_rate} Hz)")
        prompt = wave[: frames * self.hop_length]
        inputs = self.processor(audio=[prompt] * n, sampling_rate=self.sample_rate, text=text, padding=True,
                                return_tensors="pt")
        inputs.pop("padding_mask", None)  # all prompts have the same length: nothing is padding
        return dict(inputs), frames


class MusicGenMelodyGenerator(_TransformersMusicGen):
    """MusicGen-Melody: text, and a reference clip whose chroma conditions the melody."""

    model_class_name = "MusicgenMelodyForConditionalGeneration"
    registry_prefix = "musicgen-melody"
    default_model = "facebook/musicgen-melody"

    def _model_inputs(self, instruction: Instruction, n: int, params: LMParams) -> tuple[dict[str, Any], int]:
        text = [instruction.text or ""] * n
        if not instruction.has_ref:
            return dict(self.processor(text=text, padding=True, return_tensors="pt")), 0
        rate = int(self.processor.feature_extractor.sampling_rate)
        wave = self._ref_wave(instruction, rate, channels=1)
        inputs = self.processor(audio=[wave] * n, sampling_rate=rate, text=text, padding=True, return_tensors="pt")
        return dict(inputs), 0
