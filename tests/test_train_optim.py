"""The optimiser's promises, unit by unit and inside a training run: which parameters decay, the
warm-up + cosine learning rate, gradient clipping, and the N(0, 0.02^2) start of fresh null embeddings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import train.trainer
from cmirm_plugin.model.loading import build_model
from cmirm_plugin.model.tiny import build_tiny_towers, tiny_config
from train.config import TrainConfig
from train.model_setup import build_training_model, init_null_embeddings
from train.optim import build_optimizer, warmup_cosine
from train.synthetic import write_synthetic_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NULLS = ("null_text_embedding", "null_lyrics_embedding", "null_audio_embedding")


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("optim")
    towers = build_tiny_towers(root / "towers")
    return {"root": root, "towers": towers, "config": tiny_config(towers).to_yaml(root / "config.yaml"),
            "cache": root / "cache",
            "pairs": write_synthetic_pairs(root / "data", n_train=24, n_test=0, clips_per_split=8, seconds=0.5)}


def run_config(env: dict[str, Path], out: str, **overrides) -> TrainConfig:
    """24 pairs, batch 4, 2 epochs: 12 steps, the first 3 (warmup 0.25) warming up."""
    values = dict(pairs=env["pairs"], out=env["root"] / out, model_config=env["config"], cache_dir=env["cache"],
                  epochs=2, batch_size=4, lr=1e-3, warmup=0.25, log_steps=1, eval_fraction=0.0, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def logged_steps(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics" / "steps.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ weight decay
def test_weight_decay_only_on_linear_weights(env):
    model, _ = build_model(tiny_config(env["towers"]), seed=0)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    by_decay: dict[float, set[str]] = {}
    for group in optimizer.param_groups:
        by_decay.setdefault(group["weight_decay"], set()).update(names[id(p)] for p in group["params"])
    assert set(by_decay) == {0.05, 0.0}

    # What should decay, found by module type rather than by the optimiser's rule: Linear weights.
    linear_weights = {f"{m}.weight" for m, module in model.named_modules() if isinstance(module, nn.Linear)}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert by_decay[0.05] == linear_weights & trainable
    assert by_decay[0.0] == trainable - linear_weights
    no_decay = by_decay[0.0]
    assert set(NULLS) <= no_decay                                           # null embeddings ([1, n, dim])
    assert "score_projector.1.bias" in no_decay and "score_projector.0.weight" in no_decay   # bias, LayerNorm gain
    assert "prompt_transformer.layers.0.0.norm.learned_gamma" in no_decay                  # the attention's norm
    assert "prompt_transformer.layers.0.0.q_scale" in no_decay                              # QK-norm scales
    assert not any(n.startswith(("audio_module.", "text_module.")) for n in by_decay[0.05] | no_decay)  # frozen


# ------------------------------------------------------------------ learning rate
def schedule(total: int, warmup: int, peak: float = 1.0) -> list[float]:
    """The learning rate each optimisation step uses (read before the step), and the one after the last."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=peak)
    scheduler = warmup_cosine(optimizer, total, warmup)
    used = []
    for _ in range(total):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return used + [optimizer.param_groups[0]["lr"]]


def test_linear_warmup_then_cosine_decay_to_zero():
    lrs = schedule(total=20, warmup=4, peak=2e-3)
    assert lrs[0] == pytest.approx(2e-3 * 1 / 5)                            # step 0: 1/(warmup+1) of the peak
    assert lrs[:5] == pytest.approx([2e-3 * k / 5 for k in range(1, 6)])   # linear rise ...
    assert lrs[4] == pytest.approx(2e-3)                                    # ... to the peak at the end of warm-up
    assert lrs[12] == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 8 / 16)))   # half-way: peak / 2
    assert lrs[19] == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 15 / 16)))  # last step: nearly 0
    assert lrs[20] == 0.0                                                   # decayed to exactly 0
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))                     # strictly decreasing after warm-up
    no_warmup = schedule(total=10, warmup=0)
    assert no_warmup[0] == 1.0 and no_warmup[10] == 0.0


def test_training_steps_use_the_warmup_cosine_learning_rate(env):
    result = train.trainer.train_reward_model(run_config(env, "lr"))
    logged = logged_steps(result.out)
    assert [s["step"] for s in logged] == list(range(1, 13))
    lrs = [s["lr"] for s in logged]                                         # the rate step s ran with
    assert lrs[0] == pytest.approx(1e-3 / 4)                                # 3 warm-up steps: 1/4, 2/4, 3/4
    assert lrs[3] == pytest.approx(1e-3)                                    # peak right after warm-up
    assert lrs[11] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 8 / 9)))   # last of 9 decay steps
    assert lrs == pytest.approx(schedule(12, 3, 1e-3)[:12])


# ------------------------------------------------------------------ gradient clipping
def clipped_norms(env, monkeypatch, out: str, **overrides) -> tuple[list[float], list[float]]:
    """Train with a loss scaled by 1e6; the gradient norm each optimizer step sees, and the logged (pre-clip) norms."""
    real_loss, real_optimizer = train.trainer.bradley_terry_loss, train.trainer.build_optimizer
    seen: list[float] = []

    def huge_loss(*args, **kwargs):
        loss, parts = real_loss(*args, **kwargs)
        return loss * 1e6, parts

    def recording_optimizer(*args, **kwargs):
        optimizer = real_optimizer(*args, **kwargs)

        def before_step(opt, *_):
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

        optimizer.register_step_pre_hook(before_step)
        return optimizer

    monkeypatch.setattr(train.trainer, "bradley_terry_loss", huge_loss)
    monkeypatch.setattr(train.trainer, "build_optimizer", recording_optimizer)
    result = train.trainer.train_reward_model(run_config(env, out, epochs=1, **overrides))
    return seen, [s["grad_norm"] for s in logged_steps(result.out)]


def test_gradients_are_clipped_to_the_configured_norm(env, monkeypatch):
    seen, before = clipped_norms(env, monkeypatch, "clipped", max_grad_norm=0.5)
    assert len(seen) == len(before) == 6
    assert min(before) > 1e3                                                # the raw gradients are huge ...
    assert seen == pytest.approx([0.5] * 6, rel=1e-4)                       # ... every step sees norm 0.5


def test_max_grad_norm_zero_does_not_clip(env, monkeypatch):
    seen, before = clipped_norms(env, monkeypatch, "unclipped", max_grad_norm=0.0)
    assert min(seen) > 1e3 and seen == pytest.approx(before, rel=1e-4)


# ------------------------------------------------------------------ null embeddings
def test_fresh_null_embeddings_start_as_normal_0_002():
    big = SimpleNamespace(**{name: nn.Parameter(torch.zeros(1, 100, 200)) for name in NULLS})   # 60,000 values
    init_null_embeddings(big, seed=3)
    values = torch.cat([getattr(big, name).detach().flatten() for name in NULLS])
    # 60,000 draws: the sample mean has sd 0.02 / sqrt(6e4) = 8e-5, the sample sd a relative sd of
    # 1 / sqrt(2 * 6e4) = 0.3 %; the bounds below are > 6 of those sds wide.
    assert abs(float(values.mean())) < 5e-4
    assert float(values.std()) == pytest.approx(0.02, rel=0.02)
    assert float(values.abs().max()) < 0.02 * 6
    assert not torch.equal(big.null_text_embedding, big.null_lyrics_embedding)     # drawn, not copied
    again = SimpleNamespace(**{name: nn.Parameter(torch.zeros(1, 100, 200)) for name in NULLS})
    init_null_embeddings(again, seed=3)
    assert all(torch.equal(getattr(big, n), getattr(again, n)) for n in NULLS)     # seeded

    trained = SimpleNamespace(**{name: nn.Parameter(torch.full((1, 4, 8), 0.7)) for name in NULLS})
    init_null_embeddings(trained, seed=3)                                   # non-zero (trained) ones are kept
    assert all(bool((getattr(trained, n) == 0.7).all()) for n in NULLS)


def test_a_fresh_training_model_gets_random_null_embeddings(env):
    model, _ = build_training_model(run_config(env, "unused"))
    values = torch.cat([getattr(model, name).detach().flatten() for name in NULLS])
    assert values.numel() == 960 and not bool((values == 0).any()) and not bool((values == 1).any())
    # 960 draws: the sample sd is within 15 % of 0.02 (more than 6 of its sds) and the mean within 0.003.
    assert float(values.std()) == pytest.approx(0.02, rel=0.15) and abs(float(values.mean())) < 3e-3
