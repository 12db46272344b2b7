"""The scorer pool: Ray actors vs in-process, order, dead actors, bad audio."""

from pathlib import Path

import pytest

from cmirm_plugin import Audio, Instruction
from cmirm_plugin.scoring import ScorerSpec
from cmirm_plugin.testing import noise, sine
from rerank.pool import PoolConfig, ScoreItem, ScorerPool, make_batches


def _items(tmp_path: Path) -> list[ScoreItem]:
    a = Instruction(text="calm piano")
    b = Instruction(text="rock", lyrics="oh yeah")
    items = []
    for i in range(7):
        inst = a if i % 3 else b
        audio = sine(200 + 40 * i, 1.0 + 0.25 * i) if i % 2 else noise(1.5, seed=i).save(tmp_path / f"c{i}.wav")
        items.append(ScoreItem(f"c{i}", audio if isinstance(audio, Audio) else str(audio), inst))
    return items


def test_batches_group_by_instruction(tmp_path: Path):
    items = _items(tmp_path)
    batches = make_batches(items, batch_size=2)
    assert batches == [[0, 3], [6], [1, 2], [4, 5]]


@pytest.fixture(scope="module")
def ray_pool(ray_cluster, tiny_checkpoint):
    with ScorerPool(PoolConfig(spec=ScorerSpec.parse(str(tiny_checkpoint)), backend="ray", num_actors=2, batch_size=2,
                               device="cpu", max_in_flight=1)) as pool:
        yield pool


def test_ray_pool_equals_in_process_exactly_and_in_order(ray_pool, tiny_checkpoint, tmp_path: Path):
    items = _items(tmp_path)
    with ScorerPool(PoolConfig(spec=ScorerSpec.parse(str(tiny_checkpoint)), backend="local", batch_size=2, device="cpu")) as local:
        expected = local.score(items)
    got = ray_pool.score(items)
    assert [r.key for r in got] == [i.key for i in items]
    assert [r.scores for r in got] == [r.scores for r in expected]
    assert all(r.error is None for r in got)


def test_dead_actor_loses_nothing_and_repeats_nothing(ray_pool, tmp_path: Path):
    import ray

    items = _items(tmp_path)
    expected = {r.key: r.scores for r in ray_pool.score(items)}
    seen = []
    for n, done in enumerate(ray_pool.iter_results(items)):
        seen.extend(done)
        if n == 0:
            ray.kill(ray_pool.workers[0])   # dies with work in flight or queued
    assert sorted(i for i, _ in seen) == list(range(len(items)))   # every candidate exactly once
    assert {r.key: r.scores for _, r in seen} == expected
    assert ray_pool.restarts >= 1


def test_bad_audio_gets_an_error_record(ray_pool, tmp_path: Path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    items = [ScoreItem("ok", sine(300, 1.0), Instruction(text="x")),
             ScoreItem("broken", str(broken), Instruction(text="x")),
             ScoreItem("missing", str(tmp_path / "nope.wav"), Instruction(text="x"))]
    results = ray_pool.score(items)
    assert results[0].scores is not None and results[0].error is None
    assert results[1].scores is None and "unreadable or corrupt audio" in results[1].error
    assert results[2].scores is None and "file not found" in results[2].error


def test_pool_config_validation():
    with pytest.raises(ValueError, match="pool option batch_size must be an integer >= 1, got 0"):
        PoolConfig(spec=ScorerSpec.parse("tiny"), batch_size=0)
    with pytest.raises(ValueError, match="backend must be 'ray' or 'local'"):
        PoolConfig(spec=ScorerSpec.parse("tiny"), backend="dask")
    with pytest.raises(ValueError, match="pool is not started"):
        ScorerPool(PoolConfig(spec=ScorerSpec.parse("tiny"))).score([])
