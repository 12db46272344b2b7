"""Best-of-N in Python: generate N candidates, score them, return the top k (in memory, no files).

Two forms::

    from rerank.best_of_n import best_of, best_of_n

    best = best_of_n(my_fn, "calm ambient pad", n=8, k=2, scorer=scorer, sample_rate=22050)
    best[0].candidate.audio, best[0].scores, best[0].rank

    @best_of(n=8, k=1, scorer=scorer, sample_rate=22050)
    def compose(instruction, seed, duration, brightness=0.5): ...   # returns (waveform, sample_rate)
    compose("calm ambient pad", brightness=0.7)                     # -> the best candidate(s)

``generator_or_fn`` is a `generators.Generator` or a plain ``fn(instruction, seed, duration, **params)
-> (waveform, sample_rate)`` (wrapped in `CallableGenerator`; it must draw its randomness from
``seed``). ``scorer`` is any scorer of the contract (`cmirm_plugin.scoring.load_scorer("tiny")`,
``load_scorer("HaiwenXia/CMI-RM")``, ``load_scorer("my_pkg.scorers:Aesthetics")`` ...) or a
started `ScorerPool` (e.g. Ray actors); the policy names its axes (default `default_policy` of its axes).
Candidate i uses seed ``seed_base + i`` unless ``seeds`` are given. Failed generations and clips
that cannot be scored are left out and reported on the result (``generation_failures``,
``score_errors``); fewer than k survivors is not an error.

It is the pipeline of ``cmirm generate`` (`rerank.stream.run_pipeline`, the same seeds rule
`job_seeds` and the same selection, `rank_per_instruction`) with the results kept in memory
(`MemorySink`): the generator runs in this process, a plain scorer scores each instruction's
candidates in one batch, a `ScorerPool` in its own batches.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import Candidate, Instruction, Scores
from cmirm_plugin.scoring.contract import Scorer
from generators import CandidateFailure, GenerationResult, Generator
from generators.python_fn import CallableGenerator
from rerank.gen_pool import GeneratorPool, GeneratorPoolConfig
from rerank.policies import Policy, default_policy, parse_policy, rank_per_instruction
from rerank.pool import ScoreItem, ScoreResult, ScorerPool
from rerank.stream import JobCounts, JobPlan, job_seeds, run_pipeline

ScorerLike = Union[Scorer, ScorerPool]
GeneratorOrFn = Union[Generator, Callable[..., Any]]


@dataclass(frozen=True)
class RankedCandidate:
    """A selected candidate: the clip and its recipe, its scores, its rank (1 = best) and the policy's composite."""

    candidate: Candidate
    scores: Scores
    rank: int
    composite: float


class BestOfN(list):
    """The selected `RankedCandidate`s, best first (it *is* the list), plus what was left out."""

    def __init__(self, ranked: Iterable[RankedCandidate] = (), generation_failures: Iterable[CandidateFailure] = (),
                 score_errors: dict[str, str] | None = None) -> None:
        super().__init__(ranked)
        self.generation_failures: list[CandidateFailure] = list(generation_failures)
        self.score_errors: dict[str, str] = dict(score_errors or {})


def as_generator(generator_or_fn: GeneratorOrFn, sample_rate: int | None = None) -> Generator:
    """A `Generator` as it is; a plain ``fn(instruction, seed, duration, **params)`` wrapped in `CallableGenerator`."""
    if isinstance(generator_or_fn, Generator):
        return generator_or_fn
    return CallableGenerator(generator_or_fn, sample_rate=sample_rate)


def as_policy(policy: str | Policy | None, axes: Sequence[str]) -> Policy:
    """``policy`` (a spec, a `Policy`, or None for `default_policy` of ``axes``), checked against ``axes``."""
    chosen = parse_policy(policy or default_policy(axes)) if not isinstance(policy, Policy) else policy
    chosen.check_axes(axes)
    return chosen


class MemorySink:
    """The pipeline's sink (`rerank.stream.Sink`) for `best_of_n`: candidates, failures and scores in memory."""

    def __init__(self) -> None:
        self.counts = JobCounts()
        self.candidates: dict[str, Candidate] = {}
        self.failures: list[CandidateFailure] = []
        self.scores: dict[str, Scores] = {}
        self.errors: dict[str, str] = {}

    def generated(self, instruction: Instruction, indices: Mapping[int, int], result: GenerationResult
                  ) -> dict[int, str | None]:
        self.candidates.update((c.id, c) for c in result)
        self.failures += result.failures
        return {**{c.seed: c.id for c in result}, **{f.seed: None for f in result.failures}}

    def score_item(self, key: str, instruction: Instruction) -> ScoreItem:
        return ScoreItem(key, self.candidates[key].audio, instruction)

    def scored(self, results: Sequence[ScoreResult]) -> None:
        for result in results:
            if result.scores is None:
                self.errors[result.key] = result.error or "no scores"
            else:
                self.scores[result.key] = result.scores

    def instruction_done(self, instruction: Instruction) -> None:
        """Selection happens once at the end (`best_of_n` has one instruction)."""


def best_of_n(generator_or_fn: GeneratorOrFn, instruction: Instruction | str, *, n: int = 16, k: int = 2,
              scorer: ScorerLike, policy: str | Policy | None = None, seeds: Sequence[int] | None = None,
              seed_base: int = 0, duration: float = 10.0, batch_size: int | None = None,
              sample_rate: int | None = None, **params: Any) -> BestOfN:
    """Generate ``n`` candidates (or one per seed), score them, return the top ``k`` as `RankedCandidate`s.

    ``instruction`` may be a plain text. ``params`` go to the generator; ``sample_rate`` is needed
    for a plain function not decorated with `generators.python_fn.generation_function`. Raises
    `CmirmError` only when no candidate could be generated and scored.
    """
    generator = as_generator(generator_or_fn, sample_rate)
    instruction = Instruction(text=instruction) if isinstance(instruction, str) else instruction
    axes = tuple(scorer.axes)
    selection_policy = as_policy(policy, axes)   # a bad policy fails before anything is generated
    seeds = job_seeds(n, seed_base, seeds)
    pool = scorer if isinstance(scorer, ScorerPool) else ScorerPool.of(scorer)
    plan = JobPlan.fresh([instruction], seeds, duration, params, batch_size,
                         pool.config.batch_size if pool is scorer else None)
    sink = MemorySink()
    run_pipeline(plan, sink, generators=GeneratorPool(GeneratorPoolConfig(generator)), scorers=pool)
    scored = [(c, sink.scores[key]) for key, c in sink.candidates.items() if key in sink.scores]
    if not scored:
        problems = [str(f) for f in sink.failures] + [f"{key}: {value}" for key, value in sink.errors.items()]
        raise CmirmError(f"best_of_n: none of the {len(seeds)} candidates could be generated and scored:\n  "
                         + "\n  ".join(problems))
    scored.sort(key=lambda pair: seeds.index(pair[0].seed))   # ties go to the lower candidate index
    matrix = np.array([s.as_tuple() for _, s in scored])
    ranking = rank_per_instruction([instruction.id] * len(scored), matrix, selection_policy, k, axes=axes,
                                   allow_fewer=True)
    chosen = sorted((int(r), i) for i, (r, picked) in enumerate(zip(ranking.rank, ranking.selected)) if picked)
    ranked = [RankedCandidate(scored[i][0], scored[i][1], place, float(ranking.composite[i]))
              for place, (_, i) in enumerate(chosen, start=1)]
    return BestOfN(ranked, sink.failures, sink.errors)


def best_of(n: int = 8, k: int = 1, *, scorer: ScorerLike, policy: str | Policy | None = None,
            duration: float = 10.0, seed_base: int = 0, sample_rate: int | None = None,
            batch_size: int | None = None) -> Callable[[Callable[..., Any]], Callable[..., BestOfN]]:
    """Decorator: turn ``fn(instruction, seed, duration, **params) -> (waveform, sample_rate)`` into
    ``fn(instruction, duration=None, **params) -> BestOfN`` (see `best_of_n`).

    The wrapped function keeps the original as ``.generator`` (a `CallableGenerator`).
    """
    selection_policy = as_policy(policy, tuple(scorer.axes))

    def wrap(fn: Callable[..., Any]) -> Callable[..., BestOfN]:
        generator = CallableGenerator(fn, sample_rate=sample_rate)
        default_duration = duration

        @functools.wraps(fn)
        def run(instruction: Instruction | str, duration: float | None = None, **params: Any) -> BestOfN:
            return best_of_n(generator, instruction, n=n, k=k, scorer=scorer, policy=selection_policy,
                             seed_base=seed_base, duration=default_duration if duration is None else duration,
                             batch_size=batch_size, **params)

        run.generator = generator  # type: ignore[attr-defined]
        return run

    return wrap
