"""Best-of-N scaling curves: from a saved `cmirm generate` run, and from a synthetic score model.

    python examples/reranking/scaling_curve.py --out out/scaling-example            # offline, ~1 min on CPU
    python examples/reranking/scaling_curve.py --out out/scaling-example --docs docs   # also refresh the README plots

1. **A saved run** (the command-line equivalent is ``cmirm generate --tiny ... --out RUN`` then
   ``cmirm scaling --from RUN --out CURVES``): three instructions, 8 tiny-MusicGen candidates
   each, scored by the tiny CMI-RM; `run_scaling` then computes every N = 1, 2, 4, 8 from that
   one pool without generating or scoring again. Tiny models are random, so this curve is noise:
   it shows the files and the plot, not a result.
2. **A synthetic score model**, to show what a curve with signal looks like: every candidate has
   a hidden quality per axis; the *selection* scorer sees it through noise that grows with the
   modality's difficulty, an independent *evaluation* scorer through its own noise. Selecting by
   the first and reporting the second gives rising, saturating curves with bootstrap bands, one
   line per modality.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cmirm_plugin import MODALITIES, Instruction
from cmirm_plugin.scoring import ScorerSpec
from cmirm_plugin.testing import sine
from rerank.generate import GenerateConfig, run_generate
from rerank.plots import plot_curves
from rerank.policies import parse_policy
from rerank.scaling import scaling_curves, write_curve_csv
from rerank.scaling_run import ScalingConfig, run_scaling


def saved_run_curve(out: Path) -> Path:
    """Generate a tiny run into ``out/run`` (resumable), then its curves into ``out/curves``."""
    reference = sine(330.0, 2.0, 32000).save(out / "ref.wav")
    instructions = [Instruction(text="upbeat pop with bright piano"), Instruction(text="calm ambient pad"),
                    Instruction(text="a rock song in the style of the reference", ref_audio=str(reference.resolve()))]
    run = GenerateConfig(out=out / "run", instructions=instructions, generator="tiny-musicgen",
                         reward=ScorerSpec.parse("tiny"), n=8, k=2, duration=0.5, gen_batch_size=8)
    run_generate(run)
    result = run_scaling(ScalingConfig(out=out / "curves", policy="zsum", source=run.out, ks=(1, 2), n_boot=500))
    return next(path for path in result.files if path.name == "curve.png")


def synthetic_scores(n_instructions: int = 200, m: int = 64, seed: int = 0):
    """Selection and evaluation scores ``[C, 2]`` of a synthetic pool, with instruction ids and modalities."""
    rng = np.random.default_rng(seed)
    noise_by_modality = dict(zip(MODALITIES, (0.5, 0.7, 0.8, 1.0)))   # references and lyrics are harder to judge
    ids, modalities, selection, evaluation = [], {}, [], []
    for i in range(n_instructions):
        modality = MODALITIES[i % len(MODALITIES)]
        modalities[f"inst{i}"] = modality
        offset = rng.normal(0.0, 0.5)                                  # some instructions are easier
        quality = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.3], [0.3, 1.0]], size=m)
        selection.append(offset + quality + rng.normal(0.0, noise_by_modality[modality], size=(m, 2)))
        evaluation.append(quality + rng.normal(0.0, 0.7, size=(m, 2)))
        ids += [f"inst{i}"] * m
    return np.concatenate(selection), np.concatenate(evaluation), ids, modalities


def synthetic_curve(out: Path) -> Path:
    """Curves of the synthetic pool: select with zsum on the selection scores, report the evaluation scores."""
    selection, evaluation, ids, modalities = synthetic_scores()
    curves = scaling_curves(selection, ids, modalities, parse_policy("zsum"), evaluation_scores=evaluation,
                            selection_scorer="synthetic-selection", evaluation_scorer="synthetic-evaluation",
                            ks=(1,), n_boot=1000)
    write_curve_csv(curves, out / "synthetic_curve.csv")
    return plot_curves(curves, out / "synthetic_curve.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/scaling-example"))
    parser.add_argument("--docs", type=Path, default=None, help="also copy the two plots here (the README's images)")
    args = parser.parse_args()
    tiny_png = saved_run_curve(args.out)
    synthetic_png = synthetic_curve(args.out)
    print(f"tiny-model curve (noise): {tiny_png}\nsynthetic curve: {synthetic_png}")
    if args.docs is not None:
        args.docs.mkdir(parents=True, exist_ok=True)
        for source, name in ((tiny_png, "scaling_tiny.png"), (synthetic_png, "scaling_synthetic.png")):
            (args.docs / name).write_bytes(source.read_bytes())
            print(f"copied to {args.docs / name}")


if __name__ == "__main__":
    main()
