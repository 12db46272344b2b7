"""`cmirm serve` on Ray Serve, tiny CMI-RM, loopback only: the server scores like the in-process
scorer, batches concurrent clients' clips, refuses bad requests with the documented status and
message, survives as far as its clients see a restart, and `generate --reward http://...` ranks
exactly as the local tiny scorer does.

One server per module (Ray Serve takes ~20 s to start on 2 cores), with a token, an allowed
directory and small limits; the last test restarts it as a `cmirm serve` subprocess.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmirm_plugin import Instruction, read_records
from cmirm_plugin.cli import app
from cmirm_plugin.scoring import ScoringSettings, load_scorer
from cmirm_plugin.scoring.http_client import HttpScorer, ServerUnavailable
from cmirm_plugin.testing import noise, sine

pytest.importorskip("ray.serve")
pytestmark = pytest.mark.timeout(600)

TOKEN = "s3cret-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The tiny model's cache and the token, for this process, its Ray workers and its subprocesses.

    These tests own their Ray (the restart test stops the server with its cluster and starts another
    on the same port), so a cluster that earlier tests shared is shut down first.
    """
    import ray

    if ray.is_initialized():
        ray.shutdown()
    cache = tmp_path_factory.mktemp("cmirm-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CMIRM_CACHE", str(cache))
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        yield {"CMIRM_CACHE": str(cache), "CMIRM_SERVE_TOKEN": TOKEN}


@pytest.fixture(scope="module")
def allowed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("served")
    noise(0.5, 16000, seed=7).save(root / "inside.wav")
    return root


@pytest.fixture(scope="module")
def server(env, allowed):
    from rerank.serve.config import ServeConfig
    from rerank.serve.server import start_server

    config = ServeConfig("tiny", device="cpu", port=_free_port(), max_batch_size=8, batch_wait_ms=50,
                         cpus_per_replica=0.5, max_request_mb=1.0, max_audio_s=5.0, allow_dir=allowed, token=TOKEN)
    running = start_server(config, quiet=True)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def local(env):
    return load_scorer("tiny", ScoringSettings(), device="cpu")


def _client(url: str, **options) -> HttpScorer:
    return HttpScorer(url, token=TOKEN, timeout=60, **{"retry_for_s": 30, **options})


def _post(url: str, body: bytes, token: str | None = TOKEN, path: str = "/score") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url + path, data=body, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _pcm_item(seconds: float, rate: int = 8000) -> dict:
    samples = np.zeros(int(seconds * rate), dtype="<f4")
    return {"audio": {"pcm": base64.b64encode(samples.tobytes()).decode(), "sample_rate": rate}, "text": "x"}


# --------------------------------------------------------------------------------------------- scores

def test_the_server_scores_like_the_in_process_scorer(server, local, tmp_path):
    remote = _client(server.url)
    assert remote.axes == ("alignment", "musicality") and remote.sr == 24000
    assert remote.info.model == "tiny-v2" and remote.info.settings == {"max_dur": 120.0, "missing": "mask", "dtype": "fp32"}
    ref = sine(220, 0.6, 16000).save(tmp_path / "ref.flac")
    insts = [Instruction(text="calm piano"), Instruction(text="rock", lyrics="yeah yeah"),
             Instruction(text="jazz", ref_audio=str(ref)), Instruction(text="ambient", ref_audio=noise(0.5, 22050))]
    batch = torch.stack([noise(0.7, 16000, seed=i).waveform[0] for i in range(4)])           # [B, T] tensor
    ragged = [sine(440, 0.5, 32000, channels=2).waveform, noise(0.3, 44100).waveform[0].numpy(),
              noise(0.9, 32000, seed=5).waveform[0], noise(0.4, 32000, seed=6).waveform]    # 1-D/2-D, arrays
    files = [str(noise(0.5, 24000, seed=9 + i).save(tmp_path / f"c{i}.wav")) for i in range(4)]
    for audios, rate in ((batch, 16000), (ragged, 32000), (files, None)):
        np.testing.assert_allclose(remote.score_batch(audios, insts, sample_rate=rate),
                                   local.score_batch(audios, insts, sample_rate=rate), atol=1e-5)


def test_concurrent_clients_are_batched(server, local):
    clips = [noise(0.3, 16000, seed=i) for i in range(8)]
    insts = [Instruction(text=f"prompt {i}") for i in range(8)]
    expected = local.score_batch(clips, insts)
    before = _client(server.url).client.request("GET", "/info")["stats"]
    results: dict[int, list] = {i: [] for i in range(8)}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        remote = _client(server.url)
        try:
            for _ in range(20):
                results[i].append(remote.score_batch([clips[i]], insts[i])[0])
        except BaseException as exc:   # reported below with the thread's number
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and all(len(r) == 20 for r in results.values())
    for i, rows in results.items():
        np.testing.assert_allclose(np.stack(rows), np.repeat(expected[i : i + 1], 20, axis=0), atol=1e-5)
    stats = _client(server.url).client.request("GET", "/info")["stats"]
    assert stats["requests"] - before["requests"] == 160 and stats["items"] - before["items"] == 160
    formed = {int(size): count - before["batches"].get(size, 0) for size, count in stats["batches"].items()}
    assert sum(size * count for size, count in formed.items()) == 160
    assert max(size for size, count in formed.items() if count) > 1 and max(formed) <= 8   # batched, within the cap
    status, answer = _post(server.url, json.dumps({"items": [_pcm_item(0.2), _pcm_item(0.2)]}).encode())
    assert status == 200 and answer["batch_sizes"] == [2, 2] and len(answer["scores"]) == 2


# --------------------------------------------------------------------------------------------- refusals

def test_bad_requests_get_their_status_and_message(server, allowed, tmp_path):
    url = server.url
    cases = [
        (b"{not json", TOKEN, 400, None, "the request body is not valid JSON"),
        (json.dumps({"items": [{"text": "no audio"}]}).encode(), TOKEN, 400, "items[0].audio", "every item needs its audio"),
        (json.dumps(_pcm_item(6.0)).encode(), TOKEN, 413, "items[0].audio", "audio is 6.0 s long; the limit is 5 s"),
        (json.dumps({"items": [_pcm_item(0.2), _pcm_item(4.9, 48000)]}).encode(), TOKEN, 413, None,
         "over the limit of 1 MB (the server's --max-request-mb)"),
        (json.dumps(_pcm_item(0.2)).encode(), "wrong", 401, "Authorization", "wrong bearer token"),
        (json.dumps(_pcm_item(0.2)).encode(), None, 401, "Authorization", "missing bearer token"),
        (json.dumps({"audio": {"path": "../" + tmp_path.name + "/x.wav"}}).encode(), TOKEN, 403, "items[0].audio.path",
         "is outside the directory the server allows (--allow-dir)"),
        (json.dumps({"audio": {"path": "/etc/passwd"}}).encode(), TOKEN, 403, "items[0].audio.path", "outside"),
        (json.dumps({"items": [_pcm_item(0.2), _pcm_item(0.01)]}).encode(), TOKEN, 422, "items[1]",
         "items[1] cannot be scored: AudioError"),
    ]
    for body, token, status, field, message in cases:
        got, answer = _post(url, body, token)
        assert (got, answer.get("field")) == (status, field), (message, answer)
        assert message in answer["error"]
    ok, answer = _post(url, json.dumps({"audio": {"path": "inside.wav"}, "text": "x"}).encode())
    assert ok == 200 and len(answer["scores"]) == 1
    assert _post(url, b"", None, "/health") == (200, {"status": "ok"})          # health needs no token
    assert _post(url, b"", "wrong", "/info")[0] == 401


# --------------------------------------------------------------------------------------------- commands

def test_generate_with_a_remote_reward_ranks_like_the_local_scorer(server, env, tmp_path):
    runner = CliRunner(env={"COLUMNS": "200", **env})
    common = ["generate", "soft piano", "-n", "4", "-k", "2", "--tiny", "--duration", "0.4"]
    rankings = {}
    # the client asks for bf16, but the server's scores are fp32: run.json records what made the scores
    for name, extra in (("local", []), ("remote", ["--reward", server.url, "--dtype", "bf16"])):
        result = runner.invoke(app, [*common, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output + repr(result.exception)
        rankings[name] = sorted(read_records(tmp_path / name / "ranking.jsonl"), key=lambda r: r["id"])
    local, remote = rankings["local"], rankings["remote"]
    assert [(r["id"], r["rank"], r["selected"]) for r in remote] == [(r["id"], r["rank"], r["selected"]) for r in local]
    for a, b in zip(local, remote):
        assert b["scores"] == pytest.approx(a["scores"], abs=1e-5)
    assert {r["scorer"] for r in remote} == {server.url}
    run = json.loads((tmp_path / "remote" / "run.json").read_text())
    assert run["result"]["reward"] == server.url and run["result"]["dtype"] == "fp32"


def test_clients_survive_a_server_restart_and_fail_clearly_once_it_is_gone(server, env, local, tmp_path):
    """The in-process server stops; a `cmirm serve` subprocess takes its port; a client mid-run retries through."""
    clip, inst = noise(0.3, 16000, seed=11), Instruction(text="restart")
    expected = local.score_batch([clip], inst)[0]
    remote = _client(server.url, retry_for_s=300)
    done: list[np.ndarray] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def run() -> None:
        try:
            while not stop.is_set():
                done.append(remote.score_batch([clip], inst)[0])
                time.sleep(0.2)
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    _wait(lambda: len(done) >= 3, 60)
    server.stop()
    import ray

    assert server.connected and not ray.is_initialized()   # the Ray it started is shut down with it
    before = len(done)
    port = server.config.port
    command = [sys.executable, "-c", "from cmirm_plugin.cli import main; main()", "serve", "--tiny", "--device", "cpu",
               "--port", str(port), "--cpus-per-replica", "0.5", "--max-batch-size", "4"]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:   # a file, not a pipe: Ray's log lines must never block the server
        proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=sink, stderr=sink, start_new_session=True)
    try:
        _wait(lambda: len(done) >= before + 3 or proc.poll() is not None or failures, 300)
        assert proc.poll() is None, log.read_text()[-2000:]
        _wait(lambda: "Ctrl-C stops it" in log.read_text(), 120)    # started: it now stops on SIGINT
    finally:
        stop.set()
        worker.join(timeout=120)
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert not failures and len(done) >= before + 3
    np.testing.assert_allclose(np.stack(done), np.repeat(expected[None], len(done), axis=0), atol=1e-5)
    assert rc == 0 and "reward server stopped" in log.read_text()
    with pytest.raises(ServerUnavailable, match=rf"reward server {server.url} is unavailable: .*is `cmirm serve` "
                                                "running there\\?"):
        _client(server.url, retry_for_s=1).score_batch([clip], inst)
    import psutil

    left = [c for c in psutil.Process().children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]
    assert not left, [c.cmdline()[:3] for c in left]             # serve.shutdown + ray.shutdown left nothing


def _wait(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {seconds} s")
        time.sleep(0.2)


def test_the_gpu_shaped_stand_in_scores_like_the_sleeping_scorer_and_loads_by_spec():
    """`benchmarks/reward_server.py` serves it by spec; it must score exactly like `SleepScorer`, whose cost it only reshapes."""
    from cmirm_plugin.scoring import ScorerSpec
    from rerank.synthetic import BatchedSleepScorer, SleepScorer

    stand_in = load_scorer(ScorerSpec.parse("rerank.synthetic:BatchedSleepScorer"), ScoringSettings(), "cpu")
    assert isinstance(stand_in, BatchedSleepScorer) and (stand_in.call_seconds, stand_in.seconds) == (0.05, 0.001)
    clips = [sine(220 * (i + 1), 0.2, 24000) for i in range(3)]
    prompts = [Instruction(text=f"p{i}") for i in range(3)]
    assert np.array_equal(stand_in.score_batch(clips, prompts, 24000), SleepScorer().score_batch(clips, prompts, 24000))
