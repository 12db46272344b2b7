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
    assert set(report) == {"versions", "devices", "backends", "cache",
                           "models (local: hub cache and folders, no network)"}
    import torch
    assert report["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    for name, status in report["backends"].items():
        assert status.startswith(("ok (", "unavailable (")), (name, status)
    import importlib.util
    assert report["backends"]["diffusers (Stable Audio Open)"].startswith("ok (") == (
        importlib.util.find_spec("diffusers") is not None)
    assert report["cache"]["HF_HUB_OFFLINE"] == "True"  # conftest keeps tests offline
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0
    assert "torchaudio" in result.output and "hub cache" in result.output


def test_a_broken_plugin_does_not_take_down_the_cli(monkeypatch, capsys):
    import importlib.metadata as md

    import cmirm_plugin.cli as cli

    class BrokenEntryPoint:
        name, value = "broken", "missing_pkg.cli:run"

        def load(self):
            raise ImportError("No module named 'missing_pkg'")

    class ShadowingEntryPoint:
        name, value = "doctor", "other_pkg:doctor"

        def load(self):
            raise AssertionError("a plug-in must not replace a built-in command")

    monkeypatch.setattr(md, "entry_points", lambda group: [BrokenEntryPoint(), ShadowingEntryPoint()])
    before = len(cli.app.registered_commands)
    cli._register_plugins()
    assert len(cli.app.registered_commands) == before
    err = capsys.readouterr().err
    assert "command 'broken' unavailable (missing_pkg.cli:run: ImportError: No module named 'missing_pkg')" in err
