"""Tiny random CMI-RM models that build offline in seconds, for tests and ``--tiny`` smoke runs.

`build_tiny_towers` writes three folders laid out like the hub repos the real model uses
(MuQ-MuLan: ``config.json`` + its weights with ``mulan.*`` keys, as ``model.safetensors`` or, as the
released repo ships them, ``pytorch_model.bin``; MuQ: ``config.json``; XLM-R: ``config.json`` + a
tokenizer trained here with `tokenizers`), so that the real loading code runs on them.
`build_tiny_checkpoint` adds a released-layout CMI-RM folder.
Their scores are meaningless: the weights are random. ``size="full"`` builds the same layout at the
released sizes (MuQ-large, XLM-R base, 768-d MuLan), still with random weights and the tiny
tokenizer, for timing the real architecture offline.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from cmirm_plugin.cache import TINY_MODEL_VERSION, cache_root
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.model.config import CMIRMConfig
from cmirm_plugin.model.loading import PICKLE_WEIGHTS_NAME, WEIGHTS_NAME, model_to_hub_keys
from cmirm_plugin.model.mulan import MuLanAudioTower, MuLanConfig, MuLanTextTower
from cmirm_plugin.model.muq import MuQConfig

TINY_DIM = 32
#: Tower sizes `build_tiny_towers` builds: the test towers, or the released architecture.
TowerSize = Literal["tiny", "full"]
#: How `build_tiny_towers` stores the MuQ-MuLan weights: safetensors, or a ``torch.save`` pickle like the hub repo.
MulanFormat = Literal["safetensors", "bin"]
#: (MuQ width, MuLan width, MuLan text depth, heads x dim_head) of each size.
_SIZES: dict[str, tuple[int, int, int, tuple[int, int]]] = {"tiny": (48, TINY_DIM, 2, (4, 8)),
                                                            "full": (1024, 768, 8, (8, 64))}

_CORPUS = [
    "upbeat pop song with bright piano and drums", "slow acoustic ballad with female vocal and guitar",
    "energetic rock with distorted electric guitar", "calm ambient pad with soft synth textures",
    "jazz trio with walking bass and brushed drums", "orchestral film score with strings and brass",
    "lo-fi hip hop beat with vinyl crackle", "la la la yeah yeah sing with me tonight",
    "i walk alone under the silver moon oh my heart oh my love", "fast tempo 140 bpm dance track in a minor",
    "slow tempo 60 bpm lullaby in c major", "a melody in the style of the reference clip",
]


def tiny_muq_config() -> MuQConfig:
    return MuQConfig(conv_dim=8, encoder_dim=48, encoder_depth=2, codebook_size=64, w2v2_config={
        "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 96,
        "conv_depthwise_kernel_size": 31, "position_embeddings_type": "rotary", "rotary_embedding_base": 10000,
        "hidden_act": "swish", "layer_norm_eps": 1e-5, "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16, "do_stable_layer_norm": True,
    })


def _mulan_json(audio_dir: Path, text_dir: Path, size: TowerSize = "tiny") -> dict:
    muq_dim, dim, text_depth, (heads, dim_head) = _SIZES[size]
    return {
        "mulan": {"sr": 24000, "clip_secs": 10, "dim_latent": 16},
        "audio_model": {"name": str(audio_dir), "model_dim": muq_dim, "use_layer_idx": -1},
        "text_model": {"name": str(text_dir), "model_dim": None, "use_layer_idx": -1},
        "audio_transformer": {"dim": dim, "tf_depth": 0, "heads": heads, "dim_head": dim_head, "ff_mult": 4},
        "text_transformer": {"dim": dim, "tf_depth": text_depth, "max_seq_len": 1024, "heads": heads,
                             "dim_head": dim_head, "ff_mult": 4},
    }


def _xlmr_json(vocab_size: int, size: TowerSize = "tiny") -> dict:
    if size == "full":   # XLM-R base (its 250k vocabulary; the tiny tokenizer's ids are all valid in it)
        shape = {"vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "intermediate_size": 3072}
    else:
        shape = {"vocab_size": vocab_size, "hidden_size": TINY_DIM, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 64}
    return {"model_type": "xlm-roberta", "architectures": ["XLMRobertaForMaskedLM"], **shape,
            "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1, "bos_token_id": 0,
            "eos_token_id": 2, "layer_norm_eps": 1e-5, "hidden_act": "gelu"}


def train_tiny_tokenizer(directory: Path) -> int:
    """Write an XLM-R-like Unigram tokenizer (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3) to ``directory``.

    The vocabulary is built, not trained: the corpus words (``▁word``), ``▁`` and single characters,
    scored by length. The `tokenizers` Unigram trainer orders its pieces differently on every run,
    which made every build of the tiny model a different model; built, the same ids come out on
    every machine, so ``tiny-v<version>`` names one model everywhere (a Ray worker with another
    cache included).
    """
    import string

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({word for line in _CORPUS for word in line.split()})
    chars = string.ascii_lowercase + string.digits + string.punctuation
    pieces = dict.fromkeys([f"\u2581{w}" for w in words] + ["\u2581"] + list(chars))
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    tok = Tokenizer(models.Unigram(specials + [(p, -float(len(p))) for p in pieces], unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(r"\s+", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_input_names=["input_ids", "attention_mask"],
                                   model_max_length=512)
    fast.save_pretrained(str(directory))
    return tok.get_vocab_size()


def build_tiny_towers(root: str | Path, seed: int = 0, size: TowerSize = "tiny",
                      mulan_format: MulanFormat = "safetensors") -> Path:
    """Write MuQ-MuLan / MuQ / XLM-R folders with random weights under ``root``; return the MuQ-MuLan folder.

    ``size="tiny"`` (default): ~0.2M parameters, for tests. ``size="full"``: the released sizes
    (~0.6B parameters; building takes a while and a few GB of memory), for benchmarks.
    ``mulan_format="bin"`` writes the MuQ-MuLan weights as ``pytorch_model.bin`` (``torch.save`` of the
    state dict), the layout of ``OpenMuQ/MuQ-MuLan-large``.
    """
    if size not in _SIZES:
        raise ConfigError(f"tower size must be one of {', '.join(_SIZES)}, got {size!r}")
    if mulan_format not in ("safetensors", "bin"):
        raise ConfigError(f"MuQ-MuLan weights format must be safetensors or bin, got {mulan_format!r}")
    root = Path(root)
    text_dir, audio_dir, mulan_dir = root / f"xlm-roberta-{size}", root / f"muq-{size}", root / f"muq-mulan-{size}"
    for d in (text_dir, audio_dir, mulan_dir):
        d.mkdir(parents=True, exist_ok=True)
    vocab = train_tiny_tokenizer(text_dir)
    xlmr_json = _xlmr_json(vocab, size)
    (text_dir / "config.json").write_text(json.dumps(xlmr_json, indent=1))
    muq = tiny_muq_config() if size == "tiny" else MuQConfig()
    (audio_dir / "config.json").write_text(json.dumps(muq.__dict__, indent=1))
    mulan_json = _mulan_json(audio_dir, text_dir, size)
    (mulan_dir / "config.json").write_text(json.dumps(mulan_json, indent=1))
    from transformers import XLMRobertaConfig

    mulan = MuLanConfig.from_dict(mulan_json)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        audio = MuLanAudioTower(muq, mulan)
        text = MuLanTextTower(XLMRobertaConfig(**xlmr_json), mulan)
        for module in (audio, text):   # non-trivial values everywhere, like trained weights
            for name, p in module.named_parameters():
                if "transformer" in name and ("scale" in name or "gamma" in name):
                    p.data.uniform_(0.5, 1.5)
    state = {**{f"audio_module.{k}": v for k, v in audio.state_dict().items()},
             **{f"text_module.{k}": v for k, v in text.state_dict().items()}}
    hub = model_to_hub_keys(state)
    # present in the real repo, unused by CMI-RM
    hub["mulan.audio_to_latents.weight"] = torch.zeros(16, mulan.audio_transformer.dim)
    hub = {k: v.contiguous() for k, v in hub.items()}
    names = (PICKLE_WEIGHTS_NAME, WEIGHTS_NAME)
    weights, other = names if mulan_format == "bin" else names[::-1]
    (mulan_dir / other).unlink(missing_ok=True)   # a rebuild in another format must not leave both behind
    if mulan_format == "bin":
        torch.save(OrderedDict(hub), mulan_dir / weights)   # what `torch.save(model.state_dict())` writes
    else:
        save_file(hub, str(mulan_dir / weights))
    return mulan_dir


def tiny_config(model_name: str | Path, **overrides) -> CMIRMConfig:
    """A small CMI-RM config over tiny towers (dim 32, 4 heads of 8, prompt depth 1, joint depth 2)."""
    values = dict(model_name=str(model_name), dim=TINY_DIM, mlp_dim=24, dim_head=8, heads=4, prompt_tf_depth=1,
                  joint_tf_depth=2)
    values.update(overrides)
    return CMIRMConfig(**values)


def build_tiny_checkpoint(root: str | Path, seed: int = 0, **config_overrides) -> Path:
    """Tiny towers plus a released-layout CMI-RM folder (``root/cmi-rm-tiny``) with random weights."""
    from cmirm_plugin.model.loading import build_model, save_pretrained

    root = Path(root)
    mulan_dir = build_tiny_towers(root, seed)
    model, _ = build_model(tiny_config(mulan_dir, **config_overrides), seed=seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        for name in ("null_text_embedding", "null_lyrics_embedding", "null_audio_embedding"):
            getattr(model, name).data.normal_(0, 0.5)
    out = root / "cmi-rm-tiny"
    save_pretrained(model, out)
    return out


def default_tiny_checkpoint() -> Path:
    """A tiny checkpoint cached under `cmirm_plugin.cache.cache_root` (``$CMIRM_CACHE``), built once.

    The CMI-RM weights file is written last, so its presence means the build finished; a file
    lock keeps concurrent processes (e.g. Ray actors) from building it twice.
    """
    from filelock import FileLock

    cache = cache_root() / f"tiny-v{TINY_MODEL_VERSION}"
    ckpt = cache / "cmi-rm-tiny"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):
        if not (ckpt / WEIGHTS_NAME).is_file():
            build_tiny_checkpoint(cache)
    return ckpt
