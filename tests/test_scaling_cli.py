"""`cmirm scaling`: curves from a tiny run, `--from` without generating, evaluation scorers and axes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import matplotlib.image
import pytest
from typer.testing import CliRunner

from cmirm_plugin import CmirmError, Instruction, read_records
from cmirm_plugin.cli import app
from cmirm_plugin.model.tiny import build_tiny_checkpoint
from cmirm_plugin.scoring import RewardScorer
from cmirm_plugin.testing import sine
from rerank.plots import PNG_SIZE
from rerank.run_records import read_run
from rerank.scaling import CURVE_COLUMNS
from rerank.scaling_run import load_run

pytestmark = pytest.mark.timeout(300)


def _invoke(args: list[str], env: dict[str, str]):
    result = CliRunner(env={"COLUMNS": "200", **env}).invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return {"CMIRM_CACHE": str(tmp_path_factory.mktemp("cmirm-cache"))}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, env) -> Path:
    """`cmirm scaling --tiny` on two instructions (text, text+ref), M = 4, k = 1 and 2."""
    root = tmp_path_factory.mktemp("scaling")
    sine(330, 1.0, 32000).save(root / "ref.wav")
    prompts = root / "prompts.jsonl"
    prompts.write_text('{"text": "calm piano", "id": "calm"}\n'
                       '{"text": "rock song", "ref_audio": "ref.wav", "id": "rock"}\n')
    out = root / "out"
    result = _invoke(["scaling", "--prompts", str(prompts), "--n-max", "4", "--tiny", "--duration", "0.3",
                      "--gen-batch-size", "4", "--ks", "1,2", "--n-boot", "200", "--out", str(out)], env)
    assert "composite of best-of-N" in result.output
    return out


def test_tiny_scaling_writes_csv_json_and_pngs(tiny_run: Path):
    rows = _rows(tiny_run / "curve.csv")
    assert list(rows[0]) == list(CURVE_COLUMNS)
    assert {(r["n"], r["k"]) for r in rows} == {("1", "1"), ("2", "1"), ("4", "1"), ("2", "2"), ("4", "2")}
    assert {r["modality"] for r in rows} == {"all", "text", "text+ref"}
    assert {r["axis"] for r in rows} == {"alignment", "musicality", "composite"}
    assert {(r["selection_scorer"], r["evaluation_scorer"], r["policy"]) for r in rows} == {
        ("tiny-v2", "tiny-v2", "axis:musicality")}
    all_n = [r for r in rows if r["modality"] == "all" and r["k"] == "1" and r["axis"] == "musicality"]
    means = [float(r["mean"]) for r in sorted(all_n, key=lambda r: int(r["n"]))]
    assert means == sorted(means)                   # selecting by musicality never lowers expected musicality
    assert all(float(r["ci_low"]) <= float(r["mean"]) <= float(r["ci_high"]) for r in rows)
    document = json.loads((tiny_run / "curve.json").read_text())
    assert document["settings"]["ns"] == [1, 2, 4] and document["settings"]["ks"] == [1, 2]
    assert len(document["rows"]) == len(rows)
    for name in ("curve.png", "curve_k2.png"):
        image = matplotlib.image.imread(tiny_run / name)
        assert image.shape[:2] == (PNG_SIZE[1], PNG_SIZE[0])
    assert len(list((tiny_run / "candidates").iterdir())) == 8 and (tiny_run / "run.json").is_file()


def test_best_of_n_rows_carry_their_method_and_n_times_a_candidates_compute(tiny_run: Path):
    """Each row spends N candidates: N times their mean compute (tiny MusicGen's 18 decoder steps and 36
    evaluations with CFG per 0.3 s clip; generator and scorer seconds as the manifest recorded them)."""
    candidates = [r for r in read_records(tiny_run / "manifest.jsonl") if r["record"] == "candidate"]
    scores = [r for r in read_records(tiny_run / "manifest.jsonl") if r["record"] == "scores"]
    generator_s = sum(r["compute"]["generator_seconds"] for r in candidates) / len(candidates)
    total_s = generator_s + sum(r["seconds"] for r in scores) / len(scores)
    for row in _rows(tiny_run / "curve.csv"):
        n = int(row["n"])
        assert row["method"] == "best-of-n"
        assert float(row["audio_seconds"]) == pytest.approx(0.3 * n)
        assert (float(row["work_units"]), float(row["model_evals"])) == (18.0 * n, 36.0 * n)
        assert float(row["generator_seconds"]) == pytest.approx(generator_s * n)
        assert float(row["total_seconds"]) == pytest.approx(total_s * n)
    assert load_run(tiny_run).compute["audio_seconds"] == pytest.approx(0.3)


def test_load_run_gives_the_arrays_of_the_pool(tiny_run: Path):
    data = load_run(tiny_run)
    assert data.scores.shape == (8, 2) and data.evaluation is None and not data.skipped
    assert data.instruction_ids == ["calm"] * 4 + ["rock"] * 4
    assert data.modalities == {"calm": "text", "rock": "text+ref"}
    assert load_run(tiny_run, n_max=2).scores.shape == (4, 2)


@pytest.fixture
def no_generation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("--from must not build a generator")

    monkeypatch.setattr("rerank.gen_pool.build_generator", refuse)
    monkeypatch.setattr("generators.registry.build_generator", refuse)


def test_from_reuses_the_run_without_generating_or_rescoring(tiny_run: Path, tmp_path: Path, env, no_generation,
                                                              monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("--from must not rescore with the selection model")

    monkeypatch.setattr("rerank.pool.ScorerWorker.__init__", refuse)
    manifest = (tiny_run / "manifest.jsonl").read_bytes()
    out = tmp_path / "curves"
    result = _invoke(["scaling", "--from", str(tiny_run), "--n-max", "2", "--policy", "axis:alignment",
                      "--eval-axis", "musicality", "--n-boot", "100", "--out", str(out)], env)
    assert "musicality of best-of-N (axis:alignment" in result.output
    rows = _rows(out / "curve.csv")
    assert {r["n"] for r in rows} == {"1", "2"} and {r["policy"] for r in rows} == {"axis:alignment"}
    # Selecting by alignment and reporting the other axis: the musicality rows are the evaluation rows.
    assert {r["modality"] for r in rows if r["axis"] == "musicality"} == {"all", "text", "text+ref"}
    assert (out / "curve.png").is_file() and not (out / "candidates").exists()
    assert (tiny_run / "manifest.jsonl").read_bytes() == manifest


def test_evaluation_scorer_scores_the_same_candidates(tiny_run: Path, tmp_path: Path, env, no_generation):
    """--n-max 2 of the run's 4 candidates per instruction: exactly those 4 are scored by the evaluator."""
    evaluator = build_tiny_checkpoint(tmp_path / "eval-model", seed=7)
    out = tmp_path / "curves"
    args = ["scaling", "--from", str(tiny_run), "--eval-reward", str(evaluator), "--n-max", "2", "--ks", "1,2",
            "--n-boot", "100", "--out", str(out)]
    result = _invoke(args, env)
    label = str(evaluator.resolve())
    rows = _rows(out / "curve.csv")
    assert {(r["selection_scorer"], r["evaluation_scorer"]) for r in rows} == {("tiny-v2", label)}
    assert {r["n"] for r in rows} == {"1", "2"}
    own = _rows(out / "curve_selection.csv")
    assert {(r["selection_scorer"], r["evaluation_scorer"]) for r in own} == {("tiny-v2", "tiny-v2")}
    assert [r["mean"] for r in rows] != [r["mean"] for r in own]
    assert f"evaluated by {label}" in result.output and "evaluated by tiny-v2" in result.output
    assert (out / "curve_selection.png").is_file()

    # One evaluation record per candidate the curves use (the first 2 of each instruction), no others,
    # each holding the evaluator's own scores of that candidate's clip under its instruction.
    candidates = [r for r in map(json.loads, (tiny_run / "manifest.jsonl").read_text().splitlines())
                  if r["record"] == "candidate"]
    used = {c["id"]: c for c in candidates if c["index"] < 2}
    assert len(used) == 4 and len(candidates) == 8
    eval_records = [json.loads(line) for line in (out / "eval_scores.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in eval_records) == sorted(used)
    assert {r["scorer"] for r in eval_records} == {label} and {r["run"] for r in eval_records} == {str(tiny_run)}
    scorer = RewardScorer.from_pretrained(label, device="cpu")
    for record in eval_records:
        candidate = used[record["id"]]
        inst = candidate["instruction"]
        expected = scorer.score(str(tiny_run / candidate["audio_path"]),
                                Instruction(text=inst["text"], lyrics=inst["lyrics"], ref_audio=inst["ref_audio"]))
        assert tuple(record["scores"].values()) == pytest.approx(expected.as_tuple(), abs=1e-5)

    # A rerun reuses the evaluation scores too.
    _invoke(args, env)
    assert (out / "eval_scores.jsonl").read_text().splitlines() == [json.dumps(r) for r in eval_records]


def test_scaling_option_errors(tiny_run: Path, tmp_path: Path, env):
    runner = CliRunner(env=env)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "a"}\n')
    out = ["--out", str(tmp_path / "o")]
    cases = [
        ([], "give --prompts FILE.jsonl and --n-max M"),
        (["--prompts", str(prompts), "--from", str(tiny_run)], "drop --prompts"),
        (["--from", str(tmp_path)], "not a `cmirm generate` output directory"),
        (["--from", str(tiny_run), "--eval-axis", "loudness"], "--eval-axis"),
        (["--from", str(tiny_run), "--ks", "8"],
         "--ks 8 exceeds the 4 candidate(s) per instruction (the fewest scored for an instruction in "),
    ]
    for args, expected in cases:
        result = runner.invoke(app, ["scaling", *args, *out])
        assert result.exit_code != 0, args
        assert expected in str(result.exception), (args, result.exception)


# ------------------------------------------------------------------------------------------------
# Shared options, up-front validation, evaluation scoring


def test_scaling_generation_options_reach_run_json(tmp_path: Path, env):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "calm piano", "id": "calm"}\n')
    out = tmp_path / "out"
    _invoke(["scaling", "--prompts", str(prompts), "--n-max", "2", "--tiny", "--duration", "0.3",
             "--temperature", "0.7", "--top-k", "5", "--param", "guidance_scale=1.5", "--seed-base", "3",
             "--gen-batch-size", "2", "--max-dur", "10", "--backend", "local", "--score-batch-size", "3",
             "--max-in-flight", "1", "--policy", "zsum", "--n-boot", "20", "--out", str(out)], env)
    run = json.loads((out / "run.json").read_text())
    assert run["result"] == {"generator": "tiny-musicgen", "duration": 0.3, "reward": "tiny-v2", "max_dur": 10.0,
                             "missing": "mask", "dtype": "fp32", "search": "best-of-n",
                             "params": {"temperature": 0.7, "top_k": 5, "guidance_scale": 1.5}}
    assert run["request"] == {"n": 2, "seed_base": 3, "seeds": None, "instructions": ["calm"], "search": "best-of-n:n=2"}
    assert (run["pool"]["backend"], run["pool"]["score_batch_size"], run["pool"]["max_in_flight"],
            run["pool"]["gen_batch_size"]) == ("local", 3, 1, 2)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in records if r["record"] == "candidate") == [3, 4]
    assert {r["policy"] for r in _rows(out / "curve.csv")} == {"zsum"}


def test_scaling_from_a_run_uses_its_policy_and_warns_of_a_zero_width_band(tmp_path: Path, env):
    run, out = tmp_path / "run", tmp_path / "curves"
    _invoke(["generate", "calm piano", "-n", "2", "-k", "1", "--tiny", "--duration", "0.3", "--policy",
             "axis:alignment", "--out", str(run)], env)
    result = _invoke(["scaling", "--from", str(run), "--n-boot", "20", "--out", str(out)], env)   # no --policy
    document = json.loads((out / "curve.json").read_text())
    assert document["settings"]["policy"] == "axis:alignment"
    assert {r["policy"] for r in _rows(out / "curve.csv")} == {"axis:alignment"}
    warning = ("bootstrap bands need >= 2 instructions; zero-width band for all (1 instruction), text (1 instruction): "
               "add instructions for a real interval")
    assert document["settings"]["warnings"] == [warning]
    assert [line for line in result.output.splitlines() if "warning" in line] == [f"warning: {warning}"]
    assert all(r["ci_low"] == r["mean"] == r["ci_high"] for r in _rows(out / "curve.csv"))
    assert "-0.0000" not in result.output


def _refusal(args: list[str], env) -> str:
    result = CliRunner(env=env).invoke(app, ["scaling", *args])
    assert result.exit_code != 0, args
    return str(result.exception)


def test_from_refuses_generation_options(tiny_run: Path, tmp_path: Path, env, no_generation):
    out = tmp_path / "curves"
    for args, option in ((["--temperature", "0.5"], "--temperature"), (["--tiny"], "--tiny"),
                         (["--max-dur", "30"], "--max-dur"), (["--seed-base", "2"], "--seed-base"),
                         (["--duration", "1", "--param", "a=1"], "--duration, --param")):
        message = _refusal(["--from", str(tiny_run), *args, "--out", str(out)], env)
        assert f"drop {option}" in message, (args, message)
    assert not out.exists()


def test_option_errors_name_the_option(tiny_run: Path, tmp_path: Path, env):
    out = ["--out", str(tmp_path / "o")]
    cases = [
        (["--from", str(tiny_run), "--ks", ""], "--ks expects comma-separated integers"),
        (["--from", str(tiny_run), "--ks", "1,x"], "--ks expects comma-separated integers"),
        (["--from", str(tiny_run), "--ks", "0"], "--ks values must be >= 1, got 0"),
        (["--from", str(tiny_run), "--n-max", "0"], "--n-max must be an integer >= 1, got 0"),
        (["--from", str(tiny_run), "--n-max", "2", "--ks", "3"],
         "--ks 3 exceeds the 2 candidate(s) per instruction (--n-max)"),
        (["--from", str(tiny_run), "--ci", "95"], "ci must be a level strictly between 0 and 1"),
        (["--from", str(tiny_run), "--n-boot", "0"], "n_boot must be an integer >= 1, got 0"),
        (["--from", str(tiny_run), "--num-actors", "0"], "--num-actors must be an integer >= 1, got 0"),
        (["--from", str(tiny_run), "--eval-reward", "x", "--scorer", "x"], "--eval-reward is the selection model"),
        (["--from", str(tiny_run), "--methods", "best-of-n"], "--methods and --budgets go together"),
        (["--from", str(tiny_run), "--budgets", "4"], "--methods and --budgets go together"),
        (["--from", str(tiny_run), "--methods", "best-of-n", "--budgets", "4"],
         "--methods runs each method: give --prompts, not --from"),
    ]
    for args, expected in cases:
        assert expected in _refusal([*args, *out], env), args
    assert not (tmp_path / "o").exists()


def test_scaling_config_is_validated_up_front(tiny_run: Path, tmp_path: Path):
    from cmirm_plugin.scoring import ScorerSpec
    from rerank.generate import CandidatesConfig
    from rerank.scaling_run import ScalingConfig

    out = tmp_path / "o"
    pool = CandidatesConfig(out=out, instructions=[Instruction(text="x")], generator="g", reward=ScorerSpec("hub", "rm"), n=4)
    cases = [
        (dict(source=tiny_run, ci=95), "ci must be a level"),
        (dict(source=tiny_run, n_boot=0), "n_boot must be an integer >= 1, got 0"),
        (dict(source=tiny_run, ks=(0,)), "k must be an integer >= 1, got 0"),
        (dict(source=tiny_run, seed=-1), "seed must be a non-negative integer"),
        (dict(source=tiny_run, ks=(1, 5), n_max=4), "--ks 5 exceeds the 4 candidate(s) per instruction (--n-max)"),
        (dict(generate=pool, ks=(5,)), "--ks 5 exceeds the 4 candidate(s) per instruction (--n-max)"),
        (dict(generate=pool, eval_reward=ScorerSpec("hub", "rm")), "--eval-reward is the selection model (rm)"),
        (dict(generate=pool, scorer="rm"), "drop --scorer"),
        (dict(source=tmp_path), "--from"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(CmirmError) as info:
            ScalingConfig(out=out, **kwargs)
        assert expected in str(info.value), (kwargs, info.value)
    assert ScalingConfig(out=out, source=tiny_run / "manifest.jsonl").source == tiny_run


def test_evaluation_scoring_honours_n_max_and_its_source_run(tiny_run: Path, tmp_path: Path, env, no_generation):
    evaluator = build_tiny_checkpoint(tmp_path / "eval-model", seed=3)
    out = tmp_path / "curves"
    _invoke(["scaling", "--from", str(tiny_run), "--n-max", "2", "--eval-reward", str(evaluator), "--n-boot", "50",
             "--out", str(out)], env)
    records = [json.loads(line) for line in (out / "eval_scores.jsonl").read_text().splitlines()]
    assert len(records) == 4                       # 2 instructions x the first 2 candidates, not all 8
    index = {v.id: v.index for v in read_run(tiny_run)}
    assert {index[r["id"]] for r in records} == {0, 1}
    assert {r["run"] for r in records} == {str(tiny_run.resolve())}

    # The same --out for another source run is refused before anything is scored.
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    message = _refusal(["--from", str(copy), "--eval-reward", str(evaluator), "--out", str(out)], env)
    assert "holds evaluation scores of another run" in message and "use a fresh --out" in message
    assert len((out / "eval_scores.jsonl").read_text().splitlines()) == 4


def test_evaluation_scores_only_candidates_with_selection_scores(tmp_path: Path, tiny_checkpoint: Path):
    from rich.console import Console

    from cmirm_plugin import ManifestWriter, Scores
    from cmirm_plugin.records import Candidate
    from cmirm_plugin.scoring import ScorerSpec
    from rerank.pool_options import PoolOptions
    from rerank.run_records import RunPaths, candidate_record, score_record
    from rerank.scaling_run import ScalingConfig, run_scaling

    paths = RunPaths(tmp_path / "run")
    inst = Instruction(text="calm piano", id="calm")
    with ManifestWriter(paths.manifest) as log:
        for seed in range(3):
            cand = Candidate(sine(200 + 50 * seed, 1.0), inst.id, "synth", seed)
            wav = cand.audio.save(paths.candidate_wav(cand.id))
            log.append(candidate_record(cand, inst, seed, wav.relative_to(paths.root).as_posix()))
            scores = Scores.from_array([0.1 * seed, 0.2 * seed]) if seed != 1 else None
            log.append(score_record(cand.id, "rm", scores, None if scores else "AudioError: broken"))
    config = ScalingConfig(out=tmp_path / "curves", source=paths.root, n_boot=10,
                           eval_reward=ScorerSpec.parse(str(tiny_checkpoint)),
                           pool=PoolOptions(backend="local", device="cpu"))
    result = run_scaling(config, console=Console(quiet=True))
    records = [json.loads(line) for line in (config.out / "eval_scores.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(Candidate.make_id("calm", "synth", s) for s in (0, 2))
    assert len(result.skipped) == 1 and "broken" in result.skipped[0]
