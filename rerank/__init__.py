"""rerank: score candidates in parallel, keep the best, and measure what best-of-N buys.

- `rerank.pool`: the scorer pool (Ray actors or in-process); `rerank.policies`: top-k policies.
- `rerank.generate`: the main job (``cmirm generate``): generate, score and rank into a resumable
  run directory (`rerank.run_records`, `rerank.run_config`, `rerank.rerank_run`).
- `rerank.best_of_n`: `best_of_n` / `@best_of` in memory.
- `rerank.search`: search beyond best-of-N (beam over segments, zero-order noise search) as step
  functions over a resumable state, with compute accounting and lineage; reward-vs-compute curves.
- `rerank.scaling` / `rerank.plots` / `rerank.scaling_run`: exact best-of-N curves (``cmirm scaling``).
- `rerank.cli`: the ``generate``, ``rerank`` and ``scaling`` commands.

Submodules are imported on use, so ``import rerank`` stays cheap.
"""
