"""Checkpoints of a run: released-layout models (best/, last/) and the state needed to resume.

Layout of ``OUT``::

    best/   config.yaml, model.safetensors [, text_lora/], train_info.json   (best held-out accuracy)
    last/   the same, plus trainer/ (what resuming needs):
            trainer/trainer_state.json      step, epoch, batches done in the epoch, the epoch's metric sums
                                            so far, best so far, scheduler state, optimizer
                                            hyper-parameters, run config
            trainer/trainable.safetensors   every trainable tensor by its in-memory name (LoRA unmerged)
            trainer/optimizer.safetensors   AdamW moments and step counts ("state.<index>.<name>")
            trainer/rng.safetensors         torch CPU (and CUDA) generator states

Nothing is pickled. A folder is written under a temporary name and swapped in with renames, so
``last/`` is always a complete checkpoint; if a crash lands between the two renames, the
previous one is found under ``.last.old`` and restored by `find_last`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from cmirm_plugin.errors import CheckpointError
from cmirm_plugin.model.loading import save_state_dict
from cmirm_plugin.model.reward_model import CMIRewardModel
from train.lora import has_text_lora, lora_config_record, released_state, save_adapters

BEST, LAST = "best", "last"
TRAINER_DIR = "trainer"
STATE_FILE = "trainer_state.json"
TRAINABLE_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
INFO_FILE = "train_info.json"


@dataclass
class TrainState:
    """Where a run stands: resuming restores it and continues at ``global_step``.

    Mid-epoch, ``train_sums`` holds the running sums of the epoch's training metrics
    (`train.evaluation.PairwiseMetrics.state`) and ``window_norms`` the gradient norms since the
    last step line, so a resumed run logs the same epoch and step metrics as an uninterrupted one.
    """

    global_step: int = 0
    epoch: int = 0
    batches_done: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    data_fingerprint: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    train_sums: dict[str, Any] = field(default_factory=dict)
    window_norms: list[float] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainState":
        """A saved state; fields this version does not know (e.g. an older ``total_steps``) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``target`` (the old one is removed)."""
    tmp, old = target.with_name(f".{target.name}.tmp"), target.with_name(f".{target.name}.old")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def save_release(model: CMIRewardModel, directory: Path, merge_lora: bool, info: dict[str, Any]) -> None:
    """Write ``model`` in the released layout (see `train.lora` for what LoRA adds) and ``train_info.json``."""
    lora = has_text_lora(model)
    config = dataclasses.replace(model.config, text_lora_config=lora_config_record(model) if lora and not merge_lora
                                 else None)
    save_state_dict(config, released_state(model, merge=merge_lora), directory)
    if lora and not merge_lora:
        save_adapters(model, directory)
    (directory / INFO_FILE).write_text(json.dumps(info, indent=1))


def _optimizer_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict split into tensors (safetensors) and everything else (JSON)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        out.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return out


def save_last(out: Path, model: CMIRewardModel, optimizer: torch.optim.Optimizer,
              scheduler: torch.optim.lr_scheduler.LRScheduler, state: TrainState, run_config: dict[str, Any],
              merge_lora: bool, info: dict[str, Any]) -> Path:
    """Write ``out/last`` atomically: the released model plus everything resuming needs."""
    target = out / LAST
    with atomic_directory(target) as tmp:
        save_release(model, tmp, merge_lora, info)
        trainer = tmp / TRAINER_DIR
        trainer.mkdir()
        save_file({n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad},
                  str(trainer / TRAINABLE_FILE))
        tensors, optim_meta = _optimizer_files(optimizer)
        save_file(tensors, str(trainer / OPTIMIZER_FILE))
        save_file(_rng_tensors(), str(trainer / RNG_FILE))
        record = {"state": dataclasses.asdict(state), "scheduler": scheduler.state_dict(), "optimizer": optim_meta,
                  "config": run_config}
        (trainer / STATE_FILE).write_text(json.dumps(record, indent=1))
    return target


def find_last(out: Path) -> Path | None:
    """``out/last`` if it holds a resumable checkpoint (restoring it from ``.last.old`` after a crash)."""
    target, old = out / LAST, out / f".{LAST}.old"
    if not target.exists() and (old / TRAINER_DIR / STATE_FILE).is_file():
        os.replace(old, target)
    return target if (target / TRAINER_DIR / STATE_FILE).is_file() else None


@dataclass
class ResumePoint:
    """What `load_last` read; `restore` puts it into a freshly built model, optimizer and scheduler."""

    directory: Path
    state: TrainState
    config: dict[str, Any]
    scheduler: dict[str, Any]
    optimizer: dict[str, Any]
    trainable: dict[str, torch.Tensor]
    rng: dict[str, torch.Tensor]

    def restore(self, model: CMIRewardModel, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        params = dict(model.named_parameters())
        expected = {n for n, p in params.items() if p.requires_grad}
        if expected != set(self.trainable):
            missing, extra = sorted(expected - set(self.trainable)), sorted(set(self.trainable) - expected)
            raise CheckpointError(f"{self.directory}: trainable tensors do not match the model being resumed "
                                  f"(missing {missing[:3]}, unexpected {extra[:3]})")
        with torch.no_grad():
            for name, value in self.trainable.items():
                params[name].copy_(value)
        device = next(iter(params.values())).device
        optimizer.load_state_dict(_optimizer_state({k: v.to(device) for k, v in self.optimizer["tensors"].items()},
                                                   self.optimizer["meta"]))
        scheduler.load_state_dict(self.scheduler)
        torch.set_rng_state(self.rng["cpu"])
        cuda = [self.rng[k] for k in sorted(self.rng) if k.startswith("cuda.")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)


def load_last(directory: Path) -> ResumePoint:
    """Read the resume state of a ``last/`` checkpoint."""
    trainer = directory / TRAINER_DIR
    try:
        record = json.loads((trainer / STATE_FILE).read_text())
        optimizer = {"tensors": load_file(str(trainer / OPTIMIZER_FILE)), "meta": record["optimizer"]}
        return ResumePoint(directory=directory, state=TrainState.from_dict(record["state"]), config=record["config"],
                           scheduler=record["scheduler"], optimizer=optimizer,
                           trainable=load_file(str(trainer / TRAINABLE_FILE)), rng=load_file(str(trainer / RNG_FILE)))
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"'{trainer}': unreadable resume state ({type(exc).__name__}: {exc})") from exc
