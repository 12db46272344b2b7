"""``cmirm train`` (its options are generated from `TrainConfig`, whose field docs are their help) and
``cmirm push`` (`train.push`).

Registered under the ``cmirm.commands`` entry-point group (pyproject.toml), so `cmirm_plugin.cli`
never imports this package. The trainer (torch, transformers) is imported only when the command
runs, so ``cmirm --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from train.config import TrainConfig

if TYPE_CHECKING:
    from train.trainer import TrainResult


#: Help panels of ``cmirm train --help`` (fields not listed stay in the first panel, "Options").
PANELS: dict[str, tuple[str, ...]] = {
    "Data": ("train_split", "eval_split", "eval_fraction", "max_pairs", "skip_invalid"),
    "Model": ("init", "model_config", "towers", "tiny", "missing", "train_muq_depth"),
    "Optimisation": ("epochs", "batch_size", "lr", "weight_decay", "warmup", "max_grad_norm", "label_smoothing", "both",
                     "confidence_weighting", "gradient_checkpointing", "bf16", "seed"),
    "LoRA on the text encoder": ("lora_r", "lora_alpha", "lora_dropout", "lora_targets", "merge_lora"),
    "Feature cache": ("max_dur", "cache_dir", "cache_dtype", "encode_batch_size", "feature_cache"),
    "Run": ("device", "save_steps", "log_steps", "report_to", "resume", "progress"),
}
_PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}


def _option(f: dataclasses.Field) -> Any:
    """The typer option of one `TrainConfig` field, in its help panel (`PANELS`). A boolean that is off by
    default is a plain flag (``--tiny``); one that is on by default can be turned off (``--no-progress``)."""
    name = "--" + f.name.replace("_", "-")
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = ...
    decl = f"{name}/--no-{name[2:]}" if default is True else name
    # Escape "[": rich would read "[default: ...]" in a help text as markup and drop it.
    return typer.Option(default, decl, help=f.metadata["help"].replace("[", "\\["),
                        show_default=default is not ... and default is not False, rich_help_panel=_PANEL_OF.get(f.name))


def _print_result(console: Console, result: "TrainResult") -> None:
    final = result.state.history[-1] if result.state.history else {}
    table = Table(title=f"cmirm train: {result.state.global_step} steps, {result.state.epoch} epochs")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in final.items():
        if key.startswith("eval/acc") or key in ("train/loss", "eval/loss"):
            table.add_row(key, "-" if value is None else f"{value:.4f}")
    console.print(table)
    console.print(f"last checkpoint: {result.last}")
    if result.best is not None:
        console.print(f"best checkpoint: {result.best} (epoch {result.state.best_epoch}, held-out accuracy "
                      f"{result.state.best_metric:.4f})")


def check_models(config: TrainConfig) -> None:
    """Resolve the models training reads before any data or feature work: the ``--init`` checkpoint and
    its towers, or a fresh model's towers (``--towers``, ``--model-config``'s or the released default);
    nothing for ``--tiny``."""
    from cmirm_plugin.models_needed import check_available

    if config.init:
        check_available(scorers=[(config.init, "--init")])
    elif not config.tiny:
        from train.model_setup import fresh_model_config

        check_available(towers=[fresh_model_config(config).model_name])


def train(**options: Any) -> None:
    from train.trainer import train_reward_model

    console = Console()
    config = TrainConfig(**options)
    check_models(config)
    result = train_reward_model(config, console=console)
    _print_result(console, result)


_hints = typing.get_type_hints(TrainConfig)
train.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
    inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_option(f), annotation=_hints[f.name])
    for f in dataclasses.fields(TrainConfig)])
train.__annotations__ = {f.name: _hints[f.name] for f in dataclasses.fields(TrainConfig)}
train.__doc__ = (
    "Train CMI-RM on preference pairs (Bradley-Terry per axis): --stage pretrain on pseudo-labelled pairs, then "
    "--stage finetune --init OUT/best on human pairs.\n\n"
    "Writes OUT/best and OUT/last in the released layout (model.safetensors + config.yaml), "
    "OUT/metrics/{steps,epochs}.{jsonl,csv} (also sent to TensorBoard or W&B with --report-to) and "
    "OUT/train_config.json. Frozen-tower features are cached under "
    "--cache-dir and reused by later epochs, runs and stages.")


def push(
    directory: Path = typer.Argument(..., help="A released-layout folder (config.yaml + model.safetensors), e.g. "
                                               "runs/fine/best."),
    repo: str = typer.Option(..., "--repo", help="Hub repo id user/name (created if it does not exist)."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    token: Optional[str] = typer.Option(None, "--token", help="Hub token with write access \\[default: $HF_TOKEN "
                                                               "or the token of `hf auth login`]."),
    bench: Optional[Path] = typer.Option(None, "--bench", help="The --out folder of 'cmirm bench --model DIRECTORY': "
                                                               "its CMI-RewardBench results go into the card."),
) -> None:
    """Upload a trained model to the hub with a generated model card (licences, training, accuracy, usage).

    One commit: config.yaml, model.safetensors, train_info.json, text_lora/ (when present) and README.md.
    """
    from train.push import push_model

    console = Console()
    result = push_model(directory, repo, private=private, token=token, bench_dir=bench)
    console.print(f"pushed {', '.join(result.files)} to {result.url}")
    if result.skipped:
        console.print(f"not uploaded: {', '.join(result.skipped)}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
