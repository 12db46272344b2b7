"""`cmirm doctor`: what this installation can do (versions, devices, optional backends, caches, models here)."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os

from rich.console import Console
from rich.table import Table

CORE_PACKAGES = ("torch", "torchaudio", "transformers", "ray", "peft", "safetensors", "soundfile", "typer", "numpy")
#: Optional generator backends and the module whose import proves they work.
OPTIONAL_BACKENDS = {"diffusers (Stable Audio Open)": "diffusers", "audiocraft (MusicGen/MAGNeT)": "audiocraft"}


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def _backend_status(module: str) -> str:
    try:
        importlib.import_module(module)
    except Exception as exc:  # any import failure means the backend is unusable; show why
        return f"unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})"
    return f"ok ({_version(module)})"


def collect() -> dict[str, dict[str, str]]:
    """Gather the report as plain data (also used by tests)."""
    import torch
    from huggingface_hub import constants

    devices = {"cpu": f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads"}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices[f"cuda:{i}"] = f"{props.name}, {props.total_memory / 2**30:.1f} GiB, bf16={torch.cuda.is_bf16_supported()}"
    else:
        devices["cuda"] = "not available"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices["mps"] = "available"
    return {
        "versions": {"cmirm": _version("cmirm"), **{p: _version(p) for p in CORE_PACKAGES}},
        "devices": devices,
        "backends": {name: _backend_status(mod) for name, mod in OPTIONAL_BACKENDS.items()},
        "cache": {
            "HF_HOME": constants.HF_HOME,
            "hub cache": constants.HF_HUB_CACHE,
            "HF_HUB_OFFLINE": str(constants.HF_HUB_OFFLINE),
        },
        "models (local: hub cache and folders, no network)": model_rows(),
    }


def model_rows() -> dict[str, str]:
    """Per repo of the default reward model and of every known generator: present or what is missing, and size.

    Looks only at the hub cache; a missing repo gets the command that fetches it.
    """
    from cmirm_plugin.hub import DEFAULT_MODEL
    from cmirm_plugin.model_report import size_text, state_text
    from cmirm_plugin.models_needed import local_statuses, providers

    names = [DEFAULT_MODEL, *(name for p in providers() for name in p.known)]
    rows = {}
    for name, status in local_statuses(names):
        key = f"{status.need.source} ({name})" if status.need.source not in name else status.need.source
        state = state_text(status)
        if status.complete:
            state += f", {size_text(status.local_bytes)}"
        elif not status.local:
            state += f" (cmirm download {name})"
        elif not status.need.is_folder:
            state += f", {size_text(status.local_bytes)}: {status.download_command()}"
        rows[key] = state
    return rows


def print_report(console: Console | None = None) -> None:
    console = console or Console()
    for section, rows in collect().items():
        table = Table(title=section, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        for key, value in rows.items():
            table.add_row(key, value)
        console.print(table)
