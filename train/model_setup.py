"""The model a run trains: where it comes from, which parts train, and how many parameters that is.

Sources (one of): ``init`` (a released-layout folder), ``model_config`` (a config.yaml, fresh
heads), ``tiny`` (tiny offline towers), or the default config (MuQ-MuLan-large towers from the
hub); ``towers`` overrides a fresh model's towers. Then ``train_muq_depth`` unfreezes MuQ layers
and ``lora_r`` adds text-encoder adapters.

Unmerged adapters in an ``init`` folder's ``text_lora/`` are attached: with ``lora_r`` 0 they stay
frozen (the text tower is then frozen and cached as a whole); with the rank, alpha, dropout and
targets they were trained with they train on; any other LoRA setting is refused, naming the saved one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cmirm_plugin.errors import CheckpointError, ConfigError
from cmirm_plugin.model.config import CMIRMConfig
from cmirm_plugin.model.loading import CONFIG_NAME, build_model
from cmirm_plugin.model.reward_model import CMIRewardModel
from cmirm_plugin.model.tiny import default_tiny_checkpoint
from train.config import TrainConfig
from train.lora import ADAPTER_DIR, apply_text_lora, load_adapters


@dataclass(frozen=True)
class ParameterCount:
    """Parameter counts of a model being trained."""

    total: int
    trainable: int
    lora: int
    towers: int

    def describe(self) -> str:
        share = 100.0 * self.trainable / max(1, self.total)
        return (f"trainable parameters: {self.trainable:,} of {self.total:,} ({share:.2f} %); "
                f"of which text-encoder LoRA {self.lora:,}, other tower parameters {self.towers:,}")


def count_parameters(model: CMIRewardModel) -> ParameterCount:
    """Total and trainable parameter counts, with the trainable ones inside the towers broken out."""
    total = trainable = lora = towers = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            if ".lora_" in name:
                lora += param.numel()
            elif name.startswith(("audio_module.", "text_module.")):
                towers += param.numel()
    return ParameterCount(total, trainable, lora, towers)


def load_for_training(directory: str | Path, trainable_adapters: bool = True) -> CMIRewardModel:
    """A released-layout folder (`CMIRewardModel.from_pretrained`, which warns about an unclean load),
    with the text-encoder adapters of its ``text_lora/`` attached if present."""
    model = CMIRewardModel.from_pretrained(str(directory))
    if (Path(directory) / ADAPTER_DIR).is_dir():
        load_adapters(model, directory, trainable=trainable_adapters)
    return model


def saved_adapter_settings(directory: str | Path) -> dict[str, Any] | None:
    """``r``, ``alpha``, ``dropout`` and ``targets`` of the adapters in ``directory/text_lora`` (None: no adapters)."""
    path = Path(directory) / ADAPTER_DIR / "adapter_config.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        targets = saved["target_modules"]
        return {"r": int(saved["r"]), "alpha": saved["lora_alpha"], "dropout": float(saved["lora_dropout"]),
                "targets": sorted([targets] if isinstance(targets, str) else targets)}
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"'{path}': unreadable adapter config ({type(exc).__name__}: {exc})") from exc


def _adapters_trainable(config: TrainConfig, saved: dict[str, Any]) -> bool:
    """Whether the init folder's adapters train (``lora_r`` 0: no) or a refusal when the LoRA options differ."""
    if config.lora_r == 0:
        return False
    wanted = {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": float(config.lora_dropout),
              "targets": sorted(config.lora_targets)}
    if wanted != saved:
        given = ", ".join(f"{k}={wanted[k]}" for k in wanted if wanted[k] != saved[k])
        options = " ".join(f"--lora-targets {t}" for t in saved["targets"])
        raise ConfigError(
            f"--init {config.init} holds unmerged LoRA adapters ({ADAPTER_DIR}/) with r={saved['r']}, "
            f"alpha={saved['alpha']}, dropout={saved['dropout']:g}, targets={saved['targets']}, but this run asks for "
            f"{given}. To train them on, pass --lora-r {saved['r']} --lora-alpha {saved['alpha']} --lora-dropout "
            f"{saved['dropout']:g} {options}; to keep them frozen, --lora-r 0; for new adapters, start from a merged "
            f"save (--merge-lora) instead.")
    return True


def fresh_model_config(config: TrainConfig) -> CMIRMConfig:
    """The architecture of a fresh model: --model-config, --tiny, or the released defaults; --towers applied."""
    if config.model_config is not None:
        model_config = CMIRMConfig.from_yaml(config.model_config)
    elif config.tiny:
        model_config = CMIRMConfig.from_yaml(default_tiny_checkpoint() / CONFIG_NAME)
    else:
        model_config = CMIRMConfig()
    if config.towers is not None:
        model_config.model_name = config.towers
    return model_config


def init_null_embeddings(model: CMIRewardModel, seed: int, std: float = 0.02) -> None:
    """Give all-zero null embeddings small random values, N(0, std^2), drawn from their own seeded generator.

    The release initialises them to zeros (spec §2.8). A zero token has no direction under the
    attention's QK L2-norm, whose gradient there is about 1/eps = 1e12: the first steps would then
    be spent entirely by gradient clipping on the null embeddings, and Adam's second moments for
    them would stay inflated for thousands of steps.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for null in (model.null_text_embedding, model.null_lyrics_embedding, model.null_audio_embedding):
            if not bool(null.any()):
                null.copy_(torch.randn(null.shape, generator=generator) * std)


def build_training_model(config: TrainConfig) -> tuple[CMIRewardModel, str]:
    """The model to train and a sentence saying where it came from (for the log)."""
    saved = saved_adapter_settings(config.init) if config.init is not None else None
    train_saved = saved is not None and _adapters_trainable(config, saved)
    if config.init is not None:
        model = CMIRewardModel.from_pretrained(str(config.init))
        source = f"initialised from {config.init}"
        if saved is not None:
            source += f" with its {ADAPTER_DIR}/ adapters ({'training' if train_saved else 'frozen: --lora-r 0'})"
    else:
        model_config = fresh_model_config(config)
        model, report = build_model(model_config, seed=config.seed)
        if report.missing_towers:
            raise CheckpointError(f"towers '{model_config.model_name}' lack {len(report.missing_towers)} weights "
                                    f"(e.g. {report.missing_towers[0]}); they would train on random features")
        init_null_embeddings(model, config.seed)
        source = f"fresh model (seed {config.seed}) over towers {model_config.model_name}"
    if config.train_muq_depth is not None:
        model.config.train_muq_depth = config.train_muq_depth
        model.apply_freezing()
    # Adapters last: freezing the towers above must not freeze them.
    if saved is not None:
        load_adapters(model, str(config.init), trainable=train_saved)
    elif config.lora_r:
        apply_text_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, source
