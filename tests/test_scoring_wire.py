"""The reward server's wire format (`cmirm_plugin.scoring.wire`) and ``http://`` scorer specs, without a server:
what the client encodes the server decodes to the same samples, and every malformed or
unsafe request is refused with its status and the field at fault."""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest
import torch

from cmirm_plugin import Audio, Instruction
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.scoring.spec import ScorerSpec
from cmirm_plugin.scoring.wire import (ServerInfo, WireError, WireLimits, decode_audio, decode_request, decode_scores,
                                       encode_request, encode_scores, parse_json)
from cmirm_plugin.testing import noise, sine

pytestmark = pytest.mark.timeout(120)
LIMITS = WireLimits(max_audio_s=5.0)


def _refused(payload, limits=LIMITS) -> WireError:
    with pytest.raises(WireError) as info:
        decode_request(payload, limits)
    return info.value


def _pcm(samples: np.ndarray) -> str:
    return base64.b64encode(samples.astype("<f4").tobytes()).decode()


def test_what_the_client_encodes_the_server_decodes_exactly(tmp_path):
    stereo = sine(330, 0.5, 22050, channels=2)
    stereo = Audio(stereo.waveform * torch.tensor([[1.0], [0.5]]), 22050)     # the channels differ
    ref = noise(0.4, 16000, seed=3).save(tmp_path / "ref.flac")
    path = noise(0.3, 8000, seed=4).save(tmp_path / "clip.wav")
    gpu_like = torch.randn(2, 4000)
    insts = [Instruction(text="calm", lyrics="la la", ref_audio=str(ref)), Instruction(text="rock"),
             Instruction(), Instruction(text="jazz")]
    body = json.dumps(encode_request([stereo, str(path), gpu_like[0], gpu_like[1].numpy()], insts, sample_rate=12000))
    items = decode_request(parse_json(body.encode()), LIMITS)
    assert torch.equal(items[0].audio.waveform, stereo.waveform) and items[0].audio.sample_rate == 22050
    assert torch.equal(items[1].audio.waveform, Audio.load(path).waveform)   # the file itself travelled
    assert torch.equal(items[2].audio.waveform[0], gpu_like[0]) and items[2].audio.sample_rate == 12000
    assert torch.equal(items[3].audio.waveform[0], gpu_like[1])
    assert torch.equal(items[0].instruction.ref_audio.waveform, Audio.load(ref).waveform)
    assert [(i.instruction.text, i.instruction.lyrics) for i in items] == [("calm", "la la"), ("rock", None),
                                                                          (None, None), ("jazz", None)]
    one = decode_request({"audio": {"pcm": _pcm(np.zeros(100)), "sample_rate": 8000}, "text": "x"}, LIMITS)
    assert len(one) == 1 and one[0].audio.num_samples == 100                  # a single item, no "items"


def test_pcm_is_interleaved_float32_little_endian():
    frames = np.array([[0.1, -0.1], [0.2, -0.2], [0.3, -0.3]], dtype="<f4")      # [T, C]
    audio = decode_audio({"pcm": _pcm(frames), "sample_rate": 100, "channels": 2}, "audio", LIMITS)
    assert np.array_equal(audio.waveform.numpy(), frames.T)


@pytest.mark.parametrize("payload, status, field, message", [
    ([1, 2], 400, "items", "missing"),
    ({"items": []}, 400, "items", "non-empty list"),
    ({"items": [{"text": "x"}]}, 400, "items[0].audio", "every item needs its audio"),
    ({"items": [{"audio": {"pcm": "AAAA"}, "txt": "x"}]}, 400, "items[0].txt", "unknown field"),
    ({"audio": {"pcm": "AAAA"}}, 400, "items[0].audio.sample_rate", "needs its sample rate"),
    ({"audio": {"pcm": "AAAA", "sample_rate": "fast"}}, 400, "items[0].audio.sample_rate", "positive integer"),
    ({"audio": {"pcm": "not base64!", "sample_rate": 8000}}, 400, "items[0].audio.pcm", "not valid base64"),
    ({"audio": {"pcm": "AAAAAAA=", "sample_rate": 8000}}, 400, "items[0].audio.pcm", "whole number of float32"),
    ({"audio": {"file": "AAAA", "pcm": "AAAA"}}, 400, "items[0].audio", "exactly one of file, pcm, path"),
    ({"audio": {"file": base64.b64encode(b"RIFF nonsense").decode()}}, 400, "items[0].audio.file",
     "not a readable audio file"),
    ({"audio": {"pcm": _pcm(np.zeros(100)), "sample_rate": 8000}, "text": 3}, 400, "items[0].text", "string or null"),
    ({"audio": {"pcm": _pcm(np.array([0.0, np.nan])), "sample_rate": 8000}}, 400, "items[0].audio.pcm", "NaN"),
    ({"audio": {"pcm": _pcm(np.zeros(8000 * 6)), "sample_rate": 8000}}, 413, "items[0].audio",
     "audio is 6.0 s long; the limit is 5 s"),
    ({"audio": {"path": "x.wav"}}, 403, "items[0].audio.path", "server-side paths are disabled"),
])
def test_malformed_requests_name_the_field(payload, status, field, message):
    error = _refused(payload)
    assert (error.status, error.field) == (status, field)
    assert message in str(error) and str(error).startswith(field)
    assert error.payload() == {"error": str(error), "field": field}


def test_not_json_is_a_400_for_the_body():
    with pytest.raises(WireError) as info:
        parse_json(b"{not json")
    assert info.value.status == 400 and info.value.field is None and "not valid JSON" in str(info.value)


def test_a_long_file_and_a_long_reference_are_413(tmp_path):
    long_file = base64.b64encode(noise(6.0, 8000).save(tmp_path / "long.flac").read_bytes()).decode()
    error = _refused({"audio": {"file": long_file}})
    assert (error.status, error.field) == (413, "items[0].audio.file") and "the limit is 5 s" in str(error)
    short = {"pcm": _pcm(np.zeros(800)), "sample_rate": 8000}
    error = _refused({"items": [{"audio": short}, {"audio": short, "ref_audio": {"file": long_file}}]})
    assert (error.status, error.field) == (413, "items[1].ref_audio.file")


def test_server_paths_only_inside_the_allowed_directory(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "secret"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    noise(0.2, 8000).save(allowed / "sub" / "ok.wav")
    noise(0.2, 8000).save(outside / "x.wav")
    os.symlink(outside / "x.wav", allowed / "link.wav")
    limits = WireLimits(5.0, allowed)
    assert decode_request({"audio": {"path": "sub/ok.wav"}}, limits)[0].audio.num_samples == 1600
    assert decode_request({"audio": {"path": str(allowed / "sub" / "ok.wav")}}, limits)[0].audio.num_samples == 1600
    for escape in ("../secret/x.wav", "sub/../../secret/x.wav", str(outside / "x.wav"), "link.wav"):
        error = _refused({"audio": {"path": escape}}, limits)
        assert (error.status, error.field) == (403, "items[0].audio.path")
        assert f"'{escape}' is outside the directory the server allows" in str(error)
        assert str(outside) not in str(error).replace(escape, "")      # never says where a link points
    error = _refused({"audio": {"path": "sub/missing.wav"}}, limits)
    assert error.status == 400 and "no such file" in str(error)


def test_scores_and_info_round_trip():
    rows = np.array([[0.1, -2.5], [3.25, 1e-7]], dtype=np.float32)
    answer = json.loads(json.dumps(encode_scores("tiny-v2", ("alignment", "musicality"), rows, [2, 2])))
    assert np.array_equal(decode_scores(answer, 2, ("alignment", "musicality")), rows)   # float32 exactly
    with pytest.raises(Exception, match="shape \\[2, 2\\] for 3 clips"):
        decode_scores(answer, 3, ("alignment", "musicality"))
    with pytest.raises(Exception, match="did the server change models"):
        decode_scores(answer, 2, ("aesthetics",))
    info = ServerInfo("tiny-v2", ("alignment", "musicality"), 24000, {"max_dur": 120.0}, "cpu")
    assert ServerInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    with pytest.raises(Exception, match="no valid 'axes'"):
        ServerInfo.from_dict({"sample_rate": 24000})


def test_http_specs_are_normalised_urls():
    spec = ScorerSpec.parse("HTTP://LocalHost:8000/")
    assert (spec.kind, spec.label) == ("http", "http://localhost:8000")
    assert ScorerSpec.parse("https://rm.example.org/cmirm/").label == "https://rm.example.org/cmirm"
    assert ScorerSpec.parse("http://[::1]:9000").label == "http://[::1]:9000"
    assert not spec.is_cmi_rm
    for bad, message in (("http://user:pw@host:1", "CMIRM_SERVE_TOKEN"), ("http://host:1/?a=1", "no query"),
                         ("http://:80", "expected http://host:port"), ("http://host:99999", "not a valid URL")):
        with pytest.raises(ConfigError, match=message):
            ScorerSpec.parse(bad)
