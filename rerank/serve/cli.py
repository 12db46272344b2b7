"""``cmirm serve``: run the batched reward server (registered through the ``cmirm.commands`` entry points).

Turns the options into a `ServeConfig` (every option's default is its field's), starts the server
with `start_server`, and serves until Ctrl-C or SIGTERM, then stops it. Ray is imported only once
the command runs, so ``cmirm --help`` stays fast.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cmirm_plugin.cli_options import ScoringOptions, with_options
from cmirm_plugin.hub import DEFAULT_MODEL
from cmirm_plugin.scoring.spec import TINY, ScorerSpec
from cmirm_plugin.scoring.wire import TOKEN_ENV
from rerank.serve.config import ServeConfig

_BATCH = "Batching and replicas"
_LIMITS = "Limits and security"


def _default(name: str) -> Any:
    return next(f.default for f in fields(ServeConfig) if f.name == name)


@with_options(scoring=ScoringOptions)
def serve(
    reward: Annotated[Optional[str], typer.Option(
        "--reward", "-m", show_default=False,
        help=f"Scorer each replica loads: tiny, a CMI-RM folder or hub id, or package.module:Name "
             f"\\[default: {DEFAULT_MODEL}; --tiny: {TINY}].")] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="Serve the tiny random CMI-RM (offline smoke runs).")] = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 exposes the server: set "
                                                     "--token).")] = _default("host"),
    port: Annotated[int, typer.Option("--port", help="HTTP port.")] = _default("port"),
    device: Annotated[Optional[str], typer.Option(
        "--device", show_default=False, help="cpu, cuda, cuda:1 ... \\[default: cuda when a replica has a GPU]")] = None,
    max_batch_size: Annotated[int, typer.Option(
        "--max-batch-size", rich_help_panel=_BATCH, help="Clips per model batch (from any requests).")]
        = _default("max_batch_size"),
    batch_wait_ms: Annotated[float, typer.Option(
        "--batch-wait-ms", rich_help_panel=_BATCH, help="How long a batch's first clip waits for others.")]
        = _default("batch_wait_ms"),
    replicas: Annotated[int, typer.Option("--replicas", rich_help_panel=_BATCH, help="Serve replicas (one model each).")]
        = _default("replicas"),
    gpus_per_replica: Annotated[float, typer.Option(
        "--gpus-per-replica", rich_help_panel=_BATCH, help="GPUs each replica reserves (fractions share a GPU).")]
        = _default("gpus_per_replica"),
    cpus_per_replica: Annotated[float, typer.Option(
        "--cpus-per-replica", rich_help_panel=_BATCH, help="CPUs each replica reserves.")] = _default("cpus_per_replica"),
    threads_per_replica: Annotated[Optional[int], typer.Option(
        "--threads-per-replica", rich_help_panel=_BATCH, show_default=False,
        help="Torch threads per replica \\[default: its CPUs, rounded up].")] = None,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", rich_help_panel=_BATCH, help="Deploy on this running Ray cluster (e.g. auto, ray://head:10001).")]
        = None,
    max_request_mb: Annotated[float, typer.Option(
        "--max-request-mb", rich_help_panel=_LIMITS, help="Largest request body (413 above).")] = _default("max_request_mb"),
    max_audio_s: Annotated[float, typer.Option(
        "--max-audio-s", rich_help_panel=_LIMITS, help="Longest clip or reference, in seconds (413 above).")]
        = _default("max_audio_s"),
    request_timeout_s: Annotated[float, typer.Option(
        "--request-timeout-s", rich_help_panel=_LIMITS, help="A request not answered in time gets 408.")]
        = _default("request_timeout_s"),
    max_queued_requests: Annotated[int, typer.Option(
        "--max-queued-requests", rich_help_panel=_LIMITS, help="Requests waiting per caller before 503 (backpressure).")]
        = _default("max_queued_requests"),
    allow_dir: Annotated[Optional[Path], typer.Option(
        "--allow-dir", rich_help_panel=_LIMITS, show_default=False,
        help="Allow {\"path\": ...} audio, read from inside this directory only \\[default: no server-side paths].")]
        = None,
    token: Annotated[Optional[str], typer.Option(
        "--token", envvar=TOKEN_ENV, rich_help_panel=_LIMITS, show_default=False, show_envvar=True,
        help="Require 'Authorization: Bearer TOKEN' on /score and /info \\[default: no token].")] = None,
    *,
    scoring: ScoringOptions,
) -> None:
    """Serve a reward model over HTTP on Ray Serve, batching clips from concurrent requests.

    POST /score scores clips (base64 WAV/FLAC or raw float32 PCM) against their instructions.

    GET /info describes the model and GET /health answers ok.

    Clients: load_scorer("http://HOST:PORT"), or --reward http://HOST:PORT on any command.
    """
    from rerank.serve.server import start_server

    config = ServeConfig(
        reward=ScorerSpec.from_options(reward, tiny), settings=scoring.settings(), device=device, host=host, port=port,
        max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, replicas=replicas,
        gpus_per_replica=gpus_per_replica, cpus_per_replica=cpus_per_replica, threads_per_replica=threads_per_replica,
        ray_address=ray_address, max_request_mb=max_request_mb, max_audio_s=max_audio_s,
        request_timeout_s=request_timeout_s, max_queued_requests=max_queued_requests, allow_dir=allow_dir, token=token)
    server = start_server(config)   # Ctrl-C while starting stops what was started and exits
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        typer.echo(f"cmirm reward server for {config.reward.label} at {server.url} (POST /score, GET /info, "
                   f"GET /health){'; bearer token required' if token else ''}. Ctrl-C stops it.", err=True)
        stop.wait()
    finally:
        server.stop()
        typer.echo("reward server stopped", err=True)
