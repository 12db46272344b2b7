"""Search methods against best-of-N at equal compute: reward of the selected candidate per budget.

Toy problems by default (CPU, about a minute; `rerank.search.toys`):

    python benchmarks/search_vs_best_of_n.py --out docs

- segments: `SegmentToy` 1 s clips of four 0.25 s segments; best-of-N against
  ``beam:width=2,segment=0.25`` (and width 4) and ``smc:segment=0.25,lambda=20``;
- diffusion: `DiffusionToy`, 10 steps with guidance; best-of-N (random search) against
  ``noise:neighbors=4,radius=0.5``.

Every method at budget N generates N clips' worth of audio (N x duration seconds) per
instruction. The script prints a Markdown table (mean reward over instructions, 95% bootstrap
band) and writes ``search_<problem>.png`` (`rerank.plots.plot_compute_curves`) and
``search_<problem>.json`` (the `ComputeRow`s) under ``--out``. Toy gains show what each method
exploits, not what it buys on music.

Real models (a GPU, downloads the checkpoints), e.g. MusicGen with beam search and CMI-RM:

    python benchmarks/search_vs_best_of_n.py --generator musicgen-small --scorer HaiwenXia/CMI-RM \\
        --device cuda --duration 10 --methods best-of-n,beam:width=2,segment=2.5 --budgets 4,8,16 --out out/search
    python benchmarks/search_vs_best_of_n.py --generator stable-audio-open --scorer HaiwenXia/CMI-RM \\
        --device cuda --duration 10 --methods best-of-n,noise:neighbors=4,radius=0.5 --param steps=50 --out out/search
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from cmirm_plugin.records import Instruction
from rerank.plots import plot_compute_curves
from rerank.search import parse_search, search
from rerank.search.curves import ComputeRow, compute_curves
from rerank.search.toys import DiffusionToy, SegmentToy, ToyQualityScorer

DEFAULT_PROMPTS = ("calm piano ballad", "upbeat pop with bright synths", "dark ambient drone", "acoustic folk guitar")


def run_problem(name: str, generator: Any, scorer: Any, methods: Sequence[str], budgets: Sequence[int],
                instructions: Sequence[Instruction], duration: float, reward: str, params: dict[str, Any],
                policy: str | None) -> list[ComputeRow]:
    """Every method at every budget over every instruction; one `ComputeRow` per (method, budget)."""
    outcomes = {}
    for method in methods:
        for budget in budgets:
            results = []
            for i, instruction in enumerate(instructions):
                result = search(method, generator, instruction, scorer=scorer, policy=policy, budget=budget,
                                duration=duration, seed_base=1000 * i, **params)
                results.append((result.top(1)[0].scores[reward], result.compute))
            outcomes[(method, budget)] = results
            print(f"  {name}: {method} at budget {budget} done", file=sys.stderr)
    return compute_curves(outcomes, reward=reward)


def table(problem: str, rows: Sequence[ComputeRow]) -> str:
    """A Markdown table: one line per budget, one column per method (mean [95% band])."""
    methods = list(dict.fromkeys(row.method for row in rows))
    budgets = sorted({row.budget for row in rows})
    cell = {(row.method, row.budget): row for row in rows}
    lines = [f"| {problem}: budget (clips) | audio s | " + " | ".join(f"`{m}`" for m in methods) + " |",
             "|---:|---:|" + "---:|" * len(methods)]
    for budget in budgets:
        first = cell[(methods[0], budget)]
        values = " | ".join(f"{cell[(m, budget)].mean:.3f} [{cell[(m, budget)].ci_low:.3f}, "
                            f"{cell[(m, budget)].ci_high:.3f}]" for m in methods)
        lines.append(f"| {budget} | {first.audio_seconds:g} | {values} |")
    return "\n".join(lines)


def write(out: Path, problem: str, rows: Sequence[ComputeRow], compute_axes: Sequence[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"search_{problem}.json").write_text(json.dumps([row.to_dict() for row in rows], indent=1) + "\n")
    plot_compute_curves(rows, out / f"search_{problem}.png", compute_axes=compute_axes,
                        title=f"{problem}: reward of the selected candidate against compute (95% band over "
                              f"{rows[0].n_instructions} instructions)")


def toy_problems(args: argparse.Namespace) -> None:
    instructions = [Instruction(text=f"toy instruction {i}") for i in range(args.instructions)]
    scorer = ToyQualityScorer()
    problems = [
        ("toy_segments", SegmentToy(0.25), ["best-of-n", "beam:width=2,segment=0.25", "beam:width=4,segment=0.25",
                                            "smc:segment=0.25,lambda=20"],
         1.0, {}, ("audio_seconds", "work_units")),
        ("toy_diffusion", DiffusionToy(), ["best-of-n", "noise:neighbors=4,radius=0.5"], 0.25, {"steps": 10},
         ("audio_seconds", "model_evals")),
    ]
    for name, generator, methods, duration, params, axes in problems:
        rows = run_problem(name, generator, scorer, methods, args.budgets, instructions, duration, "quality", params,
                           None)
        print(table(name, rows) + "\n")
        write(args.out, name, rows, axes)


def real_problem(args: argparse.Namespace) -> None:
    from cmirm_plugin.scoring import load_scorer
    from generators import build_generator

    generator = build_generator(args.generator, device=args.device)
    scorer = load_scorer(args.scorer, device=args.device)
    reward = args.reward or ("musicality" if "musicality" in scorer.axes else scorer.axes[0])
    instructions = [Instruction(text=text) for text in args.prompts]
    params = dict(_param(p) for p in args.param)
    name = args.generator.replace("/", "-").replace(":", "-")
    rows = run_problem(name, generator, scorer, args.methods, args.budgets, instructions, args.duration, reward,
                       params, args.policy)
    print(table(name, rows))
    write(args.out, name, rows, ("audio_seconds", "work_units", "total_seconds"))


def _param(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=lambda s: [int(b) for b in s.split(",")], default=[4, 8, 16, 32, 64])
    parser.add_argument("--instructions", type=int, default=16, help="toy instructions per point")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    parser.add_argument("--generator", help="a registry name (real models instead of the toys)")
    parser.add_argument("--scorer", default="HaiwenXia/CMI-RM", help="a scorer spec (load_scorer)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--methods", type=lambda s: [m.spec() for m in map(parse_search, _split_methods(s))],
                        default=["best-of-n", "beam:width=2,segment=2.5"])
    parser.add_argument("--prompts", nargs="+", default=list(DEFAULT_PROMPTS))
    parser.add_argument("--policy", default=None)
    parser.add_argument("--reward", default=None, help="the axis reported (default: musicality, else the first)")
    parser.add_argument("--param", action="append", default=[], help="generator parameter key=value (repeatable)")
    args = parser.parse_args(argv)
    (real_problem if args.generator else toy_problems)(args)


def _split_methods(text: str) -> list[str]:
    """``best-of-n,beam:width=2,segment=2.5`` -> one spec per method (a method name starts each)."""
    specs: list[str] = []
    for part in text.split(","):
        if specs and "=" in part and ":" not in part:
            specs[-1] += "," + part
        else:
            specs.append(part)
    return specs


if __name__ == "__main__":
    main()
