"""The pipeline on Ray: same results as in-process, exactly-once under actor death, a multi-node cluster,
a clean Ctrl-C, nothing left behind by a killed driver, and the worker pools' limits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

from cmirm_plugin import CmirmError, Instruction, read_records
from cmirm_plugin.scoring import ScorerSpec
from rerank.actor_pool import ActorPool, Placement, Worker, next_results
from rerank.generate import GenerateConfig, run_generate
from rerank.pool import PoolConfig, ScoreItem, ScorerPool
from rerank.pool_options import PoolOptions
from rerank.run_records import read_run

pytestmark = pytest.mark.timeout(420)

REPO = Path(__file__).resolve().parents[1]
SLEEPY = "py:rerank.synthetic:sleepy_tone"
SLEEP_SCORER = ScorerSpec.parse("rerank.synthetic:SleepScorer")


def _quiet():
    from rich.console import Console

    return Console(quiet=True)


def _once_each(out: Path) -> tuple[Counter, Counter]:
    """How many candidate records and how many score records each candidate has in the manifest."""
    records = read_records(out / "manifest.jsonl")
    return (Counter(r["id"] for r in records if r["record"] == "candidate"),
            Counter(r["id"] for r in records if r["record"] == "scores"))


def test_a_ray_run_equals_the_in_process_run(tmp_path: Path, tiny_checkpoint: Path, ray_cluster, one_torch_thread):
    common = dict(instructions=[Instruction(text="calm piano", id="calm"), Instruction(text="rock", id="rock")],
                  generator="tiny-musicgen", reward=ScorerSpec.parse(str(tiny_checkpoint)), n=3, k=2, duration=0.3)
    local = run_generate(GenerateConfig(out=tmp_path / "local", **common, pool=PoolOptions(
        backend="local", threads_per_actor=1, score_batch_size=2, device="cpu")), console=_quiet())
    ray = run_generate(GenerateConfig(out=tmp_path / "ray", **common, pool=PoolOptions(
        backend="ray", gen_actors=2, num_actors=2, gen_cpus_per_actor=1, threads_per_actor=1, score_batch_size=2,
        device="cpu")), console=_quiet())
    # Both stages ran on Ray actors (how many of the two of each started before the work ran out is timing).
    assert all(w["pid"] != os.getpid() for stage in ("generator", "scorer") for w in ray.pools[stage].workers)
    assert "generator" not in local.pools or local.pools["generator"].workers[0]["pid"] == os.getpid()
    label = ScorerSpec.parse(str(tiny_checkpoint)).label
    views = {name: {v.id: v for v in read_run(tmp_path / name)} for name in ("local", "ray")}
    assert sorted(views["ray"]) == sorted(views["local"]) and len(views["ray"]) == 6
    for key, view in views["local"].items():
        other = views["ray"][key]
        ray_audio, ray_rate = sf.read(tmp_path / "ray" / other.audio_path, dtype="float32")
        local_audio, local_rate = sf.read(tmp_path / "local" / view.audio_path, dtype="float32")
        assert ray_rate == local_rate and np.array_equal(ray_audio, local_audio)     # the same samples, bit for bit
        assert other.scores[label] == view.scores[label]                              # exactly, not approximately
    assert [r["id"] for r in ray.ranking.selected] == [r["id"] for r in local.ranking.selected]
    ray_pool = json.loads((tmp_path / "ray" / "run.json").read_text())["pool"]
    assert (ray_pool["schedule"], ray_pool["gen_actors"], ray_pool["num_actors"]) == ("stream", 2, 2)
    assert json.loads((tmp_path / "local" / "run.json").read_text())["pool"]["schedule"] == "phased"


def _worker_processes(kind: str, since: float) -> list[psutil.Process]:
    """This session's live Ray actor processes of ``kind`` (``GeneratorWorker``, ``ScorerWorker``) started after ``since``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "create_time", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith(f"ray::{kind}") and proc.info["create_time"] >= since \
                and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def test_killed_generator_and_scorer_actors_lose_and_repeat_no_candidate(tmp_path: Path, ray_cluster):
    since = time.time() - 1
    killed: list[str] = []

    def kill_workers(record):
        kind = {"candidate": "GeneratorWorker", "scores": "ScorerWorker"}.get(record["record"])
        if kind and kind not in killed:
            victim = _worker_processes(kind, since)[0]
            victim.kill()                                  # SIGKILL: as an OOM kill or a crashed node would
            victim.wait(timeout=30)
            killed.append(kind)

    out = tmp_path / "run"
    config = GenerateConfig(out=out, instructions=[Instruction(text="a", id="a"), Instruction(text="b", id="b")],
                            generator=SLEEPY, reward=SLEEP_SCORER, n=6, k=2, duration=0.2, params={"seconds": 0.2},
                            policy="zsum", pool=PoolOptions(backend="ray", gen_actors=2, num_actors=2,
                                                            gen_cpus_per_actor=0.5, threads_per_actor=1,
                                                            score_batch_size=1, device="cpu"))
    result = run_generate(config, console=_quiet(), on_record=kill_workers)
    assert killed == ["GeneratorWorker", "ScorerWorker"]
    assert result.pools["generator"].restarts >= 1 and result.pools["scorer"].restarts >= 1
    generated, scored = _once_each(out)
    assert len(generated) == 12 and set(generated.values()) == {1}    # every candidate exactly once
    assert scored == generated
    assert result.counts.generated == 12 and result.counts.scored == 12
    assert len(list((out / "candidates").iterdir())) == 12 and len(result.ranking.selected) == 4


MULTI_NODE_JOB = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from ray.cluster_utils import Cluster
    from rich.console import Console
    import rerank.generate
    from cmirm_plugin import Instruction
    from cmirm_plugin.scoring import ScorerSpec
    from rerank.gen_pool import GeneratorPool
    from rerank.generate import GenerateConfig, run_generate
    from rerank.pool_options import PoolOptions

    pools = []

    class Watched(GeneratorPool):                       # lets the test see the job's generator pool
        def __init__(self, config):
            super().__init__(config)
            pools.append(self)

    rerank.generate.GeneratorPool = Watched

    # A head and two worker nodes; only the workers have the custom resource a generator needs, one each.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, resources={"cmirm_gen": 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    removed = []

    def remove_a_node(record):
        if record["record"] == "candidate" and not removed:
            pools[0].wait_ready(timeout=240, every=True)    # both generators up (one per worker node), then
            cluster.remove_node(workers[0])                # mid-job: its generator dies with it
            removed.append(record["id"])

    pool = PoolOptions(backend="ray", ray_address=cluster.address, gen_actors=2, gen_cpus_per_actor=0.5,
                       gen_resources={"cmirm_gen": 1}, num_actors=1, threads_per_actor=1, score_batch_size=2,
                       device="cpu")
    config = GenerateConfig(out=Path(sys.argv[1]), instructions=[Instruction(text="a", id="a"),
                            Instruction(text="b", id="b")], generator="py:rerank.synthetic:sleepy_tone",
                            reward=ScorerSpec.parse("rerank.synthetic:SleepScorer"), n=4, k=2, duration=0.2,
                            params={"seconds": 0.4}, policy="zsum", pool=pool)
    result = run_generate(config, console=Console(quiet=True), on_record=remove_a_node)
    generators = result.pools["generator"]
    print(json.dumps({"removed_after": removed, "nodes": len(generators.nodes), "restarts": generators.restarts,
                      "generated": result.counts.generated, "scored": result.counts.scored}))
    cluster.shutdown()
""")


@pytest.mark.multinode
def test_a_job_spreads_over_nodes_and_survives_losing_one(tmp_path: Path):
    """Multi-node (a `ray.cluster_utils.Cluster` on this machine, in its own process)."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", MULTI_NODE_JOB, str(out)], capture_output=True, text=True,
                          timeout=360, cwd=REPO, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["nodes"] == 2                 # the two generators ran on the two worker nodes
    assert report["restarts"] >= 1 and report["removed_after"]
    assert report["generated"] == 8 and report["scored"] == 8
    generated, scored = _once_each(out)
    assert len(generated) == 8 and set(generated.values()) == {1} and scored == generated


# ------------------------------------------------------------------------------------------------
# Ctrl-C and a killed driver: the command-line job in its own process, on a private Ray cluster


def _start_cli_job(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A generate job on Ray, returned once its first candidate is on disk (its 60 candidates take 15 s
    more, so a signal sent next lands mid-job)."""
    out = tmp_path / "run"
    command = [sys.executable, "-c", "from cmirm_plugin.cli import main; main()", "generate", "pad", "-n", "60",
               "--generator", SLEEPY, "--param", "seconds=0.5", "--reward", "rerank.synthetic:SleepScorer",
               "--policy", "zsum", "--duration", "0.2", "--backend", "ray", "--gen-actors", "2",
               "--gen-cpus-per-actor", "0.5", "--threads-per-actor", "1", "--device", "cpu", "--out", str(out)]
    # As a terminal's foreground job: SIGINT at its default even when these tests run as a background job,
    # whose children inherit it ignored (then Python installs no KeyboardInterrupt handler).
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not any(r["record"] == "candidate" for r in read_records(out / "manifest.jsonl")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the job made no candidate in time"
        time.sleep(0.5)
    return proc, out


def _descendants(proc: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def _all_gone(processes: list[psutil.Process], timeout: float) -> list[str]:
    """The processes still running after ``timeout`` seconds (zombies count as gone)."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    left = []
    for p in alive:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(p.cmdline())[:80])
        except psutil.NoSuchProcess:
            pass
    return left


def test_ctrl_c_exits_130_with_a_message_and_leaves_nothing_running(tmp_path: Path):
    proc, out = _start_cli_job(tmp_path)
    family = _descendants(proc)
    assert any("ray::GeneratorWorker" in " ".join(p.cmdline()) for p in family if p.is_running())
    os.killpg(proc.pid, signal.SIGINT)              # what a terminal's Ctrl-C does to the foreground job
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted; rerun the same command to resume" in stderr
    assert "Traceback" not in stderr and "Segmentation fault" not in stderr
    assert _all_gone(family, timeout=30) == []       # no raylet, GCS, agent or worker left behind
    generated, _ = _once_each(out)
    assert generated and set(generated.values()) == {1}


def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path: Path):
    proc, _ = _start_cli_job(tmp_path)
    family = _descendants(proc)
    assert any("ray::DashboardAgent" in " ".join(p.cmdline()) for p in family if p.is_running())
    proc.kill()
    proc.communicate(timeout=60)
    assert _all_gone(family, timeout=30) == []


# ------------------------------------------------------------------------------------------------
# The pools' limits, with stand-in workers


class Dying(Worker):
    """A worker whose process dies on every task (as a segfaulting model would)."""

    def work(self, item):
        os._exit(1)


def test_a_pool_gives_up_after_max_restarts(ray_cluster):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # this test module is not importable by workers
    with ActorPool(Dying, name="toy", backend="ray", size=1, placement=Placement(num_cpus=0.5), max_restarts=2) as pool:
        pool.submit("a", "work", 1)
        with pytest.raises(CmirmError, match=r"toy workers died 3 times; giving up \(max_restarts=2\)"):
            while True:
                next_results([pool], timeout=60)
        assert pool.restarts == 2


class Counting(Worker):
    """A worker that counts the calls it served (in its own process)."""

    def __init__(self) -> None:
        self.calls = 0

    def work(self, item):
        self.calls += 1
        return item * 10, self.calls


def test_a_result_lost_with_its_node_is_computed_again_once(ray_cluster, monkeypatch):
    """`ray.get` raising ObjectLostError (the result's node went away) requeues that task alone: it runs
    again, is reported once, and the other tasks are untouched."""
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    real_get, lost = ray.get, []

    def get(ref, *args, **kwargs):
        value = real_get(ref, *args, **kwargs)
        if isinstance(value, tuple) and value[0] == 20 and not lost:   # the first result of item 2 is lost
            lost.append(ref)
            raise ray.exceptions.ObjectLostError(ref.hex(), None, "test")
        return value

    monkeypatch.setattr(ray, "get", get)
    with ActorPool(Counting, name="toy", backend="ray", size=1, placement=Placement(num_cpus=0.5),
                   max_in_flight=3) as pool:
        for item in (1, 2, 3):
            pool.submit(item, "work", item)
        results: dict = {}
        while pool.busy():
            for _, key, value in next_results([pool], timeout=60):
                assert key not in results        # each task reported once
                results[key] = value
    assert lost and sorted(results) == [1, 2, 3]
    assert [results[k][0] for k in (1, 2, 3)] == [10, 20, 30]
    assert results[2][1] == 4 and pool.restarts == 0   # item 2 ran a second time (the worker's 4th call); no restart


class Buggy:
    """A scorer whose code fails (not its input): every batch raises."""

    sr = 16000
    axes = ("alignment", "musicality")

    def score_batch(self, audios, instructions, sample_rate=None):
        raise RuntimeError("index out of range in the reward head")


def test_a_batch_that_raises_in_its_worker_gives_an_error_per_candidate():
    from cmirm_plugin.testing import sine

    items = [ScoreItem(f"c{i}", sine(200 + 10 * i, 0.5, 16000), Instruction(text="x")) for i in range(3)]
    with ScorerPool.of(Buggy(), batch_size=2) as pool:
        results = pool.score(items)
    assert [r.key for r in results] == ["c0", "c1", "c2"] and all(r.scores is None for r in results)
    assert {r.error for r in results} == {"worker error: RuntimeError: index out of range in the reward head"}
    with pytest.raises(CmirmError, match="pool is not started"):
        ScorerPool(PoolConfig(spec=SLEEP_SCORER)).score([])


def test_a_tick_in_which_only_an_actor_starts_does_not_stall_the_pipeline(tmp_path: Path, ray_cluster, monkeypatch):
    """The scorer actor can answer `ready` after generation is over, in a wait that returns no result and
    leaves nothing in flight (nothing could be submitted to it before: capacity counts started actors):
    the run goes on and scores everything."""
    import rerank.stream as stream

    real, ticks = stream.next_results, Counter()

    def scorer_starts_after_generation(pools, timeout=None):
        generators = [p for p in pools if p.name == "generator" and p.busy()]
        if generators:
            return real(generators, timeout=timeout)        # the scorer's `ready` stays unread meanwhile
        if not ticks["alone"]:
            ticks["alone"] += 1
            for pool in pools:
                pool.wait_ready(every=True)                 # the scorer starts; no batch was handed to it yet
            assert [p.name for p in pools] == ["scorer"] and not pools[0].busy()
            return []
        return real(pools, timeout=timeout)

    monkeypatch.setattr(stream, "next_results", scorer_starts_after_generation)
    config = GenerateConfig(out=tmp_path / "run", instructions=[Instruction(text="x", id="x")], generator=SLEEPY,
                            reward=SLEEP_SCORER, n=2, k=1, duration=0.2, policy="zsum",
                            pool=PoolOptions(backend="ray", schedule="stream", num_actors=1, gen_actors=1,
                                             gen_cpus_per_actor=1, threads_per_actor=1, device="cpu"))
    run_generate(config, console=_quiet())
    candidates, scores = _once_each(tmp_path / "run")
    assert ticks["alone"] == 1 and sorted(candidates.values()) == [1, 1] and sorted(scores.values()) == [1, 1]
