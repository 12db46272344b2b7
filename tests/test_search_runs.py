"""Search in run directories: compute in every manifest record, `cmirm generate --search beam:/noise:`, resume of
an interrupted beam or smc run, up-front refusals of bad specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from rich.console import Console
from typer.testing import CliRunner

from cmirm_plugin import ConfigError, Instruction, Lineage, read_records
from cmirm_plugin.cli import app
from cmirm_plugin.scoring import ScorerSpec
from generators.tiny import tiny_generator
from rerank.generate import GenerateConfig, run_generate
from rerank.pool_options import PoolOptions
from rerank.run_records import load_views
from rerank.search import regenerate

pytestmark = pytest.mark.timeout(600)

TEXTS = [Instruction(text="upbeat pop with bright piano"), Instruction(text="calm ambient pad")]
BEAM = "beam:width=2,segment=0.1"
FAST = {"top_k": 32}


def _config(out: Path, checkpoint: Path, **overrides) -> GenerateConfig:
    settings = dict(out=out, instructions=TEXTS, generator="tiny-musicgen", reward=ScorerSpec.parse(str(checkpoint)),
                    n=4, duration=0.3, params=dict(FAST), k=1, pool=PoolOptions(backend="local", device="cpu"))
    return GenerateConfig(**{**settings, **overrides})


def _quiet() -> Console:
    return Console(quiet=True)


def test_best_of_n_records_generator_and_scorer_compute_of_every_candidate(tmp_path: Path, tiny_checkpoint: Path):
    """0.3 s of tiny MusicGen = 15 frames + its 3-codebook delay = 18 decoder steps, 36 rows with guidance; the
    scorer's seconds come from the worker's timing of each batch, split equally over its candidates."""
    out = tmp_path / "run"
    run_generate(_config(out, tiny_checkpoint, n=3), console=_quiet())
    records = read_records(out / "manifest.jsonl")
    candidates = [r for r in records if r["record"] == "candidate"]
    scores = {r["id"]: r for r in records if r["record"] == "scores"}
    assert len(candidates) == 6 and len(scores) == 6
    for record in candidates:
        compute = record["compute"]
        assert compute["audio_seconds"] == pytest.approx(0.3) and compute["device"] == "cpu"
        assert (compute["work_unit"], compute["work_units"], compute["model_evals"]) == ("decoder_steps", 18, 36)
        assert compute["generator_seconds"] > 0 and compute["scorer_seconds"] is None
    # one scoring batch per instruction (3 candidates): each gets a third of it, so the three shares are equal
    per_instruction = {}
    for record in candidates:
        per_instruction.setdefault(record["instruction_id"], set()).add(scores[record["id"]]["seconds"])
    assert all(len(shares) == 1 and next(iter(shares)) > 0 for shares in per_instruction.values())
    label = str(tiny_checkpoint.resolve())
    view = next(iter(load_views(out).values()))
    assert view.compute_with(label).scorer_seconds == scores[view.id]["seconds"]
    assert view.compute_with(label).total_seconds == pytest.approx(view.compute.generator_seconds
                                                                   + scores[view.id]["seconds"])


def test_beam_search_run_from_the_cli(tmp_path: Path, tiny_checkpoint: Path):
    """2 beams x 2 continuations x 3 segments of 0.1 s: 12 clips per instruction, 8 of them prefixes (never ranked),
    4 whole clips; 1.2 s of audio generated per instruction, exactly best-of-4's budget."""
    out = tmp_path / "beam"
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(app, ["generate", "upbeat pop with bright piano", "-n", "4", "-k", "2", "--duration", "0.3",
                                 "--generator", "tiny-musicgen", "--reward", str(tiny_checkpoint), "--device", "cpu",
                                 "--param", "top_k=32", "--search", BEAM, "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = json.loads((out / "run.json").read_text())
    assert run["result"]["search"] == "beam:width=2,expand=2,segment=0.1"
    assert run["request"]["search"] == "beam:width=2,expand=2,segment=0.1"
    candidates = [r for r in read_records(out / "manifest.jsonl") if r["record"] == "candidate"]
    assert len(candidates) == 12
    partial = [r for r in candidates if r["lineage"]["partial"]]
    final = [r for r in candidates if not r["lineage"]["partial"]]
    assert len(partial) == 8 and len(final) == 4
    assert all(len(r["lineage"]["segment_seeds"]) == 3 and r["duration"] == pytest.approx(0.3) for r in final)
    assert sum(r["compute"]["audio_seconds"] for r in candidates) == pytest.approx(1.2)
    assert sorted(p.name for p in (out / "candidates").glob("*.codes.safetensors")) == \
        sorted(f"{r['id']}.codes.safetensors" for r in partial)
    ranking = read_records(out / "ranking.jsonl")
    ranked = {r["id"] for r in ranking if r["rank"] is not None}
    assert ranked == {r["id"] for r in final}
    selected = sorted((r for r in ranking if r["selected"]), key=lambda r: r["rank"])
    assert len(selected) == 2 and sorted(p.suffix for p in (out / "top").iterdir()) == [".txt", ".wav", ".wav"]
    state = json.loads((out / "search_state.json").read_text())["states"]
    (only,) = state.values()
    assert only["done"] and only["step"] == 3 and set(only["frontier"]) <= {r["id"] for r in final}

    again = runner.invoke(app, ["rerank", str(out), "-k", "3"])
    assert again.exit_code == 0, again.output
    assert {r["id"] for r in read_records(out / "ranking.jsonl") if r["selected"]} <= {r["id"] for r in final}
    assert len(list((out / "top").glob("*.wav"))) == 3 and (out / "top" / "README.txt").is_file()


def _outcome(out: Path) -> tuple:
    """What a search run decided: every node's seed, lineage and scores, the frontier, the ranking, the final audio."""
    states = json.loads((out / "search_state.json").read_text())["states"]
    nodes = {key: [(n["id"], n["seed"], n["lineage"], n["scores"]) for n in s["nodes"]] for key, s in states.items()}
    frontier = {key: s["frontier"] for key, s in states.items()}
    ranking = [(r["id"], r["rank"], r["scores"]) for r in read_records(out / "ranking.jsonl")]
    audio = {r["id"]: sf.read(out / r["audio_path"], dtype="float32")[0].tobytes()   # samples (wav headers hold a time)
             for r in read_records(out / "ranking.jsonl") if r["rank"]}
    return nodes, frontier, ranking, audio


def test_a_search_run_resumed_with_another_seed_base_is_refused_before_anything_is_written(tmp_path: Path,
                                                                                            tiny_checkpoint: Path):
    out = tmp_path / "beam"
    run_generate(_config(out, tiny_checkpoint, search=BEAM), console=_quiet())
    before = {name: (out / name).read_bytes() for name in ("run.json", "manifest.jsonl", "search_state.json")}
    with pytest.raises(ConfigError, match=r"search_state\.json: the search of instruction '.*' started with "
                                          r"--seed-base 0 and --duration 0\.3, not 5 and 0\.3; resume it with those"):
        run_generate(_config(out, tiny_checkpoint, search=BEAM, seed_base=5), console=_quiet())
    assert {name: (out / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("spec", [BEAM, "smc:segment=0.1,lambda=20"])
def test_an_interrupted_search_run_resumes_to_the_same_result(tmp_path: Path, tiny_checkpoint: Path, spec: str):
    """Beam (2 x 2) and smc (4 particles) both make 4 clips per instruction and step."""
    whole = tmp_path / "whole"
    run_generate(_config(whole, tiny_checkpoint, search=spec), console=_quiet())

    resumed = tmp_path / "resumed"
    seen = []

    def stop_mid_step_1(record):   # step 0 makes 4 clips per instruction (8 records); stop after 3 of step 1
        if record["record"] == "candidate":
            seen.append(record["id"])
            if len(seen) == 11:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_generate(_config(resumed, tiny_checkpoint, search=spec), console=_quiet(), on_record=stop_mid_step_1)
    state = json.loads((resumed / "search_state.json").read_text())["states"]
    assert {s["step"] for s in state.values()} == {1}          # step 0 saved, step 1 not
    result = run_generate(_config(resumed, tiny_checkpoint, search=spec), console=_quiet())
    # step 0 comes from the state; of step 1, the 3 clips made before the stop are reused (scored now)
    assert (result.counts.reused, result.counts.generated, result.counts.scored) == (3, 24 - 11, 24 - 8)
    assert _outcome(resumed) == _outcome(whole)


def test_noise_search_run_on_tiny_stable_audio(tmp_path: Path, tiny_checkpoint: Path, one_torch_thread):
    """2 noises, then one round of 2 neighbours: 4 whole clips, all candidates; a candidate is its lineage replayed."""
    out = tmp_path / "noise"
    config = _config(out, tiny_checkpoint, instructions=TEXTS[:1], generator="tiny-stable-audio", params={"steps": 4},
                     duration=0.5, n=4, search="noise:neighbors=2,radius=0.5")
    run_generate(config, console=_quiet())
    assert json.loads((out / "run.json").read_text())["result"]["search"] == "noise:rounds=1,neighbors=2,radius=0.5"
    candidates = [r for r in read_records(out / "manifest.jsonl") if r["record"] == "candidate"]
    assert [len(r["lineage"]["noise_seeds"]) for r in candidates] == [1, 1, 2, 2]
    assert all(r["compute"]["work_unit"] == "nfe" and r["compute"]["work_units"] == 4 for r in candidates)
    assert sum(r["rank"] is not None for r in read_records(out / "ranking.jsonl")) == 4
    moved = candidates[-1]
    again = regenerate(tiny_generator("stable-audio"), TEXTS[0], moved["seed"], Lineage.from_dict(moved["lineage"]),
                       0.5, steps=4)
    saved, _ = sf.read(out / moved["audio_path"], dtype="float32", always_2d=True)
    assert torch.equal(again.audio.waveform, torch.from_numpy(saved.T.copy()))


def test_bad_search_specs_are_refused_before_any_model_loads(tmp_path: Path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("rerank.gen_pool.build_generator", refuse)
    monkeypatch.setattr("cmirm_plugin.scoring.loader.load_scorer", refuse)
    out = tmp_path / "o"
    base = ["generate", "pop", "--tiny", "--duration", "0.3", "--out", str(out)]
    cases = [
        (["--search", "greedy"], "unknown search method 'greedy'"),
        (["--search", "beam:width=two"], "search 'beam': width must be an integer, got 'two'"),
        (["--search", "beam:depth=2"], "search 'beam' has no setting 'depth'"),
        (["--search", "beam:width=2,segment=0.2"], "duration 0.3 s is not a whole number of segments of 0.2 s"),
        (["--search", "beam:width=3,segment=0.1", "-n", "4"], "a budget of 4 is not a multiple of width=3"),
        (["--search", "noise:neighbors=2"], "generator 'tiny-musicgen' cannot start from given initial latents"),
        (["--search", "beam:width=2,segment=0.1", "--generator", "tiny-stable-audio"],
         "generator 'tiny-stable-audio' cannot continue a clip"),
        (["--search", "smc:segment=0.1", "--generator", "tiny-stable-audio"],
         "generator 'tiny-stable-audio' cannot continue a clip"),
        (["--search", "smc:segment=0.1,lambda=-2"], "search 'smc': lambda must be a number >= 0, got -2.0"),
        (["--search", "beam:width=2,segment=0.1", "--seeds", "1,2"], "search 'beam:width=2,expand=4,segment=0.1' "
                                                                      "allocates its own seeds"),
    ]
    for extra, expected in cases:
        result = CliRunner().invoke(app, base + extra)   # `cmirm` prints a ConfigError as one line, exit 2
        assert isinstance(result.exception, ConfigError), (extra, result.output, result.exception)
        assert expected in str(result.exception), (extra, result.exception)
    assert not out.exists()


def test_scaling_methods_end_to_end_writes_compute_curves(tmp_path: Path, tiny_checkpoint: Path):
    """best-of-n, beam and smc at budgets 2 and 4 on tiny MusicGen, with a second model as evaluation: the runs, the
    rows (each method's audio seconds = budget x duration per instruction), compute.png; --from a beam run."""
    import csv

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"text": t.text}) + "\n" for t in TEXTS))
    out = tmp_path / "scaling"
    runner = CliRunner(env={"COLUMNS": "200"})
    common = ["--generator", "tiny-musicgen", "--reward", str(tiny_checkpoint), "--device", "cpu", "--param", "top_k=32",
              "--duration", "0.2", "--n-boot", "50"]
    result = runner.invoke(app, ["scaling", "--prompts", str(prompts), "--out", str(out), *common,
                                 "--methods", "best-of-n,beam:width=2,segment=0.1,smc:segment=0.1,lambda=20",
                                 "--budgets", "2,4",
                                 "--eval-reward", "tiny"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert sorted(p.name for p in (out / "runs").iterdir() if p.is_dir()) == \
        ["beam-width=2,segment=0.1_b2", "beam-width=2,segment=0.1_b4", "best-of-n",
         "smc-segment=0.1,lambda=20_b2", "smc-segment=0.1,lambda=20_b4"]
    rows = list(csv.DictReader((out / "curve.csv").open()))
    assert {"method", "budget", "reward", "axis", "audio_seconds", "work_units", "total_seconds"} <= set(rows[0])
    points = {(r["method"], int(r["budget"]), r["reward"], r["axis"]) for r in rows}
    label = str(tiny_checkpoint.resolve())
    for method in ("best-of-n", "beam:width=2,segment=0.1", "smc:segment=0.1,lambda=20"):
        for budget in (2, 4):
            for scorer in (label, "tiny-v2"):
                assert (method, budget, scorer, "composite") in points
    for row in rows:
        assert float(row["audio_seconds"]) == pytest.approx(int(row["budget"]) * 0.2)
        assert float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"])
        assert int(row["n_instructions"]) == 2 and float(row["total_seconds"]) > float(row["generator_seconds"]) > 0
    # a beam row is the mean over instructions of its selected final clip's evaluation composite
    beam_run = out / "runs" / "beam-width=2,segment=0.1_b4"
    evaluation = {r["id"]: r["scores"]["musicality"] for r in read_records(out / "runs" / f"{beam_run.name}.eval_scores.jsonl")}
    views = load_views(beam_run)
    chosen = []
    for inst in TEXTS:
        final = [v for v in views.values() if v.instruction.id == inst.id and not v.partial]
        chosen.append(evaluation[max(final, key=lambda v: (v.scores[label]["musicality"], -v.index)).id])
    (beam4,) = [r for r in rows if (r["method"], r["budget"], r["reward"], r["axis"])
                == ("beam:width=2,segment=0.1", "4", "tiny-v2", "composite")]
    assert float(beam4["mean"]) == pytest.approx(sum(chosen) / 2)
    assert (out / "compute.png").stat().st_size > 10_000 and (out / "compute_selection.png").is_file()

    again = runner.invoke(app, ["scaling", "--from", str(beam_run), "--out", str(tmp_path / "from"), "--n-boot", "50"])
    assert again.exit_code == 0, again.output + repr(again.exception)
    from_rows = list(csv.DictReader((tmp_path / "from" / "curve.csv").open()))
    assert {(r["method"], r["budget"]) for r in from_rows} == {("beam:width=2,expand=2,segment=0.1", "4")}
    assert (tmp_path / "from" / "compute.png").is_file()
