"""`TrainConfig`: every setting of a training run; each field's ``help`` is also its CLI help.

``cmirm train`` builds its options from these fields (``batch_size`` -> ``--batch-size``), so the
Python API and the command line cannot drift apart. Stage defaults: ``pretrain`` (pseudo-labelled
pairs) smooths labels by 0.1, ``finetune`` (human pairs) by 0.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, get_args

from cmirm_plugin.cache import cache_root
from cmirm_plugin.errors import ConfigError
from train.reporters import ReportTo

Stage = Literal["pretrain", "finetune"]
#: Label smoothing of each stage when ``label_smoothing`` is not given.
STAGE_LABEL_SMOOTHING = {"pretrain": 0.1, "finetune": 0.0}
#: Fields that may change when a run is resumed (they do not change the arithmetic of training).
RESUMABLE_CHANGES = frozenset({"resume", "device", "progress", "cache_dir", "encode_batch_size", "log_steps",
                               "save_steps", "skip_invalid", "report_to"})


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


def default_cache_dir() -> Path:
    """``$CMIRM_CACHE/features`` (default ``~/.cache/cmirm/features``), shared by all runs."""
    return cache_root() / "features"


@dataclass
class TrainConfig:
    """A training run of the CMI-RM reward model (see ``cmirm train --help``)."""

    pairs: Path = _help("Preference pairs, JSONL in the CMI-Pref layout (audio-path, audio2, prompt, lyrics, "
                        "ref-audio-path, preference-*, confidence_preference-*, split).")
    out: Path = _help("Output folder: best/ and last/ checkpoints (released layout), metrics/, train_config.json.")
    dataset_root: Optional[Path] = _help("Folder the pair file's relative paths start from [default: the pair "
                                         "file's folder].", default=None)
    stage: Stage = _help("pretrain (pseudo-labelled pairs, label smoothing 0.1) or finetune (human pairs, "
                         "smoothing 0); only the defaults differ.", default="pretrain")
    init: Optional[str] = _help("Start from this released-layout folder (model.safetensors + config.yaml), e.g. "
                                "the pretrain run's best/; adapters in its text_lora/ are attached.", default=None)
    model_config: Optional[Path] = _help("Build a fresh model from this config.yaml (heads random, towers from "
                                         "its model_name).", default=None)
    towers: Optional[str] = _help("MuQ-MuLan towers (hub id or local folder) for a fresh model; overrides the "
                                  "config's model_name [default: OpenMuQ/MuQ-MuLan-large].", default=None)
    tiny: bool = _help("Fresh tiny random model over tiny offline towers (smoke runs; scores are meaningless).",
                       default=False)
    epochs: int = _help("Passes over the training pairs.", default=3)
    batch_size: int = _help("Pairs per optimisation step.", default=16)
    lr: float = _help("Peak learning rate of AdamW.", default=1e-4)
    weight_decay: float = _help("AdamW weight decay (not applied to biases, norms and null embeddings).",
                                default=0.01)
    warmup: float = _help("Fraction of all steps spent warming the learning rate up linearly from 0; cosine "
                          "decay to 0 follows.", default=0.05)
    max_grad_norm: float = _help("Clip the gradient norm to this (0 = no clipping).", default=1.0)
    label_smoothing: Optional[float] = _help("Targets 1-eps / eps instead of 1 / 0 [default: 0.1 for pretrain, 0 "
                                             "for finetune].", default=None)
    both: Literal["target", "skip"] = _help("'both' / 'neither' votes: 'target' = aim at 0.5, 'skip' = mask that "
                                            "axis.", default="target")
    confidence_weighting: bool = _help("Weight each vote by confidence / 5 (CMI-Pref 1-5 scale; no confidence "
                                       "= weight 1).", default=False)
    missing: Literal["mask", "null"] = _help("Absent text / lyrics / reference: 'mask' (empty string / masked, as "
                                             "released inference) or 'null' (learned null embeddings).",
                                             default="mask")
    train_split: Optional[str] = _help("Train on pairs whose split is this (or absent).", default="train")
    eval_split: Optional[str] = _help("Evaluate each epoch on pairs whose split is this.", default="test")
    eval_fraction: float = _help("When no pair has the eval split: hold out this fraction of the training pairs "
                                 "by seeded hash (0 = no evaluation).", default=0.1)
    max_pairs: Optional[int] = _help("Train on at most this many pairs, a seeded subset (nested across sizes: "
                                     "for data-scaling studies).", default=None)
    skip_invalid: bool = _help("Leave out invalid lines of the pair file (reported) instead of stopping.",
                               default=False)
    max_dur: float = _help("Seconds of each clip (and reference) the model sees, as --max-dur at inference.",
                           default=120.0)
    cache_dir: Optional[Path] = _help("Feature cache folder, shared by runs and stages [default: "
                                      "$CMIRM_CACHE/features or ~/.cache/cmirm/features].", default=None)
    cache_dtype: Literal["float16", "bfloat16", "float32"] = _help("Storage dtype of cached features.",
                                                                   default="float16")
    encode_batch_size: int = _help("Clips per tower batch while encoding.", default=8)
    feature_cache: bool = _help("Read frozen towers' features from the cache; --no-feature-cache encodes every "
                                "batch live (slow; for comparisons).", default=True)
    lora_r: int = _help("LoRA rank on the XLM-R text encoder (0 = no LoRA; the text tower then stays frozen and "
                        "cached).", default=0)
    lora_alpha: int = _help("LoRA alpha.", default=16)
    lora_dropout: float = _help("LoRA dropout.", default=0.1)
    lora_targets: list[str] = _help("XLM-R modules that get adapters (repeat the option).",
                                    default_factory=lambda: ["query", "key", "value", "dense"])
    merge_lora: bool = _help("Merge LoRA into the text-encoder weights when saving (plain from_pretrained "
                             "loads it); otherwise adapters go to text_lora/.", default=True)
    train_muq_depth: Optional[int] = _help("Unfreeze the last N MuQ conformer layers (audio then runs live, not "
                                           "cached) [default: the model config's value].", default=None)
    gradient_checkpointing: bool = _help("Recompute transformer activations in the backward pass (less memory).",
                                         default=False)
    bf16: bool = _help("bf16 autocast for the forward pass (CUDA only).", default=False)
    seed: int = _help("Seed of model initialisation, data order, held-out split and dropout.", default=0)
    device: Optional[str] = _help("cpu, cuda, cuda:1 ... [default: cuda if available].", default=None)
    save_steps: int = _help("Also save last/ (for resuming) every this many steps (0 = only at epoch ends).",
                            default=500)
    log_steps: int = _help("Write step metrics every this many steps.", default=10)
    report_to: ReportTo = _help("Also send the step and epoch metrics to 'tensorboard' (event files in "
                                "OUT/tensorboard) or 'wandb' (W&B; WANDB_MODE=offline works without network), "
                                "as steps/<column> and epochs/<column>; needs the extra of that name.",
                                default="none")
    resume: bool = _help("Continue the run in --out from its last/ checkpoint.", default=False)
    progress: bool = _help("Show progress bars.", default=True)

    def __post_init__(self) -> None:
        for name in ("pairs", "out", "dataset_root", "model_config", "cache_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))
        positive = ("epochs", "batch_size", "encode_batch_size", "log_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train option '{name}': must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "max_dur"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"train option '{name}': must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "max_grad_norm", "lora_dropout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train option '{name}': must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"train option 'warmup': a fraction of the steps in [0, 1), got {self.warmup}")
        if self.stage not in STAGE_LABEL_SMOOTHING:
            raise ConfigError(f"train option 'stage': expected pretrain or finetune, got {self.stage!r}")
        if self.report_to not in get_args(ReportTo):
            raise ConfigError(f"train option 'report_to': expected one of {', '.join(get_args(ReportTo))}, "
                              f"got {self.report_to!r}")
        if self.lora_r < 0 or self.save_steps < 0 or (self.train_muq_depth or 0) < 0:
            raise ConfigError("train options 'lora_r', 'save_steps' and 'train_muq_depth' must be >= 0")
        sources = [name for name in ("init", "model_config", "tiny") if getattr(self, name)]
        if len(sources) > 1:
            raise ConfigError(f"choose one model source, got {' and '.join('--' + s.replace('_', '-') for s in sources)}")
        if self.init and self.towers:
            raise ConfigError("--towers applies to a fresh model; with --init the towers come from the init "
                              "folder's config.yaml (edit its model_name instead)")

    @property
    def smoothing(self) -> float:
        """The label smoothing in effect (the stage default unless given)."""
        return STAGE_LABEL_SMOOTHING[self.stage] if self.label_smoothing is None else self.label_smoothing

    @property
    def features_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (paths as strings)."""
        return {f.name: (str(v) if isinstance(v, Path) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    def changed_fields(self, saved: dict[str, Any]) -> list[str]:
        """Fields that differ from a saved run's config and would change the training arithmetic."""
        current = json.loads(json.dumps(self.to_dict()))
        return sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
