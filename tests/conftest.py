"""Test-wide settings: never reach the model hub, keep Ray quiet, keep CPU threads bounded.

Also: one Ray cluster per test run (`ray_cluster`), the ``audiocraft`` marker (skip where the
optional backend does not import, fail instead under ``CMIRM_REQUIRE_AUDIOCRAFT=1``), and
`greedy_reply` for the local judge tests.
"""

import functools
import os

# Offline whatever the environment says (HF_HUB_OFFLINE=0 there must not let a test download real
# checkpoints): set before huggingface_hub is imported, which reads it once at import, and forced
# again for the session by `hub_offline` in case something imported it earlier.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(2)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = FIXTURES / "parity"
pytest_plugins = ["pytester"]      # tests/test_isolation.py runs small test sessions with this conftest


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "audiocraft: needs the optional audiocraft backend (skipped where it does not "
                                       "import; failed instead under CMIRM_REQUIRE_AUDIOCRAFT=1)")


@pytest.fixture(scope="session", autouse=True)
def hub_offline():
    """No test or fixture reaches the model hub, even if huggingface_hub was imported while online."""
    import huggingface_hub.constants as constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        yield


@functools.cache
def audiocraft_problem() -> str | None:
    """None when the optional audiocraft backend imports, else why it does not."""
    import warnings

    from cmirm_plugin.errors import ConfigError
    from generators.audiocraft_backend import import_audiocraft

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import_audiocraft()
    except ConfigError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def audiocraft_missing() -> str | None:
    """Why audiocraft does not import (None: it does)."""
    return audiocraft_problem()


def pytest_runtest_setup(item) -> None:
    """``audiocraft`` tests: skipped without the backend, unless CI asked for it (then a broken install fails)."""
    if item.get_closest_marker("audiocraft") is None or (problem := audiocraft_problem()) is None:
        return
    if os.environ.get("CMIRM_REQUIRE_AUDIOCRAFT") == "1":
        pytest.fail(f"CMIRM_REQUIRE_AUDIOCRAFT=1 but audiocraft does not import: {problem}", pytrace=False)
    pytest.skip(f"audiocraft unavailable: {problem}")


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole test run, started by the first test that needs it.

    Starting Ray costs seconds, so the Ray tests share it: `rerank.pool.ScorerPool` reuses an
    initialised Ray and shuts down only a cluster it started itself. 4 logical CPUs: room for the
    pools of the tests (1 CPU per actor), whatever the machine.
    """
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


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
def greedy_reply():
    """``greedy_reply(judge, prompt)``: a `LocalAudioLLMJudge`'s reply decoded by hand, one argmax per token.

    Independent of ``generate``: the new tokens only (the prompt is not part of the reply), stopping
    at the end-of-turn token, special tokens removed; what the judge's ``answer`` must return.
    """
    from train.pseudo.judges.clips import load_clip

    @torch.inference_mode()
    def reply(judge, prompt) -> str:
        audios = [load_clip(path, judge.sample_rate, judge.max_dur).waveform[0].numpy() for path in prompt.audios]
        inputs = dict(judge.processor(text=judge.render(prompt), audio=audios, sampling_rate=judge.sample_rate,
                                      return_tensors="pt"))
        eos = judge.model.generation_config.eos_token_id
        stop = set(eos if isinstance(eos, list) else [eos])
        new: list[int] = []
        for _ in range(judge.max_new_tokens):
            token = int(judge.model(**inputs).logits[0, -1].argmax())
            new.append(token)
            if token in stop:
                break
            inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([[token]])], dim=1)
            inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones(1, 1, dtype=torch.long)], dim=1)
        return judge.processor.batch_decode([new], skip_special_tokens=True)[0]

    return reply
