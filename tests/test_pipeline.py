"""The pipeline in one process: streaming order, one pipeline for best_of_n and generate, progress in logs,
over-long prompts refused at the boundary, and the worker options checked up front."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from cmirm_plugin import ConfigError, Instruction, read_records
from cmirm_plugin.cli import app
from cmirm_plugin.scoring import ScorerSpec, load_scorer
from generators import build_generator
from generators.base import InstructionTooLongError
from generators.command import CommandGenerator
from generators.python_fn import CallableGenerator
from rerank.best_of_n import best_of_n
from rerank.generate import GenerateConfig, run_generate
from rerank.pool_options import PoolOptions
from rerank.progress import LogProgress
from rerank.stream import job_seeds
from rerank.synthetic import sleepy_tone

pytestmark = pytest.mark.timeout(300)

SLEEP_SCORER = ScorerSpec.parse("rerank.synthetic:SleepScorer")


def _quiet() -> Console:
    return Console(quiet=True)


def _instructions(n: int) -> list[Instruction]:
    return [Instruction(text=f"prompt {i}", id=f"i{i}") for i in range(n)]


def test_streaming_ranks_an_instruction_before_the_last_one_is_generated(tmp_path: Path):
    out = tmp_path / "run"
    seen_when_last_starts: dict[str, object] = {}

    def watch(record):
        if record["record"] == "candidate" and record["instruction"]["id"] == "i2" and not seen_when_last_starts:
            seen_when_last_starts["ranking"] = read_records(out / "ranking.jsonl")
            seen_when_last_starts["top"] = sorted(p.name for p in (out / "top").iterdir())

    config = GenerateConfig(out=out, instructions=_instructions(3), generator="py:rerank.synthetic:sleepy_tone",
                            reward=SLEEP_SCORER, n=2, k=1, duration=0.2, policy="zsum",
                            pool=PoolOptions(backend="local", schedule="stream", score_batch_size=2, device="cpu"))
    run_generate(config, console=_quiet(), on_record=watch)
    ranked_early = {r["instruction"]["id"] for r in seen_when_last_starts["ranking"]}
    assert ranked_early == {"i0", "i1"}
    assert [re.sub(r"_s\d+_", "_s*_", name) for name in seen_when_last_starts["top"]] == [  # type: ignore[union-attr]
        "i0_rank1_s*_prompt-0.wav", "i1_rank1_s*_prompt-1.wav"]
    order = [(r["record"], r["instruction"]["id"] if "instruction" in r else r["id"][:2])
             for r in read_records(out / "manifest.jsonl")]
    assert order.index(("scores", "i0")) < order.index(("candidate", "i1")) < order.index(("candidate", "i2"))
    final = read_records(out / "ranking.jsonl")                      # settled in run order at the end
    assert [r["instruction"]["id"] for r in final] == ["i0", "i0", "i1", "i1", "i2", "i2"]
    assert len(order) == 12                                          # each candidate generated and scored once


def test_phased_generates_everything_before_scoring(tmp_path: Path):
    out = tmp_path / "run"
    config = GenerateConfig(out=out, instructions=_instructions(2), generator="py:rerank.synthetic:sleepy_tone",
                            reward=SLEEP_SCORER, n=2, k=1, duration=0.2, policy="zsum",
                            pool=PoolOptions(backend="local", score_batch_size=2, device="cpu"))
    run_generate(config, console=_quiet())
    kinds = [r["record"] for r in read_records(out / "manifest.jsonl")]
    assert kinds == ["candidate"] * 4 + ["scores"] * 4
    assert (out / "run.json").read_text().count('"schedule": "phased"') == 1


def test_best_of_n_and_generate_select_the_same_candidates(tmp_path: Path, tiny_checkpoint: Path, one_torch_thread):
    instruction = Instruction(text="upbeat pop with bright piano", id="pop")
    scorer = load_scorer(str(tiny_checkpoint), device="cpu")
    best = best_of_n(build_generator("tiny-musicgen"), instruction, n=4, k=4, scorer=scorer, seed_base=5,
                     duration=0.3, batch_size=1)
    result = run_generate(GenerateConfig(out=tmp_path / "run", instructions=[instruction], generator="tiny-musicgen",
                                         reward=ScorerSpec.parse(str(tiny_checkpoint)), n=4, k=4, seed_base=5,
                                         duration=0.3, pool=PoolOptions(backend="local", device="cpu")),
                          console=_quiet())
    ranked = sorted(result.ranking.selected, key=lambda r: r["rank"])
    assert [r.candidate.seed for r in best] == [r["seed"] for r in ranked] and {r["seed"] for r in ranked} == {5, 6, 7, 8}
    assert [r.rank for r in best] == [r["rank"] for r in ranked] == [1, 2, 3, 4]
    assert [r.scores.to_dict() for r in best] == [r["scores"] for r in ranked]     # the same scores, exactly
    assert job_seeds(4, 5) == [5, 6, 7, 8] and job_seeds(4, 0, [9, 2]) == [9, 2]


class Constant:
    """A scorer that cannot tell candidates apart."""

    sr = 16000
    axes = ("alignment", "musicality")

    def score_batch(self, audios, instructions, sample_rate=None):
        return [[0.5, 0.5]] * len(audios)


def test_ties_go_to_the_lower_candidate_index(tmp_path: Path):
    best = best_of_n(sleepy_tone, "pad", seeds=[7, 3, 5, 1], k=2, scorer=Constant(), duration=0.1)
    assert [r.candidate.seed for r in best] == [7, 3]


# ------------------------------------------------------------------------------------------------
# Progress in logs


def test_log_progress_prints_counts_rate_and_eta_every_n_items_or_30_seconds():
    clock = [0.0]
    console = Console(record=True, width=200)
    with LogProgress(console, every=4, clock=lambda: clock[0]) as progress:
        task = progress.add_task("generating", total=10)
        for _ in range(3):
            clock[0] += 2.0
            progress.advance(task)
        assert console.export_text() == ""                          # fewer than 4 items and 30 s: quiet
        clock[0] += 2.0
        progress.advance(task)                                       # the 4th item
        clock[0] += 31.0
        progress.refresh()                                           # nothing new: still quiet
        progress.advance(task)
        clock[0] += 1.0
        progress.refresh()
        for _ in range(5):
            progress.advance(task)
    lines = console.export_text().splitlines()
    assert lines == ["generating: 4/10 (40%), 0.67/s, ETA 9s",      # every 4 items (the clock starts at the 1st)
                     "generating: 5/10 (50%), 0.14/s, ETA 37s",     # 30 s after the last line
                     "generating: 8/10 (80%), 0.21/s, ETA 10s",
                     "generating: 10/10 (100%), 0.26/s, in 38s"]


def test_a_command_line_job_in_a_log_prints_plain_progress_lines(tmp_path: Path):
    result = CliRunner().invoke(app, ["generate", "pad", "-n", "3", "-k", "1", "--generator",
                                      "py:rerank.synthetic:sleepy_tone", "--reward", "rerank.synthetic:SleepScorer",
                                      "--policy", "zsum", "--duration", "0.2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "generating: 3/3 (100%)" in result.output and "scoring: 3/3 (100%)" in result.output
    assert "ranked instructions: 1/1 (100%)" in result.output and "\x1b[" not in result.output


# ------------------------------------------------------------------------------------------------
# Over-long prompts: refused at the boundary by every generator, with the limit


LONG = "calm piano " * 2000          # 22,000 characters


@pytest.mark.parametrize("make, limit", [
    (lambda tmp: build_generator("tiny-musicgen"), "text is 22000 characters, it takes at most 4000"),
    (lambda tmp: CallableGenerator(sleepy_tone), "text is 22000 characters, it takes at most 4000"),
    (lambda tmp: CommandGenerator(_template(tmp)), "text is 22000 characters, it takes at most 4000"),
])
def test_an_over_long_prompt_is_refused_at_once_with_the_limit(tmp_path: Path, make, limit: str):
    generator = make(tmp_path)
    start = time.perf_counter()
    with pytest.raises(InstructionTooLongError) as err:
        generator.sample(Instruction(text=LONG, id="long"), [0], 0.2)
    assert time.perf_counter() - start < 2.0
    assert f"generator '{generator.name}' refuses instruction long: {limit}; shorten it" == str(err.value)
    lyrics = Instruction(text="ok", lyrics="la " * 10000, id="lyr")
    assert generator.length_problems(lyrics) == ["lyrics is 30000 characters, it takes at most 20000"]


def _template(tmp_path: Path) -> Path:
    path = tmp_path / "tool.yaml"
    path.write_text(yaml.safe_dump({"name": "tool", "command": ["true", "{text}", "{output}"],
                                    "inputs": ["text", "lyrics"], "sample_rate": 16000}))
    return path


def test_token_limits_of_text_encoders_are_named():
    musicgen = build_generator("tiny-musicgen")                        # its T5 tokenizer reads 128 tokens
    assert musicgen.length_problems(Instruction(text="calm piano " * 100)) == [
        "text is 202 tokens, its text encoder reads at most 128"]
    assert musicgen.length_problems(Instruction(text="calm piano")) == []
    stable = build_generator("tiny-stable-audio")
    assert stable.length_problems(Instruction(text="calm piano " * 100)) == [
        "text is 202 tokens, its text encoder reads at most 128"]


def test_an_over_long_prompt_fails_the_command_before_any_generation(tmp_path: Path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "fine", "id": "ok"}\n' + f'{{"text": "{LONG}", "id": "long"}}\n')
    start = time.perf_counter()
    result = CliRunner(env={"CMIRM_CACHE": str(tmp_path / "cache")}).invoke(
        app, ["generate", "--prompts", str(prompts), "--tiny", "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, InstructionTooLongError) and time.perf_counter() - start < 60
    assert "refuses instruction long: text is 22000 characters, it takes at most 4000" in str(result.exception)
    assert not (tmp_path / "o" / "candidates").exists()


# ------------------------------------------------------------------------------------------------
# Worker options


def test_worker_options_are_checked_with_their_option_names():
    cases = [
        (dict(gen_actors=0), "--gen-actors must be an integer >= 1, got 0"),
        (dict(gen_gpus_per_actor=-0.5), "--gen-gpus-per-actor must be a number >= 0"),
        (dict(gen_cpus_per_actor=float("nan")), "--gen-cpus-per-actor must be a number >= 0"),
        (dict(schedule="fast"), "--schedule must be auto, stream or phased, got 'fast'"),
        (dict(backend="local", gen_actors=2), "--backend local runs one in-process generator and scorer"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            PoolOptions(**options)
    auto = PoolOptions(gen_actors=2, gen_cpus_per_actor=0.5, gen_gpus_per_actor=0.25, threads_per_actor=1)
    assert (auto.resolved_backend, auto.resolved_schedule) == ("ray", "stream")
    assert PoolOptions().resolved_schedule == "phased" and PoolOptions(backend="ray").resolved_schedule == "stream"
    generators = auto.generator_config("tiny-musicgen")
    assert (generators.num_actors, generators.num_cpus_per_actor, generators.num_gpus_per_actor) == (2, 0.5, 0.25)
    assert generators.device == "cuda" and generators.threads_per_actor == 1
    assert auto.reserved_cpus() == 2 * 0.5 + 1 * 1.0
