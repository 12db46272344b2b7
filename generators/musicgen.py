"""MusicGen and MusicGen-Melody through transformers.

- `MusicGenGenerator` (``MusicgenForConditionalGeneration``, e.g. ``facebook/musicgen-small``):
  text, and a reference clip used as an audio prompt that the model continues (the candidate
  holds only the continuation, ``duration`` seconds of new audio).
- `MusicGenMelodyGenerator` (``MusicgenMelodyForConditionalGeneration``,
  ``facebook/musicgen-melody``): text, and a reference clip whose chroma conditions the melody.

Both continue clips (`Generator.extend`, for beam search) from the generated **codes**: every
candidate keeps its codec tokens (`Candidate.codes`, recovered from the sampler's draws, no
decode/re-encode round trip), a continuation feeds them back as the decoder prompt and samples
``segment`` seconds more from its own seed, and the whole code sequence is decoded at once. A
candidate without codes (e.g. read back from a file) is encoded first, as an audio prompt. With
a reference, MusicGen continues reference prompt + clip, and MusicGen-Melody keeps the chroma.

Compute: one decoder step per new token; the delay pattern adds ``codebooks - 1`` steps to the
new frames, and classifier-free guidance (``guidance_scale > 1``) evaluates two rows per step.

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

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import AudioError, ConfigError
from cmirm_plugin.hub import unavailable_as_error
from cmirm_plugin.log_filters import quiet_musicgen_special_tokens
from cmirm_plugin.records import Candidate, Instruction
from generators.base import Capabilities, Clip, Generator, WorkUnits, bounded_tokenizer, require_dir_or_hub_id
from generators.params import LMParams
from generators.sampling import PerRowSampler, seeded_generators


#: Tolerance when converting seconds to codec frames (1.1 s * 50 Hz is 55.00000000000001, not 56 frames).
_FRAME_EPS = 1e-6


def undelay(steps: Sequence[torch.Tensor], candidates: int, codebooks: int, audio_channels: int,
            frames: int) -> torch.Tensor:
    """``[candidates, codebooks, frames]``: the new codes from the tokens drawn at each step.

    MusicGen's delay pattern offsets codebook ``k`` by ``k // audio_channels`` steps (stereo
    checkpoints interleave left/right codebooks, which share a delay), so new frame ``j`` of
    codebook ``k`` is drawn at step ``j + delay(k)``; what the model draws at other positions is
    replaced by padding or prompt tokens and is dropped here.
    """
    tokens = torch.stack(list(steps), dim=1).view(candidates, codebooks, len(steps))
    delays = torch.arange(codebooks, device=tokens.device) // audio_channels
    index = (delays[:, None] + torch.arange(frames, device=tokens.device)[None, :]).expand(candidates, -1, -1)
    return tokens.gather(2, index)


class _TransformersMusicGen(Generator):
    """What both transformers MusicGens share: loading, frame arithmetic, the sampling call."""

    inputs = frozenset({"text", "ref_audio"})  # what the reference means differs per subclass
    params_type: ClassVar[type[LMParams]] = LMParams
    capabilities = Capabilities(can_continue=True)
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
        # Stereo checkpoints interleave left/right codebooks: a candidate still owns num_codebooks rows,
        # and each left/right pair shares one delay.
        self.audio_channels = int(getattr(model.decoder.config, "audio_channels", 1))
        self.max_delay = self.num_codebooks // self.audio_channels - 1
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

    @property
    def device_label(self) -> str:
        return str(self.device)

    def frames(self, seconds: float) -> int:
        """Codec frames needed for ``seconds`` of audio (rounded up)."""
        return math.ceil(seconds * self.frame_rate - _FRAME_EPS)

    def text_token_limit(self) -> tuple[Any, int] | None:
        """The T5 text encoder reads at most its tokenizer's ``model_max_length`` tokens (512 for the released ones)."""
        return bounded_tokenizer(self.processor.tokenizer)

    def max_duration(self, params: LMParams) -> float:
        # Every generated frame plus the codebook delay and the start token needs a position.
        return (self.max_positions - self.max_delay - 1) / self.frame_rate

    def work_units(self, seconds: float, params: LMParams) -> WorkUnits:
        """Decoder steps: the new frames plus the delay pattern's ``max_delay``; two rows each with guidance."""
        steps = self.frames(seconds) + self.max_delay
        return WorkUnits("decoder_steps", steps, steps * (2 if params.guidance_scale > 1 else 1))

    def check_segment(self, segment: float, params: LMParams) -> None:
        """A continuation adds whole codec frames, so the clip's codes and audio stay aligned."""
        frames = segment * self.frame_rate
        if abs(frames - round(frames)) > _FRAME_EPS:
            raise ConfigError(f"generator '{self.name}' continues in whole codec frames of {1 / self.frame_rate:g} s; "
                              f"segment={segment:g} s is not a multiple of it")

    def _wave(self, audio: Audio, sample_rate: int, channels: int) -> np.ndarray:
        """``audio`` resampled, with ``channels`` channels (``[samples]`` or ``[samples, 2]``)."""
        if channels == 1:
            return audio.to_mono().resample(sample_rate).waveform[0].numpy()
        wave = audio.resample(sample_rate).waveform
        return (wave if wave.shape[0] == 2 else wave[:1].repeat(2, 1)).T.numpy()

    def encode(self, audio: Audio, max_frames: int | None = None, what: str = "clip") -> torch.Tensor:
        """``[codebooks, frames]``: the codec tokens of ``audio``'s whole frames (at most ``max_frames``;
        a tail shorter than one frame is dropped).

        This is how an audio prompt enters the model (transformers encodes ``input_values`` the
        same way); stereo checkpoints interleave the left and right channels' codebooks.
        """
        wave = self._wave(audio, self.sample_rate, self.audio_channels)
        frames = wave.shape[0] // self.hop_length
        frames = frames if max_frames is None else min(frames, max_frames)
        if frames < 1:
            raise AudioError(f"{what} is shorter than one codec frame ({self.hop_length} samples at "
                             f"{self.sample_rate} Hz)")
        wave = torch.from_numpy(np.ascontiguousarray(wave[: frames * self.hop_length])).to(self.device)
        channels = [wave] if self.audio_channels == 1 else list(wave.T)  # each [T]
        with torch.inference_mode():
            codes = [self.model.audio_encoder.encode(c[None, None].to(self.model.dtype)).audio_codes[0, 0]
                     for c in channels]
        if len(codes) == 1:
            return codes[0]
        stereo = codes[0].new_empty((2 * codes[0].shape[0], frames))
        stereo[0::2], stereo[1::2] = codes
        return stereo

    @abstractmethod
    def _conditioning(self, instruction: Instruction, n: int, params: LMParams) -> tuple[dict[str, Any], torch.Tensor | None]:
        """Processor outputs conditioning ``n`` rows, and the audio-prompt codes that precede every
        clip of this instruction (``[codebooks, frames]``, MusicGen with a reference) or None."""

    def _generate(self, instruction: Instruction, seeds: list[int], duration: float,
                  params: LMParams) -> Sequence[Clip]:
        return self._sample_codes(instruction, seeds, None, self.frames(duration), params)

    def _continue(self, instruction: Instruction, prefix: Candidate, seeds: list[int], segment: float,
                  params: LMParams) -> Sequence[Clip]:
        codes = prefix.codes if prefix.codes is not None else self.encode(prefix.audio)
        if codes.ndim != 2 or codes.shape[0] != self.num_codebooks:
            raise ConfigError(f"candidate {prefix.id!r} has codes of shape {tuple(codes.shape)}; generator "
                              f"'{self.name}' continues [{self.num_codebooks}, frames] codes")
        return self._sample_codes(instruction, seeds, codes.to(self.device), round(segment * self.frame_rate), params)

    def _sample_codes(self, instruction: Instruction, seeds: list[int], clip: torch.Tensor | None, frames: int,
                      params: LMParams) -> list[Clip]:
        """Sample ``frames`` new frames per seed after the prompt codes and ``clip`` (the codes so far).

        Returns each candidate's clip (``clip`` then the new frames) decoded, with its codes.
        """
        n = len(seeds)
        inputs, prompt = self._conditioning(instruction, n, params)
        inputs = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        if "input_features" in inputs:
            inputs["input_features"] = inputs["input_features"].to(self.model.dtype)
        context = [c for c in (prompt, clip) if c is not None]
        prompt_frames = 0 if prompt is None else prompt.shape[1]
        if context:
            codes = torch.cat(context, dim=1)
            if codes.shape[1] + frames + self.max_delay + 1 > self.max_positions:
                raise ConfigError(f"generator '{self.name}': {codes.shape[1]} frames of context plus {frames} new "
                                  f"ones exceed the model's {self.max_positions} positions")
            inputs["decoder_input_ids"] = codes.repeat(n, 1)  # [n * codebooks, frames], candidate-major
        sampler = PerRowSampler(seeded_generators(seeds, self.device), self.num_codebooks, params)
        config = copy.deepcopy(self.model.generation_config)
        config.update(do_sample=False, temperature=None, top_k=None, top_p=None,
                      guidance_scale=params.guidance_scale, max_length=None,
                      max_new_tokens=frames + self.max_delay)
        with torch.inference_mode():
            audio = self.model.generate(**inputs, generation_config=config, logits_processor=[sampler])
        new = undelay(sampler.steps, n, self.num_codebooks, self.audio_channels, frames)
        audio = audio[:, :, prompt_frames * self.hop_length:].float().cpu()
        own = new if clip is None else torch.cat([clip.expand(n, -1, -1), new], dim=2)
        return [Clip(wave, tokens) for wave, tokens in zip(audio, own.cpu())]


class MusicGenGenerator(_TransformersMusicGen):
    """MusicGen: text, and a reference clip continued as an audio prompt (``prompt_seconds`` of it)."""

    model_class_name = "MusicgenForConditionalGeneration"
    registry_prefix = "musicgen"
    default_model = "facebook/musicgen-small"

    def _conditioning(self, instruction: Instruction, n: int, params: LMParams) -> tuple[dict[str, Any], torch.Tensor | None]:
        text = dict(self.processor(text=[instruction.text or ""] * n, padding=True, return_tensors="pt"))
        if not instruction.has_ref:
            return text, None
        # A whole number of codec frames, so the continuation starts exactly after the prompt.
        return text, self.encode(instruction.load_ref(), int(params.prompt_seconds * self.frame_rate),
                                 f"reference clip {instruction.ref_audio!r}")


class MusicGenMelodyGenerator(_TransformersMusicGen):
    """MusicGen-Melody: text, and a reference clip whose chroma conditions the melody."""

    model_class_name = "MusicgenMelodyForConditionalGeneration"
    registry_prefix = "musicgen-melody"
    default_model = "facebook/musicgen-melody"

    def _conditioning(self, instruction: Instruction, n: int, params: LMParams) -> tuple[dict[str, Any], torch.Tensor | None]:
        text = [instruction.text or ""] * n
        if not instruction.has_ref:
            return dict(self.processor(text=text, padding=True, return_tensors="pt")), None
        rate = int(self.processor.feature_extractor.sampling_rate)
        wave = self._wave(instruction.load_ref(), rate, channels=1)
        return dict(self.processor(audio=[wave] * n, sampling_rate=rate, text=text, padding=True,
                                   return_tensors="pt")), None
