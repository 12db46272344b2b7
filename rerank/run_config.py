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
`generators.musicgen`.) The file is rewritten only when its content changes, so rerunning a
finished job works on a read-only directory.

A ``run.json`` that is not a JSON object of this layout is refused with a message naming it. One
that is missing while the manifest holds candidates is checked against the records themselves
(they carry the generator's name, the duration and the parameters, and the scores name their
scorer), so a rerun with another duration cannot reuse the old candidates; then it is written anew.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.scoring.settings import ScoringSettings
from rerank.run_dir import write_if_changed
from rerank.run_records import CandidateView, RunPaths

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ResultSettings:
    """The settings a rerun must repeat (see the module docstring).

    ``dtype`` and ``search`` (the search method: ``best-of-n``, or a search's full spec such as
    ``beam:width=2,expand=2,segment=5``) are None in ``run.json`` files of versions that did not
    record them; they are then not compared.
    """

    generator: str
    params: dict[str, Any]
    duration: float
    reward: str
    max_dur: float
    missing: str
    dtype: str | None = None
    search: str | None = None

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
    def from_dict(cls, data: Any, source: str = "run.json") -> "RunConfig":
        """Parse and check a ``run.json`` document; errors name ``source`` and the field."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}; {_REBUILD}")
        if data.get("format") != FORMAT_VERSION:
            raise ConfigError(f"{source}: unknown format {data.get('format')!r} (this cmirm writes {FORMAT_VERSION})")
        result = data.get("result")
        if not isinstance(result, dict):
            raise ConfigError(f"{source}: field 'result' is missing or not an object; {_REBUILD}")
        for key, kinds in _RESULT_FIELDS.items():
            value = result.get(key)
            if key not in result and key not in ("dtype", "search") or not isinstance(value, kinds) or isinstance(value, bool):
                raise ConfigError(f"{source}: field 'result.{key}' is missing or malformed ({value!r}); {_REBUILD}")
        unknown = sorted(set(result) - set(_RESULT_FIELDS))
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown} in 'result'; {_REBUILD}")
        for key in ("request", "pool"):
            if not isinstance(data.get(key) or {}, dict):
                raise ConfigError(f"{source}: field '{key}' must be an object; {_REBUILD}")
        return cls(ResultSettings(**result), dict(data.get("request") or {}), dict(data.get("pool") or {}))


#: What to do about a broken ``run.json``.
_REBUILD = "delete it and rerun: it is rebuilt from the manifest's records"
#: The types of ``result``'s fields.
_RESULT_FIELDS: dict[str, tuple[type, ...]] = {
    "generator": (str,), "params": (dict,), "duration": (int, float), "reward": (str,), "max_dur": (int, float),
    "missing": (str,), "dtype": (str, type(None)), "search": (str, type(None)),
}


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists), so saved and new values compare."""
    return json.loads(json.dumps(value))


def load_run_config(root: str | Path) -> RunConfig | None:
    """The ``run.json`` of a run directory, or None when there is none (a broken one is a `ConfigError`)."""
    path = RunPaths(Path(root)).run_config
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (binary content); {_REBUILD}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); {_REBUILD}") from None
    return RunConfig.from_dict(data, str(path))


def record_differences(result: ResultSettings, views: Sequence[CandidateView], generator_name: str) -> list[str]:
    """How the candidates' own records differ from ``result`` (a job's settings): a lost ``run.json``'s check.

    Records carry the generator's recorded name (``generator_name`` is what this job's generator
    records), the duration, the parameters (only the ones the job gives are compared: the others
    may be defaults) and, in score records, the scorer. Scoring settings are not in the records.
    """
    found: list[str] = []
    names = sorted({v.generator for v in views})
    if names != [generator_name]:
        found.append(f"generator: {', '.join(map(repr, names))} (recorded) vs {generator_name!r} (now)")
    durations = sorted({float(v.params["duration"]) for v in views if "duration" in v.params})
    if any(not math.isclose(d, result.duration, rel_tol=0, abs_tol=1e-9) for d in durations):
        found.append(f"duration: {', '.join(map(repr, durations))} (recorded) vs {result.duration!r} (now)")
    for key, value in _plain(result.params).items():
        recorded = sorted({json.dumps(v.params.get(key), sort_keys=True) for v in views})
        if recorded != [json.dumps(value, sort_keys=True)]:
            found.append(f"params.{key}: {', '.join(recorded)} (recorded) vs {json.dumps(value)} (now)")
    scorers = sorted({s for v in views for s in (*v.scores, *v.score_errors)} - {result.reward})
    if scorers:
        found.append(f"reward: {', '.join(map(repr, scorers))} (recorded) vs {result.reward!r} (now)")
    return found


def save_run_config(root: str | Path, config: RunConfig, views: Sequence[CandidateView],
                    generator_name: str | None = None) -> Path:
    """Check ``config`` against the directory's ``run.json`` (or, when it is lost, against ``views``), then save it.

    ``views`` are the directory's candidates (the caller has read the manifest). A different
    ``result`` is refused once the directory holds candidates; before that (a run that stopped at a
    bad option, before its first candidate) the new settings simply replace the old. Without a
    ``run.json`` the records are compared instead (`record_differences`; ``generator_name`` is the
    name this job's candidates record, default the registry name). The file is written only when
    its content changes.
    """
    paths = RunPaths(Path(root))
    saved = load_run_config(paths.root)
    if views:
        if saved is not None:
            differences = config.result.differences(saved.result)
            where = f"{paths.run_config}: this directory holds candidates made or scored with other settings"
        else:
            differences = record_differences(config.result, views, generator_name or config.result.generator)
            where = (f"{paths.run_config} is missing, and the records of {paths.manifest} show candidates made or "
                     "scored with other settings")
        if differences:
            raise ConfigError(
                f"{where}:\n  " + "\n  ".join(differences)
                + "\nRepeat the saved settings to resume, or choose another --out. (n, seeds, k, policy and pool "
                  "options may change between runs.)")
    write_if_changed(paths.run_config, json.dumps(_plain(config.to_dict()), indent=2) + "\n")
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
