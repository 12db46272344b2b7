"""Tiny, randomly initialised generator models that build offline in well under a second.

They have the real architectures (T5 + EnCodec + MusicGen decoder, the MusicGen-Melody variant,
Stable Audio's Oobleck VAE + DiT + T5) at toy sizes, so tests, the CLI's ``--tiny`` mode and
users' own tests exercise the same code paths as the released checkpoints without any download.
Their audio is noise-like: they check plumbing, shapes and reproducibility, never quality.

Tokenizers are trained (built) at run time with the ``tokenizers`` library, never shipped as
files. Every builder is deterministic in ``seed`` and leaves the global RNG untouched.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.log_filters import quiet_musicgen_special_tokens

if TYPE_CHECKING:  # heavy optional imports stay lazy
    from diffusers import StableAudioPipeline
    from transformers import (
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
        MusicgenMelodyProcessor,
        MusicgenProcessor,
        PreTrainedTokenizerFast,
        T5Config,
    )

    from generators.base import Generator

#: Sample rate of the tiny MusicGen models (the real ones run at 32 kHz too).
TINY_MUSICGEN_SAMPLE_RATE = 32000
#: Sample rate of the tiny Stable Audio pipeline (as the real one).
TINY_STABLE_AUDIO_SAMPLE_RATE = 44100
#: The tiny models, by kind; registry name ``tiny-<kind>`` builds one (see `tiny_generator`).
TINY_KINDS = ("musicgen", "musicgen-melody", "stable-audio")

_WORDS = (
    "a an and the of with in on for to by upbeat calm sad happy dark bright slow fast loud soft "
    "pop rock jazz folk metal techno house ambient classical hip hop funk soul blues country "
    "piano guitar drums bass synth strings violin voice vocals choir beat melody song track music "
    "female male lyrics chorus verse love night day sun rain dance heart"
).split()


def tiny_t5_tokenizer() -> "PreTrainedTokenizerFast":
    """A T5-style (Unigram + Metaspace, ``</s>`` appended) fast tokenizer built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = [f"\u2581{w}" for w in _WORDS] + ["\u2581"] + chars
    vocab = [(tok, 0.0) for tok in specials] + [(p, -float(len(p))) for p in dict.fromkeys(pieces)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=128, model_input_names=["input_ids", "attention_mask"])


def t5_config(vocab_size: int, width: int = 32) -> "T5Config":
    """A 2-layer, 4-head T5 text encoder ``width`` wide (the tiny models' and the benchmark's)."""
    from transformers import T5Config

    return T5Config(vocab_size=vocab_size, d_model=width, d_kv=width // 4, d_ff=2 * width, num_layers=2, num_heads=4)


@dataclass(frozen=True)
class MusicGenSizes:
    """Sizes of a random MusicGen (defaults: the tiny test model).

    EnCodec runs at 32 kHz and 50 frames/s with ``num_codebooks`` codebooks of ``codebook_size``
    entries; its bandwidth is derived so that it encodes with exactly the decoder's codebooks,
    which audio prompts need.
    """

    text_width: int = 32
    codec_hidden: int = 16
    codec_filters: int = 4
    codec_lstm_layers: int = 1
    codebook_size: int = 64
    num_codebooks: int = 4
    width: int = 32
    layers: int = 2
    ffn_dim: int = 64
    heads: int = 4


def tiny_musicgen(seed: int = 0, *, melody: bool = False, sizes: MusicGenSizes = MusicGenSizes()) -> tuple[
        "MusicgenForConditionalGeneration | MusicgenMelodyForConditionalGeneration",
        "MusicgenProcessor | MusicgenMelodyProcessor"]:
    """A random MusicGen (or MusicGen-Melody, chroma-conditioned) at ``sizes``, 32 kHz mono, and its processor.

    EnCodec's codebooks start as zeros (real ones are learned), which would decode every token
    sequence to the same waveform and hide seed handling, so they are drawn at random too.
    """
    from transformers import (
        EncodecConfig,
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyFeatureExtractor,
        MusicgenMelodyForConditionalGeneration,
        MusicgenMelodyProcessor,
        MusicgenProcessor,
    )

    tokenizer = tiny_t5_tokenizer()
    ratios = [8, 5, 4, 4]
    frame_rate = TINY_MUSICGEN_SAMPLE_RATE / math.prod(ratios)
    kbps = sizes.num_codebooks * frame_rate * math.log2(sizes.codebook_size) / 1000
    audio = EncodecConfig(sampling_rate=TINY_MUSICGEN_SAMPLE_RATE, hidden_size=sizes.codec_hidden,
                          num_filters=sizes.codec_filters, upsampling_ratios=ratios, target_bandwidths=[kbps],
                          codebook_size=sizes.codebook_size, num_lstm_layers=sizes.codec_lstm_layers,
                          num_residual_layers=1, normalize=False)
    special = sizes.codebook_size  # the decoder's start / pad token, one past the codes
    decoder = (MusicgenMelodyDecoderConfig if melody else MusicgenDecoderConfig)(
        vocab_size=sizes.codebook_size, hidden_size=sizes.width, num_hidden_layers=sizes.layers,
        ffn_dim=sizes.ffn_dim, num_attention_heads=sizes.heads, num_codebooks=sizes.num_codebooks,
        pad_token_id=special, bos_token_id=special, decoder_start_token_id=special)
    text = t5_config(len(tokenizer), sizes.text_width)
    with quiet_musicgen_special_tokens(), torch.random.fork_rng(devices=[]):
        if melody:
            config = MusicgenMelodyConfig(text_encoder=text, audio_encoder=audio, decoder=decoder, num_chroma=12,
                                          chroma_length=235)
        else:
            config = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
        torch.manual_seed(seed)
        model = (MusicgenMelodyForConditionalGeneration if melody else MusicgenForConditionalGeneration)(config)
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
    # transformers 5.x takes the special tokens from the generation config.
    gc = model.generation_config
    gc.decoder_start_token_id = gc.pad_token_id = gc.bos_token_id = model.decoder.config.decoder_start_token_id
    if melody:
        extractor = MusicgenMelodyFeatureExtractor(sampling_rate=TINY_MUSICGEN_SAMPLE_RATE)
        return model.eval(), MusicgenMelodyProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=TINY_MUSICGEN_SAMPLE_RATE, padding_value=0.0)
    return model.eval(), MusicgenProcessor(feature_extractor=extractor, tokenizer=tokenizer)


def tiny_stable_audio(seed: int = 0) -> "StableAudioPipeline":
    """A tiny random Stable Audio pipeline (44.1 kHz stereo, at most 512 latents x 128 = ~1.49 s per clip)."""
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderOobleck(encoder_hidden_size=8, downsampling_ratios=[2, 4, 4, 4], decoder_channels=8,
                                 decoder_input_channels=4, audio_channels=2, channel_multiples=[1, 2, 2, 2],
                                 sampling_rate=TINY_STABLE_AUDIO_SAMPLE_RATE)
        transformer = StableAudioDiTModel(sample_size=512, in_channels=4, num_layers=2, attention_head_dim=8,
                                          num_attention_heads=2, num_key_value_attention_heads=1, out_channels=4,
                                          cross_attention_dim=16, time_proj_dim=16, global_states_input_dim=32,
                                          cross_attention_input_dim=16)
        projection = StableAudioProjectionModel(text_encoder_dim=32, conditioning_dim=16, min_value=0, max_value=32)
        text_encoder = T5EncoderModel(t5_config(len(tokenizer)))
    scheduler = CosineDPMSolverMultistepScheduler(solver_order=2, prediction_type="v_prediction",
                                                  sigma_data=1.0, sigma_schedule="exponential")
    pipe = StableAudioPipeline(vae=vae, text_encoder=text_encoder.eval(), projection_model=projection,
                               tokenizer=tokenizer, transformer=transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_generator(kind: str, seed: int = 0, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                   batch_size: int = 1) -> "Generator":
    """Tiny model ``kind`` (one of `TINY_KINDS`) behind its real `Generator` class, named ``tiny-<kind>``.

    This is what the registry names ``tiny-musicgen`` / ``tiny-musicgen-melody`` / ``tiny-stable-audio`` build.
    """
    name = f"tiny-{kind}"
    if kind == "stable-audio":
        from generators.stable_audio import StableAudioGenerator

        pipeline = tiny_stable_audio(seed).to(device=device, dtype=dtype)
        return StableAudioGenerator(pipeline, name=name, batch_size=batch_size)
    if kind in ("musicgen", "musicgen-melody"):
        from generators.musicgen import MusicGenGenerator, MusicGenMelodyGenerator

        melody = kind == "musicgen-melody"
        model, processor = tiny_musicgen(seed, melody=melody)
        cls = MusicGenMelodyGenerator if melody else MusicGenGenerator
        return cls(model.to(device=device, dtype=dtype), processor, name=name, batch_size=batch_size)
    raise ConfigError(f"unknown tiny model kind {kind!r}; expected one of {', '.join(TINY_KINDS)}")


def save_tiny(kind: str, path: str | Path, seed: int = 0) -> Path:
    """Build tiny model ``kind`` (one of `TINY_KINDS`) and save it as a ``from_pretrained``-loadable
    directory at ``path`` (to exercise the real loading code)."""
    path = Path(path)
    generator = tiny_generator(kind, seed)
    if kind == "stable-audio":
        generator.pipeline.save_pretrained(path, safe_serialization=True)
    else:
        generator.model.save_pretrained(path, safe_serialization=True)
        generator.processor.save_pretrained(path)
    return path


def _tiny_audiocraft_config() -> dict:
    """An audiocraft training config at toy size: SEANet EnCodec (32 kHz, 25 Hz, 4 x 64 codes) + a
    2-layer LM with a lookup-table text conditioner (no tokenizer or spaCy model to download)."""
    return {
        "device": "cpu", "dtype": "float32", "compression_model": "encodec", "lm_model": "transformer_lm",
        "dataset": {"segment_duration": 30},  # audiocraft's max_duration; must exceed its 18 s stride
        "encodec": {"autoencoder": "seanet", "quantizer": "rvq", "sample_rate": TINY_MUSICGEN_SAMPLE_RATE,
                    "channels": 1, "causal": False, "renormalize": False},
        "seanet": {"dimension": 16, "channels": 1, "causal": False, "n_filters": 4, "n_residual_layers": 1,
                   "ratios": [10, 8, 16], "activation": "ELU", "activation_params": {"alpha": 1.0},
                   "norm": "weight_norm", "norm_params": {}, "kernel_size": 7, "last_kernel_size": 7,
                   "residual_kernel_size": 3, "dilation_base": 2, "pad_mode": "constant", "true_skip": True,
                   "compress": 2, "lstm": 0, "disable_norm_outer_blocks": 0, "encoder": {},
                   "decoder": {"trim_right_ratio": 1.0, "final_activation": None, "final_activation_params": None}},
        "rvq": {"n_q": 4, "q_dropout": False, "bins": 64, "decay": 0.99, "kmeans_init": False, "kmeans_iters": 1,
                "threshold_ema_dead_code": 2, "orthogonal_reg_weight": 0.0,
                "orthogonal_reg_active_codes_only": False},
        "transformer_lm": {"dim": 32, "num_heads": 2, "num_layers": 2, "hidden_scale": 2, "n_q": 4, "card": 64,
                           "dropout": 0.0, "activation": "gelu", "norm_first": True, "bias_ff": False,
                           "bias_attn": False, "bias_proj": False, "causal": True, "custom": False,
                           "memory_efficient": False, "attention_as_float32": False, "layer_scale": None,
                           "positional_embedding": "sin", "xpos": False, "checkpointing": "none",
                           "weight_init": None, "depthwise_init": None, "zero_bias_init": False,
                           "norm": "layer_norm", "cross_attention": False, "qk_layer_norm": False,
                           "qk_layer_norm_cross": False, "attention_dropout": None, "kv_repeat": 1,
                           "two_step_cfg": False, "emb_lr": None, "past_context": None},
        "codebooks_pattern": {"modeling": "delay", "delay": {"delays": [0, 1, 2, 3], "flatten_first": 0,
                                                             "empty_initial": 0}},
        "classifier_free_guidance": {"training_dropout": 0.0, "inference_coef": 3.0},
        "attribute_dropout": {},
        "fuser": {"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1, "sum": [], "prepend": [],
                  "cross": ["description"], "input_interpolate": []},
        "conditioners": {"description": {"model": "lut", "lut": {"n_bins": 64, "dim": 16, "tokenizer": "noop"}}},
    }


def save_tiny_audiocraft_musicgen(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random audiocraft MusicGen in audiocraft's export layout (``state_dict.bin`` +
    ``compression_state_dict.bin``), loadable with ``MusicGen.get_pretrained(path)``. Needs audiocraft."""
    from omegaconf import OmegaConf

    from generators.audiocraft_backend import import_audiocraft

    import_audiocraft()
    from audiocraft.models import builders

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = OmegaConf.create(_tiny_audiocraft_config())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        compression, lm = builders.get_compression_model(cfg), builders.get_lm_model(cfg)
    yaml_cfg = OmegaConf.to_yaml(cfg)  # a plain string: loads with torch.load(weights_only=True)
    torch.save({"xp.cfg": yaml_cfg, "best_state": compression.state_dict()}, path / "compression_state_dict.bin")
    torch.save({"xp.cfg": yaml_cfg, "best_state": lm.state_dict()}, path / "state_dict.bin")
    return path
