"""Training throughput with the feature cache vs encoding every batch on the fly, side by side.

Both runs train the same CMI-RM on the same synthetic pairs (`train.synthetic`) with
`train.trainer.train_reward_model`; the only difference is ``feature_cache``. Throughput is the
mean ``pairs_per_s`` of the step lines of the last epoch (earlier epochs warm up); the cached
run's wall time also includes filling the cache once.

``--towers tiny``: the test suite's tiny towers (~0.2M parameters, 4x the tiny trainable part)
with a tiny CMI-RM; runs anywhere in seconds, but understates the gain. ``--towers full``: the
released architecture (MuQ-large, XLM-R base, 8-layer MuLan text transformer, 768-d CMI-RM with
depths 1 + 4: ~33M trainable against ~0.6B frozen) with random weights, built offline; for a GPU.

    python benchmarks/train_throughput.py [--towers tiny|full] [--pairs 128] [--seconds 10] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from cmirm_plugin.manifest import read_records  # noqa: E402
from cmirm_plugin.model.config import CMIRMConfig  # noqa: E402
from cmirm_plugin.model.tiny import build_tiny_towers, tiny_config  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.synthetic import write_synthetic_pairs  # noqa: E402
from train.trainer import train_reward_model  # noqa: E402


def model_config(towers: str, root: Path) -> CMIRMConfig:
    """A tiny CMI-RM over the tiny towers, or the released CMI-RM architecture over full-size random towers."""
    if towers == "full":
        return CMIRMConfig(model_name=str(build_tiny_towers(root, size="full")))
    return tiny_config(build_tiny_towers(root))


def last_epoch_throughput(run: Path, epoch: int) -> float:
    rates = [line["pairs_per_s"] for line in read_records(run / "metrics" / "steps.jsonl") if line["epoch"] == epoch]
    return sum(rates) / len(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--towers", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--pairs", type=int, default=128, help="training pairs")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each synthetic clip")
    parser.add_argument("--format", default="wav", help="clip files: wav, flac or mp3")
    parser.add_argument("--sample-rate", type=int, default=24000, help="of the clip files (the model resamples to 24 kHz)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    quiet = Console(file=open(os.devnull, "w"))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config_yaml = model_config(args.towers, root / "towers").to_yaml(root / "config.yaml")
        pairs = write_synthetic_pairs(root / "data", n_train=args.pairs, n_test=0, clips_per_split=32,
                                      seconds=args.seconds, sample_rate=args.sample_rate, audio_format=args.format)
        rows = {}
        for label, cached in (("feature cache", True), ("on the fly", False)):
            out = root / label.replace(" ", "-")
            config = TrainConfig(pairs=pairs, out=out, model_config=config_yaml, cache_dir=root / "cache",
                                 feature_cache=cached, epochs=args.epochs, batch_size=args.batch_size,
                                 log_steps=1, eval_fraction=0.0, progress=False, device=args.device)
            start = time.perf_counter()
            train_reward_model(config, console=quiet)
            rows[label] = (last_epoch_throughput(out, args.epochs), time.perf_counter() - start)

    cached_rate, live_rate = rows["feature cache"][0], rows["on the fly"][0]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    table = Table(title=f"training throughput: {args.towers} towers, {args.pairs} pairs of {args.seconds:g} s "
                        f"{args.sample_rate / 1000:g} kHz {args.format} clips, "
                        f"batch {args.batch_size}, {args.threads} thread(s), {device}")
    for column in ("mode", "pairs/s (last epoch)", "run wall time (s)", "speed-up"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for label, (rate, wall) in rows.items():
        table.add_row(label, f"{rate:,.1f}", f"{wall:,.1f}", f"{rate / live_rate:,.1f}x")
    console.print(table)
    console.print(f"ratio cache / on the fly: {cached_rate / live_rate:.1f}x (the cached run's wall time includes "
                  f"filling the cache once)")


if __name__ == "__main__":
    main()
