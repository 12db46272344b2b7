"""An audio-language model behind an OpenAI-compatible chat endpoint (e.g. vLLM serving Qwen3-Omni).

Uses only the standard library (``http.client``): each request gets a connect timeout and a read
timeout (the longest wait for data from the server), and is retried with exponential backoff
(``backoff * 2**attempt``, at most ``max_backoff``; a numeric ``Retry-After`` is honoured within that
cap) on 429, 5xx, timeouts and connection errors. After ``retries`` failed retries the judge raises
`JudgeUnavailable`, which stops the run with every finished pair kept. 401/403/404 stop at once
(bad key, URL or model); any other 4xx, and a 200 whose body is not a chat completion, are recorded
as that pair and order's error.

Request: ``POST <url>/chat/completions`` with the `train.pseudo.prompt` template as a system
message and a user turn of ``text`` and ``input_audio`` parts (base64 16-bit WAV, mono,
``sample_rate`` Hz, first ``max_dur`` s), ``temperature`` 0 (greedy) and ``max_tokens``. The API key,
if the environment variable ``api_key_env`` is set, goes in ``Authorization: Bearer``; a local
server usually needs none.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from cmirm_plugin.errors import ConfigError
from train.pseudo.judges.base import JudgeReply, JudgeUnavailable, PairView, judge_id
from train.pseudo.judges.clips import load_clip, wav_bytes
from train.pseudo.prompt import PROMPT_VERSION, Prompt, build_prompt, parse_verdicts

_RETRY_STATUS = frozenset({429}) | frozenset(range(500, 600))
_SNIPPET = 2000


@dataclass(frozen=True)
class HttpJudgeSettings:
    """Where the endpoint is and how patiently to talk to it (module docstring)."""

    url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0
    connect_timeout: float = 10.0
    retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    max_tokens: int = 16
    sample_rate: int = 16000
    max_dur: float = 30.0

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {self.url!r}")
        if not self.model:
            raise ConfigError("--model-name is required with --judge http (the model the server hosts)")
        if self.timeout <= 0 or self.connect_timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise ConfigError(f"timeouts must be > 0 and retries / backoff >= 0, got timeout={self.timeout}, "
                              f"connect_timeout={self.connect_timeout}, retries={self.retries}, backoff={self.backoff}")

    @property
    def endpoint(self) -> str:
        url = self.url.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"


class HttpJudge:
    """Judge through an OpenAI-compatible chat-completions endpoint (module docstring).

    The id names the model, the prompt version, the clips' sample rate and ``max_dur``, and
    ``max_tokens``. ``sleep`` is injectable so tests need not wait out the backoff.
    """

    def __init__(self, settings: HttpJudgeSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.id = judge_id("http", settings.model, f"prompt-v{PROMPT_VERSION}", sr=settings.sample_rate,
                           max_dur=float(settings.max_dur), max_tokens=settings.max_tokens)
        self._sleep = sleep
        parts = urllib.parse.urlsplit(settings.endpoint)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")

    # ------------------------------------------------------------------ request
    def _content(self, prompt: Prompt) -> list[dict[str, Any]]:
        s = self.settings
        parts: list[dict[str, Any]] = []
        for seg in prompt.segments:
            if seg.kind == "text":
                parts.append({"type": "text", "text": seg.text})
            else:
                data = base64.b64encode(wav_bytes(load_clip(seg.audio, s.sample_rate, s.max_dur))).decode("ascii")
                parts.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
        return parts

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.settings.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post_once(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        s = self.settings
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=s.connect_timeout)
        try:
            conn.connect()
            conn.sock.settimeout(s.timeout)
            conn.request("POST", self._path, body=body, headers=self._headers())
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def _delay(self, attempt: int, headers: dict[str, str]) -> float:
        s = self.settings
        delay = s.backoff * 2 ** attempt
        retry_after = headers.get("retry-after", "")
        if retry_after.replace(".", "", 1).isdigit():
            delay = max(delay, float(retry_after))
        return min(delay, s.max_backoff)

    def _post(self, payload: dict[str, Any]) -> tuple[int, bytes]:
        """POST ``payload`` with retries; the final status and body, or raise `JudgeUnavailable`."""
        s = self.settings
        body = json.dumps(payload).encode("utf-8")
        for attempt in range(s.retries + 1):
            headers: dict[str, str] = {}
            try:
                status, headers, data = self._post_once(body)
            except (OSError, http.client.HTTPException) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if status in (401, 403, 404):
                    hint = "check --url and --model-name" if status == 404 else f"check the API key in ${s.api_key_env}"
                    raise JudgeUnavailable(f"{s.endpoint}: HTTP {status} ({hint}): {data[:300]!r}")
                if status not in _RETRY_STATUS:
                    return status, data
                problem = f"HTTP {status}"
            if attempt < s.retries:
                self._sleep(self._delay(attempt, headers))
        raise JudgeUnavailable(f"{s.endpoint}: no answer after {s.retries + 1} attempt(s); last problem: {problem}. "
                               "Finished pairs are kept: rerun the same command to resume.")

    # ------------------------------------------------------------------ judge
    def judge(self, view: PairView, axes: Sequence[str]) -> JudgeReply:
        prompt = build_prompt(view, axes)
        payload = {"model": self.settings.model, "temperature": 0, "max_tokens": self.settings.max_tokens, "n": 1,
                   "messages": [{"role": "system", "content": prompt.system},
                                {"role": "user", "content": self._content(prompt)}]}
        status, data = self._post(payload)
        text = data.decode("utf-8", errors="replace")
        if status != 200:
            return JudgeReply.failed(axes, f"HTTP {status}", raw=text[:_SNIPPET])
        try:
            answer = json.loads(text)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return JudgeReply.failed(axes, f"malformed reply ({type(exc).__name__}: {exc})", raw=text[:_SNIPPET])
        if not isinstance(answer, str):
            return JudgeReply.failed(axes, f"malformed reply (content is {type(answer).__name__}, not text)",
                                     raw=text[:_SNIPPET])
        return JudgeReply(parse_verdicts(answer, axes), raw=answer)
