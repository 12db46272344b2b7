"""Stable Audio Open through diffusers' ``StableAudioPipeline`` (needs the ``diffusers`` extra).

Text conditions the clip; a reference clip is used as the initial audio (its latents are added
to the starting noise). Every candidate gets its own seeded ``torch.Generator``: it draws the
initial noise, the reference's latent sample, and seeds the scheduler's Brownian-tree noise,
one tree per row. The pipeline is always called with one prompt per candidate
(``num_waveforms_per_prompt=1``) so that the reference is encoded per row too; otherwise
diffusers would encode it once with the first row's generator and share it.

Reproducibility: bit-identical at ``batch_size=1``; batched runs keep the per-candidate noise, but
batched matrix products round differently, so they match lone regenerations to float rounding.

Initial latents (noise search): `StableAudioGenerator.initial_latents` gives the noise a seed's
candidate starts from, and `Generator.sample_from_latents` starts from any given noise of that
shape (diffusers' ``latents=``). The scheduler's Brownian-tree noise depends only on the seed
of the generator handed to the pipeline (``initial_seed()``), so a candidate's other randomness
is its sampler seed's, whatever latent it starts from.

Compute: one NFE per denoising step; classifier-free guidance (``guidance_scale > 1``) evaluates
a conditional and an unconditional row per step.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Sequence

import torch

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.hub import unavailable_as_error
from cmirm_plugin.records import Instruction
from generators.base import Capabilities, Generator, WorkUnits, bounded_tokenizer, require_dir_or_hub_id
from generators.params import DiffusionParams
from generators.sampling import seeded_generators


class StableAudioGenerator(Generator):
    """Stable Audio Open (``stabilityai/stable-audio-open-1.0``): text, reference as initial audio."""

    inputs = frozenset({"text", "ref_audio"})
    params_type: ClassVar[type[DiffusionParams]] = DiffusionParams
    capabilities = Capabilities(accepts_latents=True)
    default_model: ClassVar[str] = "stabilityai/stable-audio-open-1.0"

    def __init__(self, pipeline: Any, name: str, batch_size: int = 1) -> None:
        self.pipeline = pipeline
        self.name = name
        self.batch_size = batch_size
        self.sample_rate = int(pipeline.vae.config.sampling_rate)
        self.audio_channels = int(pipeline.vae.config.audio_channels)
        pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def from_pretrained(cls, id_or_path: str | None = None, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, name: str | None = None,
                        batch_size: int = 1) -> "StableAudioGenerator":
        """Load the pipeline from a hub id or a local directory (safetensors, no remote code)."""
        try:
            from diffusers import StableAudioPipeline
        except ImportError as exc:
            raise ConfigError("Stable Audio needs diffusers and torchsde: pip install -e '.[diffusers]'") from exc
        id_or_path = str(id_or_path or cls.default_model)
        kwargs = {"torch_dtype": dtype} if dtype is not None else {}
        require_dir_or_hub_id(id_or_path)
        with unavailable_as_error(id_or_path, "generator", use_as="--generator stable-audio:DIR"):
            pipeline = StableAudioPipeline.from_pretrained(id_or_path, **kwargs).to(device)
        return cls(pipeline, name=name or id_or_path, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    @property
    def device_label(self) -> str:
        return str(self.device)

    def text_token_limit(self) -> tuple[Any, int] | None:
        """The pipeline would cut a longer prompt at its T5 tokenizer's ``model_max_length`` (128) without a word."""
        return bounded_tokenizer(self.pipeline.tokenizer)

    def max_duration(self, params: DiffusionParams) -> float:
        vae, dit = self.pipeline.vae, self.pipeline.transformer
        return dit.config.sample_size * vae.hop_length / vae.config.sampling_rate

    def work_units(self, seconds: float, params: DiffusionParams) -> WorkUnits:
        """NFEs: one per step (the DiT runs on the full latent whatever ``seconds``); two rows with guidance."""
        return WorkUnits("nfe", params.steps, params.steps * (2 if params.guidance_scale > 1 else 1))

    @property
    def latent_shape(self) -> tuple[int, int]:
        """``(channels, frames)`` of one candidate's latents (the full window; audio is cut after decoding)."""
        dit = self.pipeline.transformer.config
        return int(dit.in_channels), int(dit.sample_size)

    def _draw_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        """Each generator's own initial noise, drawn as the pipeline draws it (advancing the generators)."""
        from diffusers.utils.torch_utils import randn_tensor

        dtype = self.pipeline.transformer.dtype
        return torch.cat([randn_tensor((1, *self.latent_shape), generator=g, device=self.device, dtype=dtype)
                          for g in generators])

    def initial_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        return self._draw_latents(seeded_generators(seeds, self.device)).float().cpu()

    def _initial_audio(self, instruction: Instruction, n: int) -> dict[str, Any]:
        if not instruction.has_ref:
            return {}
        ref = instruction.load_ref().resample(self.sample_rate)
        wave = ref.waveform if ref.num_channels == self.audio_channels else (
            ref.to_mono().waveform.repeat(self.audio_channels, 1))  # e.g. a mono reference for a stereo model
        dtype = self.pipeline.vae.dtype
        return {"initial_audio_waveforms": wave.to(self.device, dtype).unsqueeze(0).repeat(n, 1, 1),
                "initial_audio_sampling_rate": self.sample_rate}

    def _generate(self, instruction: Instruction, seeds: list[int], duration: float,
                  params: DiffusionParams) -> Sequence[torch.Tensor]:
        return self._denoise(instruction, None, seeds, duration, params)

    def _generate_from_latents(self, instruction: Instruction, latents: torch.Tensor, sampler_seeds: list[int],
                               duration: float, params: DiffusionParams) -> Sequence[torch.Tensor]:
        return self._denoise(instruction, latents, sampler_seeds, duration, params)

    def _denoise(self, instruction: Instruction, latents: torch.Tensor | None, seeds: list[int], duration: float,
                 params: DiffusionParams) -> Sequence[torch.Tensor]:
        """Run the pipeline from ``latents`` (None: each seed's own noise), one seeded generator per row.

        The generators draw their own noise either way, so what they seed next (the reference's
        latent sample) does not depend on whether a latent was given.
        """
        n = len(seeds)
        generators = seeded_generators(seeds, self.device)
        own = self._draw_latents(generators)
        start = own if latents is None else latents.to(self.device, own.dtype)
        negative = [params.negative_prompt] * n if params.negative_prompt else None
        with torch.inference_mode(), warnings.catch_warnings():
            # The Brownian tree spans [sigma_min, sigma_max]; the last step queries sigma=0, where the
            # noise is multiplied by sigma_next=0 anyway. torchsde warns about it on every call.
            warnings.filterwarnings("ignore", message="Should have t", module="torchsde")
            out = self.pipeline(
                prompt=[instruction.text or ""] * n, negative_prompt=negative, num_waveforms_per_prompt=1,
                audio_end_in_s=duration, num_inference_steps=params.steps, guidance_scale=params.guidance_scale,
                generator=generators, latents=start, output_type="pt", **self._initial_audio(instruction, n),
            )
        return list(out.audios.float().cpu())
