"""Command-line rough edges: references that are folders, help that reads well, a light import path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmirm_plugin.cli import app
from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import Instruction

runner = CliRunner()


def test_a_reference_that_is_a_folder_is_called_a_folder(tmp_path):
    with pytest.raises(CmirmError, match=rf"^'{tmp_path}': reference audio: is a directory, expected a file$"):
        Instruction.from_cli("pop", ref_audio=str(tmp_path))
    with pytest.raises(CmirmError, match=r"': reference audio: file not found$"):
        Instruction.from_cli("pop", ref_audio=str(tmp_path / "gone.wav"))

    from rerank.instructions import load_prompts

    (tmp_path / "refs").mkdir()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"text": "pop", "ref_audio": "refs"}) + "\n")
    with pytest.raises(CmirmError) as err:
        load_prompts(prompts)
    assert str(err.value).splitlines()[1] == (f"  {prompts}:1: field 'ref_audio': is a directory, expected a file: "
                                              f"'{tmp_path / 'refs'}' (paths are relative to the prompts file)")

    result = runner.invoke(app, ["generate", "pop", "--ref-audio", str(tmp_path), "--tiny", "--out", str(tmp_path / "o")])
    assert "reference audio: is a directory, expected a file" in str(result.exception)
    result = runner.invoke(app, ["score", str(prompts), "--ref-audio", str(tmp_path), "--tiny"])
    assert "reference audio: is a directory, expected a file" in str(result.exception)
