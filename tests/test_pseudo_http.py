"""The OpenAI-compatible HTTP judge against a fake chat server on 127.0.0.1 (loopback only): request
format, normal and malformed replies, timeouts and retries, fatal statuses, and a server that dies
mid-run (finished pairs kept, the rerun resumes when it is back)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import soundfile as sf
import torch

from cmirm_plugin.audio import Audio
from cmirm_plugin.manifest import read_records
from cmirm_plugin.records import Instruction
from train.pseudo.judges.base import JudgeUnavailable, PairView
from train.pseudo.judges.http import HttpJudge, HttpJudgeSettings
from train.pseudo.runner import PseudoLabelOptions, judgments_path, pseudo_label


def audio_parts(request: dict) -> list[np.ndarray]:
    """The clips of a request, decoded, in the order they were sent."""
    parts = [p for p in request["messages"][1]["content"] if p["type"] == "input_audio"]
    return [sf.read(io.BytesIO(base64.b64decode(p["input_audio"]["data"])))[0] for p in parts]


def louder_wins(request: dict) -> str:
    """Musicality: the louder clip (consistent in both orders); alignment: always A (position bias).

    Answers the axes the request asks for, as the template's answer form lists them.
    """
    first, second = (float(np.sqrt(np.mean(c ** 2))) for c in audio_parts(request))
    answers = {"alignment": "A", "musicality": "A" if first > second else "B"}
    asked = request["messages"][1]["content"][-1]["text"]
    return "\n".join(f"{axis}: {token}" for axis, token in answers.items() if f"{axis}: <A, B or tie>" in asked)


def completion(content: Any) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()


class FakeServer:
    """A chat-completions server whose next replies are scripted; it records every request.

    ``script`` holds one action per coming request (then ``answer`` is used): ``("status", code,
    headers)``, ``("hang",)`` (no reply until the server stops), ``("body", bytes)`` or ``("die",)``
    (drop the connection and shut the server down).
    """

    def __init__(self, answer: Callable[[dict], str] = louder_wins) -> None:
        self.answer = answer
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.port = 0
        self.released = threading.Event()
        self.start()

    def start(self) -> None:
        server = self
        self.dead = False

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append(dict(self.headers))
                action = server.script.pop(0) if server.script else ("answer",)
                if action[0] == "die" and not server.dead:
                    server.dead = True
                    threading.Thread(target=server.stop).start()
                if server.dead:                 # no reply until shut down; then connections are refused
                    self.close_connection = True
                    return
                if action[0] == "hang":
                    server.released.wait()
                    return
                status, headers, data = 200, {}, completion(server.answer(body))
                if action[0] == "status":
                    status, headers, data = action[1], action[2], b'{"error": "busy"}'
                elif action[0] == "body":
                    data = action[1]
                try:
                    self.send_response(status)
                    for key, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:        # the client gave up waiting (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Four pairs of 44.1 kHz stereo noise clips; clip A is the louder one in pairs 1 and 3."""
    root = tmp_path_factory.mktemp("http")
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i in range(1, 5):
        loud_a = i % 2 == 1
        for name, amp in ((f"a{i}", 0.5 if loud_a else 0.05), (f"b{i}", 0.05 if loud_a else 0.5)):
            Audio(amp * torch.rand(2, 8820, generator=gen) - amp / 2, 44100).save(root / f"{name}.wav")
        rows.append({"audio-path": f"a{i}.wav", "audio2": f"b{i}.wav", "prompt": f"song {i}", "lyrics": "",
                     "ref-audio-path": ""})
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def judge_for(server: FakeServer, sleeps: list | None = None, **settings) -> HttpJudge:
    values = dict(url=server.url, model="omni-judge", timeout=5.0, connect_timeout=2.0, retries=2, backoff=0.5)
    values.update(settings)
    return HttpJudge(HttpJudgeSettings(**values), sleep=(sleeps.append if sleeps is not None else lambda s: None))


def run(data: Path, judge: HttpJudge, out: Path, **options):
    return pseudo_label(data / "pairs.jsonl", out, judge, options=PseudoLabelOptions(**options), progress=False)


def view(data: Path) -> PairView:
    return PairView(Instruction(text="song"), data / "a1.wav", data / "b1.wav")


def test_normal_replies_and_request_format(server, data, tmp_path, monkeypatch):
    monkeypatch.setenv("PSEUDO_TEST_KEY", "sekret")
    report = run(data, judge_for(server, api_key_env="PSEUDO_TEST_KEY"), tmp_path / "out.jsonl")
    assert len(server.requests) == 8
    request = server.requests[0]
    assert request["model"] == "omni-judge" and request["temperature"] == 0 and request["max_tokens"] == 16
    assert server.headers[0]["Authorization"] == "Bearer sekret"
    system, user = request["messages"]
    assert system["role"] == "system" and "music critic" in system["content"]
    kinds = [p["type"] for p in user["content"]]
    assert kinds.index("input_audio") > [i for i, p in enumerate(user["content"]) if p.get("text") == "Clip A: "][0]
    assert kinds.count("input_audio") == 2 and user["content"][-1]["text"].endswith("musicality: <A, B or tie>")
    part = next(p for p in user["content"] if p["type"] == "input_audio")["input_audio"]
    clip, rate = sf.read(io.BytesIO(base64.b64decode(part["data"])))
    assert part["format"] == "wav" and rate == 16000 and clip.ndim == 1 and len(clip) == 3200   # 0.2 s mono 16 kHz
    # The (B, A) request carries the clips swapped.
    assert np.allclose(audio_parts(server.requests[0])[0], audio_parts(server.requests[1])[1])
    rows = read_records(tmp_path / "out.jsonl")
    assert [r["preference-musicality"] for r in rows] == ["model_a", "model_b", "model_a", "model_b"]
    assert all(r["preference-alignment"] == "" for r in rows)
    assert rows[0]["judge"] == "http:omni-judge:prompt-v1:sr=16000:max_dur=30:max_tokens=16"
    assert rows[0]["judge_answers"]["ab"]["raw"] == "alignment: A\nmusicality: A"
    assert report.axis["alignment"].first_rate == 1.0 and report.axis["alignment"].agreement == 0.0
    assert report.axis["musicality"].agreement == 1.0 and report.axis["musicality"].first_rate == 0.5


def test_malformed_replies_are_recorded_errors(server, data, tmp_path):
    server.script = [("body", b"<html>oops</html>"), ("body", b'{"choices": []}'), ("body", completion(None)),
                     ("body", completion("I prefer clip A.")), ("status", 400, {}), ("answer",),
                     ("body", completion("alignment: A\nmusicality: maybe"))]
    report = run(data, judge_for(server), tmp_path / "out.jsonl")
    assert len(server.requests) == 8                                      # recorded, not retried
    orders = [o for j in read_records(judgments_path(tmp_path / "out.jsonl")) for o in (j["orders"]["ab"],
                                                                                         j["orders"]["ba"])]
    errors = [o["errors"].get("musicality", "") for o in orders]
    assert errors[0].startswith("malformed reply (JSONDecodeError") and orders[0]["raw"] == "<html>oops</html>"
    assert errors[1].startswith("malformed reply (IndexError") and "content is NoneType" in errors[2]
    assert "unexpected text in the answer: 'I prefer clip A.'" in errors[3] and errors[4] == "HTTP 400"
    assert errors[5] == "" and errors[6] == "'musicality': 'maybe' is not A, B or tie" and errors[7] == ""
    assert orders[6]["verdicts"] == {"alignment": "first", "musicality": None}
    # Every pair has a musicality error; only pair 4 got two alignment verdicts ("A" twice: inconsistent).
    assert report.axis["musicality"].error_pairs == 4 and report.axis["alignment"].error_pairs == 3
    assert report.axis["alignment"].judged == 1 and report.rows_written == 0


def test_retries_with_backoff_on_503_429_and_timeouts(server, data):
    """The third request gets no reply: it times out (after 2 s, ample for the replies that do come)."""
    sleeps: list[float] = []
    judge = judge_for(server, sleeps, retries=3, timeout=2.0)
    server.script = [("status", 503, {}), ("status", 429, {"Retry-After": "2"}), ("hang",)]
    reply = judge.judge(view(data), ["musicality"])
    assert reply.verdicts["musicality"].choice == "first"
    assert len(server.requests) == 4                                     # 503, 429, timed out, answered
    assert sleeps == [0.5, 2.0, 2.0]                                     # 0.5*2**0; Retry-After 2 > 1.0; 0.5*2**2
    sleeps.clear()
    server.script = [("status", 502, {})] * 4
    with pytest.raises(JudgeUnavailable, match=r"no answer after 4 attempt\(s\); last problem: HTTP 502"):
        judge_for(server, sleeps, retries=3, max_backoff=0.7).judge(view(data), ["musicality"])
    assert len(server.requests) == 8 and sleeps == [0.5, 0.7, 0.7]        # capped at max_backoff


def test_fatal_statuses_stop_at_once(server, data, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.script = [("status", 401, {})]
    with pytest.raises(JudgeUnavailable, match=r"HTTP 401 \(check the API key in \$OPENAI_API_KEY\)"):
        judge_for(server).judge(view(data), ["musicality"])
    assert len(server.requests) == 1 and "Authorization" not in server.headers[0]
    server.script = [("status", 404, {})]
    with pytest.raises(JudgeUnavailable, match=r"HTTP 404 \(check --url and --model-name\)"):
        judge_for(server).judge(view(data), ["musicality"])
    assert len(server.requests) == 2


def test_unreachable_server_is_bounded_in_time(data):
    """A refused connection fails each attempt at once: no wait for the (here 10-minute) timeouts."""
    closed = FakeServer()
    closed.stop()                                                        # nothing listens on its port any more
    sleeps: list[float] = []
    judge = judge_for(closed, sleeps, retries=1, timeout=600.0, connect_timeout=600.0)
    start = time.monotonic()
    with pytest.raises(JudgeUnavailable, match="after 2 attempt.*ConnectionRefusedError"):
        judge.judge(view(data), ["musicality"])
    assert time.monotonic() - start < 120 and sleeps == [0.5]           # both attempts failed, far below 600 s


def test_server_dies_mid_run_and_the_rerun_resumes(server, data, tmp_path):
    out = tmp_path / "out.jsonl"
    server.script = [("answer",)] * 3 + [("die",)]
    with pytest.raises(JudgeUnavailable):
        run(data, judge_for(server), out)
    assert [j["line"] for j in read_records(judgments_path(out))] == [1]   # pair 2 lost its second answer
    assert len(read_records(out)) == 1
    server.requests.clear()
    server.start()                                                       # back, on the same port
    report = run(data, judge_for(server), out)
    assert len(server.requests) == 6                                     # pairs 2-4, both orders
    assert (report.judged_before, report.judged_now, report.rows_written) == (1, 3, 4)
    assert [r["preference-musicality"] for r in read_records(out)] == ["model_a", "model_b", "model_a", "model_b"]


def test_clips_are_prepared_once_per_pair_and_settings_name_the_judge(server, data, monkeypatch):
    from train.pseudo.judges import clips

    prepared = []
    real = clips.prepare_waveform
    monkeypatch.setattr(clips, "prepare_waveform", lambda path, *args: prepared.append(path) or real(path, *args))
    clips._prepared.cache_clear()
    judge = judge_for(server)
    ab = view(data)
    judge.judge(ab, ["musicality"])
    judge.judge(PairView(ab.instruction, ab.second, ab.first), ["musicality"])
    assert len(server.requests) == 2 and sorted(map(str, prepared)) == [str(ab.first), str(ab.second)]
    # what the judge hears (rate, length) and may answer (tokens) is part of its id: a rerun with other
    # settings is refused instead of mixing its judgments with the earlier ones
    ids = {judge.id, judge_for(server, max_dur=10.0).id, judge_for(server, sample_rate=24000).id,
           judge_for(server, max_tokens=32).id}
    assert len(ids) == 4
