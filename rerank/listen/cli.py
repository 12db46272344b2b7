"""``cmirm report``, ``cmirm review`` and ``cmirm votes`` (registered through the ``cmirm.commands`` entry points).

Each command turns its options into a call of `rerank.listen` and prints what it wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from cmirm_plugin.errors import ConfigError
from rerank.listen.pairs import PAIR_MODES
from rerank.listen.report_html import ReportConfig, write_report
from rerank.listen.run_view import load_listen_run
from rerank.listen.votes import ALL, AXIS_FIELDS, VOTES, agreement_report, merge_votes

Run = Annotated[Path, typer.Argument(help="A run directory (`cmirm generate --out`), or its manifest.jsonl.")]
Scorer = Annotated[Optional[str], typer.Option(
    "--scorer", help="Use this scorer's records (default the ranking's, else the run's reward model).")]


def report(
    run: Run,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder \\[default: RUN/report].")] = None,
    embed: Annotated[bool, typer.Option(
        "--embed", help="Copy the clips into OUT/audio so the folder can be shared on its own.")] = False,
    scaling: Annotated[Optional[list[Path]], typer.Option(
        "--scaling", help="Also show the curve images of this `cmirm scaling --out` folder (repeatable).")] = None,
    scorer: Scorer = None,
) -> None:
    """Write a static HTML report of a run: OUT/index.html and one page per instruction (opens from disk).

    Every candidate has a player, its scores as bars, composite, rank, selected mark, seed, other
    record fields and errors; tables sort by any column.
    """
    result = write_report(ReportConfig(run, out, embed, tuple(scaling or ()), scorer))
    Console().print(f"wrote {result.index} ({result.pages} instruction page(s), {result.candidates} candidate(s), "
                    f"{result.audio_missing} missing clip(s), {result.images} image(s), "
                    f"{result.bytes / 1e6:.1f} MB)")


def review(
    run: Run,
    pairs: Annotated[str, typer.Option(
        "--pairs", help=f"Which pairs: {' | '.join(PAIR_MODES)} (near-ties: smallest score gap first; "
                        "top-vs-rest: rank 1 against each other candidate).")] = "random",
    host: Annotated[str, typer.Option("--host", help="Address to bind (0.0.0.0 serves the local network).")]
        = "127.0.0.1",
    port: Annotated[Optional[int], typer.Option("--port", help="Port \\[default: Gradio's, 7860 or the next free].")]
        = None,
    share: Annotated[bool, typer.Option("--share", help="Also open a public Gradio share link.")] = False,
    voter: Annotated[str, typer.Option("--voter", help="Prefill the voter id.")] = "",
    seed: Annotated[Optional[int], typer.Option(
        "--seed", help="Seed of the pair order and the A/B sides \\[default: random].")] = None,
    scorer: Scorer = None,
) -> None:
    """Blind A/B listening in the browser: votes go to RUN/votes.jsonl as CMI-Pref pairs (`cmirm train --pairs`).

    Needs the optional extra: pip install "cmirm\\[ui]".
    """
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError('cmirm review needs Gradio: pip install "cmirm[ui]" (or pip install gradio)') from None
    from rerank.listen.review_app import ReviewSession, serve

    session = ReviewSession.open(run, pairs, seed, scorer)
    console = Console()
    serve(session, host=host, port=port, share=share, voter=voter,
          on_start=lambda url: console.print(f"cmirm review: {len(session.pairs)} pairs, votes to {session.log.path}"
                                             f"\nopen {url} (Ctrl+C stops)", highlight=False))


def _rate(entry: dict) -> str:
    return "-" if entry["rate"] is None else f"{entry['rate']:.0%}"


def votes(
    runs: Annotated[list[Path], typer.Argument(help=f"Run directories (or their {VOTES}).")],
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write all votes to this one pairs file (paths relative to its folder).")] = None,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="Write the agreement report as JSON \\[default: next to --out as <name>.agreement.json].")]
        = None,
) -> None:
    """Merge the votes of several runs and reviewers; report reviewer-vs-reviewer and reviewer-vs-model agreement.

    Agreement is per axis and modality; both / neither votes count as ties (left out of the model's).
    """
    merged = merge_votes(runs, out)
    report_data = agreement_report(merged, {root: load_listen_run(root) for root in merged.sources})
    table = Table(title=f"{report_data['votes']} vote(s) by {len(report_data['voters'])} reviewer(s) "
                        f"from {len(merged.sources)} run(s)")
    for column in ("modality", "axis", "votes", "both/neither", "model agreed", "reviewer pairs", "reviewers agreed"):
        table.add_column(column, justify="left" if column in ("modality", "axis") else "right")
    groups = [ALL] + sorted((set(report_data["model"]) | set(report_data["reviewers"])) - {ALL})
    for group in groups:
        for axis in AXIS_FIELDS:
            model = report_data["model"].get(group, {}).get(axis)
            people = report_data["reviewers"].get(group, {}).get(axis)
            table.add_row(group, axis, str(model["votes"]) if model else "-", str(model["ties"]) if model else "-",
                          f"{model['agreed']}/{model['decisive']} ({_rate(model)})" if model else "-",
                          str(people["pairs"]) if people else "0",
                          f"{people['agreed']}/{people['comparisons']} ({_rate(people)})" if people else "-")
    console = Console()
    console.print(table)
    if json_out is None and out is not None:
        json_out = out.with_name(f"{out.stem}.agreement.json")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report_data, indent=2) + "\n", encoding="utf-8")
        console.print(f"agreement: {json_out}")
    if out is not None:
        console.print(f"pairs: {out} ({len(merged.rows)} rows; train with "
                      f"`cmirm train --stage finetune --pairs {out}`)")
