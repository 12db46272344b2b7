import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cmirm_plugin import Audio, AudioError
from cmirm_plugin.testing import sine


def _dominant_freq(audio: Audio) -> float:
    spectrum = np.abs(np.fft.rfft(audio.waveform[0].numpy()))
    return float(np.argmax(spectrum) * audio.sample_rate / audio.num_samples)


@pytest.mark.parametrize("suffix,fmt,subtype", [
    (".wav", "WAV", "PCM_16"), (".wav", "WAV", "FLOAT"), (".flac", "FLAC", "PCM_16"),
    (".ogg", "OGG", "VORBIS"), (".mp3", "MP3", "MPEG_LAYER_III"),
])
def test_load_every_format(tmp_path: Path, suffix, fmt, subtype):
    tone = sine(440, 1.0, 22050, channels=2)
    path = tmp_path / f"tone{suffix}"
    sf.write(path, tone.waveform.numpy().T, 22050, format=fmt, subtype=subtype)
    audio = Audio.load(path)
    assert audio.sample_rate == 22050
    assert audio.num_channels == 2
    assert audio.waveform.dtype == torch.float32
    assert abs(audio.duration - 1.0) < 0.1  # lossy codecs pad a little
    assert abs(_dominant_freq(audio.to_mono()) - 440) < 3
    assert audio.source == str(path)


def test_lossless_roundtrip_and_bytes(tmp_path: Path):
    tone = sine(220, 0.5, 16000)
    path = tone.save(tmp_path / "x.wav")
    assert torch.equal(Audio.load(path).waveform, tone.waveform)  # float WAV is lossless
    from_bytes = Audio.from_bytes(path.read_bytes(), name="x.wav")
    assert torch.equal(from_bytes.waveform, tone.waveform)
    assert from_bytes.source == "x.wav"


def test_array_and_tensor_inputs():
    a = Audio.from_array(np.zeros(100, dtype=np.float64), 8000)
    assert a.waveform.shape == (1, 100) and a.waveform.dtype == torch.float32
    b = Audio.coerce(torch.ones(2, 50), sample_rate=8000)
    assert b.num_channels == 2 and b.to_mono().num_channels == 1
    with pytest.raises(AudioError, match="needs an explicit sample_rate"):
        Audio.coerce(np.zeros(10))


def test_resample_keeps_frequency():
    tone = sine(1000.0, 2.0, 44100)
    out = tone.resample(24000)
    assert out.sample_rate == 24000 and out.num_samples == 48000
    assert abs(_dominant_freq(out) - 1000.0) < 1.0


def test_loader_matches_the_reference_loader_on_the_parity_inputs():
    """mono + whole-file resample to 24 kHz gives exactly the official loader's samples (fixture manifest)."""
    import json

    from conftest import PARITY

    manifest = json.loads((PARITY / "inputs" / "manifest.json").read_text())
    for name, info in manifest.items():
        if name.endswith(".mp3"):
            continue  # decoded by FFmpeg there, libsndfile here
        wave = Audio.load(PARITY / "inputs" / name).to_mono().resample(24000).waveform[0].double()
        official = info["official_24k_mono"]
        assert wave.shape[0] == official["num_samples"], name
        assert float(wave.sum()) == pytest.approx(official["sum"], abs=1e-9), name
        assert float((wave * wave).sum()) == pytest.approx(official["sum_sq"], rel=1e-12), name
        assert wave[:4].tolist() == pytest.approx(official["head"], abs=1e-12), name


def test_transformed_audio_is_no_longer_its_file(tmp_path: Path):
    from cmirm_plugin import Instruction

    path = sine(440, 1.0).save(tmp_path / "ref.wav")
    audio = Audio.load(path)
    assert audio.source == str(path)
    assert audio.crop(0.5).source is None and audio.resample(16000).source is None
    assert Instruction(ref_audio=audio).id != Instruction(ref_audio=audio.crop(0.5)).id


def test_crop_and_chunks():
    audio = Audio(torch.zeros(1, 100 * 10), 10)  # 100 s at 10 Hz
    lengths = [c.duration for c in audio.chunks(30)]
    assert lengths == [30.0, 30.0, 30.0, 10.0]
    assert audio.crop(45).duration == 45.0
    assert audio.crop(500).duration == 100.0
    short = Audio(torch.zeros(1, 7), 10)
    assert [c.num_samples for c in short.chunks(0.3)] == [3, 3, 1]


def test_silence_is_valid(tmp_path: Path):
    silent = Audio(torch.zeros(1, 24000), 24000)
    path = silent.save(tmp_path / "silence.flac")
    loaded = Audio.load(path)
    assert float(loaded.waveform.abs().max()) == 0.0
    assert loaded.resample(16000).to_mono().num_samples == 16000


def test_missing_file(tmp_path: Path):
    with pytest.raises(AudioError, match=r"nope\.wav': file not found"):
        Audio.load(tmp_path / "nope.wav")


def test_directory(tmp_path: Path):
    d = tmp_path / "dir.wav"
    d.mkdir()
    with pytest.raises(AudioError, match="is a directory"):
        Audio.load(d)


def test_unsupported_format(tmp_path: Path):
    p = tmp_path / "clip.aiff"
    p.write_bytes(b"x")
    with pytest.raises(AudioError, match=r"clip\.aiff': unsupported audio format '\.aiff'"):
        Audio.load(p)


def test_corrupt_file(tmp_path: Path):
    p = tmp_path / "broken.wav"
    p.write_bytes(b"RIFF\x00\x00garbage-not-audio" * 3)
    with pytest.raises(AudioError, match=r"broken\.wav': unreadable or corrupt audio"):
        Audio.load(p)


def test_zero_length(tmp_path: Path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros((0, 1), dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav': audio contains no samples"):
        Audio.load(p)
    with pytest.raises(AudioError, match="no bytes"):
        Audio.from_bytes(b"")


def test_nan_and_inf(tmp_path: Path):
    wave = np.zeros((100, 1), dtype=np.float32)
    wave[42] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, wave, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav': contains NaN or Inf samples \(first at sample 42\)"):
        Audio.load(p)
    with pytest.raises(AudioError, match="NaN or Inf"):
        Audio.from_array(np.array([0.0, math.inf]), 8000)


def test_bad_sample_rate_and_shape():
    with pytest.raises(AudioError, match="sample rate must be a positive integer"):
        Audio(torch.zeros(1, 10), 0)
    with pytest.raises(AudioError, match=r"got shape \(1, 2, 3\)"):
        Audio(torch.zeros(1, 2, 3), 8000)
