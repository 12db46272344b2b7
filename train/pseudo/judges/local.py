"""An audio-language model run locally with transformers (Qwen2-Audio, Qwen2.5-Omni, Qwen3-Omni).

The model class is chosen from the checkpoint's ``model_type`` (`FAMILIES`), never from remote
code (``trust_remote_code`` is always off). For the omni models only the *thinker* (the part that
writes text) is loaded from the full checkpoint: the talker and the vocoder are not needed for a
verdict. The `train.pseudo.prompt` template is rendered with the processor's own chat template
(audio parts become the model's audio placeholders), clips are fed at the feature extractor's
sample rate (mono, first ``max_dur`` s), decoding is greedy, and the answer goes through the strict
parser: an unusable answer is an error recorded for that pair and order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from cmirm_plugin.errors import ConfigError
from train.pseudo.judges.base import JudgeReply, PairView, judge_id
from train.pseudo.judges.clips import load_clip
from train.pseudo.prompt import PROMPT_VERSION, Prompt, build_prompt, parse_verdicts

#: ``model_type`` -> (transformers class, config attribute holding the text model's config or None).
FAMILIES: dict[str, tuple[str, str | None]] = {
    "qwen2_audio": ("Qwen2AudioForConditionalGeneration", None),
    "qwen2_5_omni": ("Qwen2_5OmniThinkerForConditionalGeneration", "thinker_config"),
    "qwen2_5_omni_thinker": ("Qwen2_5OmniThinkerForConditionalGeneration", None),
    "qwen3_omni_moe": ("Qwen3OmniMoeThinkerForConditionalGeneration", "thinker_config"),
    "qwen3_omni_moe_thinker": ("Qwen3OmniMoeThinkerForConditionalGeneration", None),
}


def load_model(model_id: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Any:
    """The text-generating model of a local folder or hub id (the thinker of an omni model), in eval mode.

    ``dtype`` defaults to bfloat16 on CUDA and float32 on CPU. Raises `ConfigError` for a
    ``model_type`` outside `FAMILIES`.
    """
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(model_id), trust_remote_code=False)
    if config.model_type not in FAMILIES:
        raise ConfigError(f"'{model_id}': model_type '{config.model_type}' is not a supported audio-language judge; "
                          f"supported: {', '.join(FAMILIES)}")
    class_name, sub_config = FAMILIES[config.model_type]
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = getattr(transformers, class_name).from_pretrained(
        str(model_id), config=getattr(config, sub_config) if sub_config else config, dtype=dtype,
        trust_remote_code=False)
    return model.to(device).eval()


def load_processor(model_id: str | Path) -> Any:
    """The processor (tokenizer, chat template, audio feature extractor) of a local folder or hub id.

    The omni models' processors also build image and video processors, which need torchvision.
    """
    import transformers

    try:
        return transformers.AutoProcessor.from_pretrained(str(model_id), trust_remote_code=False)
    except ImportError as exc:
        raise ConfigError(f"'{model_id}': its processor needs a package that is not installed ({exc}). The "
                          "Qwen2.5-Omni / Qwen3-Omni processors need torchvision (the build matching torch).") from exc


class LocalAudioLLMJudge:
    """Judge with a transformers audio-language model and its processor (module docstring).

    ``name`` identifies the model in the judge id (its folder or hub id); the id also holds the
    prompt version, the feature extractor's sample rate, ``max_dur`` and ``max_new_tokens``.
    """

    def __init__(self, model: Any, processor: Any, name: str, max_new_tokens: int = 16, max_dur: float = 30.0) -> None:
        if max_new_tokens < 1 or not max_dur > 0:
            raise ConfigError(f"max_new_tokens must be >= 1 and max_dur > 0, got {max_new_tokens}, {max_dur}")
        self.model = model
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.max_dur = float(max_dur)
        self.sample_rate = int(processor.feature_extractor.sampling_rate)
        self.id = judge_id("local", name, f"prompt-v{PROMPT_VERSION}", sr=self.sample_rate, max_dur=self.max_dur,
                           max_new_tokens=max_new_tokens)

    @classmethod
    def from_pretrained(cls, model_id: str | Path, device: str | None = None, dtype: torch.dtype | None = None,
                        name: str | None = None, **options: Any) -> "LocalAudioLLMJudge":
        """Load model and processor of ``model_id`` (folder or hub id); ``name`` defaults to ``model_id``."""
        return cls(load_model(model_id, device, dtype), load_processor(model_id), name or str(model_id), **options)

    def render(self, prompt: Prompt) -> str:
        """The prompt as the model's chat text, with the processor's audio placeholders, ready to generate."""
        content = [{"type": "text", "text": s.text} if s.kind == "text" else {"type": "audio"}
                   for s in prompt.segments]
        messages = [{"role": "system", "content": [{"type": "text", "text": prompt.system}]},
                    {"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def answer(self, prompt: Prompt) -> str:
        """The model's greedy reply to ``prompt`` (special tokens removed)."""
        audios = [load_clip(path, self.sample_rate, self.max_dur).waveform[0].numpy() for path in prompt.audios]
        inputs = self.processor(text=self.render(prompt), audio=audios, sampling_rate=self.sample_rate,
                                return_tensors="pt")
        inputs = inputs.to(self.model.device)
        out = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]

    def judge(self, view: PairView, axes: Sequence[str]) -> JudgeReply:
        answer = self.answer(build_prompt(view, axes))
        return JudgeReply(parse_verdicts(answer, axes), raw=answer)
