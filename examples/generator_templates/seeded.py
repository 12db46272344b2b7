"""Run a Python script with its random number generators seeded: ``python seeded.py SEED SCRIPT [ARGS...]``.

For generation scripts that have no ``--seed`` flag (DiffRhythm's ``infer/infer.py``): seeds
Python's ``random``, NumPy and torch (CPU and every GPU), then runs SCRIPT exactly as
``python SCRIPT ARGS...`` would (same ``sys.argv``, script directory first on ``sys.path``).
Used by the templates in this folder; it imports nothing from cmirm, so it runs in the tool's
own environment.
"""

from __future__ import annotations

import os
import random
import runpy
import sys


def seed_everything(seed: int) -> None:
    """Seed every RNG a generation script is likely to draw from (those that are installed)."""
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed % 2**32)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)  # also seeds every CUDA device
    except ImportError:
        pass


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].lstrip("-").isdigit():
        sys.exit("usage: python seeded.py SEED SCRIPT [ARGS...]")
    seed, script, *args = argv
    seed_everything(int(seed))
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
