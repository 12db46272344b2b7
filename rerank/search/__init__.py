"""Search beyond best-of-N: spend a budget of generated audio on the candidates a reward model likes.

Methods (one module each, one interface, `SearchMethod`; specs parsed by `parse_search`):

- ``best-of-n`` (`BestOfNSearch`): N independent candidates; what `rerank.best_of_n` runs.
- ``beam`` (`BeamSearch`): segment-level beam search for generators that continue clips.
- ``noise`` (`NoiseSearch`): zero-order search over a diffusion generator's initial noise.
- ``smc`` (`SmcSearch`): particles resampled over segments by exp(lambda x reward) (FK steering).

A method is a step function over a serialisable `SearchState` (``ask`` -> `Request`s, ``tell``
<- `Evaluation`s), so any executor can run it and resume it between steps; `run_search` is the
in-memory one and `search` the entry point for scripts::

    from rerank.search import search
    result = search("beam:width=2,segment=5", generator, "calm piano", scorer=scorer, budget=8, duration=10)
    best = result.top(1)[0]   # .candidate (audio, lineage, compute), .scores, .composite
    result.compute            # everything the search generated, pruned candidates included

Every candidate carries its `cmirm_plugin.records.Lineage`; `regenerate` makes it again from it.
"""

from rerank.search.beam import BeamSearch
from rerank.search.best_of_n import BestOfNSearch
from rerank.search.driver import RankedCandidate, SearchResult, rank_candidates, run_search, search
from rerank.search.execute import CandidateStore, MemoryStore, generate_requests, regenerate
from rerank.search.method import SearchMethod
from rerank.search.noise import NoiseSearch, noise_latents
from rerank.search.smc import SmcSearch
from rerank.search.scoring import ScoringStep, scoring_step
from rerank.search.spec import METHODS, parse_search
from rerank.search.state import Evaluation, Node, Request, SearchState

__all__ = [
    "METHODS", "BeamSearch", "BestOfNSearch", "CandidateStore", "Evaluation", "MemoryStore", "Node", "NoiseSearch",
    "RankedCandidate", "Request", "ScoringStep", "SearchMethod", "SearchResult", "SearchState", "SmcSearch", "generate_requests",
    "noise_latents", "parse_search", "rank_candidates", "regenerate", "run_search", "scoring_step", "search",
]
