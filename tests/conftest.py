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
