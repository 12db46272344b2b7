"""The reward server's Serve deployment: an HTTP JSON API over one scorer, with dynamic batching.

Each replica loads its scorer once with `load_scorer` (any spec) and answers

* ``POST /score``: the items of the body (`cmirm_plugin.scoring.wire`) are decoded off the event
  loop, then each item joins ``@serve.batch``: clips from concurrent requests are scored together,
  up to ``max_batch_size`` per model call, the first waiting at most ``batch_wait_ms`` for company.
  A batch is scored with `score_isolated`, so a bad clip fails only its own request (422);
* ``GET /info``: `ServerInfo` (model label, axes, sample rate, score-changing settings, device,
  limits, batching options and this replica's stats: requests, items, seconds spent scoring, and
  how many batches of each size it formed);
* ``GET /health``: ``{"status": "ok"}`` (no token needed).

Every refusal is JSON ``{"error", "field"}`` with the statuses of `WireError` (and 500 for a bug).
(No ``from __future__ import annotations`` here: Serve's class-based FastAPI views need real
annotations to see that ``request`` is the `Request`.)
"""

import asyncio
import hmac
import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from cmirm_plugin.errors import ConfigError, ScorerUnavailable
from cmirm_plugin.scoring.contract import ScoreOutcome, score_isolated
from cmirm_plugin.scoring.settings import ScoringSettings, default_device_type
from cmirm_plugin.scoring.wire import (TOO_LARGE, UNAUTHORIZED, UNSCORABLE, ServerInfo, WireError, WireItem,
                                       decode_request, encode_scores, parse_json)
from rerank.serve.config import ServeConfig

logger = logging.getLogger("cmirm.serve")
api = FastAPI(title="cmirm reward server", docs_url=None, redoc_url=None, openapi_url=None)


def _error(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _score_settings(device: Any, settings: ScoringSettings) -> dict[str, Any]:
    """The settings that change this replica's scores (what a client's run must agree with)."""
    try:
        return settings.score_identity(device)
    except ConfigError:   # a plug-in scorer on a device the settings cannot resolve: report what was asked
        return {"max_dur": settings.max_dur, "missing": settings.missing, "dtype": settings.dtype}


@serve.deployment(max_constructor_retry_count=2, graceful_shutdown_timeout_s=5.0, graceful_shutdown_wait_loop_s=0.5)
@serve.ingress(api)
class RewardServer:
    """One replica of the reward server (see the module docstring)."""

    def __init__(self, config: ServeConfig) -> None:
        import torch

        from cmirm_plugin.scoring.loader import load_scorer

        self.config = config
        torch.set_num_threads(config.threads)
        self.scorer = load_scorer(config.reward, config.settings, config.device)
        self.label = config.reward.label
        device = getattr(self.scorer, "device", None) or config.device or default_device_type()
        self.info = ServerInfo(self.label, tuple(self.scorer.axes), int(self.scorer.sr),
                               _score_settings(device, config.settings), str(device), **config.public())
        self.requests = 0
        self.items = 0
        self.batches: Counter[int] = Counter()
        self.scoring_s = 0.0
        self._score_item.set_max_batch_size(config.max_batch_size)
        self._score_item.set_batch_wait_timeout_s(config.batch_wait_ms / 1000.0)

    # ------------------------------------------------------------------ routes
    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/info")
    async def get_info(self, request: Request) -> Any:
        refused = self._authorise(request)
        if refused is not None:
            return refused
        stats = {"requests": self.requests, "items": self.items, "scoring_s": round(self.scoring_s, 6),
                 "batches": {str(size): count for size, count in sorted(self.batches.items())}}
        return replace(self.info, stats=stats).to_dict()

    @api.post("/score")
    async def score(self, request: Request) -> Any:
        refused = self._authorise(request)
        if refused is not None:
            return refused
        try:
            body = await self._body(request)
            items = await asyncio.to_thread(lambda: decode_request(parse_json(body), self.config.limits))
        except WireError as exc:
            return _error(exc.status, str(exc), exc.field)
        self.requests += 1
        self.items += len(items)
        try:
            results = await asyncio.gather(*(self._score_item(item) for item in items))
        except ScorerUnavailable as exc:
            return _error(503, f"the scorer is unavailable: {exc}", headers={"Retry-After": "1"})
        except Exception as exc:   # a bug in a scorer: this batch's requests fail, the server lives on
            logger.exception("scoring failed")
            return _error(500, f"internal error while scoring: {type(exc).__name__}: {exc}")
        for i, (outcome, _) in enumerate(results):
            if outcome.scores is None:
                return _error(UNSCORABLE, f"items[{i}] cannot be scored: {outcome.error}", f"items[{i}]")
        rows = [outcome.scores.values for outcome, _ in results]
        return encode_scores(self.label, self.info.axes, rows, [size for _, size in results])

    # ------------------------------------------------------------------ batching
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _score_item(self, items: list[WireItem]) -> list[tuple[ScoreOutcome, int]]:
        """Score one dynamic batch (items of any requests); each caller gets its outcome and the batch size."""
        began = time.perf_counter()
        outcomes = await asyncio.to_thread(score_isolated, self.scorer, [i.audio for i in items],
                                           [i.instruction for i in items], None, self.label)
        self.scoring_s += time.perf_counter() - began
        self.batches[len(items)] += 1
        return [(outcome, len(items)) for outcome in outcomes]

    # ------------------------------------------------------------------ checks
    def _authorise(self, request: Request) -> JSONResponse | None:
        """None when no token is set or the bearer token matches (compared in constant time), else 401."""
        expected = self.config.token
        if expected is None:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode()):
            return None
        message = "missing bearer token" if not given else "wrong bearer token"
        return _error(UNAUTHORIZED, f"{message}; send 'Authorization: Bearer <token>' (the server's --token)",
                      "Authorization", {"WWW-Authenticate": "Bearer"})

    async def _body(self, request: Request) -> bytes:
        """The request body, refused with 413 as soon as it passes ``max_request_mb``."""
        limit = self.config.max_request_bytes
        too_large = WireError(TOO_LARGE, None, f"the request body is over the limit of {self.config.max_request_mb:g} MB "
                                               "(the server's --max-request-mb); send fewer or shorter clips per request")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)


def build_app(config: ServeConfig) -> Any:
    """The Serve application of ``config`` (replicas, resources, backpressure), ready for ``serve.run``."""
    return RewardServer.options(
        num_replicas=config.replicas,
        ray_actor_options={"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica},
        max_ongoing_requests=max(2 * config.max_batch_size, 16),
        max_queued_requests=config.max_queued_requests,
        backpressure_config={"status_code": 503, "retry_after_s": 1},
    ).bind(config)
