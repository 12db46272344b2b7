"""A search in a run directory (``cmirm generate --search beam:...`` / ``noise:...``), step by step on the pipeline.

Every instruction runs its own search (`rerank.search.SearchMethod`); their steps run together:
each step is one `rerank.stream.run_pipeline` call whose tickets are the step's requests (sample,
extend or latents; `rerank.gen_pool.GeneratorWorker.generate_requests`), written by the same
`rerank.generate.DiskSink` as best-of-N candidates (wavs, candidate records with their lineage and
compute, score records). The step's scores are then read back from the manifest's views, each
search is told them, and ``search_state.json`` (every instruction's `SearchState`) is rewritten
atomically. Generators and scorers are started once for the whole search and stay loaded.

**Resume** at step granularity: a rerun reads ``search_state.json`` and asks each search for the
same requests again; candidates the manifest already holds are reused (`seed_ticket`, the rules of
best-of-N resumes), so an interrupted step only makes what is missing. A beam prefix's codec tokens
are saved next to its wav (`rerank.run_dir.save_codes`) and every continuation starts from the
saved wav and codes, in a fresh run as in a resumed one, so both give the same candidates
(bit-identical at ``gen_batch_size`` 1, as for best-of-N).

Candidate ``index`` is the seed's offset from ``seed_base`` (seeds are allocated in order); beam
prefixes are `CandidateView.partial` and never ranked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.records import Candidate, Instruction
from rerank.generate import CandidatesConfig, DiskSink, RunLog, seed_ticket
from rerank.gen_pool import GeneratorPool
from rerank.policies import Policy
from rerank.pool import ScorerPool
from rerank.run_dir import load_codes, write_text_atomic
from rerank.run_records import CandidateView, RunPaths, views_by_seed
from rerank.search import Evaluation, Request, SearchMethod, SearchState
from rerank.stream import JobCounts, JobPlan, Ticket, run_pipeline


def load_states(path: Path) -> dict[str, SearchState]:
    """The search states of a run (instruction id -> state); none before its first step."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {key: SearchState.from_dict(value) for key, value in data["states"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a search state file ({exc!r}); delete it and rerun (finished candidates "
                          "are reused)") from None


def save_states(path: Path, states: dict[str, SearchState]) -> None:
    """Rewrite ``search_state.json`` atomically (readers see the last finished step, never half of one)."""
    write_text_atomic(path, json.dumps({"states": {key: s.to_dict() for key, s in states.items()}}, indent=1) + "\n")


def load_candidate(root: Path, view: CandidateView) -> Candidate:
    """A candidate of the run as generators continue it: its wav, record and saved codes (if any)."""
    paths = RunPaths(root)
    return Candidate(Audio.load(root / view.audio_path), view.instruction.id, view.generator, view.seed,
                     dict(view.params), view.compute, view.lineage, codes=load_codes(paths.candidate_codes(view.id)))


def _evaluation(request: Request, key: str, view: CandidateView | None, label: str) -> Evaluation:
    """The outcome of one request as the manifest tells it."""
    if view is None or not view.generated:
        error = view.errors()[0] if view is not None and view.errors() else "not generated"
        return Evaluation(key, error=error)
    if view.id != key:
        raise ConfigError(f"candidate {view.id!r} of seed {request.seed} is not the search's {key!r}: the run's "
                          "generator records another name; use a fresh --out")
    if label in view.scores:
        return Evaluation(key, view.scores[label], compute=view.compute_with(label))
    return Evaluation(key, error=view.score_errors.get(label, "not scored"))


def resumable_states(config: CandidatesConfig, root: Path) -> dict[str, SearchState]:
    """The run's saved search states, each checked against ``config`` (the method and its settings, the seed
    base and the duration): a mismatch is one line, raised before the job writes anything."""
    path = RunPaths(root).search_state
    states = load_states(path)
    for state in states.values():
        config.search.check_state(state)
        if (state.seed_base, state.duration) != (config.seed_base, config.duration):
            raise ConfigError(f"{path}: the search of instruction {state.instruction_id!r} started with --seed-base "
                              f"{state.seed_base} and --duration {state.duration:g}, not {config.seed_base} and "
                              f"{config.duration:g}; resume it with those, or use another --out")
    return states


class SearchJob:
    """One run directory's search (see the module docstring): `has_work`, then `run` under the job's lock."""

    def __init__(self, config: CandidatesConfig, root: Path, states: dict[str, SearchState],
                 policy: Callable[[Sequence[str]], Policy], counts: JobCounts, console: Console) -> None:
        """``states``: the run's saved states, checked (`resumable_states`)."""
        self.config, self.root, self.policy, self.counts, self.console = config, root, policy, counts, console
        self.method: SearchMethod = config.search
        self.paths = RunPaths(root)
        self.states = states

    def has_work(self) -> bool:
        """Whether some instruction's search is not finished."""
        return any(inst.id not in self.states or not self.states[inst.id].done for inst in self.config.instructions)

    def run(self, log: RunLog, generators: GeneratorPool | None, scorers: ScorerPool, progress: Any) -> None:
        """Run every unfinished search to its end, one step of all of them at a time."""
        if generators is None:
            return
        with generators, scorers:
            name = generators.call("name")
            generators.call("check_search", self.method, self.config.duration, self.config.params)
            axes = scorers.axes
            policy = self.policy(axes)
            for inst in self.config.instructions:
                self.states.setdefault(inst.id, self.method.start(inst.id, name, self.config.duration,
                                                                  self.config.seed_base))
            while True:
                active = [inst for inst in self.config.instructions if not self.states[inst.id].done]
                if not active:
                    return
                asked = {inst.id: self.method.ask(self.states[inst.id]) for inst in active}
                plan = self._plan(active, asked, log)
                run_pipeline(plan, DiskSink(self.root, log, self.counts, self.config.reward.label),
                             generators=generators, scorers=scorers, schedule=self.config.pool.resolved_schedule,
                             progress=progress)
                by_seed = views_by_seed(log.views.values())   # with this step's candidates
                for inst in active:
                    state = self.states[inst.id]
                    evaluations = [_evaluation(r, r.candidate_id(inst.id, state.generator),
                                               by_seed.get((inst.id, r.seed)), self.config.reward.label)
                                   for r in asked[inst.id]]
                    self.states[inst.id] = self.method.tell(state, evaluations, policy, axes)
                save_states(self.paths.search_state, self.states)

    def _plan(self, active: Sequence[Instruction], asked: dict[str, list[Request]], log: RunLog) -> JobPlan:
        """The step's tickets (finished candidates reused) with their requests and the parents they continue."""
        by_seed = views_by_seed(log.views.values())
        tickets: dict[str, list[Ticket]] = {}
        requests: dict[str, dict[int, Request]] = {}
        parents: dict[str, Candidate] = {}
        for inst in active:
            base = self.states[inst.id].seed_base
            own = []
            for request in asked[inst.id]:
                ticket = seed_ticket(by_seed.get((inst.id, request.seed)), request.seed - base, request.seed,
                                     self.root, self.config.reward.label, self.config.retry_errors, self.counts,
                                     self.console)
                if ticket is None:
                    continue
                own.append(ticket)
                if ticket.key is None and request.kind == "extend" and request.lineage.parent not in parents:
                    parents[request.lineage.parent] = load_candidate(self.root, log.views[request.lineage.parent])
            tickets[inst.id] = own
            requests[inst.id] = {r.seed: r for r in asked[inst.id]}
        return JobPlan(list(active), tickets, float(self.config.duration), dict(self.config.params),
                       self.config.gen_batch_size, self.config.pool.score_batch_size, requests, parents)
