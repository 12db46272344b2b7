"""rerank: generate candidates, score them in parallel, keep the best, and measure what best-of-N buys.

- The pipeline: `rerank.stream` (generate -> score -> rank, streaming, one plan for every job) on
  worker pools (`rerank.actor_pool`: Ray actors or in-process; `rerank.gen_pool` generators,
  `rerank.pool` scorers), Ray joined or started by `rerank.ray_session`, progress by `rerank.progress`.
- `rerank.generate`: the main job (``cmirm generate``) into a resumable run directory
  (`rerank.run_records` layout and records, `rerank.run_config` run.json, `rerank.run_dir` lock and
  whole files, `rerank.rerank_run` rankings); `rerank.best_of_n`: `best_of_n` / `@best_of` in memory.
- `rerank.search`: search beyond best-of-N (beam over segments, zero-order noise search) as step
  functions over a resumable state, with compute accounting and lineage; reward-vs-compute curves.
- `rerank.policies`: top-k policies; `rerank.scaling` / `rerank.plots` / `rerank.scaling_run`: exact
  best-of-N curves (``cmirm scaling``); `rerank.synthetic`: sleeping stand-ins for benchmarks and tests.
- `rerank.listen`: the HTML report, the A/B review app and human votes as preference pairs
  (``cmirm report``, ``cmirm review``, ``cmirm votes``).
- `rerank.cli`: the ``generate``, ``rerank`` and ``scaling`` commands.
- `rerank.serve`: the batched reward server (``cmirm serve``, Ray Serve); `rerank.rl`: any scorer as
  the reward function of an RL trainer (`make_reward_fn`).

Submodules are imported on use, so ``import rerank`` stays cheap.
"""
