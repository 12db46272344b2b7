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

    result = runner.invoke(app, ["generate", "pop", "--ref-audio", str(tmp_path), "--tiny",
                                 "--out", str(tmp_path / "o")])
    assert "reference audio: is a directory, expected a file" in str(result.exception)
    result = runner.invoke(app, ["score", str(prompts), "--ref-audio", str(tmp_path), "--tiny"])
    assert "reference audio: is a directory, expected a file" in str(result.exception)


def help_text(*args: str, columns: int = 100) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": str(columns), "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


def test_boolean_flags_show_as_flags_in_every_help():
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"generate", "score", "train", "download", "doctor", "bench", "pseudo-label"} <= set(commands)
    for command in [None, *commands]:
        text = help_text(*([command] if command else []), columns=200)
        assert "<bool>" not in text, command
    rows = {line.split()[1]: line for line in help_text("generate", columns=200).splitlines()
            if line.startswith("│") and line.split()[1].startswith("--")}
    assert rows["--tiny"].split()[2] == "Offline"   # the help text follows the name: no value to give
    result = runner.invoke(app, ["generate", "pop", "--tiny", "true", "--out", "x"])
    assert result.exit_code != 0   # a flag takes no value (and its help no longer suggests one)


def test_train_help_groups_its_options_into_panels_without_truncation():
    from train.cli import PANELS
    from train.config import TrainConfig

    text = help_text("train")
    assert "…" not in text
    for panel in ("Options", *PANELS):
        assert f"╭─ {panel} ─" in text, panel
    for field in TrainConfig.__dataclass_fields__:
        assert f" --{field.replace('_', '-')} " in text, field
    assert "--no-tiny" not in text and "--progress      --no-progress" in text   # only on-by-default switches
    assert len(text.splitlines()) < 160   # it was 246 lines of wrapped columns
    assert sum(names.count(f) for names in PANELS.values() for f in TrainConfig.__dataclass_fields__) == \
        sum(len(names) for names in PANELS.values())   # every panel entry is a real field


def test_score_says_reward_and_keeps_model_as_a_hidden_alias(tmp_path):
    text = help_text("score", columns=200)
    assert "--reward" in text and "--model" not in text
    result = runner.invoke(app, ["score", "a.wav", "--reward", "tiny", "--model", "tiny"])
    assert str(result.exception) == "--model is an alias of --reward; give one of them"


def test_the_generator_default_is_shown():
    text = " ".join(help_text("generate", columns=250).split())
    assert "[default: none, give one; --tiny: tiny-musicgen]" in text


def test_the_cli_import_path_loads_no_heavy_library():
    """`cmirm --help` imports cmirm_plugin.cli and every command module; none may load these."""
    code = ("import sys, cmirm_plugin.cli; "
            "print(sorted(m for m in ('torch', 'numpy', 'scipy', 'matplotlib', 'ray', 'transformers', 'pandas') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stderr == "" and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_known_harmless_library_lines_are_dropped_and_real_warnings_kept(caplog):
    import logging

    from cmirm_plugin.log_filters import (RAY_TOKEN_AUTH_LOGGER, TRANSFORMERS_CONFIG_LOGGER,
                                          quiet_musicgen_special_tokens, quiet_ray_token_auth_notice)

    config_log = logging.getLogger(TRANSFORMERS_CONFIG_LOGGER)
    musicgen = ("Model config: pad_token_id must be `None` or an integer within the vocabulary (between 0 and 2047), "
                "got 2048. This may result in unexpected behavior.")
    off_by_two = musicgen.replace("got 2048", "got 2049")
    with caplog.at_level(logging.WARNING), quiet_musicgen_special_tokens():
        config_log.warning(musicgen)
        config_log.warning(off_by_two)
        config_log.warning(musicgen.replace("pad_token_id", "image_token_id"))
    config_log.warning(musicgen)   # outside a MusicGen load it is a real warning
    quiet_ray_token_auth_notice()
    quiet_ray_token_auth_notice()
    ray_log = logging.getLogger(RAY_TOKEN_AUTH_LOGGER)
    ray_log.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out. "
                    "For more information, see https://docs.ray.io/en/latest/ray-security/token-auth.html")
    ray_log.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
    assert [r.getMessage() for r in caplog.records] == [
        off_by_two, musicgen.replace("pad_token_id", "image_token_id"), musicgen,
        "Token authentication is disabled for this Ray cluster. Anyone with network access ..."]
    assert len(ray_log.filters) == 1


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_tiny_run_prints_no_known_harmless_warnings(tmp_path, backend):
    import os

    env = {**os.environ, "CMIRM_CACHE": str(tmp_path / "cache"), "RAY_USAGE_STATS_ENABLED": "0"}
    cmirm = str(Path(sys.executable).parent / "cmirm")
    proc = subprocess.run([cmirm, "generate", "pop", "-n", "2", "-k", "1", "--tiny", "--duration", "0.3",
                           "--backend", backend, "--num-actors", "1", "--out", str(tmp_path / "o")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "token_id must be" not in proc.stderr and "Token authentication" not in proc.stderr, proc.stderr
    assert "WARNING" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr


README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_cpu_recipe_installs_the_pair_of_the_top_commands_from_the_cpu_index():
    import re

    text = README.read_text()
    top = text.split("```bash", 1)[1].split("```", 1)[0]
    pins = set(re.findall(r'"(torch(?:audio)?==[\d.]+)"', top))
    assert pins == {"torch==2.14.1", "torchaudio==2.11.0"}
    (cpu,) = [line for line in text.splitlines() if "--index-url https://download.pytorch.org/whl/cpu" in line]
    assert set(re.findall(r'"(torch(?:audio)?==[\d.]+)"', cpu)) == pins


def test_readme_reading_scores_states_the_right_probabilities():
    import math

    section = README.read_text().split("### Reading scores", 1)[1].split("###", 1)[0]
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    for diff, percent in (("0.1", "52.5"), ("1", "73"), ("2", "88")):
        assert f"of {diff} is about {percent} %" in section or f"{diff} about {percent} %" in section, diff
        assert round(100 * sigmoid(float(diff)), len(percent.split(".")[1]) if "." in percent else 0) == float(percent)
