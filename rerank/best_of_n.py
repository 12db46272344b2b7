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
started `ScorerPool`; the policy names its axes (default `default_policy` of its axes).
Candidate i uses seed ``seed_base + i`` unless ``seeds`` are given. Failed generations and clips
that cannot be scored are left out and reported on the result (``generation_failures``,
``score_errors``); fewer than k survivors is not an error.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Sequence

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import Instruction
from generators import CandidateFailure
from generators.python_fn import CallableGenerator
from rerank.policies import Policy, positive_int
from rerank.search.best_of_n import BestOfNSearch
from rerank.search.driver import GeneratorOrFn, RankedCandidate, as_generator, as_policy, run_search
from rerank.search.scoring import ScorerLike, score_candidates, scoring_step

__all__ = ["BestOfN", "GeneratorOrFn", "RankedCandidate", "ScorerLike", "best_of", "best_of_n", "score_candidates"]


class BestOfN(list):
    """The selected `RankedCandidate`s, best first (it *is* the list), plus what was left out."""

    def __init__(self, ranked: Iterable[RankedCandidate] = (), generation_failures: Iterable[CandidateFailure] = (),
                 score_errors: dict[str, str] | None = None) -> None:
        super().__init__(ranked)
        self.generation_failures: list[CandidateFailure] = list(generation_failures)
        self.score_errors: dict[str, str] = dict(score_errors or {})


def best_of_n(generator_or_fn: GeneratorOrFn, instruction: Instruction | str, *, n: int = 16, k: int = 2,
              scorer: ScorerLike, policy: str | Policy | None = None, seeds: Sequence[int] | None = None,
              seed_base: int = 0, duration: float = 10.0, batch_size: int | None = None,
              sample_rate: int | None = None, **params: Any) -> BestOfN:
    """Generate ``n`` candidates (or one per seed), score them, return the top ``k`` as `RankedCandidate`s.

    ``instruction`` may be a plain text. ``params`` go to the generator; ``sample_rate`` is needed
    for a plain function not decorated with `generators.python_fn.generation_function`. Raises
    `CmirmError` only when no candidate could be generated and scored. This is the ``best-of-n``
    search method (`rerank.search`) run in memory, keeping its top ``k``.
    """
    generator = as_generator(generator_or_fn, sample_rate)
    instruction = Instruction(text=instruction) if isinstance(instruction, str) else instruction
    k = positive_int(k, "k")
    step = scoring_step(scorer)
    selection_policy = as_policy(policy, step.axes)   # a bad policy fails before anything is generated
    method = BestOfNSearch(seeds=tuple(seeds)) if seeds is not None else BestOfNSearch(n)
    result = run_search(method, generator, instruction, scorer=step, policy=selection_policy, duration=duration,
                        seed_base=seed_base, batch_size=batch_size, params=params)
    if not result.ranked:
        problems = [str(f) for f in result.generation_failures] + [f"{key}: {value}"
                                                                   for key, value in result.score_errors.items()]
        raise CmirmError(f"best_of_n: none of the {method.n} candidates could be generated and scored:\n  "
                         + "\n  ".join(problems))
    return BestOfN(result.top(k), result.generation_failures, result.score_errors)


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
