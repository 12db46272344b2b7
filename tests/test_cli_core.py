from typer.testing import CliRunner

from cmirm_plugin.cli import app
from cmirm_plugin.doctor import collect

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("cmirm 0.")


def test_doctor_reports_versions_devices_backends_cache():
    report = collect()
    assert set(report) == {"versions", "devices", "backends", "cache"}
    import torch
    assert report["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert "audiocraft (MusicGen/MAGNeT)" in report["backends"]
    assert report["cache"]["HF_HUB_OFFLINE"] == "True"  # conftest keeps tests offline
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0
    assert "torchaudio" in result.output and "hub cache" in result.output
