"""The Generator contract: validation, refusals, batching, failure records, sampling helpers, registry."""

from __future__ import annotations

import json

import pytest
import torch

from cmirm_plugin import CmirmError, ConfigError, Instruction, ManifestWriter, read_records
from cmirm_plugin.errors import CheckpointError
from cmirm_plugin.testing import sine
from generators import (
    CandidateError,
    CandidateFailure,
    GenerationResult,
    Generator,
    LMParams,
    UnsupportedInputError,
    build_generator,
    known_generators,
)
from generators.params import DiffusionParams
from generators.registry import CHECKPOINTS
from generators.sampling import PerRowSampler, filter_logits, seeded_generators

TEXT = Instruction(text="calm piano")


class NoiseGenerator(Generator):
    """Seeded noise; seeds listed in ``fail`` / ``nan`` misbehave; a batch holding ``crash`` raises."""

    name = "noise"
    sample_rate = 8000
    inputs = frozenset({"text", "ref_audio"})
    params_type = LMParams

    def __init__(self, fail=(), nan=(), crash=None, batch_size=1):
        self.fail, self.nan, self.crash, self.batch_size = set(fail), set(nan), crash, batch_size
        self.calls: list[list[int]] = []

    def _generate(self, instruction, seeds, duration, params):
        self.calls.append(list(seeds))
        if self.crash in seeds:
            raise RuntimeError("backend exploded")
        outs = []
        for seed in seeds:
            wave = torch.randn(1, int(duration * self.sample_rate) + 100, generator=torch.Generator().manual_seed(seed))
            if seed in self.nan:
                wave[0, 5] = float("nan")
            failed = CandidateError("exception", "bad seed", "stderr line 1\nlast line")
            outs.append(failed if seed in self.fail else wave)
        return outs


def test_candidates_record_params_and_are_trimmed_to_duration():
    result = NoiseGenerator().sample(TEXT, [3, 1, 2], 0.5, temperature=0.9)
    assert isinstance(result, GenerationResult) and isinstance(result, list)
    assert [c.seed for c in result] == [3, 1, 2] and result.failures == []
    for cand in result:
        assert cand.audio.sample_rate == 8000 and cand.audio.num_samples == 4000
        assert cand.generator == "noise" and cand.instruction_id == TEXT.id
        assert cand.params == {"duration": 0.5, "temperature": 0.9, "top_k": 250, "top_p": 0.0,
                               "guidance_scale": 3.0, "prompt_seconds": 3.0}
    json.dumps(result[0].to_dict(audio_path="x.wav"))


def test_batch_size_groups_seeds():
    gen = NoiseGenerator(batch_size=2)
    gen.sample(TEXT, [1, 2, 3, 4, 5], 0.1)
    assert gen.calls == [[1, 2], [3, 4], [5]]
    gen.calls.clear()
    gen.sample(TEXT, [1, 2, 3], 0.1, batch_size=3)
    assert gen.calls == [[1, 2, 3]]


@pytest.mark.parametrize("params, needle", [
    ({"temprature": 1.0}, "temprature"),
    ({"temperature": 0}, "'temperature' must be a number > 0.0, got 0"),
    ({"top_k": 2.5}, "'top_k' must be an integer"),
    ({"top_p": 1.5}, "'top_p'"),
    ({"guidance_scale": 0.5}, "'guidance_scale'"),
    ({"temperature": float("nan")}, "'temperature'"),
    ({"batch_size": 0}, "'batch_size'"),
])
def test_bad_params_are_named(params, needle):
    with pytest.raises(ConfigError, match=None) as err:
        NoiseGenerator().sample(TEXT, [1], 1.0, **params)
    assert needle in str(err.value)


@pytest.mark.parametrize("duration", [0, -1.0, float("nan"), float("inf"), "2", None, True])
def test_bad_duration(duration):
    with pytest.raises(ConfigError, match="'duration'"):
        NoiseGenerator().sample(TEXT, [1], duration)


@pytest.mark.parametrize("seeds, needle", [
    ([], "empty"), ([1, 1, 2], "repeated: [1]"), ([-1], "'seed'"), ([1.5], "'seed'"), ("12", "list"),
    ([2**63], "'seed'"),
])
def test_bad_seeds(seeds, needle):
    with pytest.raises(ConfigError) as err:
        NoiseGenerator().sample(TEXT, seeds, 1.0)
    assert needle in str(err.value)


def test_unsupported_input_is_refused_naming_input_and_generator():
    gen = NoiseGenerator()
    sung = Instruction(text="pop", lyrics="la la la")
    assert gen.supports(TEXT) and not gen.supports(sung)
    with pytest.raises(UnsupportedInputError, match="generator 'noise' cannot honour lyrics") as err:
        gen.sample(sung, [1], 1.0)
    assert "it honours: text, ref_audio" in str(err.value)


def test_required_input_is_enforced():
    gen = NoiseGenerator()
    gen.required_inputs = frozenset({"ref_audio"})
    assert not gen.supports(TEXT)
    with pytest.raises(UnsupportedInputError, match="needs ref_audio"):
        gen.sample(TEXT, [1], 1.0)
    assert gen.supports(Instruction(text="x", ref_audio=sine(seconds=0.1)))


def test_failures_are_isolated_and_typed():
    gen = NoiseGenerator(fail={2}, nan={3}, crash=6, batch_size=2)
    result = gen.sample(TEXT, [1, 2, 3, 4, 5, 6], 0.1)
    assert [c.seed for c in result] == [1, 4]
    by_seed = {f.seed: f for f in result.failures}
    assert set(by_seed) == {2, 3, 5, 6}
    assert by_seed[2].kind == "exception" and by_seed[2].detail.endswith("last line")
    assert by_seed[3].kind == "invalid_audio" and "NaN" in by_seed[3].message
    # A crashing batch fails exactly its own seeds, with the traceback as evidence.
    assert by_seed[5].kind == by_seed[6].kind == "exception"
    assert "backend exploded" in by_seed[6].message and "Traceback" in by_seed[6].detail
    assert "seed 2" in str(by_seed[2]) and "last line" in str(by_seed[2])
    with pytest.raises(CmirmError, match="4 candidate"):
        result.raise_for_failures()


def test_failure_records_round_trip_through_a_manifest(tmp_path):
    failure = NoiseGenerator(fail={7}).sample(TEXT, [7], 0.1).failures[0]
    with ManifestWriter(tmp_path / "m.jsonl") as writer:
        writer.append(failure.to_dict())
    (record,) = read_records(tmp_path / "m.jsonl")
    assert record["seed"] == 7 and record["params"]["duration"] == 0.1
    assert CandidateFailure.from_dict(record) == failure
    with pytest.raises(CmirmError, match="lacks field 'seed'"):
        CandidateFailure.from_dict({k: v for k, v in record.items() if k != "seed"})


def test_candidate_error_kind_is_checked():
    with pytest.raises(ValueError, match="unknown failure kind"):
        CandidateError("oops", "x")


def test_diffusion_params_validation():
    assert DiffusionParams(steps=8).to_dict() == {"steps": 8, "guidance_scale": 7.0, "negative_prompt": None}
    with pytest.raises(ConfigError, match="'steps' must be an integer >= 1"):
        DiffusionParams(steps=0)
    with pytest.raises(ConfigError, match="'negative_prompt'"):
        DiffusionParams(negative_prompt=3)


# ---------------------------------------------------------------- sampling helpers
def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    top2 = filter_logits(logits, LMParams(top_k=2))
    assert torch.isfinite(top2).tolist() == [[True, True, False, False]]
    nucleus = filter_logits(logits, LMParams(top_k=1, top_p=0.7))  # top_p wins over top_k
    assert torch.isfinite(nucleus).tolist() == [[True, True, False, False]]
    everything = filter_logits(logits, LMParams(top_k=0))
    assert torch.isfinite(everything).all()


def test_per_row_sampler_draws_each_candidate_from_its_own_seed():
    """The tokens of seed 5 do not depend on which other seeds share the batch."""
    torch.manual_seed(0)
    logits = torch.randn(2, 50).repeat(3, 1)  # 3 candidates x 2 rows (codebooks), identical logits
    params = LMParams(top_k=0)

    def draw(seeds, scores):
        sampler = PerRowSampler(seeded_generators(seeds), rows_per_candidate=2, params=params)
        return sampler(None, scores).argmax(-1).view(len(seeds), 2)

    alone = draw([5], logits[:2])
    assert torch.equal(draw([1, 5, 9], logits)[1], alone[0])
    assert torch.equal(draw([5, 2], logits[:4])[0], alone[0])
    with pytest.raises(RuntimeError, match="expected 2 or 4 rows"):
        PerRowSampler(seeded_generators([5]), 2, params)(None, logits)


def test_per_row_sampler_draws_like_one_multinomial_per_row():
    """One draw per candidate over its rows takes the same tokens, and leaves each generator in the
    same state, as drawing every row on its own (the sampler's previous, slower loop)."""
    torch.manual_seed(1)
    scores = torch.randn(3 * 4, 64)  # 3 candidates x 4 codebooks
    params = LMParams(top_k=0)
    ours, reference = seeded_generators([11, 12, 13]), seeded_generators([11, 12, 13])
    tokens = PerRowSampler(ours, rows_per_candidate=4, params=params)(None, scores).argmax(-1)
    probs = filter_logits(scores, params).softmax(-1)
    expected = torch.cat([torch.multinomial(probs[row], 1, generator=reference[row // 4]) for row in range(12)])
    assert torch.equal(tokens, expected)
    assert all(torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b)) for a, b in zip(ours, reference, strict=True))


def test_per_row_sampler_applies_guidance_itself():
    """Conditional rows over unconditional ones: the token comes from uncond + scale * (cond - uncond)."""
    cond = torch.tensor([[0.0, 2.0, 1.5]])
    uncond = torch.tensor([[0.0, 3.0, 0.0]])
    # By hand: [0, 3 + 3 * (2 - 3), 0 + 3 * 1.5] = [0, 0, 4.5], so greedy takes token 2, while the
    # conditional or unconditional logits alone (or guidance_scale=1) would take token 1.
    guided = PerRowSampler(seeded_generators([5]), 1, LMParams(top_k=1, guidance_scale=3.0))
    out = guided(None, torch.cat([cond, uncond]))
    assert torch.equal(out[:1], out[1:]) and out.argmax(-1).tolist() == [2, 2]
    unguided = PerRowSampler(seeded_generators([5]), 1, LMParams(top_k=1, guidance_scale=1.0))
    assert unguided(None, torch.cat([cond, uncond])).argmax(-1).tolist() == [1, 1]
    # Sampling the full softmax draws from the guided logits with the candidate's own generator.
    sampled = PerRowSampler(seeded_generators([5, 6]), 1, LMParams(top_k=0, guidance_scale=3.0))
    pair_cond, pair_uncond = torch.randn(2, 2, 50, generator=torch.Generator().manual_seed(2)).unbind()
    tokens = sampled(None, torch.cat([pair_cond, pair_uncond])).argmax(-1)
    by_hand = PerRowSampler(seeded_generators([5, 6]), 1, LMParams(top_k=0, guidance_scale=1.0))
    assert torch.equal(tokens[:2], by_hand(None, pair_uncond + 3.0 * (pair_cond - pair_uncond)).argmax(-1))


# ---------------------------------------------------------------- registry
def _importable(module: str) -> bool:
    try:
        __import__(module)
    except Exception:  # a missing or broken optional package
        return False
    return True


#: What each prefix is given in the test below: something that does not exist.
MISSING_TARGETS = {"cmd:": "missing.yaml", "py:": "no_such_module_xyz:generate"}


@pytest.mark.parametrize("name", known_generators())
def test_every_advertised_name_builds_or_names_what_is_missing(name, tmp_path, monkeypatch):
    """Tiny models build offline. A released checkpoint (uncached, offline) and every prefix given a
    missing target fail with the documented error naming it; or, without the optional package, with
    the error saying how to install it."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the hub is never contacted
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nor a local cache used
    if name.startswith("tiny-"):
        if name == "tiny-stable-audio" and not (_importable("diffusers") and _importable("torchsde")):
            pytest.skip("tiny-stable-audio needs the diffusers extra")
        assert build_generator(name).name == name
        return
    if name in CHECKPOINTS:
        spec, target = name, CHECKPOINTS[name][1]
    else:
        target = MISSING_TARGETS.get(name, str(tmp_path / "missing"))
        spec = name + (str(tmp_path / target) if name == "cmd:" else target)
    optional = {"stable-audio": "diffusers", "audiocraft": "audiocraft.models"}
    backend = CHECKPOINTS[name][0] if name in CHECKPOINTS else name.rstrip(":")
    if backend in optional and not _importable(optional[backend]):
        with pytest.raises(ConfigError, match="install"):
            build_generator(spec)
        return
    expected = ConfigError if name in ("cmd:", "py:") else CheckpointError
    with pytest.raises(expected) as err:
        build_generator(spec)
    assert target in str(err.value)


def test_options_a_backend_does_not_take_are_named():
    with pytest.raises(ConfigError, match="'tiny-musicgen' takes no option\\(s\\) 'temperature'.*dtype"):
        build_generator("tiny-musicgen", temperature=0.5)
    with pytest.raises(ConfigError, match="takes no option\\(s\\) 'dtype'"):
        build_generator("py:json:dumps", dtype="float16")


def test_an_already_built_generator_takes_no_options(monkeypatch):
    import types

    module = types.ModuleType("built_generators_xyz")
    module.NOISE = NoiseGenerator()
    monkeypatch.setitem(__import__("sys").modules, "built_generators_xyz", module)
    assert build_generator("py:built_generators_xyz:NOISE") is module.NOISE
    with pytest.raises(ConfigError, match="already-built NoiseGenerator, so option\\(s\\) 'batch_size'"):
        build_generator("py:built_generators_xyz:NOISE", batch_size=4)


def test_max_batch_size_is_enforced_before_sampling():
    class OneAtATime(NoiseGenerator):
        max_batch_size = 1

    gen = OneAtATime()
    with pytest.raises(ConfigError, match="'noise' takes at most 1 seed\\(s\\) per backend call; use batch_size=1"):
        gen.sample(TEXT, [1, 2], 0.1, batch_size=2)
    assert gen.calls == []
    gen.sample(TEXT, [1, 2], 0.1)
    assert gen.calls == [[1], [2]]


def test_check_duration_runs_before_sampling():
    class FixedLength(NoiseGenerator):
        def check_duration(self, duration, params):
            if duration != 0.5:
                raise ConfigError("only 0.5 s")

    gen = FixedLength()
    with pytest.raises(ConfigError, match="only 0.5 s"):
        gen.sample(TEXT, [1, 2], 0.3)
    assert gen.calls == [] and len(gen.sample(TEXT, [1], 0.5)) == 1


@pytest.mark.parametrize("name", ["musicgen-tiny", "nope", "cmd:", "py:"])
def test_unknown_generator_lists_known(name):
    with pytest.raises(ConfigError, match="unknown generator") as err:
        build_generator(name)
    assert "musicgen-small" in str(err.value) and "stable-audio-open" in str(err.value)


@pytest.mark.parametrize("spec, needle", [
    ("py:nomodule_xyz:fn", "cannot import module 'nomodule_xyz'"),
    ("py:json:nothing_here", "'nothing_here' not found in module 'json'"),
    ("py:json", "must look like 'package.module:Name'"),
])
def test_python_spec_errors(spec, needle):
    with pytest.raises(ConfigError, match=None) as err:
        build_generator(spec, sample_rate=8000)
    assert needle in str(err.value)


def test_missing_template_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read command template"):
        build_generator(f"cmd:{tmp_path / 'missing.yaml'}")
