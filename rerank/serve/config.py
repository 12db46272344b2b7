"""`ServeConfig`: every option of the reward server, validated before Ray starts.

Security defaults: the server listens on 127.0.0.1 only, reads no server-side path unless
``allow_dir`` names a directory, caps the request body (``max_request_mb``) and each clip's length
(``max_audio_s``), answers within ``request_timeout_s``, and requires ``token`` (a bearer token)
on ``/score`` and ``/info`` when one is set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmirm_plugin.errors import ConfigError, check_count
from cmirm_plugin.scoring.settings import ScoringSettings
from cmirm_plugin.scoring.spec import ScorerSpec
from cmirm_plugin.scoring.wire import WireLimits


def _number(name: str, value: Any, minimum: float = 0.0, inclusive: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and (
        value >= minimum if inclusive else value > minimum)
    if not ok:
        raise ConfigError(f"{name} must be a number {'>=' if inclusive else '>'} {minimum:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ServeConfig:
    """How ``cmirm serve`` runs (the command's options; see the module docstring).

    Attributes:
        reward: the scorer each replica loads with `load_scorer` (any spec).
        settings / device: how and where it scores (None: CUDA when the replica has a GPU).
        host / port: where the HTTP proxy listens. ray_address: a running cluster to deploy on.
        max_batch_size / batch_wait_ms: dynamic batching: clips per model batch, and how long the
            first clip of a batch waits for others.
        replicas / gpus_per_replica / cpus_per_replica: Serve replicas and what each reserves
            (fractions share a device). threads_per_replica: torch threads (default: ceil of the CPUs).
        max_request_mb / max_audio_s / request_timeout_s / max_queued_requests: limits (413, 408, 503).
        allow_dir: the only directory ``{"path": ...}`` audio may come from (None: no paths).
        token: bearer token required on /score and /info (None: open).
    """

    reward: ScorerSpec
    settings: ScoringSettings = field(default_factory=ScoringSettings)
    device: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 16
    batch_wait_ms: float = 10.0
    replicas: int = 1
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    threads_per_replica: int | None = None
    ray_address: str | None = None
    max_request_mb: float = 64.0
    max_audio_s: float = 600.0
    request_timeout_s: float = 120.0
    max_queued_requests: int = 256
    allow_dir: Path | None = None
    token: str | None = field(default=None, repr=False)
    app_name: str = "cmirm-reward"
    #: ``max_audio_s`` and ``allow_dir`` as the wire decoder's limits (derived).
    limits: WireLimits = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reward", ScorerSpec.parse(self.reward))
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 < self.port < 65536:
            raise ConfigError(f"--port must be an integer in 1..65535, got {self.port!r}")
        if not isinstance(self.host, str) or not self.host.strip():
            raise ConfigError(f"--host must be a host name or address, got {self.host!r}")
        for name in ("max_batch_size", "replicas", "max_queued_requests"):
            check_count("--" + name.replace("_", "-"), getattr(self, name))
        if self.threads_per_replica is not None:
            check_count("--threads-per-replica", self.threads_per_replica)
        _number("--batch-wait-ms", self.batch_wait_ms, inclusive=True)
        _number("--gpus-per-replica", self.gpus_per_replica, inclusive=True)
        _number("--cpus-per-replica", self.cpus_per_replica)
        _number("--max-request-mb", self.max_request_mb)
        _number("--request-timeout-s", self.request_timeout_s)
        if self.token is not None and not self.token.strip():
            raise ConfigError("--token is empty; give a secret or leave the option out")
        object.__setattr__(self, "limits", WireLimits(_number("--max-audio-s", self.max_audio_s), self.allow_dir))

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def threads(self) -> int:
        return self.threads_per_replica or max(1, math.ceil(self.cpus_per_replica))

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def public(self) -> dict[str, Any]:
        """What ``GET /info`` shows of the limits and batching (never the token)."""
        return {
            "limits": {"max_request_mb": self.max_request_mb, "max_audio_s": self.max_audio_s,
                       "request_timeout_s": self.request_timeout_s, "max_queued_requests": self.max_queued_requests,
                       "paths_allowed": self.allow_dir is not None, "token_required": self.token is not None},
            "batching": {"max_batch_size": self.max_batch_size, "batch_wait_ms": self.batch_wait_ms,
                         "replicas": self.replicas},
        }
