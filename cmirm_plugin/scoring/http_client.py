"""`HttpScorer`: a reward server (`cmirm serve`) behind the scorer contract.

``load_scorer("http://host:port")`` (and ``--reward http://host:port`` on every command) returns
one, so a trainer or a generation job scores with a model that runs in another environment or on
another machine. It reads the model's ``axes`` and ``sr`` from ``GET /info``, sends clips in
requests of ``batch_size`` items (several requests at once, so the server can batch them with
other clients' work), retries with exponential backoff on 408/429/5xx answers and on connection
errors (a restarting server) for up to ``retry_for_s`` seconds, and gives up with
`ServerUnavailable` naming the server. Scores are the server's: its model and settings decide them.
The wire format lives in `cmirm_plugin.scoring.wire`. Standard library HTTP only (no new dependency).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from cmirm_plugin.audio import AudioLike
from cmirm_plugin.errors import AudioError, CmirmError, ConfigError, ScorerUnavailable
from cmirm_plugin.records import Instruction
from cmirm_plugin.scoring.contract import as_clips, as_instructions
from cmirm_plugin.scoring.settings import ScoringSettings
from cmirm_plugin.scoring.wire import TOKEN_ENV, ServerInfo, decode_scores, encode_request

#: Answers worth retrying: a timeout on the server, backpressure, and server-side failures.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 5.0


class ServerUnavailable(ScorerUnavailable):
    """The reward server did not answer (or kept failing) for the whole retry window, or refused the token."""


class ServerTimeout(ScorerUnavailable):
    """The reward server took longer than the client's ``timeout`` to answer one request."""


def _timed_out(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", None) if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, (socket.timeout, TimeoutError))


def _retryable(exc: BaseException) -> bool:
    """Connection-level failures a restarting or overloaded server produces (not a timeout, not a bad host name)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return False
    return isinstance(reason, (ConnectionError, http.client.HTTPException)) or isinstance(exc, urllib.error.URLError)


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason).strip() or type(reason).__name__


class HttpClient:
    """JSON over HTTP to one reward server, with the retry policy of the module docstring."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0, retry_for_s: float = 60.0) -> None:
        for name, value in (("timeout", timeout), ("retry_for_s", retry_for_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (name == "timeout" and value == 0):
                raise ConfigError(f"reward server {url}: {name} must be a number of seconds > 0, got {value!r}")
        self.url = url.rstrip("/")
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.timeout = float(timeout)
        self.retry_for_s = float(retry_for_s)

    def request(self, method: str, path: str, payload: Any = None) -> Any:
        """The decoded JSON answer of ``method path`` (retried as the module docstring says)."""
        body = None if payload is None else json.dumps(payload).encode()
        deadline = time.monotonic() + self.retry_for_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._once(method, path, body)
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUSES:
                    raise self._refused(exc, path) from None
                problem, wait = f"HTTP {exc.code} ({self._message(exc)})", self._retry_after(exc)
            except (OSError, http.client.HTTPException) as exc:   # URLError is an OSError
                if _timed_out(exc):
                    raise ServerTimeout(f"reward server {self.url} did not answer {method} {path} within "
                                        f"{self.timeout:g} s; raise the client timeout or lighten the request") from None
                if not _retryable(exc):
                    raise ServerUnavailable(f"reward server {self.url}: {_reason(exc)}") from None
                problem, wait = _reason(exc), None
            backoff = min(_MAX_BACKOFF_S, 0.1 * 2 ** attempt) * random.uniform(0.5, 1.0)
            delay = max(backoff, wait or 0.0)   # the server's Retry-After is a lower bound
            if time.monotonic() + delay > deadline:
                raise ServerUnavailable(
                    f"reward server {self.url} is unavailable: {problem} (after {attempt} attempt(s) over "
                    f"{self.retry_for_s:g} s); is `cmirm serve` running there?") from None
            time.sleep(delay)

    def _once(self, method: str, path: str, body: bytes | None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            data = response.read()
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            raise CmirmError(f"reward server {self.url}: {method} {path} answered something that is not JSON") from None

    @staticmethod
    def _message(exc: urllib.error.HTTPError) -> str:
        try:
            payload = json.loads(exc.read() or b"{}")
        except (json.JSONDecodeError, OSError, ValueError):
            payload = {}
        return str(payload.get("error") or exc.reason) if isinstance(payload, dict) else str(exc.reason)

    @staticmethod
    def _retry_after(exc: urllib.error.HTTPError) -> float | None:
        value = exc.headers.get("Retry-After") if exc.headers else None
        try:
            return min(_MAX_BACKOFF_S, max(0.0, float(value))) if value is not None else None
        except ValueError:
            return None

    def _refused(self, exc: urllib.error.HTTPError, path: str) -> CmirmError:
        message = f"reward server {self.url} refused {path} (HTTP {exc.code}): {self._message(exc)}"
        if exc.code == 401:
            return ServerUnavailable(f"{message}; give the server's token (token=... or ${TOKEN_ENV})")
        if path == "/score" and exc.code in (400, 413, 422):
            return AudioError(message)   # a clip the server will not score: `score_isolated` finds which
        return CmirmError(message)


class HttpScorer:
    """A scorer that scores on a reward server (see the module docstring).

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000`` (a path prefix is kept).
        settings: when given, its score-changing settings (``max_dur``, ``missing``) must equal the
            server's, so what a run records is what scored it; its ``batch_size`` is the items per request.
        token: the bearer token (default ``$CMIRM_SERVE_TOKEN``).
        timeout: seconds one request may take. retry_for_s: how long to keep retrying.
        concurrency: requests sent at once for one ``score_batch`` call.
        label: what records name this scorer (default the URL).
    """

    def __init__(self, url: str, settings: ScoringSettings | None = None, *, token: str | None = None,
                 timeout: float = 120.0, retry_for_s: float = 60.0, batch_size: int | None = None,
                 concurrency: int = 4, label: str | None = None) -> None:
        self.client = HttpClient(url, token, timeout, retry_for_s)
        self.label = label or self.client.url
        self.batch_size = batch_size or (settings or ScoringSettings()).batch_size
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"reward server {url}: concurrency must be an integer >= 1, got {concurrency!r}")
        self.concurrency = concurrency
        self.info = fetch_info(self.client)
        if settings is not None:
            check_settings(self.info, settings, self.label)

    @property
    def sr(self) -> int:
        return self.info.sample_rate

    @property
    def axes(self) -> tuple[str, ...]:
        return self.info.axes

    def score_batch(self, audios: Sequence[AudioLike] | Any, instructions: Instruction | Sequence[Instruction],
                    sample_rate: int | None = None) -> np.ndarray:
        """Scores ``[N, len(axes)]`` (float32) from the server, in requests of ``batch_size`` clips."""
        clips = as_clips(audios)
        insts = as_instructions(instructions, len(clips))
        if not clips:
            return np.zeros((0, len(self.axes)), dtype=np.float32)
        starts = range(0, len(clips), self.batch_size)
        requests = [encode_request(clips[s : s + self.batch_size], insts[s : s + self.batch_size], sample_rate)
                    for s in starts]

        def send(payload: dict[str, Any]) -> np.ndarray:
            answer = self.client.request("POST", "/score", payload)
            return decode_scores(answer, len(payload["items"]), self.axes, f"reward server {self.label}")

        if len(requests) == 1 or self.concurrency == 1:
            return np.concatenate([send(r) for r in requests])
        with ThreadPoolExecutor(min(self.concurrency, len(requests))) as pool:
            return np.concatenate(list(pool.map(send, requests)))

    def __repr__(self) -> str:
        return f"HttpScorer({self.label!r}, model={self.info.model!r}, axes={self.axes})"


def fetch_info(client: HttpClient) -> ServerInfo:
    """The server's ``GET /info`` (retried like every request)."""
    return ServerInfo.from_dict(client.request("GET", "/info"), f"reward server {client.url}")


def check_settings(info: ServerInfo, settings: ScoringSettings, label: str) -> None:
    """A `ConfigError` when ``settings`` ask for other score-changing values than the server uses.

    Only ``max_dur`` and ``missing`` are compared: the dtype resolves on the server's device.
    """
    served = info.settings or {}
    asked = {"max_dur": settings.max_dur, "missing": settings.missing}
    differ = [f"{key}={served[key]!r} (asked {value!r})" for key, value in asked.items()
              if key in served and served[key] != value]
    if differ:
        raise ConfigError(f"reward server {label} scores with {', '.join(differ)}; ask for the server's settings "
                          "(e.g. --max-dur) or start the server with yours")
