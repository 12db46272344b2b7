"""The scoring API: chunking, batch independence, prompt cache, missing inputs, plug-in adapter, CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmirm_plugin import Audio, AudioError, Instruction, Scores
from cmirm_plugin.cli import app
from cmirm_plugin.scoring import (
    BenchmarkBatchInput,
    BenchmarkModel,
    CMIRMBenchmarkModel,
    RewardScorer,
    ScoringSettings,
)
from cmirm_plugin.testing import noise, sine


@pytest.fixture
def scorer(tiny_model):
    return RewardScorer(tiny_model, ScoringSettings(encode_batch_size=8), device="cpu")


class CallCounter:
    """Counts forward calls of a module (and the batch shapes it saw)."""

    def __init__(self, module):
        self.shapes = []
        self.handle = module.register_forward_hook(lambda m, args, out: self.shapes.append(tuple(args[0].shape)))

    def __len__(self):
        return len(self.shapes)

    def close(self):
        self.handle.remove()


def test_100s_clip_is_encoded_as_750_750_750_250_frames(tiny_model):
    wave = noise(100.0, 24000, seed=1).waveform[0]
    counter = CallCounter(tiny_model.audio_module)
    try:
        with torch.inference_mode():
            frames = tiny_model.encode_audio([wave])[0]
            alone = [tiny_model.encode_audio([wave[s : s + 720000]])[0] for s in range(0, 2_400_000, 720000)]
    finally:
        counter.close()
    assert frames.shape == (2500, 32)
    assert [a.shape[0] for a in alone] == [750, 750, 750, 250]
    torch.testing.assert_close(frames, torch.cat(alone), atol=1e-5, rtol=1e-5)  # chunks are independent
    assert counter.shapes[:2] == [(3, 720000), (1, 240000)]  # equal-length chunks batched, never padded


def test_batch_independence(scorer, tmp_path: Path):
    ref = sine(220, 2.0, 44100, channels=2).save(tmp_path / "ref.wav")
    insts = [
        Instruction(text="calm ambient pad"),
        Instruction(text="pop", lyrics="la la la", ref_audio=str(ref)),
        Instruction(text="jazz trio", ref_audio=str(ref)),
        Instruction(lyrics="only lyrics here"),
    ]
    clips = [sine(440, 1.0), noise(3.2, 16000, seed=2), sine(110, 31.0, 22050, harmonics=4), noise(0.5, seed=3)]
    together = scorer.score_batch(clips, insts)
    for clip, inst, row in zip(clips, insts, together):
        scorer.clear_cache()
        alone = scorer.score_batch([clip], inst)[0]
        np.testing.assert_allclose(row, alone, atol=1e-5, rtol=0)


def test_prompt_cache_encodes_the_instruction_once(scorer, tiny_model, tmp_path: Path):
    ref = noise(4.0, 24000, seed=5).save(tmp_path / "ref.flac")
    inst = Instruction(text="energetic rock", lyrics="oh my heart", ref_audio=str(ref))
    clips = [sine(200 + 50 * i, 2.0) for i in range(6)]
    text_calls, audio_calls = CallCounter(tiny_model.text_module), CallCounter(tiny_model.audio_module)
    try:
        first = scorer.score_batch(clips, inst)
        assert len(text_calls) == 1                     # text and lyrics, once, in one call
        assert (1, 96000) in audio_calls.shapes         # the 4 s reference, once
        assert audio_calls.shapes.count((1, 96000)) == 1
        assert len(audio_calls) == 2                    # + one batch of the six equal-length candidates
        second = scorer.score_batch(clips[:2], inst)    # same instruction later: nothing re-encoded
        assert len(text_calls) == 1 and audio_calls.shapes[-1] == (2, 48000)
    finally:
        text_calls.close()
        audio_calls.close()
    np.testing.assert_allclose(first[:2], second, atol=1e-6, rtol=0)


def test_missing_reference_is_masked_and_null_option(tiny_model):
    clip = sine(440, 2.0)
    inst = Instruction(text="pop")
    masked = RewardScorer(tiny_model, ScoringSettings(missing="mask"), device="cpu")
    null = RewardScorer(tiny_model, ScoringSettings(missing="null"), device="cpu")
    a, b = masked.score_batch([clip], inst), null.score_batch([clip], inst)
    assert not np.allclose(a, b)
    saved = tiny_model.null_audio_embedding.detach().clone()
    try:
        with torch.no_grad():
            tiny_model.null_audio_embedding.mul_(3.0)
        masked.clear_cache()
        null.clear_cache()
        np.testing.assert_array_equal(masked.score_batch([clip], inst), a)   # nulls unused when masking
        assert not np.allclose(null.score_batch([clip], inst), b)             # nulls used for the absent ref
    finally:
        with torch.no_grad():
            tiny_model.null_audio_embedding.copy_(saved)


def test_absent_text_and_lyrics_are_encoded_as_empty_strings(scorer, tiny_model):
    """No text / no lyrics -> '<s></s>' (2 valid tokens) through the text tower, as the release does."""
    seen = []
    handle = tiny_model.text_module.register_forward_hook(lambda m, args, out: seen.append(args[1].sum(dim=1)))
    try:
        scorer.clear_cache()
        scorer.score_batch([sine(300, 1.0)], Instruction(lyrics="la la la la"))
    finally:
        handle.remove()
    text_tokens, lyrics_tokens = seen[0].tolist()
    assert text_tokens == 2 and lyrics_tokens > 2


def test_more_new_instructions_than_the_cache_holds(tiny_model):
    small = RewardScorer(tiny_model, ScoringSettings(cache_size=2), device="cpu")
    insts = [Instruction(text=t) for t in ("a", "b", "c", "d")]
    clips = [sine(300, 1.0)] * 4
    together = small.score_batch(clips, insts)
    assert len(small._prompts) == 2
    np.testing.assert_allclose(together, RewardScorer(tiny_model, device="cpu").score_batch(clips, insts), atol=1e-6)


def test_inputs_and_errors(scorer, tmp_path: Path):
    tone = sine(440, 1.0, 48000, channels=2)
    path = tone.save(tmp_path / "tone.wav")  # float WAV: lossless
    from_path = scorer.score_batch([str(path)], Instruction(text="x"))
    from_audio = scorer.score_batch([tone], Instruction(text="x"))
    from_tensor = scorer.score_batch([tone.waveform], Instruction(text="x"), sample_rate=48000)
    np.testing.assert_allclose(from_path, from_audio, atol=1e-6)
    np.testing.assert_array_equal(from_audio, from_tensor)
    assert scorer.score_batch([], Instruction()).shape == (0, 2)
    s = scorer.score(path, Instruction(text="x"))
    assert isinstance(s, Scores) and s.alignment == pytest.approx(float(from_path[0, 0]))
    with pytest.raises(AudioError, match=r"short.wav': too short to score \(240 samples at 24000 Hz"):
        scorer.score_batch([Audio(torch.zeros(1, 240), 24000).save(tmp_path / "short.wav")], Instruction())
    with pytest.raises(AudioError, match="file not found"):
        scorer.score_batch([tmp_path / "missing.wav"], Instruction())
    with pytest.raises(ValueError, match="got 2 clips but 1 instructions"):
        scorer.score_batch([tone, tone], [Instruction()])
    silence = Audio(torch.zeros(1, 24000), 24000)
    assert np.isfinite(scorer.score_batch([silence], Instruction(text="quiet"))).all()


def test_crop_to_max_dur(tiny_model):
    long = noise(5.0, seed=7)
    cropped = RewardScorer(tiny_model, ScoringSettings(max_dur=2.0), device="cpu")
    assert cropped.prepare_audio(long).shape == (48000,)
    np.testing.assert_array_equal(cropped.score_batch([long], Instruction()),
                                  cropped.score_batch([long.crop(2.0)], Instruction()))


def test_benchmark_adapter_contract(tiny_checkpoint, tmp_path: Path):
    model = CMIRMBenchmarkModel(str(tiny_checkpoint), device="cpu")
    assert isinstance(model, BenchmarkModel) and model.sr == 24000
    clip = sine(440, 2.0).save(tmp_path / "a.wav")
    ref = sine(880, 1.0).save(tmp_path / "r.wav")
    inputs = [BenchmarkBatchInput(audio=str(clip), text="pop", lyrics="", ref_audio=str(ref)),
              {"audio": sine(440, 2.0).waveform[0], "text": "pop", "lyrics": "", "ref_audio": None}]
    out = model.score_batch(inputs, batch_size=12, max_dur=120.0)
    assert out.shape == (2, 2)
    direct = model.scorer.score_batch([str(clip), str(clip)], [Instruction(text="pop", ref_audio=str(ref)),
                                                               Instruction(text="pop")])
    np.testing.assert_allclose(out, direct, atol=1e-6)


def test_score_cli(tiny_checkpoint, tmp_path: Path):
    a = sine(440, 1.0).save(tmp_path / "a.wav")
    b = noise(1.0, seed=1).save(tmp_path / "b.flac")
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("la la la\nsing with me")
    result = CliRunner().invoke(app, ["score", str(a), str(b), "--text", "pop", "--lyrics", str(lyrics),
                                      "--model", str(tiny_checkpoint), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [r["audio"] for r in rows] == [str(a), str(b)] and rows[0]["modality"] == "text+lyrics"
    scorer = RewardScorer.from_pretrained(str(tiny_checkpoint), device="cpu")
    expected = scorer.score_batch([a, b], Instruction(text="pop", lyrics="la la la\nsing with me"))
    assert rows[1]["scores"]["musicality"] == pytest.approx(float(expected[1, 1]), abs=1e-6)
    table = CliRunner().invoke(app, ["score", str(a), "--model", str(tiny_checkpoint), "--device", "cpu"],
                               env={"COLUMNS": "400"})
    assert table.exit_code == 0 and "alignment" in table.output and str(a) in table.output
