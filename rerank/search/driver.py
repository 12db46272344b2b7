"""Run a search in memory: `search` for users' scripts, `run_search` for a generator already built.

Each step asks the method for its requests, makes them (`generate_requests`), scores the new
candidates in one call of the scoring step (its wall time split equally among them as their
``scorer_seconds``) and tells the method. ``state`` and ``store`` resume a search from a saved
`SearchState` with the candidates it still needs; ``max_steps`` stops after that many steps (the
result then holds the state to resume from).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.records import Candidate, Compute, Instruction, Scores
from generators import CandidateFailure, Generator
from rerank import defaults
from rerank.best_of_n import GeneratorOrFn, RankedCandidate, as_generator, as_policy
from rerank.policies import Policy, rank_per_instruction
from rerank.search.execute import CandidateStore, MemoryStore, generate_requests
from rerank.search.method import SearchMethod
from rerank.search.scoring import ScoringStep, scoring_step
from rerank.search.spec import parse_search
from rerank.search.state import Evaluation, SearchState

@dataclass
class SearchResult:
    """What a search made: its final candidates ranked (eligible ones, best first), the state, the cost.

    ``compute`` totals every candidate generated, pruned ones included (what the search spent);
    ``generation_failures`` and ``score_errors`` (id -> message) are those of this call.
    """

    method: SearchMethod
    state: SearchState
    ranked: list[RankedCandidate]
    generation_failures: list[CandidateFailure]
    score_errors: dict[str, str]

    @property
    def compute(self) -> Compute:
        return self.state.compute()

    def top(self, k: int = 1) -> list[RankedCandidate]:
        """The ``k`` best final candidates (fewer if fewer are eligible)."""
        return self.ranked[:k]


def rank_candidates(candidates: Sequence[Candidate], scores: Sequence[Scores], policy: Policy,
                    axes: Sequence[str]) -> list[RankedCandidate]:
    """The eligible ``candidates`` best first under ``policy`` (ties to the earlier one), with ranks: the
    selection of every job (`rank_per_instruction`, as in ``cmirm generate`` and `best_of_n`)."""
    if not candidates:
        return []
    matrix = np.array([[s[axis] for axis in axes] for s in scores])
    ranking = rank_per_instruction([""] * len(candidates), matrix, policy, len(candidates), axes=axes)
    chosen = sorted((int(r), i) for i, (r, picked) in enumerate(zip(ranking.rank, ranking.selected)) if picked)
    return [RankedCandidate(candidates[i], scores[i], place, float(ranking.composite[i]))
            for place, (_, i) in enumerate(chosen, start=1)]


def _check_resumed(state: SearchState, instruction: Instruction, generator: Generator, duration: float) -> None:
    mine = (instruction.id, generator.name, float(duration))
    theirs = (state.instruction_id, state.generator, state.duration)
    if mine != theirs:
        raise ConfigError(f"the search state is for (instruction, generator, duration) {theirs}, not {mine}; "
                          "resume it with the same ones")


def _evaluate(made: Sequence[Candidate | CandidateFailure], instruction: Instruction, scoring: ScoringStep,
              store: CandidateStore, failures: list[CandidateFailure], errors: dict[str, str]) -> list[Evaluation]:
    """Score the step's new candidates in one call; failed generations become error evaluations."""
    candidates = [m for m in made if isinstance(m, Candidate)]
    began = time.perf_counter()
    outcomes = scoring(instruction, candidates) if candidates else []
    share = (time.perf_counter() - began) / max(len(candidates), 1)
    scored = {}
    for candidate, outcome in zip(candidates, outcomes, strict=True):
        compute = None if candidate.compute is None else candidate.compute.with_scorer_seconds(share)
        store.put(dataclasses.replace(candidate, compute=compute))
        if outcome.scores is None:
            errors[candidate.id] = outcome.error or "no scores"
        scored[candidate.id] = Evaluation(candidate.id, outcome.scores, outcome.error if outcome.scores is None else None,
                                          compute)
    evaluations = []
    for m in made:
        if isinstance(m, Candidate):
            evaluations.append(scored[m.id])
        else:
            failures.append(m)
            evaluations.append(Evaluation(Candidate.make_id(m.instruction_id, m.generator, m.seed),
                                          error=f"{m.kind}: {m.message}"))
    return evaluations


def run_search(method: str | SearchMethod, generator: Generator, instruction: Instruction, *, scorer: Any,
               policy: str | Policy | None = None, duration: float = defaults.DURATION,
               seed_base: int = defaults.SEED_BASE, batch_size: int | None = None,
               params: dict[str, Any] | None = None, state: SearchState | None = None,
               store: CandidateStore | None = None, max_steps: int | None = None) -> SearchResult:
    """Run (or resume) ``method`` for ``instruction`` in memory; see the module docstring.

    ``scorer`` is a contract scorer, a started `ScorerPool` or a `ScoringStep`; ``policy`` ranks
    by its axes (default `default_policy`); ``params`` go to the generator. Configuration errors
    (a generator that cannot run the method, a bad policy) are raised before anything is generated.
    """
    method = parse_search(method).resolved()
    step = scoring_step(scorer)
    axes = tuple(step.axes)
    chosen = as_policy(policy, axes)
    params = dict(params or {})
    method.check(generator, duration, params)
    if state is None:
        state = method.start(instruction.id, generator.name, duration, seed_base)
    method.check_state(state)
    _check_resumed(state, instruction, generator, duration)
    store = MemoryStore() if store is None else store
    failures: list[CandidateFailure] = []
    errors: dict[str, str] = {}
    steps = 0
    while not state.done and (max_steps is None or steps < max_steps):
        made = generate_requests(generator, instruction, method.ask(state), store, batch_size=batch_size,
                                 params=params)
        state = method.tell(state, _evaluate(made, instruction, step, store, failures, errors), chosen, axes)
        store.keep(method.needed(state))
        steps += 1
    final = state.scored(method.candidates(state))
    candidates = [store.get(node.id) for node in final]
    ranked = rank_candidates(candidates, [node.scores for node in final], chosen, axes)
    return SearchResult(method, state, ranked, failures, errors)


def search(method: str | SearchMethod, generator_or_fn: GeneratorOrFn, instruction: Instruction | str, *,
           scorer: Any, policy: str | Policy | None = None, budget: int | None = None,
           duration: float = defaults.DURATION, seed_base: int = defaults.SEED_BASE, batch_size: int | None = None,
           sample_rate: int | None = None, **params: Any) -> SearchResult:
    """Search for good candidates of ``instruction`` with ``method`` (a spec such as
    ``"beam:width=4,segment=5"`` or a `SearchMethod`), spending ``budget`` clips' worth of audio.

    ``generator_or_fn`` is a `Generator` or a plain ``fn(instruction, seed, duration, **params)``
    (``sample_rate`` needed unless decorated); ``scorer`` any contract scorer, a started
    `ScorerPool` or a `ScoringStep`. ``budget`` sets the method's free setting (`SearchMethod.for_budget`).
    Returns a `SearchResult`: ``.ranked`` / ``.top(k)``, ``.compute``, ``.state``.
    """
    generator = as_generator(generator_or_fn, sample_rate)
    instruction = Instruction(text=instruction) if isinstance(instruction, str) else instruction
    method = parse_search(method)
    if budget is not None:
        method = method.for_budget(budget)
    return run_search(method, generator, instruction, scorer=scorer, policy=policy, duration=duration,
                      seed_base=seed_base, batch_size=batch_size, params=params)
