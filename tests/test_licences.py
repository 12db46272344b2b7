"""One licence table: the README states exactly `cmirm_plugin.licences`, and every default model has an entry."""

from __future__ import annotations

from pathlib import Path

from cmirm_plugin.hub import DEFAULT_MODEL
from cmirm_plugin.licences import MODEL_LICENCES, Licence, licence_for
from cmirm_plugin.model.config import CMIRMConfig
from cmirm_plugin.model.mulan import MuLanConfig
from generators.registry import CHECKPOINTS

ROOT = Path(__file__).resolve().parents[1]


def readme_licence_table() -> dict[str, Licence]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Model licences\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table = {}
    for row in rows:
        model, licence, note = (cell.strip() for cell in row.strip().strip("|").split("|"))
        table[model.strip("`")] = Licence(licence.strip("`"), note)
    return table


def test_readme_table_states_the_licence_mapping():
    assert readme_licence_table() == MODEL_LICENCES
    assert list(readme_licence_table()) == list(MODEL_LICENCES)


def test_every_model_cmirm_downloads_by_default_has_a_licence():
    mulan = MuLanConfig()
    for repo in (DEFAULT_MODEL, CMIRMConfig().model_name, mulan.audio_model_name, mulan.text_model_name,
                 *(hub_id for _, hub_id in CHECKPOINTS.values())):
        assert licence_for(repo) is not None, repo
    assert licence_for("xlm-roberta-base") == MODEL_LICENCES["FacebookAI/xlm-roberta-base"]
    assert licence_for("facebook/musicgen-stereo-melody-large").id == "cc-by-nc-4.0"
    assert licence_for("OpenMuQ/MuQ-MuLan-large").id == "cc-by-nc-4.0"
    assert licence_for("Qwen/Qwen2-Audio-7B-Instruct").id == "apache-2.0"
    assert licence_for("someone/unknown-model") is None


def test_the_licence_file_is_the_apache_text_pyproject_declares():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
