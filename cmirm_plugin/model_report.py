"""What ``cmirm download`` and ``cmirm doctor`` print about model repos: state, size and licence of each."""

from __future__ import annotations

from typing import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cmirm_plugin.licences import licence_for
from cmirm_plugin.models_needed import RepoStatus


def size_text(n: int | None) -> str:
    """``n`` bytes as B / kB / MB / GB (decimal, as the hub shows sizes)."""
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def state_text(status: RepoStatus) -> str:
    """``present`` / ``not downloaded`` / ``missing a, b`` (plus why the repo is unavailable)."""
    if status.reason:
        return status.reason
    if not status.missing and not status.on_hub:
        return "present"
    if not status.local:
        return "not downloaded"
    missing = [str(f) for f in status.missing] + list(status.on_hub)
    return f"missing {', '.join(missing)}"


def licence_text(status: RepoStatus) -> str:
    """cmirm's licence table entry for the repo, and the hub card's licence when it was read and differs."""
    if status.need.is_folder:
        return "-"
    known = licence_for(status.need.source)
    card = status.licence
    text = known.id if known else "unknown: check the model card"
    if card and (known is None or card != known.id):
        text += f" (hub card: {card})"
    return text


def print_models(statuses: Sequence[RepoStatus], console: Console, title: str) -> None:
    """One row per repo: repo or folder, what it is for, state, size here, licence; then the licence notes."""
    table = Table(title=title, title_justify="left")
    for column in ("repo", "for", "state", "size here", "licence"):
        table.add_column(column, overflow="fold")
    for status in statuses:
        table.add_row(escape(status.need.source), escape(status.need.role), escape(state_text(status)),
                      size_text(status.local_bytes), escape(licence_text(status)))
    console.print(table)
    notes = {licence_for(s.need.source).note for s in statuses if not s.need.is_folder and licence_for(s.need.source)}
    for note in sorted(notes):
        console.print(f"  licence: {escape(note)}", highlight=False)
