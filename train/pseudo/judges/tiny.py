"""A tiny random Qwen2-Audio judge that builds offline in seconds, for tests and ``--tiny`` smoke runs.

The folder holds what a hub checkpoint holds (``config.json``, weights, a tokenizer trained here
with `tokenizers` that has Qwen's chat and audio special tokens, a Whisper feature-extractor
config, the processor config), so `LocalAudioLLMJudge.from_pretrained` loads it through the real code path. Its
answers are garbage (random weights): every verdict is a recorded parse error.
"""

from __future__ import annotations

from pathlib import Path

from cmirm_plugin.cache import cache_root

TINY_VERSION = "1"
_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
_CORPUS = ["alignment: A\nmusicality: B\nalignment: tie\nmusicality: A", "Clip A: Clip B: Reference clip",
           "Instruction given to the music generator: Description: Lyrics: (none)",
           "Compare clip A with clip B on each criterion: which clip follows the instruction better?",
           "which clip is better music (sound quality, coherence, arrangement, performance)",
           "You are an expert music critic. Answer with exactly one line per criterion, and nothing else."]


def build_tiny_audio_llm(root: str | Path, seed: int = 0) -> Path:
    """Write a tiny Qwen2-Audio checkpoint with its processor to ``root``; return ``root``.

    Audio: 16 kHz, 16 mel bins, 1 s windows (25 audio tokens per clip); text: 16 dims, one layer.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (PreTrainedTokenizerFast, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration,
                              Qwen2AudioProcessor, WhisperFeatureExtractor)

    root = Path(root)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=_SPECIAL[1:])
    features = WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, chunk_length=1, n_fft=400)
    processor = Qwen2AudioProcessor(feature_extractor=features, tokenizer=tokenizer)
    config = Qwen2AudioConfig(
        audio_config=dict(num_mel_bins=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16,
                          max_source_positions=50),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        audio_token_index=processor.audio_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(str(root))
    processor.save_pretrained(str(root))
    return root


def default_tiny_audio_llm() -> Path:
    """The tiny judge cached under `cmirm_plugin.cache.cache_root` (``$CMIRM_CACHE``), built once (file-locked)."""
    from filelock import FileLock

    folder = cache_root() / f"tiny-audio-llm-v{TINY_VERSION}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "processor_config.json").is_file():     # written last: its presence means a full build
            build_tiny_audio_llm(folder)
    return folder
