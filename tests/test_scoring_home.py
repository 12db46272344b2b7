"""One scoring home: every command and API loads scorers through `load_scorer`, any contract scorer
reranks (named axes, single-axis scorers), `cmirm score --jsonl`, and the defaults live in one place.

The plug-in scorers are written into a module at test time and named ``module:Class``: their
scores are a known function of the audio, so every ranking below is known in advance.
"""

from __future__ import annotations

import importlib
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmirm_plugin import Audio, Instruction, read_records
from cmirm_plugin.cli import app
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.scoring import (
    RewardScorer,
    ScorerSpec,
    ScoringSettings,
    load_scorer,
    score_isolated,
)
from cmirm_plugin.testing import noise, sine

pytestmark = pytest.mark.timeout(600)

PLUGIN_SOURCE = '''
import numpy as np

from cmirm_plugin.audio import Audio
from cmirm_plugin.scoring.contract import as_clips, as_instructions


def features(audio):
    """(rms, peak) of a clip: what the scorers below score."""
    wave = audio.waveform
    return float(wave.pow(2).mean().sqrt()), float(wave.abs().max())


class KnownScorer:
    """alignment = rms + 0.01 * len(text); musicality = peak - rms. Records what it was built with."""

    axes = ("alignment", "musicality")
    sr = 16000
    built = []

    def __init__(self, device=None, settings=None):
        type(self).built.append({"device": device, "settings": settings})

    def score_batch(self, audios, instructions, sample_rate=None):
        clips = as_clips(audios)
        rows = []
        for clip, inst in zip(clips, as_instructions(instructions, len(clips))):
            rms, peak = features(Audio.coerce(clip, sample_rate))
            rows.append([rms + 0.01 * len(inst.text or ""), peak - rms])
        return np.array(rows)


class Loudness:
    """A single-axis scorer: loudness = rms."""

    axes = ("loudness",)
    sr = 16000

    def score_batch(self, audios, instructions, sample_rate=None):
        return np.array([[features(Audio.coerce(clip, sample_rate))[0]] for clip in as_clips(audios)])


def make_loudness(settings=None):
    """A factory function is a scorer spec too."""
    return Loudness()
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The plug-in module (a unique name per test): (module name, module)."""
    name = f"known_scorers_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "plug"
    folder.mkdir()
    (folder / f"{name}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    return name, importlib.import_module(name)


def expected_known(module, path: Path, text: str | None) -> tuple[float, float]:
    rms, peak = module.features(Audio.load(path))
    return rms + 0.01 * len(text or ""), peak - rms


def _invoke(args, env=None):
    result = CliRunner(env={"COLUMNS": "200", **(env or {})}).invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cmirm-cache")


# ------------------------------------------------------------------------------------------ specs

def test_specs_parse_without_loading(tmp_path, plugin):
    name, module = plugin
    assert ScorerSpec.parse(None) == ScorerSpec("hub", "HaiwenXia/CMI-RM")
    assert ScorerSpec.parse("tiny").label == "tiny-v2" and ScorerSpec.parse("tiny").known_axes() == ("alignment", "musicality")
    assert ScorerSpec.parse("Qwen/Qwen2.5-7B").kind == "hub"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert ScorerSpec.parse(str(folder)) == ScorerSpec("folder", str(folder.resolve()))
    assert ScorerSpec.parse(f"{name}:Loudness").known_axes() == ("loudness",)
    assert ScorerSpec.parse(f"{name}:make_loudness").known_axes() is None      # known once built
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        ScorerSpec.parse(str(tmp_path / "file.txt"))
    with pytest.raises(ConfigError, match="--eval-reward './nope': no such folder"):
        ScorerSpec.parse("./nope", "--eval-reward")
    with pytest.raises(ConfigError, match="--judge-model 'x' and --tiny both name a scorer"):
        ScorerSpec.from_options("x", True, "--judge-model")


def test_load_scorer_builds_plugins_with_settings_and_device(plugin):
    name, module = plugin
    settings = ScoringSettings(max_dur=7.0)
    scorer = load_scorer(f"{name}:KnownScorer", settings, "cpu")
    assert isinstance(scorer, module.KnownScorer)
    assert module.KnownScorer.built[-1] == {"device": "cpu", "settings": settings}
    assert load_scorer(f"{name}:make_loudness").axes == ("loudness",)
    with pytest.raises(ConfigError, match="init_kwargs apply to package.module:Name scorers"):
        load_scorer("tiny", init_kwargs={"x": 1})


def test_tiny_is_a_public_offline_scorer(tiny_cache, monkeypatch):
    monkeypatch.setenv("CMIRM_CACHE", str(tiny_cache))
    scorer = load_scorer("tiny", device="cpu")
    assert isinstance(scorer, RewardScorer) and scorer.axes == ("alignment", "musicality") and scorer.sr == 24000
    again = RewardScorer.from_pretrained("tiny", device="cpu")
    clip = sine(440, 1.0)
    np.testing.assert_array_equal(scorer.score_batch([clip], Instruction(text="x")),
                                  again.score_batch([clip], Instruction(text="x")))


def test_score_isolated_finds_the_bad_clips(tiny_model, tmp_path):
    scorer = RewardScorer(tiny_model, device="cpu")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    clips = [sine(300, 1.0), str(broken), noise(1.0, seed=2)]
    outcomes = score_isolated(scorer, clips, Instruction(text="x"))
    assert outcomes[1].scores is None and "unreadable or corrupt audio" in outcomes[1].error
    alone = scorer.score_batch([clips[0], clips[2]], Instruction(text="x"))
    np.testing.assert_allclose([outcomes[0].scores.as_tuple(), outcomes[2].scores.as_tuple()], alone, atol=1e-6)


def test_in_memory_batches_equal_files(tiny_model, tmp_path):
    """A [B, T] tensor, a list of ragged 1-D/2-D tensors, and the same audio from files score alike."""
    scorer = RewardScorer(tiny_model, device="cpu")
    inst = [Instruction(text="calm"), Instruction(text="rock", lyrics="yeah")]
    a, b = noise(1.0, 16000, seed=1), sine(220, 1.5, 16000, channels=2)
    files = [a.save(tmp_path / "a.wav"), b.save(tmp_path / "b.wav")]
    from_files = scorer.score_batch([str(f) for f in files], inst)
    ragged = scorer.score_batch([a.waveform[0], b.waveform], inst, sample_rate=16000)
    np.testing.assert_allclose(ragged, from_files, atol=1e-5)
    batch = torch.stack([a.waveform[0], b.waveform[0, :16000]])
    together = scorer.score_batch(batch, inst, sample_rate=16000)
    alone = [scorer.score_batch([row], i, sample_rate=16000)[0] for row, i in zip(batch, inst)]
    np.testing.assert_allclose(together, np.stack(alone), atol=1e-5)
    assert together.shape == (2, 2)
    arrays = scorer.score_batch(batch.numpy(), inst, sample_rate=16000)             # numpy [B, T]
    np.testing.assert_allclose(arrays, together, atol=1e-5)
    ragged_np = scorer.score_batch([a.waveform[0].numpy().astype(np.float64), b.waveform.numpy()], inst,
                                   sample_rate=16000)                                # numpy, ragged, 1-D and 2-D
    np.testing.assert_allclose(ragged_np, from_files, atol=1e-5)
    one_inst = scorer.score_batch(batch, Instruction(text="calm"), sample_rate=16000)  # one instruction for all
    np.testing.assert_allclose(one_inst[0], together[0], atol=1e-5)


@pytest.mark.cuda
def test_in_memory_batches_on_the_model_device(tiny_model):
    """Tensors already on the model's GPU score like the same audio from the CPU (moved as needed)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    scorer = RewardScorer(tiny_model, ScoringSettings(dtype="fp32"), device="cuda")
    inst = [Instruction(text="calm"), Instruction(text="rock")]
    batch = torch.stack([noise(1.0, 16000, seed=1).waveform[0], noise(1.0, 16000, seed=2).waveform[0]])
    on_cpu = scorer.score_batch(batch, inst, sample_rate=16000)
    np.testing.assert_allclose(scorer.score_batch(batch.cuda(), inst, sample_rate=16000), on_cpu, atol=1e-5)
    ragged = [batch[0].cuda(), batch[1, :12000].cuda().unsqueeze(0)]
    np.testing.assert_allclose(scorer.score_batch(ragged, inst, sample_rate=16000)[0], on_cpu[0], atol=1e-5)
    RewardScorer(tiny_model, device="cpu")   # the session's tiny model goes back to the CPU


# ----------------------------------------------------------------- every entry point, one loader

def test_generate_reranks_with_a_plugin_scorer(plugin, tmp_path, tiny_cache):
    name, module = plugin
    out = tmp_path / "run"
    _invoke(["generate", "soft piano", "-n", "4", "-k", "2", "--tiny", "--reward", f"{name}:KnownScorer",
             "--duration", "0.3", "--out", str(out)], {"CMIRM_CACHE": str(tiny_cache)})
    ranking = read_records(out / "ranking.jsonl")
    assert {r["scorer"] for r in ranking} == {f"{name}:KnownScorer"}
    for record in ranking:   # the recorded scores are the plug-in's, computed from the candidate's audio
        assert tuple(record["scores"].values()) == pytest.approx(
            expected_known(module, out / record["audio_path"], "soft piano"), abs=1e-6)
    by_musicality = sorted(ranking, key=lambda r: -r["scores"]["musicality"])
    assert [r["selected"] for r in by_musicality] == [True, True, False, False]   # default policy: musicality
    run = json.loads((out / "run.json").read_text())
    assert run["result"]["reward"] == f"{name}:KnownScorer"


def test_a_single_axis_scorer_ranks_by_its_axis(plugin, tmp_path, tiny_cache):
    name, module = plugin
    env = {"CMIRM_CACHE": str(tiny_cache)}
    for args in ([], ["--policy", "axis:loudness"]):   # its one axis is the default policy
        out = tmp_path / f"run{len(args)}"
        result = _invoke(["generate", "drums", "-n", "3", "-k", "1", "--tiny", "--reward", f"{name}:Loudness",
                          "--duration", "0.3", "--out", str(out), *args], env)
        ranking = read_records(out / "ranking.jsonl")
        loudest = max(ranking, key=lambda r: r["scores"]["loudness"])
        assert loudest["selected"] and loudest["rank"] == 1 and sum(r["selected"] for r in ranking) == 1
        assert loudest["policy"] == "axis:loudness" and "top-1 by axis:loudness" in result.output
        assert f" 1 {loudest['seed']} {loudest['scores']['loudness']:.4f} " in " ".join(result.output.split()) + " "
    refused = CliRunner(env=env).invoke(app, ["generate", "drums", "--tiny", "--reward", f"{name}:Loudness",
                                              "--policy", "axis:musicality", "--out", str(tmp_path / "bad")])
    assert "policy 'axis:musicality' names 'musicality' but the scorer's axes are loudness" in str(refused.exception)
    assert not (tmp_path / "bad").exists()                                      # refused before any work


def test_scaling_evaluates_with_a_plugin_scorer(plugin, tmp_path, tiny_cache):
    name, module = plugin
    env = {"CMIRM_CACHE": str(tiny_cache)}
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "calm", "id": "calm"}\n{"text": "loud rock", "id": "rock"}\n')
    run = tmp_path / "run"
    _invoke(["generate", "--prompts", str(prompts), "-n", "4", "-k", "1", "--tiny", "--duration", "0.3",
             "--out", str(run)], env)
    out = tmp_path / "curves"
    _invoke(["scaling", "--from", str(run), "--eval-reward", f"{name}:Loudness", "--n-boot", "20",
             "--out", str(out)], env)
    evals = read_records(out / "eval_scores.jsonl")
    assert len(evals) == 8 and {r["scorer"] for r in evals} == {f"{name}:Loudness"}
    paths = {r["id"]: run / r["audio_path"] for r in read_records(run / "manifest.jsonl") if r["record"] == "candidate"}
    for record in evals:
        assert record["scores"]["loudness"] == pytest.approx(module.features(Audio.load(paths[record["id"]]))[0])
    curve = json.loads((out / "curve.json").read_text())
    assert curve["settings"]["axes"] == ["loudness"]   # the CMI policy does not apply to its axes: no composite
    assert {row["evaluation_scorer"] for row in curve["rows"]} == {f"{name}:Loudness"}


def test_best_of_n_with_a_loaded_plugin(plugin):
    name, module = plugin

    def tone(instruction, seed, duration):
        return 0.05 * (seed + 1) * torch.sin(torch.arange(int(duration * 16000)) * 0.1), 16000

    best = best_of_n_call(tone, load_scorer(f"{name}:Loudness"))
    assert [r.candidate.seed for r in best] == [4, 3] and best[0].scores["loudness"] > best[1].scores["loudness"]


def best_of_n_call(fn, scorer):
    from rerank.best_of_n import best_of_n

    return best_of_n(fn, "pad", n=5, k=2, scorer=scorer, duration=0.2, sample_rate=16000)


def test_bench_and_pseudo_label_take_a_plugin_scorer(plugin, tmp_path):
    name, module = plugin
    root = tmp_path / "data"
    rows = []
    for i in range(3):
        sine(200.0 * (i + 1), 0.5, 16000, amplitude=0.1 * (i + 1)).save(root / f"a{i}.wav")
        noise(0.5, 16000, amplitude=0.05 * (3 - i), seed=i).save(root / f"b{i}.wav")
        rows.append({"source": "cmi-arena-annotation", "split": "test", "audio-path": f"a{i}.wav",
                     "audio2": f"b{i}.wav", "prompt": f"prompt {i}", "lyrics": "", "ref-audio-path": "",
                     "preference-alignment": "model_a", "preference-musicality": "model_b",
                     "confidence_preference-alignment": 3, "confidence_preference-musicality": 3})
    jsonl = root / "bench.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))

    out = tmp_path / "bench"
    _invoke(["bench", "--dataset-jsonl", str(jsonl), "--dataset-root", str(root), "--model", f"{name}:KnownScorer",
             "--device", "cpu", "--out", str(out)])
    for record in read_records(out / "results.jsonl"):
        text = record["prompt"]
        a = expected_known(module, root / record["audio-path"], text)
        b = expected_known(module, root / record["audio2"], text)
        assert (record["predicted_text-music alignment"], record["predicted_musicality"]) == pytest.approx(a)
        assert (record["predicted_text-music alignment_b"], record["predicted_musicality_b"]) == pytest.approx(b)
    assert json.loads((out / "metadata.json").read_text())["scoring"]["model"] == f"{name}:KnownScorer"

    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({k: r[k] for k in ("audio-path", "audio2", "prompt", "lyrics",
                                                             "ref-audio-path")}) + "\n" for r in rows))
    labelled = tmp_path / "pseudo.jsonl"
    _invoke(["pseudo-label", "--pairs", str(pairs), "--out", str(labelled), "--judge", "reward",
             "--judge-model", f"{name}:KnownScorer", "--device", "cpu", "--no-progress"])
    for row in read_records(labelled):
        a = expected_known(module, root / row["audio-path"], row["prompt"])
        b = expected_known(module, root / row["audio2"], row["prompt"])
        assert row["preference-alignment"] == ("model_a" if a[0] > b[0] else "model_b")
        assert row["preference-musicality"] == ("model_a" if a[1] > b[1] else "model_b")
    report = json.loads(labelled.with_name("pseudo.report.json").read_text())
    assert report["judge"].startswith(f"reward:{name}:KnownScorer:margin=0")


def test_every_entry_point_uses_the_default_settings(plugin, tmp_path, tiny_cache, monkeypatch):
    """Nothing restates a default: what each entry point resolves equals `ScoringSettings()`."""
    name, module = plugin
    module.KnownScorer.built.clear()
    clip = sine(300, 0.5, 16000).save(tmp_path / "c.wav")
    _invoke(["score", str(clip), "--reward", f"{name}:KnownScorer"])
    _invoke(["generate", "x", "-n", "2", "-k", "1", "--tiny", "--reward", f"{name}:KnownScorer", "--duration", "0.2",
             "--out", str(tmp_path / "run")], {"CMIRM_CACHE": str(tiny_cache)})
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"audio-path": "c.wav", "audio2": "c.wav", "prompt": "x"}) + "\n")
    _invoke(["pseudo-label", "--pairs", str(pairs), "--out", str(tmp_path / "p.jsonl"), "--judge", "reward",
             "--judge-model", f"{name}:KnownScorer", "--no-progress"])
    defaults = ScoringSettings()
    pool_default = defaults.with_options(dtype=defaults.resolved_dtype("cpu"))   # the pool pins the dtype it runs
    assert [b["settings"] for b in module.KnownScorer.built] == [defaults, pool_default, defaults]
    from rerank.generate import CandidatesConfig
    from train.bench.runner import BenchConfig

    assert CandidatesConfig(tmp_path, [Instruction(text="x")], "g", ScorerSpec.parse("tiny")).scoring == defaults
    assert BenchConfig(tmp_path / "b.jsonl", tmp_path, tmp_path / "o").scoring == defaults


def test_settings_are_validated_and_device_dependent():
    with pytest.raises(ConfigError, match="max_dur must be a number of seconds > 0, got 0"):
        ScoringSettings(max_dur=0)
    with pytest.raises(ConfigError, match="dtype must be one of auto, fp32, bf16, got 'fp16'"):
        ScoringSettings(dtype="fp16")
    with pytest.raises(ConfigError, match="unknown scoring setting"):
        ScoringSettings().with_options(maxdur=3)
    settings = ScoringSettings()
    assert settings.resolved_dtype("cuda:1") == "bf16" and settings.resolved_dtype("cpu") == "fp32"
    assert settings.resolved_encode_batch_size("cpu") == 2 and settings.resolved_encode_batch_size("cuda") == 8
    assert ScoringSettings(encode_batch_size=4).resolved_encode_batch_size("cpu") == 4
    assert settings.with_options(max_dur=None, missing="null") == ScoringSettings(missing="null")


# ------------------------------------------------------------------------------ cmirm score --jsonl

def _rows(tmp_path: Path) -> Path:
    ref = sine(330, 1.0).save(tmp_path / "ref.wav")
    clips = [sine(200 + 100 * i, 0.6).save(tmp_path / f"c{i}.wav") for i in range(4)]
    lines = [
        {"audio": "c0.wav", "text": "calm piano"},
        {"audio": "c1.wav", "text": "rock", "lyrics": "oh yeah"},
        "this is not json",
        {"audio": "c2.wav", "text": "pop", "ref_audio": "ref.wav"},
        {"text": "no audio field"},
        {"audio": "missing.wav", "text": "x"},
        {"audio": "c3.wav"},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    assert len(clips) == 4 and ref.is_file()
    return path


def test_score_jsonl_equals_rows_alone_resumes_and_records_bad_rows(tmp_path, tiny_cache, monkeypatch):
    monkeypatch.setenv("CMIRM_CACHE", str(tiny_cache))
    rows = _rows(tmp_path)
    out = tmp_path / "scores.jsonl"
    result = _invoke(["score", "--jsonl", str(rows), "--out", str(out), "--tiny", "--device", "cpu"],
                     {"CMIRM_CACHE": str(tiny_cache)})
    assert "scored 4 row(s) (3 with errors, 0 already done)" in result.output
    records = {r["row"]: r for r in read_records(out)}
    assert sorted(records) == [1, 2, 3, 4, 5, 6, 7]
    assert "not valid JSON" in records[3]["error"]
    assert "field 'audio' is missing" in records[5]["error"]
    assert "file not found" in records[6]["error"]
    scorer = load_scorer("tiny", device="cpu")
    expectations = {1: Instruction(text="calm piano"), 2: Instruction(text="rock", lyrics="oh yeah"),
                    4: Instruction(text="pop", ref_audio=str(tmp_path / "ref.wav")), 7: Instruction()}
    clips = {1: "c0.wav", 2: "c1.wav", 4: "c2.wav", 7: "c3.wav"}
    for line, inst in expectations.items():
        alone = scorer.score_batch([str(tmp_path / clips[line])], inst)[0]
        assert list(records[line]["scores"].values()) == pytest.approx(alone.tolist(), abs=1e-5)

    # Killed mid-way: only the first records survive (the last one cut in half); a rerun finishes the rest.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:10])
    again = _invoke(["score", "--jsonl", str(rows), "--out", str(out), "--tiny", "--device", "cpu"],
                    {"CMIRM_CACHE": str(tiny_cache)})
    assert "already done" in again.output
    resumed = {r["row"]: r for r in read_records(out)}
    assert resumed.keys() == records.keys() and len(read_records(out)) == 7
    for line in expectations:
        assert resumed[line]["scores"] == pytest.approx(records[line]["scores"], abs=1e-6)
    done = _invoke(["score", "--jsonl", str(rows), "--out", str(out), "--tiny", "--device", "cpu"],
                   {"CMIRM_CACHE": str(tiny_cache)})
    assert "scored 0 row(s) (0 with errors, 7 already done)" in done.output


def test_score_files_sorted_by_an_axis(tmp_path, tiny_cache):
    clips = [noise(0.5, seed=i, amplitude=0.05 * (i + 1)).save(tmp_path / f"n{i}.wav") for i in range(3)]
    result = _invoke(["score", *map(str, clips), "--tiny", "--device", "cpu", "--json", "--sort", "alignment"],
                     {"CMIRM_CACHE": str(tiny_cache)})
    rows = [json.loads(line) for line in result.output.strip().splitlines()]
    values = [r["scores"]["alignment"] for r in rows]
    assert values == sorted(values, reverse=True) and {r["scorer"] for r in rows} == {"tiny-v2"}
    refused = CliRunner(env={"CMIRM_CACHE": str(tiny_cache)}).invoke(
        app, ["score", str(clips[0]), "--tiny", "--sort", "melody"])
    assert "--sort 'melody': the scorer's axes are alignment, musicality" in str(refused.exception)


# ------------------------------------------------------------------------------------- bf16 on CPU

def test_cpu_bf16_runs_under_autocast_and_stays_close(tiny_model):
    from cmirm_plugin.scoring.settings import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        with pytest.raises(ConfigError, match="no native bf16"):
            RewardScorer(tiny_model, ScoringSettings(dtype="bf16"), device="cpu")
        return
    fp32 = RewardScorer(tiny_model, ScoringSettings(dtype="fp32"), device="cpu")
    bf16 = RewardScorer(tiny_model, ScoringSettings(dtype="bf16"), device="cpu")
    assert bf16.dtype == "bf16" and fp32.dtype == "fp32"
    clips = [noise(2.0, seed=i) for i in range(3)]
    a = fp32.score_batch(clips, Instruction(text="pop"))
    b = bf16.score_batch(clips, Instruction(text="pop"))
    assert not np.array_equal(a, b)                      # it really ran in bf16
    assert np.abs(a - b).max() < 0.5                     # tiny random towers; real-size deviation: README


@pytest.mark.cuda
def test_cuda_bf16_matches_fp32(tiny_model):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    clips = [noise(2.0, seed=i) for i in range(3)]
    fp32 = RewardScorer(tiny_model, ScoringSettings(dtype="fp32"), device="cuda").score_batch(clips, Instruction(text="x"))
    bf16 = RewardScorer(tiny_model, ScoringSettings(), device="cuda").score_batch(clips, Instruction(text="x"))
    cpu = RewardScorer(tiny_model, ScoringSettings(dtype="fp32"), device="cpu").score_batch(clips, Instruction(text="x"))
    np.testing.assert_allclose(fp32, cpu, atol=1e-4)
    assert np.abs(bf16 - fp32).max() < 0.5
