"""`HttpScorer` (``load_scorer("http://...")``) against a small stand-in server on loopback (no Ray):
requests of batch_size clips, retries on 429/5xx and refused connections, timeouts, the token,
the server's settings, and bad clips isolated while an unavailable server is never blamed on a clip.
The real server (`cmirm serve`) is tested in test_reward_server.py."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from cmirm_plugin import Audio, Instruction, read_records
from cmirm_plugin.errors import AudioError, ConfigError
from cmirm_plugin.scoring import ScoringSettings, load_scorer, score_isolated
from cmirm_plugin.scoring.spec import ScorerSpec
from cmirm_plugin.scoring.http_client import HttpScorer, ServerTimeout, ServerUnavailable
from cmirm_plugin.scoring.wire import ServerInfo, WireError, WireLimits, decode_request, encode_scores
from cmirm_plugin.testing import noise, sine

pytestmark = pytest.mark.timeout(120)
AXES = ("alignment", "musicality")   # the stand-in's: alignment = rms, musicality = peak


def features(audio) -> list[float]:
    wave = audio.waveform
    return [float(wave.pow(2).mean().sqrt()), float(wave.abs().max())]


class StandIn(BaseHTTPRequestHandler):
    """Answers /info and /score like `cmirm serve` (same wire format), with faults on demand."""

    state: dict = {}

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _checked(self) -> bool:
        state = self.state
        state["seen"].append((self.command, self.path, self.headers.get("Authorization")))
        if state.get("token") and self.headers.get("Authorization") != f"Bearer {state['token']}":
            self._send(401, {"error": "wrong bearer token", "field": "Authorization"})
            return False
        if state["faults"]:
            self._send(state["faults"].pop(0), {"error": "busy", "field": None}, {"Retry-After": "0"})
            return False
        time.sleep(state.get("sleep", 0))
        return True

    def do_GET(self) -> None:
        if self._checked():
            self._send(200, ServerInfo("stand-in", AXES, 16000, {"max_dur": 120.0, "missing": "mask"}).to_dict())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if not self._checked():
            return
        try:
            items = decode_request(json.loads(body), WireLimits())
        except WireError as exc:
            self._send(exc.status, exc.payload())
            return
        short = [i for i, item in enumerate(items) if item.audio.num_samples < 100]
        if short:
            self._send(422, {"error": f"items[{short[0]}] cannot be scored: too short", "field": f"items[{short[0]}]"})
            return
        self.state["batches"].append(len(items))
        self._send(200, encode_scores("stand-in", AXES, np.array([features(i.audio) for i in items]), [len(items)] * len(items)))


@pytest.fixture
def server():
    StandIn.state = {"faults": [], "seen": [], "batches": []}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", StandIn.state
    httpd.shutdown()
    httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scores_come_back_in_order_from_requests_of_batch_size(server):
    url, state = server
    scorer = load_scorer(url, ScoringSettings(batch_size=4), init_kwargs={"timeout": 10, "concurrency": 2})
    assert isinstance(scorer, HttpScorer) and scorer.axes == AXES and scorer.sr == 16000
    clips = [noise(0.1 + 0.01 * i, 8000, amplitude=0.05 * (i + 1), seed=i) for i in range(10)]
    scores = scorer.score_batch(clips, Instruction(text="x"))
    assert scores.dtype == np.float32 and scores.shape == (10, 2)
    np.testing.assert_allclose(scores, [features(c) for c in clips], rtol=1e-6)
    assert sorted(state["batches"]) == [2, 4, 4]                  # 10 clips in requests of at most 4
    batch = torch.stack([c.waveform[0, :800] for c in clips[:3]])   # one [B, T] tensor with its rate
    np.testing.assert_allclose(scorer.score_batch(batch, Instruction(), sample_rate=8000),
                               [features(Audio(row, 8000)) for row in batch], rtol=1e-6)


def test_retries_on_backpressure_and_server_errors(server):
    url, state = server
    scorer = HttpScorer(url, timeout=10, retry_for_s=30)
    state["faults"] = [503, 429, 502, 500]
    assert scorer.score_batch([noise(0.1, 8000)], Instruction()).shape == (1, 2)
    assert [path for _, path, _ in state["seen"]] == ["/info"] + ["/score"] * 5    # 4 refusals, then scored


def test_a_server_that_is_gone_gives_a_clear_error():
    url = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match=rf"reward server {url} is unavailable: .*refused.*after \d+ "
                                                r"attempt\(s\) over 1 s\); is `cmirm serve` running there\?"):
        load_scorer(url, init_kwargs={"retry_for_s": 1})
    assert time.monotonic() - start < 10
    with pytest.raises(ServerUnavailable, match="is unavailable"):   # a command checking its --reward fails early
        ScorerSpec.parse(url).known_axes()


def test_a_slow_answer_times_out(server):
    url, state = server
    scorer = HttpScorer(url, timeout=5)
    state["sleep"] = 2.0
    scorer.client.timeout = 0.5
    with pytest.raises(ServerTimeout, match="did not answer POST /score within 0.5 s"):
        scorer.score_batch([noise(0.1, 8000)], Instruction())


def test_the_token_comes_from_the_environment(server, monkeypatch):
    url, state = server
    state["token"] = "t0k"
    with pytest.raises(ServerUnavailable, match="refused /info \\(HTTP 401\\): wrong bearer token; give the server's "
                                                "token .*CMIRM_SERVE_TOKEN"):
        HttpScorer(url, timeout=5)
    monkeypatch.setenv("CMIRM_SERVE_TOKEN", "t0k")
    assert HttpScorer(url, timeout=5).score_batch([noise(0.1, 8000)], Instruction()).shape == (1, 2)
    assert state["seen"][-1][2] == "Bearer t0k"


def test_settings_must_match_the_servers(server):
    url, _ = server
    with pytest.raises(ConfigError, match=r"scores with max_dur=120.0 \(asked 30.0\)"):
        load_scorer(url, ScoringSettings(max_dur=30))
    load_scorer(url, ScoringSettings(dtype="fp32"))   # the dtype resolves on the server's device


def test_a_bad_clip_is_isolated_but_an_unavailable_server_is_not_blamed_on_clips(server):
    url, state = server
    scorer = HttpScorer(url, timeout=5, retry_for_s=0.5)
    clips = [noise(0.1, 8000, seed=1), noise(0.001, 8000), noise(0.1, 8000, seed=2)]
    outcomes = score_isolated(scorer, clips, Instruction())
    assert [o.error is None for o in outcomes] == [True, False, True]
    assert "cannot be scored: too short" in outcomes[1].error and "AudioError" in outcomes[1].error
    assert outcomes[2].scores.values == pytest.approx(features(clips[2]), rel=1e-6)
    with pytest.raises(AudioError, match="HTTP 422"):
        scorer.score_batch(clips, Instruction())
    state["faults"] = [503] * 1000
    before = len(state["seen"])
    with pytest.raises(ServerUnavailable, match="HTTP 503"):
        score_isolated(scorer, clips, Instruction())
    assert len(state["seen"]) - before < 20            # one call's retries, not one per clip


def _invoke(args: list[str], env: dict | None = None):
    from typer.testing import CliRunner

    from cmirm_plugin.cli import app

    result = CliRunner(env={"COLUMNS": "200", **(env or {})}).invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_best_of_n_bench_and_scaling_take_a_remote_reward(server, tmp_path):
    from rerank.best_of_n import best_of_n

    url, _ = server

    def tone(instruction, seed, duration):
        return 0.05 * (seed + 1) * torch.sin(torch.arange(int(duration * 16000)) * 0.1), 16000

    best = best_of_n(tone, "pad", n=5, k=2, scorer=load_scorer(url), duration=0.2, sample_rate=16000)
    assert [r.candidate.seed for r in best] == [4, 3]                  # the loudest: the server's musicality

    root = tmp_path / "data"
    rows = []
    for i in range(2):
        sine(200.0 * (i + 1), 0.5, 16000, amplitude=0.1 * (i + 1)).save(root / f"a{i}.wav")
        noise(0.5, 16000, amplitude=0.05, seed=i).save(root / f"b{i}.wav")
        rows.append({"source": "cmi-arena-annotation", "split": "test", "audio-path": f"a{i}.wav", "audio2": f"b{i}.wav",
                     "prompt": f"prompt {i}", "lyrics": "", "ref-audio-path": "", "preference-alignment": "model_a",
                     "preference-musicality": "model_b", "confidence_preference-alignment": 3,
                     "confidence_preference-musicality": 3})
    (root / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _invoke(["bench", "--dataset-jsonl", str(root / "bench.jsonl"), "--dataset-root", str(root), "--model", url,
             "--out", str(tmp_path / "bench")])
    for record in read_records(tmp_path / "bench" / "results.jsonl"):
        assert record["predicted_musicality"] == pytest.approx(features(Audio.load(root / record["audio-path"]))[1], rel=1e-6)

    env = {"CMIRM_CACHE": str(tmp_path / "cache")}
    _invoke(["generate", "calm", "-n", "3", "-k", "1", "--tiny", "--duration", "0.3", "--out", str(tmp_path / "run")], env)
    _invoke(["scaling", "--from", str(tmp_path / "run"), "--eval-reward", url, "--n-boot", "10",
             "--out", str(tmp_path / "curves")], env)
    paths = {r["id"]: tmp_path / "run" / r["audio_path"] for r in read_records(tmp_path / "run" / "manifest.jsonl")
             if r["record"] == "candidate"}
    evals = read_records(tmp_path / "curves" / "eval_scores.jsonl")
    assert len(evals) == 3 and {r["scorer"] for r in evals} == {url}
    for record in evals:
        assert record["scores"]["musicality"] == pytest.approx(features(Audio.load(paths[record["id"]]))[1], rel=1e-6)
