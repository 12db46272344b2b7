"""The `cmirm` command line.

This module only wires commands to functions that live elsewhere. Commands of the other
packages (``generate``, ``train``, ``bench`` ...) register themselves through the
``cmirm.commands`` entry-point group, so `cmirm_plugin` never imports them directly.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from cmirm_plugin.cli_options import ScoringOptions, with_options
from cmirm_plugin.errors import CmirmError, check_output_path
from cmirm_plugin.hub import DEFAULT_MODEL


class _FlagsShownAsFlags:
    """Help lists an on/off flag (``--tiny``) without a value type: typer 0.29 shows every flag as
    ``--tiny <bool>``, which reads as if it took a value (``--tiny true`` is then refused). A flag
    gets an empty metavar, which typer shows instead of the type (and click never shows for flags)."""

    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class Command(_FlagsShownAsFlags, TyperCommand):
    """Every cmirm command (see `_FlagsShownAsFlags`)."""


class Group(_FlagsShownAsFlags, TyperGroup):
    """The ``cmirm`` group (see `_FlagsShownAsFlags`)."""


app = typer.Typer(
    name="cmirm",
    help="Reward-guided music generation with CMI-RM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
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


@app.command(cls=Command)
def doctor() -> None:
    """Print versions, devices, optional backends, where the model cache lives and which models it holds."""
    from cmirm_plugin.doctor import print_report

    print_report()


@app.command(cls=Command)
def download(
    names: Annotated[Optional[list[str]], typer.Argument(
        help="Generator names (musicgen-small, stable-audio-open, musicgen:ID ...) and scorer specs (HaiwenXia/CMI-RM, "
             "a hub id ...).", show_default=False)] = None,
    all_defaults: Annotated[bool, typer.Option(
        "--all", help=f"The defaults: the reward model {DEFAULT_MODEL} (with its towers) and musicgen-small.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", help="A hub cache folder to fill instead of the default one (use it with HF_HUB_CACHE=DIR).",
        show_default=False)] = None,
) -> None:
    """Fetch every model repo the named generators and scorers need into the hub cache, and list what is here.

    Resolves the repos named inside configs too (CMI-RM -> MuQ-MuLan towers -> MuQ, XLM-R tokenizer)
    and downloads exactly the files the loaders read, with progress. Prints each repo's state,
    size and licence (cmirm's licence table and the hub's model card).
    """
    from rich.console import Console

    from cmirm_plugin.model_report import print_models
    from cmirm_plugin.models_needed import ModelFiles, ModelsUnavailableError, default_names, fetch

    wanted = [*(default_names() if all_defaults else []), *(names or [])]
    if not wanted:
        raise CmirmError("give generator names or scorer specs to download (e.g. musicgen-small HaiwenXia/CMI-RM), "
                         "or --all for the defaults")
    files = ModelFiles(cache_dir)
    statuses = fetch(list(dict.fromkeys(wanted)), files)
    print_models(statuses, Console(), f"models in {cache_dir or 'the hub cache'}")
    failed = [s for s in statuses if s.reason or s.missing]
    if failed:
        raise ModelsUnavailableError("could not fetch " + "; ".join(
            f"{s.need.source} ({s.reason or 'missing ' + ', '.join(map(str, s.missing))})" for s in failed))


@app.command(cls=Command)
@with_options(scoring=ScoringOptions)
def score(
    audio: Annotated[Optional[list[Path]], typer.Argument(
        help="Audio files to score (wav, flac, ogg, mp3), against one instruction.", show_default=False)] = None,
    text: Annotated[Optional[str], typer.Option("--text", "-t", help="Text description.")] = None,
    lyrics: Annotated[Optional[str], typer.Option(
        "--lyrics", "-l", help="Lyrics, or the path of a lyrics text file.")] = None,
    ref_audio: Annotated[Optional[str], typer.Option("--ref-audio", "-r", help="Reference audio file.")] = None,
    jsonl: Annotated[Optional[Path], typer.Option(
        "--jsonl", help="Score many rows instead: JSONL with audio, text, lyrics, ref_audio (paths relative to "
                        "the file), each its own instruction.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="With --jsonl: output JSONL, appended as rows finish; a rerun skips done rows. "
                            "\\[default: IN.scores.jsonl]", show_default=False)] = None,
    reward: Annotated[Optional[str], typer.Option(
        "--reward", "-m", help="Scorer: tiny, a CMI-RM folder or hub id, or package.module:Name. "
                               f"\\[default: {DEFAULT_MODEL}]", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", hidden=True, help="Alias of --reward.")] = None,
    tiny: Annotated[bool, typer.Option(
        "--tiny", help="Use a tiny random model (offline smoke test; scores are meaningless).")] = False,
    device: Annotated[Optional[str], typer.Option(
        "--device", help="cpu, cuda, cuda:1 ... \\[default: cuda if available]", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
    sort: Annotated[Optional[str], typer.Option(
        "--sort", help="Print the files best first by this axis (e.g. musicality).")] = None,
    retry_errors: Annotated[bool, typer.Option(
        "--retry-errors", help="With --jsonl: score rows again whose earlier record is an error.")] = False,
    *,
    scoring: ScoringOptions,
) -> None:
    """Score audio files against one instruction, or a JSONL of rows each with its own (--jsonl)."""
    from cmirm_plugin.models_needed import check_available
    from cmirm_plugin.records import Instruction
    from cmirm_plugin.score_command import score_files, score_jsonl
    from cmirm_plugin.scoring import ScorerSpec, load_scorer

    if reward is not None and model is not None:
        raise CmirmError("--model is an alias of --reward; give one of them")
    spec = ScorerSpec.from_options(reward or model, tiny)
    settings = scoring.settings()
    if jsonl is not None:
        if audio or any(v is not None for v in (text, lyrics, ref_audio, sort)):
            raise CmirmError("--jsonl rows carry their own audio and instruction: drop the files, --text, --lyrics, "
                             "--ref-audio and --sort")
        target = check_output_path(out or jsonl.with_name(f"{jsonl.stem}.scores.jsonl"), "--out", directory=False)
        check_available(scorers=[(spec, "--reward")])
        done, failed, reused = score_jsonl(load_scorer(spec, settings, device), spec, jsonl, target,
                                           settings.batch_size, retry_errors)
        typer.echo(f"scored {done} row(s) ({failed} with errors, {reused} already done) -> {target}")
        return
    if not audio:
        raise CmirmError("give audio files to score (or --jsonl FILE)")
    if out is not None or retry_errors:
        raise CmirmError("--out and --retry-errors apply to --jsonl")
    instruction = Instruction.from_cli(text, lyrics, ref_audio)
    check_available(scorers=[(spec, "--reward")])
    score_files(load_scorer(spec, settings, device), spec, audio, instruction, as_json, sort)


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
        app.command(name=ep.name, cls=Command)(command)
        taken.add(ep.name)


_register_plugins()


def main() -> None:
    """Console-script entry point; turns cmirm input errors, and a file the system refuses that no boundary
    named, into one readable line (exit 2)."""
    from cmirm_plugin.log_filters import quiet_ray_token_auth_notice

    quiet_ray_token_auth_notice()
    try:
        app()
    except CmirmError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except OSError as exc:
        if exc.filename is None:   # not about a file: a bug or a network failure, shown in full
            raise
        typer.secho(f"error: '{exc.filename}': {exc.strerror or exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
