"""The defaults of the generate / rerank / scaling jobs and of their workers: their one home.

The job configs (`rerank.generate`, `rerank.pool_options`, `rerank.pool`, `rerank.gen_pool`,
`rerank.scaling_run`, `rerank.policies`) take their defaults from here, and so does the command
line's ``--help``. This module imports nothing, so ``--help`` shows the defaults without loading
the pipeline (torch, Ray and matplotlib take seconds). Options whose default is "none given"
(e.g. ``--policy``, ``--device``) are None where they are declared, not here.
"""

# -- candidates (generate, scaling) -------------------------------------------------------------
#: Candidates per instruction (``-n``).
CANDIDATES = 8
#: Seconds of audio per candidate (``--duration``).
DURATION = 10.0
#: Candidate i of an instruction gets seed ``SEED_BASE + i`` (``--seed-base``).
SEED_BASE = 0
#: Candidates per generator call (``--gen-batch-size``).
GEN_BATCH_SIZE = 1

#: The search that makes the candidates (``--search``): N independent ones, the best kept.
SEARCH = "best-of-n"

# -- selection ----------------------------------------------------------------------------------
#: Candidates kept per instruction when no k is given (all of them when there are fewer).
K = 2
#: The selection policy of a scorer with a ``musicality`` axis (CMI-RM) when none is given.
POLICY = "axis:musicality"

# -- workers ------------------------------------------------------------------------------------
#: ``--backend``: Ray when more than one worker is asked for, else in-process.
BACKEND = "auto"
#: ``--schedule``: stream on Ray (scorers work while generators do), phased in-process.
SCHEDULE = "auto"
#: Generator actors and the CPUs each reserves.
GEN_ACTORS = 1
GEN_CPUS_PER_ACTOR = 1.0
#: Scorer actors and the GPUs each reserves.
NUM_ACTORS = 1
NUM_GPUS_PER_ACTOR = 0.0
#: Candidates per scorer batch.
SCORE_BATCH_SIZE = 8
#: Tasks queued on each worker.
MAX_IN_FLIGHT = 2

# -- scaling curves -----------------------------------------------------------------------------
#: Values of k the curves are drawn for (``--ks``).
KS = (1,)
#: Bootstrap resamples over instructions, the band's level, and the resampling seed.
N_BOOT = 1000
CI = 0.95
SCALING_SEED = 0
