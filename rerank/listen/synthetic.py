"""Synthetic run directories: the records `cmirm generate` writes, with tones instead of music.

For tests, benchmarks and screenshots of the listening tools: no model runs. The files are made
by the run directory's own writers (`rerank.run_records` records, `rerank.run_config`,
`rerank.rerank_run.rank_run`), so a synthetic run reads like a real one. Clips are short sine
tones (a few distinct files, hard-linked where the file system allows, so a 16,000-candidate run
stays cheap); scores are seeded random numbers.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import torch

from cmirm_plugin.audio import Audio
from cmirm_plugin.manifest import ManifestWriter
from cmirm_plugin.records import Candidate, Instruction, Scores
from generators.base import CandidateFailure
from rerank.policies import default_policy, parse_policy
from rerank.rerank_run import rank_run
from cmirm_plugin.scoring.settings import ScoringSettings
from rerank.run_config import ResultSettings, RunConfig, save_run_config
from rerank.run_records import RunPaths, candidate_record, failure_record, read_run, score_record

GENERATOR = "synthetic-tones"
SCORER = "synthetic-v1"
_TONES = 8


@dataclass(frozen=True)
class SyntheticRun:
    """How to make a synthetic run (see `write_synthetic_run`).

    Instruction i has lyrics when ``i % lyrics_every == 1`` and a reference clip when
    ``i % ref_every == 2`` (0 = never); candidate j of instruction i fails to generate when
    ``fail_every`` and ``(i * n_candidates + j) % fail_every == fail_every - 1``. ``policy``
    defaults to `default_policy` of the axes.
    """

    n_instructions: int = 3
    n_candidates: int = 4
    axes: tuple[str, ...] = ("alignment", "musicality")
    seconds: float = 0.25
    sample_rate: int = 16000
    k: int = 2
    seed: int = 0
    lyrics_every: int = 3
    ref_every: int = 4
    fail_every: int = 0
    texts: Sequence[str] = ()
    policy: str | None = None


def _tone(path: Path, frequency: float, seconds: float, sample_rate: int) -> Path:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) * 40)
    sf.write(path, (0.2 * envelope * np.sin(2 * np.pi * frequency * t)).astype(np.float32), sample_rate,
             subtype="PCM_16")
    return path


def _place(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_synthetic_run(root: str | Path, spec: SyntheticRun = SyntheticRun()) -> Path:
    """Write a ranked run directory at ``root`` (which must not hold a run yet) and return it."""
    paths = RunPaths(Path(root))
    if paths.manifest.exists():
        raise FileExistsError(f"{paths.manifest}: already a run directory")
    rng = np.random.default_rng(spec.seed)
    tones_dir = paths.root / "tones"
    tones_dir.mkdir(parents=True, exist_ok=True)
    tones = [_tone(tones_dir / f"tone{i}.wav", 220.0 * 2 ** (i / 4), spec.seconds, spec.sample_rate)
             for i in range(_TONES)]
    reference = _tone(tones_dir / "reference.wav", 330.0, spec.seconds, spec.sample_rate)
    clip = Audio(torch.zeros(1, int(spec.seconds * spec.sample_rate)), spec.sample_rate)
    paths.candidates.mkdir(exist_ok=True)
    params = {"duration": spec.seconds}
    policy = spec.policy or default_policy(spec.axes)
    save_run_config(paths.root, RunConfig(
        ResultSettings(GENERATOR, {}, spec.seconds, SCORER, **ScoringSettings().score_identity("cpu")),
        {"n": spec.n_candidates, "seed_base": 0, "k": spec.k, "policy": policy,
         "instructions": [f"s{i:05d}" for i in range(spec.n_instructions)]},
        {"backend": "local"}), views=[])
    with ManifestWriter(paths.manifest) as log:
        for i in range(spec.n_instructions):
            text = spec.texts[i % len(spec.texts)] if spec.texts else f"synthetic instruction {i}: a tone in a scale"
            instruction = Instruction(
                text=text, lyrics=f"line one of song {i}\nline two" if spec.lyrics_every and
                i % spec.lyrics_every == 1 else None,
                ref_audio=str(reference.resolve()) if spec.ref_every and i % spec.ref_every == 2 else None,
                id=f"s{i:05d}")
            for j in range(spec.n_candidates):
                if spec.fail_every and (i * spec.n_candidates + j) % spec.fail_every == spec.fail_every - 1:
                    log.append(failure_record(CandidateFailure(instruction.id, GENERATOR, j, "error",
                                                               "synthetic failure", params=params), instruction, j))
                    continue
                candidate = Candidate(clip, instruction.id, GENERATOR, j, params)
                _place(tones[(i + j) % _TONES], paths.candidate_wav(candidate.id))
                log.append(candidate_record(candidate, instruction, j, f"candidates/{candidate.id}.wav"))
                scores = Scores.from_array(rng.normal(size=len(spec.axes)), spec.axes)
                log.append(score_record(candidate.id, SCORER, scores, None))
    rank_run(paths.root, read_run(paths.root), SCORER, parse_policy(policy), spec.k)
    return paths.root
