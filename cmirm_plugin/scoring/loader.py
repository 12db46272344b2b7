"""`load_scorer`: the one way every command and API builds a scorer from a spec.

``generate`` / ``rerank`` pool workers, ``scaling --eval-reward``, ``score``, ``bench --model``,
``pseudo-label --judge reward``, `best_of_n` users and the reward server all call it, so a spec
means the same everywhere (`cmirm_plugin.scoring.spec`) and the settings come from one
`ScoringSettings`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.importing import import_object
from cmirm_plugin.scoring.contract import Scorer, check_scorer
from cmirm_plugin.scoring.settings import ScoringSettings
from cmirm_plugin.scoring.spec import ScorerSpec


def load_scorer(spec: "str | ScorerSpec | None" = None, settings: ScoringSettings | None = None,
                device: str | None = None, *, init_kwargs: Mapping[str, Any] | None = None,
                score_kwargs: Mapping[str, Any] | None = None) -> Scorer:
    """The scorer ``spec`` names (None: the released CMI-RM), scoring with ``settings`` on ``device``.

    CMI-RM specs (``tiny``, a folder, a hub id) give a `RewardScorer`. A reward server's URL gives an
    `HttpScorer` (``init_kwargs``: its client options, e.g. ``timeout``, ``token``; ``device`` is the
    server's business; ``settings`` must agree with the server's). A ``module:Name`` plug-in
    is called with ``init_kwargs`` plus ``device`` and ``settings`` when its signature takes them
    (an instance is used as it is); the result must honour the scorer contract, or the official
    CMI-RewardBench plug-in contract (``sr`` + ``score_batch(inputs, batch_size, max_dur)``, no
    ``axes``), which is then called with ``score_kwargs`` through `BenchmarkPluginScorer`.
    """
    spec = ScorerSpec.parse(spec)
    if spec.kind == "http":
        if score_kwargs:
            raise ConfigError(f"score_kwargs apply to package.module:Name scorers, not to the reward server {spec}")
        from cmirm_plugin.scoring.http_client import HttpScorer

        return HttpScorer(spec.location, settings, label=spec.label, **dict(init_kwargs or {}))
    settings = settings or ScoringSettings()
    if spec.is_cmi_rm:
        extra = [name for name, value in (("init_kwargs", init_kwargs), ("score_kwargs", score_kwargs)) if value]
        if extra:
            raise ConfigError(f"{' and '.join(extra)} apply to package.module:Name scorers, not to the CMI-RM "
                              f"checkpoint '{spec}'")
        from cmirm_plugin.scoring.reward_scorer import RewardScorer

        return RewardScorer.from_pretrained(spec.location, settings, device)
    return _load_plugin(spec, settings, device, dict(init_kwargs or {}), dict(score_kwargs or {}))


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):   # some builtins have no signature: pass only what was asked
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _load_plugin(spec: ScorerSpec, settings: ScoringSettings, device: str | None, init_kwargs: dict[str, Any],
                 score_kwargs: dict[str, Any]) -> Scorer:
    obj = import_object(spec.location, "scorer", ConfigError)
    if inspect.isclass(obj) or (callable(obj) and not callable(getattr(obj, "score_batch", None))):
        kwargs = dict(init_kwargs)
        for name, value in (("device", device), ("settings", settings)):
            if _accepts(obj, name):
                kwargs.setdefault(name, value)
        try:
            obj = obj(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"scorer {spec}: cannot call it with arguments {sorted(kwargs)} ({exc})") from exc
    elif init_kwargs:
        raise ConfigError(f"scorer {spec} is an instance; init arguments {sorted(init_kwargs)} cannot apply")
    return as_scorer(obj, str(spec), settings, score_kwargs)


def as_scorer(obj: Any, name: str, settings: ScoringSettings | None = None,
              score_kwargs: Mapping[str, Any] | None = None) -> Scorer:
    """``obj`` as a contract scorer: itself, or wrapped in `BenchmarkPluginScorer` when it follows the
    official CMI-RewardBench plug-in contract instead (``sr`` and ``score_batch`` but no ``axes``)."""
    if getattr(obj, "axes", None) is None and hasattr(obj, "sr") and callable(getattr(obj, "score_batch", None)):
        from cmirm_plugin.scoring.benchmark import BenchmarkPluginScorer

        return BenchmarkPluginScorer(obj, settings, score_kwargs)
    if score_kwargs:
        raise ConfigError(f"score_kwargs apply to CMI-RewardBench plug-ins (score_batch(inputs, batch_size, "
                          f"max_dur, **kwargs)); scorer {name} follows the cmirm contract")
    return check_scorer(obj, name)
