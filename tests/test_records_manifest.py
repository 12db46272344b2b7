from pathlib import Path

import pytest
import torch

from cmirm_plugin import Audio, Candidate, Instruction, ManifestError, ManifestWriter, Scores, read_records
from cmirm_plugin.manifest import read_json_lines, rewrite_records
from cmirm_plugin.errors import CmirmError


@pytest.mark.parametrize("kwargs,modality", [
    ({"text": "pop"}, "text"),
    ({"text": "pop", "lyrics": "la la"}, "text+lyrics"),
    ({"text": "pop", "ref_audio": "r.wav"}, "text+ref"),
    ({"text": "pop", "lyrics": "la", "ref_audio": "r.wav"}, "text+lyrics+ref"),
    ({"text": "pop", "lyrics": "  ", "ref_audio": ""}, "text"),
    ({"text": "pop", "lyrics": None, "ref_audio": None}, "text"),
])
def test_instruction_modality(kwargs, modality):
    inst = Instruction(**kwargs)
    assert inst.modality == modality


def test_instruction_absent_fields_and_id():
    a = Instruction(text="", lyrics=" ")
    assert a.text is None and a.lyrics is None and not a.has_ref
    assert Instruction(text="x").id == Instruction(text="x").id
    assert Instruction(text="x").id != Instruction(text="y").id
    assert Instruction.from_dict(Instruction(text="x", lyrics="l").to_dict()) == Instruction(text="x", lyrics="l")
    with pytest.raises(CmirmError, match="unknown instruction field"):
        Instruction.from_dict({"txt": "oops"})


def test_candidate_roundtrip(tmp_path: Path):
    audio = Audio(torch.randn(1, 800) * 0.1, 8000)
    cand = Candidate(audio, "abc", "musicgen-small", 7, {"temperature": 1.0})
    path = audio.save(tmp_path / f"{cand.id}.wav")
    record = cand.to_dict(audio_path=path.name)
    assert record["seed"] == 7 and record["duration"] == 0.1
    back = Candidate.from_dict(record, root=tmp_path)
    assert torch.equal(back.audio.waveform, audio.waveform)
    assert back.params == {"temperature": 1.0} and back.id == cand.id
    assert Scores.from_array([1.5, -2]).to_dict() == {"alignment": 1.5, "musicality": -2.0}


def test_manifest_appends_and_reads_while_open(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    with ManifestWriter(path) as w:
        w.append({"i": 0})
        assert read_records(path) == [{"i": 0}]  # visible before close
        w.append({"i": 1, "x": [1.5]})
    assert read_records(path) == [{"i": 0}, {"i": 1, "x": [1.5]}]


def test_manifest_resume_after_crash_mid_write(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    with ManifestWriter(path) as w:
        for i in range(3):
            w.append({"i": i})
    with path.open("a") as fh:  # a crash cut the 4th record in half
        fh.write('{"i": 3, "sco')
    with pytest.warns(UserWarning, match=r"m\.jsonl:4: skipping a truncated last record"):
        assert [r["i"] for r in read_records(path)] == [0, 1, 2]
    with ManifestWriter(path) as w:  # resume: the partial line is dropped, not glued onto
        w.append({"i": 3})
    assert [r["i"] for r in read_records(path)] == [0, 1, 2, 3]
    assert path.read_text().count("\n") == 4


def test_manifest_corrupt_middle_line_is_an_error(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"i": 0}\nnot json\n{"i": 2}\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: not valid JSON"):
        read_records(path)
    path.write_text('[1, 2]\n')
    with pytest.raises(ManifestError, match="expected a JSON object"):
        read_records(path)


def test_manifest_rejects_nan(tmp_path: Path):
    with ManifestWriter(tmp_path / "m.jsonl") as w, pytest.raises(ValueError):
        w.append({"score": float("nan")})
    assert read_records(tmp_path / "m.jsonl") == []


def test_read_json_lines_reports_every_bad_line(tmp_path: Path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n\nnot json\n[1]\n{"b": "\xff"}\n' + '{"c": "\u00e9"}\n'.encode())
    rows, problems = read_json_lines(path)
    assert rows == [(1, {"a": 1}), (6, {"c": "\u00e9"})]
    assert [p.split(": ", 1)[0] for p in problems] == [f"{path}:3", f"{path}:4", f"{path}:5"]
    assert "not valid JSON" in problems[0] and "expected a JSON object" in problems[1]
    assert "not UTF-8 text" in problems[2]
    nan = tmp_path / "nan.jsonl"
    nan.write_text('{"x": NaN}\n')
    assert read_json_lines(nan, nan_as_null=True)[0] == [(1, {"x": None})]


def test_rewrite_records_replaces_the_file(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    with ManifestWriter(path) as w:
        w.append({"i": 0})
    rewrite_records(path, [{"i": 5}, {"i": 6}])
    assert read_records(path) == [{"i": 5}, {"i": 6}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1}')            # the newline of the last write was lost, not the record
    assert [r["i"] for r in read_records(path)] == [0, 1]
    with ManifestWriter(path) as w:
        w.append({"i": 2})
    assert [r["i"] for r in read_records(path)] == [0, 1, 2]
    assert path.read_bytes() == b'{"i": 0}\n{"i": 1}\n{"i": 2}\n'


def test_a_writer_that_appends_nothing_writes_nothing(tmp_path: Path):
    with ManifestWriter(tmp_path / "sub" / "m.jsonl"):
        pass
    assert not (tmp_path / "sub").exists()
