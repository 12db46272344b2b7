"""The runnable examples under examples/reranking run as a user runs them (offline, tiny models)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from PIL import Image

from rerank.plots import PNG_SIZE

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(300)


def _run(script: str, out: Path, cache: Path) -> str:
    env = {**os.environ, "CMIRM_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "reranking" / script), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_best_of_n_example(tmp_path):
    out = tmp_path / "bon"
    printed = _run("best_of_n.py", out, tmp_path / "cache")
    lines = [line for line in printed.splitlines() if line.startswith(("rank ", "@best_of"))]
    assert [line.split(":")[0] for line in lines] == ["rank 1", "rank 2", "@best_of"]
    for name in ("best_of_n_rank1.wav", "best_of_n_rank2.wav", "decorated_best.wav"):
        info = sf.info(str(out / name))
        assert (info.samplerate, info.frames) == (22050, 3 * 22050)


def test_scaling_curve_example(tmp_path):
    out = tmp_path / "sc"
    printed = _run("scaling_curve.py", out, tmp_path / "cache")
    for png in (out / "curves" / "curve.png", out / "synthetic_curve.png"):
        assert str(png) in printed
        assert Image.open(png).size == PNG_SIZE
    assert (out / "curves" / "curve.csv").read_text().startswith("n,k,axis,modality,mean")
    assert len(list((out / "run" / "candidates").glob("*.wav"))) == 24      # 3 instructions x 8 candidates
