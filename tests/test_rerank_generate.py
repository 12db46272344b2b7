"""`cmirm generate`: the files it writes, resuming, failures as records, run.json checks, prompts files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from cmirm_plugin import ConfigError, Instruction, read_records
from cmirm_plugin.cli import app
from generators.python_fn import CallableGenerator
from rerank.generate import GenerateConfig, run_generate
from rerank.instructions import load_prompts
from rerank.pool_options import PoolOptions
from cmirm_plugin.scoring import ScorerSpec, ScoringSettings
from rerank.run_records import read_run

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    """Where `--tiny` builds its reward model (never the user's cache)."""
    return tmp_path_factory.mktemp("cmirm-cache")


def _invoke(args: list[str], cache: Path):
    result = CliRunner(env={"COLUMNS": "200", "CMIRM_CACHE": str(cache)}).invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_generate_tiny_end_to_end(tmp_path: Path, tiny_cache: Path):
    out = tmp_path / "run"
    result = _invoke(["generate", "Upbeat pop with bright piano", "-n", "3", "-k", "2", "--tiny", "--duration", "0.5",
                      "--gen-batch-size", "3", "--temperature", "0.9", "--out", str(out)], tiny_cache)
    inst = Instruction(text="Upbeat pop with bright piano")
    records = read_records(out / "manifest.jsonl")
    generated = [r for r in records if r["record"] == "candidate"]
    scores = [r for r in records if r["record"] == "scores"]
    assert len(generated) == 3 and len(scores) == 3
    first = generated[0]
    assert first["instruction"] == {**inst.to_dict(), "modality": "text"}
    assert first["generator"] == "tiny-musicgen" and first["seed"] == 0 and first["index"] == 0
    assert first["params"]["temperature"] == 0.9 and first["params"]["duration"] == 0.5
    for record in generated:
        data, sr = sf.read(out / record["audio_path"])
        assert sr == record["sample_rate"] == 32000 and len(data) == 16000
    assert {s["scorer"] for s in scores} == {"tiny-v2"}

    ranking = read_records(out / "ranking.jsonl")
    assert len(ranking) == 3 and sorted(r["rank"] for r in ranking) == [1, 2, 3]
    selected = sorted((r for r in ranking if r["selected"]), key=lambda r: r["rank"])
    assert [r["rank"] for r in selected] == [1, 2]
    others = [s["scores"]["musicality"] for s in ranking if not s["selected"]]
    assert all(r["scores"]["musicality"] >= max(others) for r in selected)
    names = [f"{inst.id}_rank{r['rank']}_s{r['seed']}_upbeat-pop-with-bright-piano.wav" for r in selected]
    assert sorted(p.name for p in (out / "top").iterdir()) == sorted(["README.txt", *names])
    assert [r["top_path"] for r in selected] == [f"top/{name}" for name in names]
    assert (out / "top" / names[0]).read_bytes() == (out / selected[0]["audio_path"]).read_bytes()

    run = json.loads((out / "run.json").read_text())
    assert run["result"] == {"generator": "tiny-musicgen", "params": {"temperature": 0.9}, "duration": 0.5,
                             "reward": "tiny-v2", "max_dur": 120.0, "missing": "mask", "dtype": "fp32",
                             "search": "best-of-n"}
    assert run["request"]["k"] == 2 and run["request"]["policy"] == "axis:musicality"
    assert "top-2 by axis:musicality" in result.output and inst.id in result.output
    assert "generated 3 new candidate(s)" in result.output
    # The summary lists every kept file (real paths, no template) and each kept rank's scores.
    lines = result.output.splitlines()
    assert [line.strip() for line in lines if line.strip().endswith(".wav")] == [str(out / "top" / n) for n in names]
    assert "<instruction>" not in result.output
    for r in selected:   # columns: rank, seed, alignment, musicality
        cells = f" {r['rank']} {r['seed']} {r['scores']['alignment']:.4f} {r['scores']['musicality']:.4f} "
        assert sum(cells in f" {' '.join(line.split())} " for line in lines) == 1, (cells, result.output)
    assert f"ranking: {out / 'ranking.csv'} and ranking.jsonl" in result.output

    # A rerun finds everything finished: nothing regenerated (same bytes, same mtimes) or rescored.
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "candidates").iterdir()}
    again = _invoke(["generate", "Upbeat pop with bright piano", "-n", "3", "-k", "1", "--tiny", "--duration", "0.5",
                     "--temperature", "0.9", "--out", str(out)], tiny_cache)
    assert "generated 0 new candidate(s) (0 failed, 3 reused), scored 0" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "candidates").iterdir()} == mtimes
    assert len(read_records(out / "manifest.jsonl")) == 6
    assert sorted(p.name for p in (out / "top").iterdir()) == [names[0], "README.txt"]

    refused = CliRunner(env={"CMIRM_CACHE": str(tiny_cache)}).invoke(
        app, ["generate", "Upbeat pop with bright piano", "-n", "3", "--tiny", "--duration", "1.0", "--out", str(out)])
    assert refused.exit_code != 0
    assert isinstance(refused.exception, ConfigError)
    message = str(refused.exception)
    assert "duration: 0.5 (saved) vs 1.0 (now)" in message and "params: {'temperature': 0.9} (saved) vs {}" in message


# ------------------------------------------------------------------------------------------------
# Python-level runs with a counting plain-function generator


class Synth:
    """A seeded plain generation function that counts its calls and can misbehave on chosen seeds."""

    def __init__(self, interrupt_after: int | None = None, fail: dict[int, str] | None = None) -> None:
        self.calls: list[int] = []
        self.interrupt_after = interrupt_after
        self.fail = fail or {}

    def __call__(self, instruction, seed, duration):
        if self.interrupt_after is not None and len(self.calls) == self.interrupt_after:
            raise KeyboardInterrupt           # like Ctrl-C in the middle of the job
        self.calls.append(seed)
        mode = self.fail.get(seed)
        if mode == "raise":
            raise RuntimeError(f"model crashed on seed {seed}")
        n = 40 if mode == "short" else int(duration * 16000)
        wave = 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(seed))
        if mode == "nan":
            wave[3] = float("nan")
        return wave, 16000


def _label(checkpoint: Path) -> str:
    """What score records call the tiny checkpoint folder (its absolute path)."""
    return ScorerSpec.parse(str(checkpoint)).label


def _config(out: Path, checkpoint: Path, **overrides) -> GenerateConfig:
    values = dict(out=out, instructions=[Instruction(text="calm piano"), Instruction(text="rock", id="rock")],
                  generator="synth", reward=ScorerSpec.parse(str(checkpoint)), n=4, k=2, duration=0.5,
                  pool=PoolOptions(backend="local", score_batch_size=2, device="cpu"))
    values.update(overrides)
    return GenerateConfig(**values)


def _generator(fn: Synth) -> CallableGenerator:
    return CallableGenerator(fn, sample_rate=16000, name="synth")


def _quiet():
    from rich.console import Console

    return Console(quiet=True)


def test_interrupted_run_resumes_without_redoing_finished_work(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    first = Synth(interrupt_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_generate(_config(out, tiny_checkpoint), generator=_generator(first), console=_quiet())
    assert first.calls == [0, 1, 2]
    assert [r["seed"] for r in read_records(out / "manifest.jsonl")] == [0, 1, 2]
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "candidates").iterdir()}

    # Second attempt: generation finishes, then scoring is interrupted after the first score record.
    second = Synth()

    def stop_at_first_score(record):
        if record["record"] == "scores":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_generate(_config(out, tiny_checkpoint), generator=_generator(second), console=_quiet(),
                     on_record=stop_at_first_score)
    assert second.calls == [3, 0, 1, 2, 3]     # instruction 1's last seed, then all of instruction 2
    assert {p.name: p.stat().st_mtime_ns for p in (out / "candidates").iterdir() if p.name in mtimes} == mtimes

    third = Synth()
    result = run_generate(_config(out, tiny_checkpoint), generator=_generator(third), console=_quiet())
    assert third.calls == []
    assert result.counts.reused == 8 and result.counts.generated == 0 and result.counts.scored == 7
    records = read_records(out / "manifest.jsonl")
    score_ids = [r["id"] for r in records if r["record"] == "scores"]
    assert len(score_ids) == len(set(score_ids)) == 8          # every candidate scored exactly once
    assert sum(r["selected"] for r in read_records(out / "ranking.jsonl")) == 4


def test_failures_are_records_and_the_job_completes(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    synth = Synth(fail={1: "raise", 2: "short", 3: "nan"})
    config = _config(out, tiny_checkpoint, instructions=[Instruction(text="calm piano")], n=5, k=3)
    result = run_generate(config, generator=_generator(synth), console=_quiet())
    assert result.counts.generated == 3 and result.counts.generation_failed == 2
    assert result.counts.scored == 2 and result.counts.score_failed == 1
    by_seed = {v.seed: v for v in read_run(out)}
    assert by_seed[1].generation_error["kind"] == "exception"
    assert "crashed on seed 1" in by_seed[1].generation_error["message"]
    assert by_seed[3].generation_error["kind"] == "invalid_audio"
    assert "too short to score" in by_seed[2].score_errors[_label(tiny_checkpoint)]
    ranking = {r["seed"]: r for r in read_records(out / "ranking.jsonl")}
    assert {s for s, r in ranking.items() if r["selected"]} == {0, 4}            # k=3, only two scorable
    assert ranking[1]["rank"] is None and ranking[1]["errors"][0].startswith("generation exception")
    assert ranking[2]["rank"] is None and "too short" in ranking[2]["errors"][0]
    assert len(list((out / "top").glob("*.wav"))) == 2

    # Failures are finished work: a plain rerun does not retry them; --retry-errors does.
    rerun = Synth()
    run_generate(config, generator=_generator(rerun), console=_quiet())
    assert rerun.calls == []
    retry = Synth()
    result = run_generate(_config(out, tiny_checkpoint, instructions=[Instruction(text="calm piano")], n=5, k=3,
                                  retry_errors=True), generator=_generator(retry), console=_quiet())
    assert retry.calls == [1, 3]
    assert result.counts.scored == 2 and result.counts.score_failed == 1     # the short clip is rescored, fails again
    assert sum(r["selected"] for r in read_records(out / "ranking.jsonl")) == 3


def test_rerun_may_change_k_policy_pool_and_add_candidates(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    run_generate(_config(out, tiny_checkpoint, n=2), generator=_generator(Synth()), console=_quiet())
    more = Synth()
    pool = PoolOptions(backend="local", score_batch_size=1)
    config = _config(out, tiny_checkpoint, n=3, k=1, policy="zsum", pool=pool)
    result = run_generate(config, generator=_generator(more), console=_quiet())
    assert more.calls == [2, 2] and result.counts.reused == 4
    assert result.ranking.policy == "zsum" and len(result.ranking.selected) == 2
    other = ScorerSpec("folder", str(tmp_path / "other"))
    with pytest.raises(ConfigError, match=f"reward: '{_label(tiny_checkpoint)}' \\(saved\\) vs '{other.label}' \\(now\\)"):
        run_generate(_config(out, tiny_checkpoint, reward=other), generator=_generator(Synth()), console=_quiet())


def test_generator_name_must_match_the_job(tmp_path: Path, tiny_checkpoint: Path):
    gen = CallableGenerator(Synth(), sample_rate=16000, name="other")
    with pytest.raises(ConfigError, match="named 'other' but the job says 'synth'"):
        run_generate(_config(tmp_path / "run", tiny_checkpoint), generator=gen, console=_quiet())


# ------------------------------------------------------------------------------------------------
# Prompts files and command-line validation


def test_prompts_file_relative_reference_and_ids(tmp_path: Path):
    from cmirm_plugin.testing import sine

    sine(220, 1.0).save(tmp_path / "refs" / "ref.wav")
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"text": "calm piano", "id": "calm"}\n\n'
                    '{"text": "rock", "lyrics": "oh yeah", "ref_audio": "refs/ref.wav"}\n')
    calm, rock = load_prompts(path)
    assert calm.id == "calm" and calm.modality == "text"
    assert rock.modality == "text+lyrics+ref" and rock.ref_audio == str((tmp_path / "refs" / "ref.wav").resolve())


def test_prompts_file_reports_every_bad_line(tmp_path: Path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join([
        '{"text": "ok", "id": "a"}',
        '{"text": "x", "mood": "sad"}',
        'not json',
        '{"text": 3}',
        '{"text": "y", "ref_audio": "missing.wav"}',
        '{"text": "z", "id": "a"}',
        '{"lyrics": null}',
        '{"text": "w", "id": "bad/id"}',
    ]) + "\n")
    with pytest.raises(ConfigError) as info:
        load_prompts(path)
    message = str(info.value)
    assert "7 invalid line(s)" in message
    for expected in (":2: unknown field(s) 'mood'", ":3: not valid JSON", ":4: field 'text' must be a string",
                     ":5: field 'ref_audio': file not found", ":6: instruction id 'a' repeats line 1",
                     ":7: needs at least one of", ":8: field 'id' 'bad/id'"):
        assert expected in message


def test_cli_errors_are_clear(tmp_path: Path, tiny_cache: Path):
    runner = CliRunner(env={"CMIRM_CACHE": str(tiny_cache)})
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "a"}\n')
    cases = [
        (["generate", "--out", str(tmp_path / "o")], "give an instruction"),
        (["generate", "pop", "--prompts", str(prompts), "--tiny", "--out", str(tmp_path / "o")], "not both"),
        (["generate", "pop", "--out", str(tmp_path / "o")], "give --generator NAME"),
        (["generate", "pop", "--tiny", "--reward", "./nope", "--out", str(tmp_path / "o")],
         "--reward './nope': no such folder, and not a hub id"),
        (["generate", "pop", "--tiny", "--policy", "best", "--out", str(tmp_path / "o")], "unknown policy 'best'"),
        (["generate", "pop", "--tiny", "--param", "oops", "--out", str(tmp_path / "o")], "--param expects key=value"),
        (["generate", "pop", "--tiny", "--seeds", "1,1", "--out", str(tmp_path / "o")], "seeds must be distinct"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, args)
        assert result.exit_code != 0, args
        assert expected in str(result.exception), (args, result.exception)
    assert not (tmp_path / "o").exists()


def test_a_run_stopped_by_a_bad_option_does_not_block_the_corrected_rerun(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="has no parameter\\(s\\) 'brightnes'"):
        run_generate(_config(out, tiny_checkpoint, params={"brightnes": 0.5}), generator=_generator(Synth()),
                     console=_quiet())
    result = run_generate(_config(out, tiny_checkpoint, n=1, k=1), generator=_generator(Synth()), console=_quiet())
    assert result.counts.generated == 2
    assert json.loads((out / "run.json").read_text())["result"]["params"] == {}


def test_a_job_whose_every_candidate_failed_still_completes(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    synth = Synth(fail={0: "raise", 1: "nan"})
    result = run_generate(_config(out, tiny_checkpoint, n=2), generator=_generator(synth), console=_quiet())
    assert result.counts.generation_failed == 4 and result.ranking.selected == []
    assert [r["rank"] for r in read_records(out / "ranking.jsonl")] == [None] * 4
    assert [p.name for p in (out / "top").iterdir()] == ["README.txt"]


RENAMED_SYNTH = Synth()
#: A registry-built generator whose recorded name is not its registry name (like a cmd: template's).
RENAMED = CallableGenerator(RENAMED_SYNTH, sample_rate=16000, name="renamed")


def test_resume_with_a_generator_whose_name_differs_from_its_registry_name(tmp_path: Path, tiny_checkpoint: Path):
    config = _config(tmp_path / "run", tiny_checkpoint, generator=f"py:{__name__}:RENAMED", n=2)
    first = run_generate(config, console=_quiet())
    assert first.counts.generated == 4 and {r["generator"] for r in first.ranking.records} == {"renamed"}
    calls = len(RENAMED_SYNTH.calls)
    again = run_generate(config, console=_quiet())
    assert again.counts.reused == 4 and len(RENAMED_SYNTH.calls) == calls


def test_an_edited_instruction_with_the_same_id_is_refused(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    run_generate(_config(out, tiny_checkpoint, n=1, k=1), generator=_generator(Synth()), console=_quiet())
    edited = [Instruction(text="calm piano"), Instruction(text="punk", id="rock")]
    with pytest.raises(ConfigError, match="instruction 'rock' was .*'text': 'rock'.* now .*'text': 'punk'"):
        run_generate(_config(out, tiny_checkpoint, n=1, k=1, instructions=edited), generator=_generator(Synth()),
                     console=_quiet())


def test_pool_and_seed_options_are_checked_before_any_work(tmp_path: Path, tiny_cache: Path):
    runner = CliRunner(env={"CMIRM_CACHE": str(tiny_cache)})
    out = ["--out", str(tmp_path / "o")]
    cases = [
        (["--backend", "ray", "--num-actors", "0"], "--num-actors must be an integer >= 1, got 0"),
        (["--score-batch-size", "0"], "--score-batch-size must be an integer >= 1, got 0"),
        (["--max-in-flight", "0"], "--max-in-flight must be an integer >= 1, got 0"),
        (["--threads-per-actor", "0"], "--threads-per-actor must be an integer >= 1, got 0"),
        (["--num-gpus-per-actor", "-1"], "--num-gpus-per-actor must be a number >= 0"),
        (["--seeds", ""], "--seeds expects comma-separated integers"),
        (["--seeds", "1,x"], "--seeds expects comma-separated integers"),
        (["--seeds", "2,-1"], "--seeds values must be >= 0, got -1"),
        (["--seeds", str(2**63)], str(2**63 - 1)),
        (["-k", "0"], "k must be an integer >= 1, got 0"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, ["generate", "pop", "--tiny", *args, *out])
        assert result.exit_code != 0, args
        assert isinstance(result.exception, ConfigError), (args, result.exception)
        assert expected in str(result.exception), (args, result.exception)
    assert not (tmp_path / "o").exists()


def test_seed_range_and_missing_policy_are_validated(tmp_path: Path, tiny_checkpoint: Path):
    with pytest.raises(ConfigError, match=str(2**63 - 1)):          # the largest seed is named
        _config(tmp_path, tiny_checkpoint, seeds=[0, 2**63])
    with pytest.raises(ConfigError, match="exceeds the largest seed"):
        _config(tmp_path, tiny_checkpoint, seed_base=2**63 - 1, n=2)
    with pytest.raises(ConfigError, match="missing must be one of mask, null, got 'zero'"):
        ScoringSettings(missing="zero")
    config = _config(tmp_path, tiny_checkpoint, scoring=ScoringSettings(missing="null"))
    assert config.run_config().result.missing == "null"
    assert config.pool.pool_config(config.reward, config.scoring).settings.missing == "null"


def test_a_job_reads_its_manifest_once(tmp_path: Path, tiny_checkpoint: Path, monkeypatch):
    import rerank.run_records

    out = tmp_path / "run"
    run_generate(_config(out, tiny_checkpoint, n=1, k=1), generator=_generator(Synth()), console=_quiet())
    reads = []
    real = rerank.run_records.iter_records

    def counting(path):
        reads.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(rerank.run_records, "iter_records", counting)
    result = run_generate(_config(out, tiny_checkpoint, n=2), generator=_generator(Synth()), console=_quiet())
    assert reads == ["manifest.jsonl"]
    assert result.counts.generated == 2 and result.counts.scored == 2 and len(result.ranking.records) == 4


# ------------------------------------------------------------------------------------------------
# Resume (what the README promises)


def test_a_candidate_whose_wav_was_deleted_is_regenerated(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    first = run_generate(_config(out, tiny_checkpoint, n=3), generator=_generator(Synth()), console=_quiet())
    lost = next(r for r in first.ranking.records if r["seed"] == 1 and r["instruction"]["id"] == "rock")
    (out / lost["audio_path"]).unlink()
    again = Synth()
    result = run_generate(_config(out, tiny_checkpoint, n=3), generator=_generator(again), console=_quiet())
    assert again.calls == [1]
    assert result.counts.repaired == 1 and result.counts.generated == 1 and result.counts.scored == 1
    assert (out / lost["audio_path"]).is_file()
    assert sum(r["selected"] for r in read_records(out / "ranking.jsonl")) == 4


def test_the_generator_is_not_even_loaded_when_nothing_is_missing(tmp_path: Path, tiny_checkpoint: Path,
                                                                   monkeypatch):
    config = _config(tmp_path / "run", tiny_checkpoint, generator="py:rerank.synthetic:sleepy_tone", n=2)
    assert run_generate(config, console=_quiet()).counts.generated == 4

    def refuse(*args, **kwargs):
        raise AssertionError("the generator was built although every candidate exists")

    monkeypatch.setattr("rerank.gen_pool.build_generator", refuse)
    again = run_generate(config, console=_quiet())
    assert again.counts.reused == 4 and again.counts.generated == 0 and again.pools == {}   # no worker started
    with pytest.raises(AssertionError, match="the generator was built"):   # and it is built when something is
        run_generate(_config(tmp_path / "run", tiny_checkpoint, generator="py:rerank.synthetic:sleepy_tone", n=3),
                     console=_quiet())


def test_a_leftover_temporary_wav_of_a_killed_write_does_no_harm(tmp_path: Path, tiny_checkpoint: Path):
    out = tmp_path / "run"
    run_generate(_config(out, tiny_checkpoint, n=2), generator=_generator(Synth()), console=_quiet())
    candidates = sorted((out / "candidates").iterdir())
    leftover = out / "candidates" / f".{candidates[0].name}.4242.k1ll3d.tmp"
    leftover.write_bytes(candidates[0].read_bytes()[:100])           # half a wav, as a killed job leaves it
    before = {p.name: p.read_bytes() for p in candidates}
    again = Synth()
    result = run_generate(_config(out, tiny_checkpoint, n=2), generator=_generator(again), console=_quiet())
    assert again.calls == [] and result.counts.reused == 4 and result.counts.repaired == 0
    assert not leftover.exists()
    assert {p.name: p.read_bytes() for p in (out / "candidates").iterdir()} == before


def test_seeds_are_checked_by_the_generator_before_any_seed_runs(tmp_path: Path, tiny_checkpoint: Path):
    import sys

    import yaml

    ran = tmp_path / "ran.log"
    tool = tmp_path / "tool.py"
    tool.write_text("import sys, numpy, soundfile\n"
                    f"open({str(ran)!r}, 'a').write(sys.argv[1] + '\\n')\n"
                    "soundfile.write(sys.argv[2], numpy.zeros(1600, 'float32'), 16000)\n")
    template = tmp_path / "tool.yaml"
    template.write_text(yaml.safe_dump({"name": "tool", "command": [sys.executable, str(tool), "{seed}", "{output}"],
                                        "inputs": ["text"], "sample_rate": 16000,
                                        "checks": {"seed_range": [0, 9]}}))
    config = _config(tmp_path / "run", tiny_checkpoint, generator=f"cmd:{template}", seeds=[3, 12])
    with pytest.raises(ConfigError, match=r"seed 12 is out of range for generator 'tool'.*\[0, 9\]"):
        run_generate(config, console=_quiet())
    assert not ran.exists()                                   # seed 3 never ran either
    assert not (tmp_path / "run" / "candidates").exists()
