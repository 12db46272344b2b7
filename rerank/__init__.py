"""rerank: score candidates in parallel, keep the best, and measure what best-of-N buys.

- `rerank.pool`: the scorer pool (Ray actors or in-process); `rerank.policies`: top-k policies.
- `rerank.generate`: the main job (``cmirm generate``): generate, score and rank into a resumable
  run directory (`rerank.run_records`, `rerank.run_config`, `rerank.rerank_run`).
- `rerank.best_of_n`: `best_of_n` / `@best_of` in memory.
- `rerank.scaling` / `rerank.plots` / `rerank.scaling_run`: exact best-of-N curves (``cmirm scaling``).
- `rerank.listen`: the HTML report, the A/B review app and human votes as preference pairs
  (``cmirm report``, ``cmirm review``, ``cmirm votes``).
- `rerank.cli`: the ``generate``, ``rerank`` and ``scaling`` commands.
- `rerank.serve`: the batched reward server (``cmirm serve``, Ray Serve); `rerank.rl`: any scorer as
  the reward function of an RL trainer (`make_reward_fn`).

Submodules are imported on use, so ``import rerank`` stays cheap.
"""
