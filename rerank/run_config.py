"""``run.json``: how a run directory's candidates were made and scored, and the rerun check.

A run directory is one pool of candidates. Rerunning into it may add candidates (more seeds,
more instructions) and may rank them differently, but must not mix candidates made or scored
differently. So `run.json` holds three parts:

* ``result``: the settings that determine a candidate's audio and scores (generator, its
  parameters, duration, the reward model's label, and the scoring settings that change scores:
  crop, missing-input policy, dtype). A rerun with any of them different is refused, naming each
  difference;
* ``request``: what the last invocation asked for (n, seeds, k, policy, number of instructions);
* ``pool``: how it was computed (backend, actors, batch sizes, device).

``request`` and ``pool`` never change results and are simply overwritten. (Generation batch size
is a ``pool`` setting: batching changes a candidate's audio only by float rounding, see
`generators.musicgen`.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.scoring.settings import ScoringSettings
from rerank.run_records import CandidateView, RunPaths, write_atomic

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ResultSettings:
    """The settings a rerun must repeat (see the module docstring).

    ``dtype`` is None in ``run.json`` files of versions that did not record it; it is then not compared.
    """

    generator: str
    params: dict[str, Any]
    duration: float
    reward: str
    max_dur: float
    missing: str
    dtype: str | None = None

    def scoring(self) -> ScoringSettings:
        """The run's scoring settings (every scorer of the run, evaluation models too, scores alike)."""
        return ScoringSettings(max_dur=self.max_dur, missing=self.missing, dtype=self.dtype or "auto")  # type: ignore[arg-type]

    def differences(self, saved: "ResultSettings") -> list[str]:
        """``field: saved vs now`` for every setting that differs from ``saved`` (unrecorded ones skipped)."""
        now, before = _plain(asdict(self)), _plain(asdict(saved))
        return [f"{key}: {before[key]!r} (saved) vs {now[key]!r} (now)" for key in now
                if before.get(key) is not None and now[key] != before[key]]


@dataclass
class RunConfig:
    """The content of ``run.json``."""

    result: ResultSettings
    request: dict[str, Any] = field(default_factory=dict)
    pool: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "result": asdict(self.result), "request": self.request, "pool": self.pool}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "run.json") -> "RunConfig":
        if data.get("format") != FORMAT_VERSION:
            raise ConfigError(f"{source}: unknown format {data.get('format')!r} (this cmirm writes {FORMAT_VERSION})")
        try:
            result = ResultSettings(**data["result"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{source}: field 'result' is missing or malformed ({exc})") from exc
        return cls(result, dict(data.get("request") or {}), dict(data.get("pool") or {}))


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists), so saved and new values compare."""
    return json.loads(json.dumps(value))


def load_run_config(root: str | Path) -> RunConfig | None:
    """The ``run.json`` of a run directory, or None when there is none."""
    path = RunPaths(Path(root)).run_config
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    return RunConfig.from_dict(data, str(path))


def save_run_config(root: str | Path, config: RunConfig, *, holds_candidates: bool) -> Path:
    """Check ``config`` against the directory's saved ``run.json``, then save it.

    A different ``result`` is refused once the directory holds candidates (``holds_candidates``:
    its manifest has a record; the caller has read it); before that (a run that stopped at a bad
    option, before its first candidate) the new settings simply replace the old.
    """
    paths = RunPaths(Path(root))
    saved = load_run_config(paths.root)
    if saved is not None and holds_candidates:
        differences = config.result.differences(saved.result)
        if differences:
            raise ConfigError(
                f"{paths.run_config}: this directory holds candidates made or scored with other settings:\n  "
                + "\n  ".join(differences)
                + "\nRepeat the saved settings to resume, or choose another --out. (n, seeds, k, policy and pool "
                  "options may change between runs.)")
    paths.root.mkdir(parents=True, exist_ok=True)
    write_atomic(paths.run_config, json.dumps(_plain(config.to_dict()), indent=2) + "\n")
    return paths.run_config


def selection_scorer(run_dir: str | Path, views: Iterable[CandidateView], saved: RunConfig | None) -> str:
    """The run's reward model label (its ``run.json``, ``saved``), or the only scorer its records name."""
    if saved is not None:
        return saved.result.reward
    scorers = sorted({s for v in views for s in v.scores})
    if len(scorers) != 1:
        raise ConfigError(f"{run_dir}: no run.json and {len(scorers)} scorers in the manifest "
                          f"({', '.join(scorers) or 'none'}), so the selection model is unknown; "
                          "name it with --scorer LABEL")
    return scorers[0]
