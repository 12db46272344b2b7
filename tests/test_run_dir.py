"""Run-directory integrity under concurrency and faults: the lock, whole files, broken wavs, run.json,
full disks and read-only directories (each case once happened to a user)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cmirm_plugin import ConfigError, Instruction, read_records
from cmirm_plugin.scoring import ScorerSpec
from generators.python_fn import CallableGenerator
from rerank.generate import GenerateConfig, run_generate
from rerank.pool_options import PoolOptions
from rerank.run_dir import RunDirError, RunDirLock, TEMP_SUFFIX, _temp_path, wav_problem, write_bytes_atomic

pytestmark = pytest.mark.timeout(300)


class Synth:
    """A seeded plain generation function that records the seeds it was called with."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, instruction, seed, duration):
        self.calls.append(seed)
        return 0.1 * torch.randn(int(duration * 16000), generator=torch.Generator().manual_seed(seed)), 16000


def _config(out: Path, checkpoint: Path, **overrides) -> GenerateConfig:
    values = dict(out=out, instructions=[Instruction(text="calm piano", id="calm")], generator="synth",
                  reward=ScorerSpec.parse(str(checkpoint)), n=3, k=1, duration=0.5,
                  pool=PoolOptions(backend="local", score_batch_size=2, device="cpu"))
    values.update(overrides)
    return GenerateConfig(**values)


def _run(config: GenerateConfig, synth: Synth | None = None):
    from rich.console import Console

    generator = CallableGenerator(synth or Synth(), sample_rate=16000, name="synth")
    return run_generate(config, generator=generator, console=Console(quiet=True))


def _temps(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith(TEMP_SUFFIX))


# ------------------------------------------------------------------------------------------------
# Concurrency: one job per directory, unique temporary names


def test_a_second_job_into_the_same_out_fails_at_once_naming_the_holder(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    synth = Synth()
    with RunDirLock(out):           # another job holds the directory (flock: a separate open file, as another process)
        with pytest.raises(RunDirError) as err:
            _run(_config(out, tiny_checkpoint), synth)
    message = str(err.value)
    assert f"'{out}' is in use by another cmirm job: pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "wait for it to finish or use another --out" in message
    assert synth.calls == [] and not (out / "manifest.jsonl").exists()
    assert _run(_config(out, tiny_checkpoint)).counts.generated == 3      # once released, the job runs


def test_temporary_files_have_names_of_their_own(tmp_path: Path):
    target = tmp_path / "c.wav"
    first, second = _temp_path(target), _temp_path(target)
    assert first != second and first.name.startswith(f".c.wav.{os.getpid()}.") and first.name.endswith(TEMP_SUFFIX)
    first.unlink(), second.unlink()
    write_bytes_atomic(target, b"whole")
    assert target.read_bytes() == b"whole" and _temps(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# Broken candidate wavs


def test_wav_problems_are_named(tmp_path: Path):
    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(8000, dtype="float32"), 16000, subtype="FLOAT")
    assert wav_problem(good, 16000, 0.5) is None
    assert wav_problem(tmp_path / "gone.wav") == "missing"
    (tmp_path / "empty.wav").write_bytes(b"")
    assert wav_problem(tmp_path / "empty.wav") == "empty (0 bytes)"
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wav")
    assert wav_problem(tmp_path / "junk.wav").startswith("not a readable audio file")
    assert wav_problem(good, 32000, 0.5) == "sample rate 16000 Hz, its record says 32000 Hz"
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])     # a killed copy: the header promises more
    assert "its record says 0.500000 s (cut short?)" in wav_problem(cut, 16000, 0.5)


def test_a_zero_byte_wav_is_regenerated_not_trusted(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    first = _run(_config(out, tiny_checkpoint))
    broken = next(r for r in first.ranking.records if r["rank"] == 1)
    (out / broken["audio_path"]).write_bytes(b"")
    synth = Synth()
    again = _run(_config(out, tiny_checkpoint), synth)
    assert synth.calls == [broken["seed"]]
    assert again.counts.repaired == 1 and again.counts.generated == 1 and again.counts.scored == 1
    assert wav_problem(out / broken["audio_path"], 16000, 0.5) is None
    assert all(p.stat().st_size > 1000 for p in (out / "top").glob("*.wav"))
    records = read_records(out / "manifest.jsonl")
    assert [r["record"] for r in records if r["id"] == broken["id"]] == ["candidate", "scores"] * 2


# ------------------------------------------------------------------------------------------------
# The manifest and run.json


def test_a_last_record_without_its_newline_is_kept(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    _run(_config(out, tiny_checkpoint, n=2))
    manifest = out / "manifest.jsonl"
    manifest.write_bytes(manifest.read_bytes().rstrip(b"\n"))     # the last record, a score, lost its newline
    last = json.loads(manifest.read_bytes().splitlines()[-1])
    synth = Synth()
    result = _run(_config(out, tiny_checkpoint, n=3), synth)
    assert synth.calls == [2] and result.counts.scored == 1       # the record was kept: nothing rescored
    records = read_records(out / "manifest.jsonl")
    assert last in records and len(records) == 6


@pytest.mark.parametrize("content, problem", [
    (b"[]", "expected a JSON object, got list"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not a text file (binary content)"),
    (b'{"format": 1, "result": {"generator": 3}}', "field 'result.generator' is missing or malformed (3)"),
    (b"{", "not valid JSON"),
])
def test_a_broken_run_json_is_named_not_a_traceback(tmp_path: Path, tiny_checkpoint: Path, content: bytes,
                                                    problem: str):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_bytes(content)
    synth = Synth()
    with pytest.raises(ConfigError) as err:
        _run(_config(out, tiny_checkpoint), synth)
    assert str(err.value).startswith(f"{out / 'run.json'}: {problem}")
    assert str(err.value).endswith("delete it and rerun: it is rebuilt from the manifest's records")
    assert synth.calls == []


def test_a_lost_run_json_is_checked_against_the_records_and_rebuilt(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    _run(_config(out, tiny_checkpoint))
    saved = (out / "run.json").read_text()
    (out / "run.json").unlink()
    synth = Synth()
    with pytest.raises(ConfigError) as err:
        _run(_config(out, tiny_checkpoint, duration=1.0), synth)
    message = str(err.value)
    assert "run.json is missing, and the records of" in message and "duration: 0.5 (recorded) vs 1.0 (now)" in message
    assert synth.calls == [] and not (out / "run.json").exists()
    with pytest.raises(ConfigError, match=r"generator: 'synth' \(recorded\) vs 'other' \(now\)"):
        run_generate(_config(out, tiny_checkpoint, generator="other"),
                     generator=CallableGenerator(synth, sample_rate=16000, name="other"))
    assert _run(_config(out, tiny_checkpoint), synth).counts.reused == 3 and synth.calls == []
    assert (out / "run.json").read_text() == saved


# ------------------------------------------------------------------------------------------------
# Full disks and read-only directories

_WRITES = ("os.rename", "os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.link", "os.symlink")
_READ_ONLY: set[Path] = set()


def _audit(event: str, args: tuple) -> None:
    """Refuse writes under a `read_only` directory the way the kernel does (EROFS; EEXIST for an existing dir)."""
    if not _READ_ONLY or event not in ("open", "os.mkdir", *_WRITES):
        return
    path = args[0]
    if not isinstance(path, (str, bytes, os.PathLike)) or isinstance(path, int):
        return
    path = Path(os.fsdecode(path)).absolute()
    if not any(path == root or root in path.parents for root in _READ_ONLY):
        return
    if event == "open":
        mode, flags = args[1], args[2]
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else \
            bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
        if not writes:
            return
    if event == "os.mkdir" and path.exists():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))


sys.addaudithook(_audit)


@contextlib.contextmanager
def read_only(root: Path):
    """Make ``root`` read-only for this process (works as root too, unlike chmod)."""
    _READ_ONLY.add(root.absolute())
    try:
        yield
    finally:
        _READ_ONLY.discard(root.absolute())


def test_a_finished_run_reruns_on_a_read_only_directory(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    first = _run(_config(out, tiny_checkpoint))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    synth = Synth()
    with read_only(out):
        again = _run(_config(out, tiny_checkpoint), synth)   # any write would raise inside
    assert synth.calls == [] and again.counts.reused == 3
    assert [r["id"] for r in again.ranking.selected] == [r["id"] for r in first.ranking.selected]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    with read_only(out), pytest.raises(RunDirError) as err:   # new work on it: one line, before any generation
        _run(_config(out, tiny_checkpoint, n=4), synth)
    assert str(err.value) == f"cannot write '{out / 'run.json'}': Read-only file system; use a writable --out"
    assert synth.calls == []


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path: Path, tiny_checkpoint: Path, monkeypatch):
    out = tmp_path / "run"
    real = Path.write_bytes
    writes = []

    def full_after_two(path: Path, data: bytes) -> int:
        writes.append(path)
        if len(writes) > 2 and path.parent.name == "candidates":
            real(path, data[: len(data) // 2])                 # part of the file reached the disk, then it filled up
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_after_two)
    with pytest.raises(RunDirError) as err:
        _run(_config(out, tiny_checkpoint))
    wav = out / "candidates" / "calm_synth_s1.wav"
    assert str(err.value) == (f"cannot write '{wav}': No space left on device; free some space, then rerun the "
                              "same command to resume")
    assert _temps(out) == [] and not wav.exists()
    assert [r["seed"] for r in read_records(out / "manifest.jsonl")] == [0]
    monkeypatch.setattr(Path, "write_bytes", real)
    synth = Synth()
    result = _run(_config(out, tiny_checkpoint), synth)       # space freed: the same command resumes
    assert synth.calls == [1, 2] and result.counts.reused == 1


def test_codec_tokens_that_cannot_be_read_back_are_one_line_naming_the_file(tmp_path):
    import torch

    from rerank.run_dir import RunDirError, load_codes, save_codes

    path = save_codes(torch.arange(6).reshape(2, 3), tmp_path / "c.codes.safetensors")
    assert torch.equal(load_codes(path), torch.arange(6).reshape(2, 3)) and load_codes(tmp_path / "none") is None
    path.write_bytes(path.read_bytes()[:20])                     # truncated
    with pytest.raises(RunDirError, match=r"^cannot read the codec tokens '.*c\.codes\.safetensors' "
                                          r"\(SafetensorError: .*\); delete it and rerun the same command"):
        load_codes(path)
