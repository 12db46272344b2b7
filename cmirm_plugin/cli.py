"""The `cmirm` command line.

This module only wires commands to functions that live elsewhere. Commands of the other
packages (``generate``, ``train``, ``bench`` ...) register themselves through the
``cmirm.commands`` entry-point group, so `cmirm_plugin` never imports them directly.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="cmirm",
    help="Reward-guided music generation with CMI-RM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cmirm {md.version('cmirm')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Reward-guided music generation with CMI-RM."""


@app.command()
def doctor() -> None:
    """Print versions, devices, optional backends and where the model cache lives."""
    from cmirm_plugin.doctor import print_report

    print_report()


@app.command()
def score(
    audio: list[Path] = typer.Argument(..., help="Audio files to score (wav, flac, ogg, mp3)."),
    text: Optional[str] = typer.Option(None, "--text", "-t", help="Text description."),
    lyrics: Optional[str] = typer.Option(None, "--lyrics", "-l", help="Lyrics, or the path of a lyrics text file."),
    ref_audio: Optional[str] = typer.Option(None, "--ref-audio", "-r", help="Reference audio file."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="CMI-RM folder or hub id [default: HaiwenXia/CMI-RM]."),
    tiny: bool = typer.Option(False, "--tiny", help="Use a tiny random model (offline smoke test; scores are meaningless)."),
    max_dur: float = typer.Option(120.0, "--max-dur", help="Seconds of each clip that are scored."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... [default: cuda if available]."),
    missing: str = typer.Option("mask", "--missing", help="Absent inputs: 'mask' (released behaviour) or 'null' embeddings."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """Score audio files against one instruction (alignment and musicality)."""
    from cmirm_plugin.score_command import score_files

    score_files(audio, text, lyrics, ref_audio, model, tiny, max_dur, device, missing, as_json)


def _register_plugins() -> None:
    """Add every command declared under the ``cmirm.commands`` entry-point group.

    A plug-in that fails to import is reported on stderr and skipped, so the other commands
    (``doctor`` above all) keep working. A plug-in cannot replace a built-in command.
    """
    taken = {c.name or c.callback.__name__ for c in app.registered_commands}
    for ep in sorted(md.entry_points(group="cmirm.commands"), key=lambda e: e.name):
        if ep.name in taken:
            continue
        try:
            command = ep.load()
        except Exception as exc:  # any import failure: keep the rest of the CLI usable
            print(f"cmirm: command '{ep.name}' unavailable ({ep.value}: {type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        app.command(name=ep.name)(command)
        taken.add(ep.name)


_register_plugins()


def main() -> None:
    """Console-script entry point; turns cmirm input errors into one readable line."""
    from cmirm_plugin.errors import CmirmError

    try:
        app()
    except CmirmError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
