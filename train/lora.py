"""LoRA on the XLM-R text encoder (PEFT), and what a saved model holds when it is used.

`apply_text_lora` wraps ``model.text_module.model`` in a PEFT model (``FEATURE_EXTRACTION``;
default targets ``query, key, value, dense`` as the reference, spec §7). Only the adapters train;
the text tower then runs live on every batch (its features change, so they are not cached).

Saving (`released_state`, `save_adapters`):

* **merged** (default): each adapted ``Linear`` weight ``W + scale * B @ A`` is written under its
  plain XLM-R key (``text_module.model.encoder.layer.0.attention.self.query.weight`` ...) into
  ``model.safetensors``; the folder loads with plain `CMIRewardModel.from_pretrained`, which
  overlays those tower keys on the MuQ-MuLan weights.
* **unmerged**: ``model.safetensors`` holds the plain trainable part, the adapters go to
  ``text_lora/`` (PEFT's ``adapter_model.safetensors`` + ``adapter_config.json``), and
  ``config.yaml: text_lora_config`` records them; load with `load_adapters` (or
  `train.model_setup.load_for_training`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.lora import LoraLayer

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.model.reward_model import CMIRewardModel

#: Sub-folder of a saved model that holds unmerged text-encoder adapters.
ADAPTER_DIR = "text_lora"
DEFAULT_TARGETS = ("query", "key", "value", "dense")
_TEXT_MODEL = "text_module.model."
_PEFT_PREFIX = "base_model.model."
_ADAPTER = "default"


def has_text_lora(model: CMIRewardModel) -> bool:
    """Whether the text encoder carries LoRA adapters."""
    return isinstance(model.text_module.model, PeftModel)


def apply_text_lora(model: CMIRewardModel, r: int = 8, alpha: int = 16, dropout: float = 0.1,
                    target_modules: Sequence[str] = DEFAULT_TARGETS) -> None:
    """Add trainable LoRA adapters to the XLM-R text encoder (the rest of the model is unchanged)."""
    if has_text_lora(model):
        raise ConfigError("the text encoder already has LoRA adapters")
    if model.config.text_encoder_options.get("tune") == "all":
        raise ConfigError("LoRA cannot be combined with text_encoder.tune: all (the whole encoder already trains)")
    if r < 1:
        raise ConfigError(f"LoRA rank must be >= 1, got {r}")
    config = LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=list(target_modules), bias="none")
    model.text_module.model = get_peft_model(model.text_module.model, config)


def _lora_layers(model: CMIRewardModel) -> dict[str, LoraLayer]:
    """Adapted layers by their plain XLM-R module path (``encoder.layer.0.attention.self.query``)."""
    return {name[len(_PEFT_PREFIX):]: module for name, module in model.text_module.model.named_modules()
            if isinstance(module, LoraLayer)}


def merged_text_weights(model: CMIRewardModel) -> dict[str, torch.Tensor]:
    """``W + delta`` of every adapted layer, under the plain CMI-RM state-dict keys."""
    with torch.no_grad():
        return {f"{_TEXT_MODEL}{name}.weight": layer.base_layer.weight + layer.get_delta_weight(_ADAPTER)
                for name, layer in _lora_layers(model).items()}


def released_state(model: CMIRewardModel, merge: bool) -> dict[str, torch.Tensor]:
    """What ``model.safetensors`` holds: the trainable part without adapter tensors, plus merged weights."""
    state = {k: v for k, v in model.trainable_state_dict().items() if ".lora_" not in k}
    if has_text_lora(model) and merge:
        state.update(merged_text_weights(model))
    return state


def lora_config_record(model: CMIRewardModel) -> dict:
    """The adapters' settings in the reference's ``text_lora_config`` layout (spec §3.2)."""
    peft_config = model.text_module.model.peft_config[_ADAPTER]
    return {"use_lora": True, "lora_r": peft_config.r, "lora_alpha": peft_config.lora_alpha,
            "lora_dropout": peft_config.lora_dropout, "target_modules": sorted(peft_config.target_modules),
            "adapter_dir": ADAPTER_DIR}


def save_adapters(model: CMIRewardModel, directory: str | Path) -> Path:
    """Write the adapters with PEFT (safetensors) to ``directory/text_lora``."""
    out = Path(directory) / ADAPTER_DIR
    model.text_module.model.save_pretrained(str(out), safe_serialization=True)
    return out


def load_adapters(model: CMIRewardModel, directory: str | Path, trainable: bool = False) -> None:
    """Attach the adapters saved in ``directory/text_lora`` to a model loaded from ``directory``."""
    folder = Path(directory) / ADAPTER_DIR
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"'{folder}': no LoRA adapters (adapter_config.json) found")
    model.text_module.model = PeftModel.from_pretrained(model.text_module.model, str(folder), is_trainable=trainable)
