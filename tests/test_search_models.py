"""Search on tiny real models: beam and smc over tiny MusicGen's codes, noise search over tiny Stable Audio's
latents. Lineage replays give the same audio, compute adds up exactly, a resumed beam is the same beam."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cmirm_plugin import Instruction
from generators.tiny import tiny_generator
from rerank.search import MemoryStore, SearchState, parse_search, regenerate, run_search
from rerank.search.toys import ToyQualityScorer

TEXT = Instruction(text="upbeat pop with bright piano")
BEAM = "beam:width=2,expand=2,segment=0.1"
FAST = {"top_k": 32}


@pytest.fixture(scope="module")
def musicgen(one_torch_thread):
    return tiny_generator("musicgen")


@pytest.fixture(scope="module")
def beam(musicgen):
    store = MemoryStore()
    result = run_search(BEAM, musicgen, TEXT, scorer=ToyQualityScorer(sr=32000), duration=0.3, seed_base=11,
                        params=FAST, store=store)
    return result


def test_a_final_beam_is_its_lineage_replayed(musicgen, beam):
    """sample(first seed) then extend the codes once per later seed: the same codes and audio."""
    assert len(beam.ranked) == 2
    for ranked in beam.ranked:
        final = ranked.candidate
        seeds = final.lineage.segment_seeds
        assert len(seeds) == 3 and seeds[-1] == final.seed and final.codes.shape == (4, 15)
        (clip,) = musicgen.sample(TEXT, [seeds[0]], 0.1, **FAST)
        for seed in seeds[1:]:
            (clip,) = musicgen.extend(TEXT, clip, [seed], 0.1, **FAST)
        assert torch.equal(clip.codes, final.codes) and torch.equal(clip.audio.waveform, final.audio.waveform)
        again = regenerate(musicgen, TEXT, final.seed, final.lineage, 0.3, **FAST)
        assert torch.equal(again.audio.waveform, final.audio.waveform) and again.lineage == final.lineage


def test_beam_compute_is_exactly_what_it_generated(beam):
    """2 beams x 2 continuations x 3 segments of 0.1 s: 12 segments, 1.2 s = B x K x duration of audio.

    Each segment is 5 frames plus the 3-step delay pattern: 8 decoder steps, 16 rows with guidance."""
    nodes = list(beam.state.nodes.values())
    assert len(nodes) == 12 and all(n.compute.work_units == 8 and n.compute.model_evals == 16 for n in nodes)
    total = beam.compute
    assert math.isclose(total.audio_seconds, 2 * 2 * 0.3) and total.work_units == 96 and total.model_evals == 192
    assert total.device == "cpu" and total.generator_seconds > 0 and total.scorer_seconds >= 0
    assert beam.top(1)[0].candidate.compute.audio_seconds == pytest.approx(0.1)  # its own last segment


def test_a_resumed_beam_is_the_same_beam(musicgen, beam):
    store = MemoryStore()
    part = run_search(BEAM, musicgen, TEXT, scorer=ToyQualityScorer(sr=32000), duration=0.3, seed_base=11,
                      params=FAST, store=store, max_steps=1)
    saved = SearchState.from_dict(json.loads(json.dumps(part.state.to_dict())))
    kept = MemoryStore(store.get(i) for i in parse_search(BEAM).needed(saved))  # frontier clips, with their codes
    resumed = run_search(BEAM, musicgen, TEXT, scorer=ToyQualityScorer(sr=32000), duration=0.3, seed_base=11,
                         params=FAST, state=saved, store=kept)
    assert [r.candidate.id for r in resumed.ranked] == [r.candidate.id for r in beam.ranked]
    assert all(torch.equal(a.candidate.audio.waveform, b.candidate.audio.waveform)
               for a, b in zip(resumed.ranked, beam.ranked))


def test_a_final_smc_particle_is_its_lineage_replayed(musicgen):
    """3 particles x 3 segments of 0.1 s, steered hard (lambda=1000): every final particle is the codes of its
    segment seeds replayed, resampled parents included; 9 segments were generated, 0.9 s = P x duration."""
    result = run_search("smc:particles=3,segment=0.1,lambda=1000", musicgen, TEXT,
                        scorer=ToyQualityScorer(sr=32000), duration=0.3, seed_base=11, params=FAST)
    assert len(result.state.nodes) == 9 and math.isclose(result.compute.audio_seconds, 0.9)
    assert len(result.ranked) == 3
    assert len({r.candidate.lineage.parent for r in result.ranked}) < 3   # a resampled prefix was continued twice
    for ranked in result.ranked:
        final = ranked.candidate
        assert len(final.lineage.segment_seeds) == 3 and final.lineage.segment_seeds[-1] == final.seed
        again = regenerate(musicgen, TEXT, final.seed, final.lineage, 0.3, **FAST)
        assert torch.equal(again.codes, final.codes) and torch.equal(again.audio.waveform, final.audio.waveform)


def test_noise_search_lineage_on_tiny_stable_audio(one_torch_thread):
    pytest.importorskip("diffusers")
    pytest.importorskip("torchsde")
    generator = tiny_generator("stable-audio")
    result = run_search("noise:rounds=1,neighbors=2,radius=0.5", generator, TEXT,
                        scorer=ToyQualityScorer(sr=44100), duration=0.2, seed_base=3, params={"steps": 2})
    nodes = list(result.state.nodes.values())
    assert len(nodes) == 4 and result.compute.work_units == 4 * 2 and result.compute.model_evals == 4 * 4
    # Round 0 nodes are plain seeds: exactly best-of-N's candidates.
    (plain,) = generator.sample(TEXT, [3], 0.2, steps=2)
    assert torch.equal(plain.audio.waveform, next(r for r in result.ranked if r.candidate.seed == 3).candidate.audio.waveform)
    moved = next(n for n in nodes if n.lineage.step == 1)
    seeds, radius = moved.lineage.noise_seeds, moved.lineage.radius
    latent = generator.initial_latents([seeds[0]])[0]
    latent = latent + radius * generator.initial_latents([seeds[1]])[0]
    latent = latent * (math.sqrt(latent.numel()) / latent.norm())
    (replayed,) = generator.sample_from_latents(TEXT, latent[None], [moved.seed], 0.2,
                                                sampler_seeds=[moved.lineage.sampler_seed], steps=2)
    final = next(r.candidate for r in result.ranked if r.candidate.id == moved.id)
    assert torch.equal(replayed.audio.waveform, final.audio.waveform)
    again = regenerate(generator, TEXT, moved.seed, moved.lineage, 0.2, steps=2)
    assert torch.equal(again.audio.waveform, final.audio.waveform)
