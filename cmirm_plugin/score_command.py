"""`cmirm score`: score audio files against one instruction and print a table or JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.table import Table

from cmirm_plugin.records import Instruction
from cmirm_plugin.scoring import DEFAULT_MODEL, MissingPolicy, RewardScorer


def load_scorer(model: str | None, tiny: bool, device: str | None, **options) -> RewardScorer:
    """The scorer a command asked for: ``--tiny`` (offline random model) or a folder / hub id."""
    if tiny:
        from cmirm_plugin.model.tiny import default_tiny_checkpoint

        model = str(default_tiny_checkpoint())
    return RewardScorer.from_pretrained(model or DEFAULT_MODEL, device=device, **options)


def score_files(audio: Sequence[Path], text: str | None, lyrics: str | None, ref_audio: str | None,
                model: str | None, tiny: bool, max_dur: float, device: str | None, missing: MissingPolicy,
                as_json: bool, console: Console | None = None) -> None:
    console = console or Console()
    instruction = Instruction.from_cli(text, lyrics, ref_audio)
    scorer = load_scorer(model, tiny, device, max_dur=max_dur, missing=missing)
    scores = scorer.score_batch([str(p) for p in audio], instruction)
    if as_json:
        for path, (alignment, musicality) in zip(audio, scores):
            console.print_json(json.dumps({"audio": str(path), "modality": instruction.modality,
                                           "alignment": float(alignment), "musicality": float(musicality)}),
                               indent=None)
        return
    table = Table(title=f"CMI-RM scores ({instruction.modality})")
    table.add_column("audio", overflow="fold")  # never cut a path
    table.add_column("alignment", justify="right")
    table.add_column("musicality", justify="right")
    for path, (alignment, musicality) in zip(audio, scores):
        table.add_row(str(path), f"{alignment:.4f}", f"{musicality:.4f}")
    console.print(table)
