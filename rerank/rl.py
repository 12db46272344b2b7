"""Rewards for RL: any scorer as the reward function of a policy-gradient trainer.

``make_reward_fn(scorer, policy)`` returns a `RewardFn`: called with a batch of generated clips
and their prompts it returns one float per clip, the policy's composite (`Policy.composite`)::

    reward_fn = make_reward_fn("tiny")                       # or "http://gpu-box:8000", a Scorer ...
    rewards = reward_fn(waveforms, prompts, sample_rate=32000)   # list[float], one per clip
    reward_fn.last.components()                              # {"alignment": [...], "musicality": [...]}

``waveforms`` is anything the scorer contract takes: a ``[B, T]`` tensor (on any device), a list
of 1-D/2-D tensors or arrays of different lengths, paths or `Audio`. ``prompts`` is one prompt per
clip (or one for all): a text string, an `Instruction`, or a mapping with ``text`` / ``lyrics`` /
``ref_audio``.

**The policy and the batch.** The default is the scorer's axis policy (`default_policy`:
``axis:musicality`` for CMI-RM): each clip's reward is its own score, whatever else is in the
batch. ``zsum`` and ``pareto`` are *pool-relative*: their composite standardises each axis within
a pool, so a clip's reward depends on the other clips. Here the pool is the clips of the same
prompt in one call (exactly the group of GRPO-style trainers, which generate a group per prompt
and normalise rewards within it), so those rewards are already group-relative: they sum to zero
over a group and carry no information across prompts. Pass each group whole in one call; a
group of one clip is refused (its z-sum is always 0). Thresholds (``;min:``) select candidates and
have no reward meaning, so they are refused.

`RewardFn.for_trl` adapts it to TRL's ``reward_funcs`` signature ``(prompts, completions, **kwargs)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from cmirm_plugin.errors import CmirmError, ConfigError
from cmirm_plugin.records import Instruction
from cmirm_plugin.scoring.contract import Scorer, as_clips, score_isolated
from cmirm_plugin.scoring.settings import ScoringSettings
from rerank.policies import Policy, Thresholded, default_policy, group_by_instruction, parse_policy

PromptLike = Union[str, Instruction, Mapping[str, Any]]


@dataclass(frozen=True)
class RewardBatch:
    """One call's rewards (the policy's composite) with the raw ``scores [B, n_axes]`` behind them.

    ``errors[i]`` says why clip ``i`` has no scores (its reward is then the ``failure_reward``
    and its scores NaN); None for scored clips.
    """

    rewards: list[float]
    scores: np.ndarray
    axes: tuple[str, ...]
    errors: list[str | None]

    def components(self) -> dict[str, list[float]]:
        """The raw score of every axis, per clip (for logging next to the rewards)."""
        return {axis: self.scores[:, i].tolist() for i, axis in enumerate(self.axes)}


def as_instruction(prompt: PromptLike) -> Instruction:
    """A prompt as an `Instruction`: text, an `Instruction`, or a mapping of its fields."""
    if isinstance(prompt, Instruction):
        return prompt
    if isinstance(prompt, str):
        return Instruction(text=prompt)
    if isinstance(prompt, Mapping):
        return Instruction.from_dict(prompt)
    raise CmirmError(f"a prompt must be text, an Instruction or a mapping of text/lyrics/ref_audio, "
                     f"got {type(prompt).__name__}")


class RewardFn:
    """The reward function `make_reward_fn` builds (see the module docstring).

    Attributes:
        scorer / policy / axes: what scores, and how scores become one reward.
        failure_reward: the reward of a clip the scorer cannot score (None: such a clip is an error).
        last: the `RewardBatch` of the latest call (for loggers that only see the returned list).
    """

    def __init__(self, scorer: Scorer, policy: Policy, sample_rate: int | None = None,
                 failure_reward: float | None = None) -> None:
        self.scorer = scorer
        self.axes = tuple(scorer.axes)
        self.policy = policy
        self.sample_rate = sample_rate
        self.failure_reward = failure_reward
        self.last: RewardBatch | None = None
        self.__name__ = "cmirm_" + policy.spec().replace(":", "_").replace(",", "_").replace("=", "")

    def __call__(self, audios: Any, prompts: PromptLike | Sequence[PromptLike],
                 sample_rate: int | None = None) -> list[float]:
        """One reward per clip (see `score`)."""
        return self.score(audios, prompts, sample_rate).rewards

    def score(self, audios: Any, prompts: PromptLike | Sequence[PromptLike],
              sample_rate: int | None = None) -> RewardBatch:
        """Score the clips in one batch and turn each prompt group's scores into rewards."""
        clips = as_clips(audios)
        if isinstance(prompts, (str, Instruction, Mapping)):
            prompts = [prompts] * len(clips)
        insts = [as_instruction(p) for p in prompts]
        if len(insts) != len(clips):
            raise CmirmError(f"got {len(clips)} clips but {len(insts)} prompts")
        groups = group_by_instruction([inst.id for inst in insts])
        if self.policy.pool_relative:
            alone = next((positions[0] for positions in groups.values() if len(positions) < 2), None)
            if alone is not None:
                raise CmirmError(f"policy {self.policy.spec()!r} compares clips of the same prompt, but prompt "
                                 f"{insts[alone].text!r} has one clip in this call; pass each prompt's group whole, "
                                 "or use an axis/weighted policy")
        rate = sample_rate if sample_rate is not None else self.sample_rate
        outcomes = score_isolated(self.scorer, clips, insts, rate, "reward")
        errors = [o.error for o in outcomes]
        failed = [i for i, error in enumerate(errors) if error]
        if failed and self.failure_reward is None:
            raise CmirmError(f"clip {failed[0]} cannot be scored: {errors[failed[0]]} ({len(failed)} of {len(clips)} "
                             "failed; pass failure_reward= to give such clips a fixed reward)")
        scores = np.full((len(clips), len(self.axes)), np.nan)
        rewards = np.full(len(clips), np.nan if self.failure_reward is None else float(self.failure_reward))
        for i, outcome in enumerate(outcomes):
            if outcome.scores is not None:
                scores[i] = outcome.scores.values
        for positions in groups.values():
            scored = positions[np.isfinite(scores[positions]).all(axis=1)]
            if len(scored):
                rewards[scored] = self.policy.composite(scores[scored], self.axes)
        self.last = RewardBatch(rewards.tolist(), scores, self.axes, errors)
        return self.last

    def for_trl(self, to_audio: Callable[..., Any] | None = None) -> Callable[..., list[float]]:
        """This reward with TRL's ``reward_funcs`` signature ``(prompts, completions, **kwargs) -> list[float]``.

        ``to_audio(completions, **kwargs)`` turns the trainer's completions (e.g. audio-token ids)
        into waveforms; without it the completions must already be clips. TRL names the reward in
        its logs after the function's ``__name__``.
        """
        def reward_func(prompts: Sequence[PromptLike], completions: Any, **kwargs: Any) -> list[float]:
            clips = to_audio(completions, **kwargs) if to_audio is not None else completions
            return self(clips, list(prompts))

        reward_func.__name__ = self.__name__
        return reward_func


def make_reward_fn(scorer: Scorer | str, policy: str | Policy | None = None, *, sample_rate: int | None = None,
                   failure_reward: float | None = None, settings: ScoringSettings | None = None,
                   device: str | None = None) -> RewardFn:
    """A `RewardFn` over ``scorer`` (a contract scorer, or a spec for `load_scorer`: ``tiny``, a folder,
    a hub id, ``module:Name``, ``http://host:port``) ranking by ``policy`` (default: the scorer's axis
    policy, `default_policy`). ``sample_rate`` is the rate of raw waveforms when calls do not give one."""
    if isinstance(scorer, str):
        from cmirm_plugin.scoring.loader import load_scorer

        scorer = load_scorer(scorer, settings, device)
    axes = tuple(scorer.axes)
    chosen = policy if isinstance(policy, Policy) else parse_policy(policy or default_policy(axes))
    chosen.check_axes(axes)
    if isinstance(chosen, Thresholded):
        raise ConfigError(f"policy {chosen.spec()!r}: thresholds select candidates and are not a reward; give the "
                          f"base policy {chosen.base.spec()!r} (and failure_reward for clips that cannot be scored)")
    return RewardFn(scorer, chosen, sample_rate, failure_reward)
