"""Test-wide settings: never reach the model hub, keep Ray quiet, keep CPU threads bounded."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(2)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = FIXTURES / "parity"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A released-layout tiny CMI-RM folder over tiny MuQ-MuLan towers, built offline once per session."""
    from cmirm_plugin.model.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from cmirm_plugin.model import CMIRewardModel

    return CMIRewardModel.from_pretrained(str(tiny_checkpoint))


@pytest.fixture
def parity_hub(monkeypatch):
    """Serve the official-parity fixtures' fake hub cache (offline)."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(PARITY / "hf_home" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return PARITY


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and spinning threads on a busy 2-core machine cost a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every Ray test of the session (pools reuse an initialised Ray and leave it up).

    Four logical CPUs, so two generator and two scorer actors of one CPU each fit on a 2-core machine.
    """
    import ray

    started = not ray.is_initialized()
    if started:
        # address="local": a cluster of our own, never one that `ray start` left running on this machine.
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
