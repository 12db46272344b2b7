"""GRPO-style RL with CMI-RM as the reward, on a tiny generator (CPU, seconds)::

    python examples/rl/grpo_tiny.py                               # tiny random reward model, offline
    python examples/rl/grpo_tiny.py --reward http://127.0.0.1:8000   # a `cmirm serve` reward server
    python examples/rl/grpo_tiny.py --reward HaiwenXia/CMI-RM --steps 50

Each step samples a group of G clips per prompt from the policy, scores the whole batch with
``make_reward_fn`` (one call: the scorer batches it), normalises the rewards within each prompt's
group (the GRPO advantage, no value network) and takes one policy-gradient step. The policy is a
small torch module: per prompt, a Gaussian over three synthesis controls (pitch, brightness,
loudness) rendered into a tone; a real music generator would sample tokens instead and sum their
log-probabilities, and the reward side would not change. With the tiny random reward model the
rewards are noise; the loop is the real one.

In TRL, the same reward is ``GRPOTrainer(..., reward_funcs=[reward_fn.for_trl(to_audio=decode)])``,
where ``decode(completions, **kwargs)`` turns completions (e.g. audio-token ids) into waveforms.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from rerank.rl import make_reward_fn

SAMPLE_RATE = 16000
PROMPTS = ["calm ambient pad", "bright plucked melody"]


class TonePolicy(nn.Module):
    """A Gaussian policy over (pitch, brightness, loudness) per prompt, rendered into a 0.5 s tone."""

    def __init__(self, n_prompts: int) -> None:
        super().__init__()
        self.mean = nn.Embedding(n_prompts, 3)
        nn.init.zeros_(self.mean.weight)
        self.log_std = nn.Parameter(torch.full((3,), -0.5))

    def sample(self, prompt_ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions ``[B, 3]`` and their log-probabilities ``[B]`` (differentiable)."""
        mean, std = self.mean(prompt_ids), self.log_std.exp()
        actions = (mean + std * torch.randn(mean.shape, generator=generator)).detach()
        return actions, torch.distributions.Normal(mean, std).log_prob(actions).sum(dim=1)

    @staticmethod
    def render(actions: torch.Tensor, seconds: float = 0.5) -> torch.Tensor:
        """Waveforms ``[B, T]`` at `SAMPLE_RATE`: a harmonic tone per action (no gradient needed)."""
        t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        pitch = 220.0 * 2 ** actions[:, :1].clamp(-2, 2)                       # 55..880 Hz
        brightness = torch.sigmoid(actions[:, 1:2])
        loudness = 0.05 + 0.4 * torch.sigmoid(actions[:, 2:3])
        waves = sum(brightness ** (k - 1) * torch.sin(2 * math.pi * pitch * k * t) for k in range(1, 6))
        return loudness * waves / waves.abs().amax(dim=1, keepdim=True)


def group_advantages(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """GRPO's advantage: each reward minus its group's mean, over the group's std (rows = prompts)."""
    by_prompt = rewards.view(-1, group)
    centred = by_prompt - by_prompt.mean(dim=1, keepdim=True)
    return (centred / (by_prompt.std(dim=1, keepdim=True) + 1e-6)).view(-1)


def train(reward: str = "tiny", steps: int = 3, group: int = 4, policy: str | None = None, lr: float = 0.1,
          seed: int = 0, device: str = "cpu") -> list[dict]:
    """Run ``steps`` GRPO steps; return per-step logs (mean reward per prompt and axis, the policy's mean controls)."""
    reward_fn = make_reward_fn(reward, policy, sample_rate=SAMPLE_RATE, device=device)
    model = TonePolicy(len(PROMPTS))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    prompt_ids = torch.arange(len(PROMPTS)).repeat_interleave(group)          # G clips per prompt, grouped
    history = []
    for step in range(1, steps + 1):
        actions, log_probs = model.sample(prompt_ids, generator)
        waves = model.render(actions)                                          # [B, T], in memory
        batch = reward_fn.score(waves, [PROMPTS[i] for i in prompt_ids])
        rewards = torch.tensor(batch.rewards, dtype=torch.float32)
        loss = -(group_advantages(rewards, group) * log_probs).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        log = {"step": step, "loss": loss.item(), "reward": rewards.view(-1, group).mean(dim=1).tolist(),
               "controls": model.mean.weight.detach().tolist(),
               **{axis: sum(values) / len(values) for axis, values in batch.components().items()}}
        history.append(log)
        print(f"step {step}: mean reward per prompt {[round(r, 4) for r in log['reward']]}, loss {log['loss']:.4f}, "
              + ", ".join(f"{axis} {log[axis]:.4f}" for axis in batch.axes))
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward", default="tiny", help="scorer spec (tiny, a CMI-RM folder or hub id, "
                                                         "package.module:Name, http://host:port)")
    parser.add_argument("--policy", default=None, help="reward policy [default: the scorer's axis policy]")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--group", type=int, default=4, help="clips sampled per prompt (the GRPO group)")
    parser.add_argument("--device", default="cpu", help="where a local reward model runs")
    args = parser.parse_args()
    train(args.reward, args.steps, args.group, args.policy, device=args.device)


if __name__ == "__main__":
    main()
