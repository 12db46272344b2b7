"""Training-time modality dropout as the trainer applies it (`train.batching.score_pairs`): both
clips of a pair are scored under the same dropped prompt (the Bradley-Terry comparison needs it),
and each modality is dropped at its configured rate in training, never in evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cmirm_plugin.model.reward_model import CMIRewardModel
from cmirm_plugin.model.sequence import TokenSeq
from cmirm_plugin.records import Instruction
from train.batching import score_pairs
from train.data import PreferencePair

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Configured dropout of text, lyrics and reference, and the constant each null embedding is set to here.
RATES = {"text": 0.2, "lyrics": 0.3, "audio": 0.5}
MARKS = {"text": 7.0, "lyrics": 8.0, "audio": 9.0}


class StubTower:
    """A frozen tower stand-in: a fixed random ``[length, dim]`` embedding per string or path."""

    def __init__(self, dim: int, length: int, seed: int) -> None:
        self.dim, self.length = dim, length
        self.generator = torch.Generator().manual_seed(seed)
        self.table: dict[str, torch.Tensor] = {}

    def __call__(self, items) -> TokenSeq:
        out = []
        for item in items:
            if item is None:
                out.append(torch.zeros(0, self.dim))
                continue
            if str(item) not in self.table:
                self.table[str(item)] = torch.randn(self.length, self.dim, generator=self.generator)
            out.append(self.table[str(item)])
        return TokenSeq.pad(out, self.dim, "cpu", torch.float32)


@pytest.fixture
def model(tiny_checkpoint) -> CMIRewardModel:
    model = CMIRewardModel.from_pretrained(str(tiny_checkpoint), verbose=False)
    nulls = model.config.null_embedding
    for name, rate in RATES.items():
        getattr(nulls, name).dropout = rate
    assert model.config.attn_dropout == model.config.ff_dropout == 0.0        # modality dropout is the only noise
    return model


def pairs(n: int, same_clip: bool = False) -> list[PreferencePair]:
    """``n`` pairs with text, lyrics and a reference; A and B are the same clip if ``same_clip``."""
    out = []
    for i in range(n):
        inst = Instruction(text=f"text {i % 7}", lyrics=f"lyrics {i % 5}", ref_audio=f"ref{i % 3}.wav")
        out.append(PreferencePair(line=i + 1, audio_a=Path(f"a{i % 11}.wav"),
                                  audio_b=Path(f"a{i % 11}.wav" if same_clip else f"b{i % 13}.wav"),
                                  instruction=inst, labels=("model_a", "model_b"), confidences=(None, None),
                                  modality="text+lyrics+ref", key=str(i)))
    return out


def test_both_clips_of_a_pair_share_the_dropped_prompt(model):
    dim = model.config.dim
    text, audio = StubTower(dim, 5, seed=1), StubTower(dim, 8, seed=2)
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        score_a, score_b = score_pairs(model, pairs(64, same_clip=True), text, audio)
    # A and B are one clip: equal scores iff both were scored under the same (dropped) prompt.
    assert torch.equal(score_a, score_b)
    # ... while the pairs did get different drops (8 combinations of 3 modalities over 64 pairs).
    model.eval()
    with torch.no_grad():
        clean, _ = score_pairs(model, pairs(64, same_clip=True), text, audio)
    assert 0 < int((score_a != clean).any(dim=1).sum()) < 64


def dropped_rows(model: CMIRewardModel, batch: list[PreferencePair]) -> dict[str, torch.Tensor]:
    """Per modality, which items' prompts held its null embedding (seen at the prompt transformer's input)."""
    text, audio = StubTower(model.config.dim, 5, seed=1), StubTower(model.config.dim, 8, seed=2)
    seen: list[torch.Tensor] = []
    handle = model.prompt_transformer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            for start in range(0, len(batch), 500):
                score_pairs(model, batch[start : start + 500], text, audio)
    finally:
        handle.remove()
    tokens = torch.cat(seen)
    return {name: (tokens == mark).all(dim=-1).any(dim=-1) for name, mark in MARKS.items()}


def test_each_modality_is_dropped_at_its_configured_rate_in_training_only(model):
    with torch.no_grad():
        for name, mark in MARKS.items():
            getattr(model, f"null_{name}_embedding").fill_(mark)
    batch = pairs(2000)
    torch.manual_seed(0)
    model.train()
    dropped = dropped_rows(model, batch)
    for name, rate in RATES.items():
        # 2,000 draws: the observed rate has sd <= 0.0112; 0.045 is 4 of them.
        assert float(dropped[name].float().mean()) == pytest.approx(rate, abs=0.045), name
    # The three modalities are dropped independently of each other.
    both = float((dropped["text"] & dropped["audio"]).float().mean())
    assert both == pytest.approx(RATES["text"] * RATES["audio"], abs=0.03)

    model.eval()
    assert not any(bool(rows.any()) for rows in dropped_rows(model, batch[:500]).values())
