"""The test suite's own guards (tests/conftest.py): the model hub is never reached, whatever the
environment says, and ``CMIRM_REQUIRE_AUDIOCRAFT=1`` turns a missing audiocraft from a skip into a failure.

The conftest cases run small pytest sessions in-process (``pytester``) with a copy of the conftest.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Every attempt to open a connection is recorded and refused."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_a_hub_download_fails_at_once_without_touching_the_network(tmp_path, no_network):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    with pytest.raises(LocalEntryNotFoundError) as error:
        hf_hub_download("OpenMuQ/MuQ-MuLan-large", "config.json", cache_dir=tmp_path)
    assert isinstance(error.value.__cause__, OfflineModeIsEnabled)
    assert no_network == []


def test_offline_is_forced_even_when_the_environment_says_online(pytester, monkeypatch):
    """HF_HUB_OFFLINE=0 in the environment, and huggingface_hub imported while it was online."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner="""
        import os
        import huggingface_hub.constants as constants

        def test_offline():
            assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


@pytest.mark.parametrize("required, outcome", [(None, {"skipped": 1}), ("1", {"errors": 1})])
def test_audiocraft_tests_skip_or_fail_when_it_is_missing(pytester, monkeypatch, required, outcome):
    monkeypatch.setitem(sys.modules, "audiocraft.models", None)      # missing (or broken), wherever we run
    if required is None:
        monkeypatch.delenv("CMIRM_REQUIRE_AUDIOCRAFT", raising=False)
    else:
        monkeypatch.setenv("CMIRM_REQUIRE_AUDIOCRAFT", required)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner="""
        import pytest

        @pytest.mark.audiocraft
        def test_needs_it():
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(**outcome)
    if required:
        result.stdout.fnmatch_lines(["*CMIRM_REQUIRE_AUDIOCRAFT=1 but audiocraft does not import*"])
    else:
        result.stdout.fnmatch_lines(["*audiocraft unavailable*scripts/install_audiocraft.sh*"])
