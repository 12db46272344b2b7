"""Scoring: any reward model behind one contract, one loader and one set of defaults.

* `contract`: the `Scorer` protocol (``sr``, ``axes``, ``score_batch(audios, instructions)``),
  `score_isolated` (bad clips get errors, the rest scores), `cmi_columns`;
* `settings`: `ScoringSettings`, the only home of the scoring defaults (crop, missing inputs,
  dtype, batch sizes);
* `spec`: `ScorerSpec`, what ``--reward`` / ``--eval-reward`` / ``--judge-model`` / ``bench --model``
  accept (``tiny``, a folder, a hub id, ``package.module:Name``, ``http://host:port``) and the label
  records carry;
* `loader`: `load_scorer(spec, settings, device)`, the one way to build a scorer;
* `wire` / `http_client`: the reward server's JSON format, and `HttpScorer`, a ``cmirm serve``
  server behind the contract (``load_scorer("http://host:port")``);
* `reward_scorer`: `RewardScorer`, CMI-RM behind the contract (prompt cache, batch independence);
* `benchmark`: the CMI-RewardBench plug-in contract in both directions.

Names are imported on first use, so ``import cmirm_plugin.scoring`` stays light.
"""

from cmirm_plugin.importing import lazy_exports

_EXPORTS = {
    "Scorer": "cmirm_plugin.scoring.contract", "ScoreOutcome": "cmirm_plugin.scoring.contract",
    "check_scorer": "cmirm_plugin.scoring.contract", "score_isolated": "cmirm_plugin.scoring.contract",
    "cmi_columns": "cmirm_plugin.scoring.contract",
    "ScoringSettings": "cmirm_plugin.scoring.settings", "MissingPolicy": "cmirm_plugin.scoring.settings",
    "ScorerSpec": "cmirm_plugin.scoring.spec", "TINY": "cmirm_plugin.scoring.spec",
    "load_scorer": "cmirm_plugin.scoring.loader",
    "HttpScorer": "cmirm_plugin.scoring.http_client", "ServerUnavailable": "cmirm_plugin.scoring.http_client",
    "RewardScorer": "cmirm_plugin.scoring.reward_scorer", "autocast": "cmirm_plugin.scoring.reward_scorer",
    "BenchmarkAdapter": "cmirm_plugin.scoring.benchmark", "BenchmarkBatchInput": "cmirm_plugin.scoring.benchmark",
    "BenchmarkModel": "cmirm_plugin.scoring.benchmark", "BenchmarkPluginScorer": "cmirm_plugin.scoring.benchmark",
    "CMIRMBenchmarkModel": "cmirm_plugin.scoring.benchmark",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
