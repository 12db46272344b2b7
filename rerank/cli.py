"""``cmirm generate``, ``cmirm rerank`` and ``cmirm scaling`` (registered through the ``cmirm.commands`` entry points).

This module only turns options into the typed configs of `rerank.generate`, `rerank.rerank_run`
and `rerank.scaling_run` and prints their results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from cmirm_plugin.errors import ConfigError
from rerank.generate import DEFAULT_MAX_DUR, DEFAULT_POLICY, GenerateConfig, run_generate
from rerank.instructions import cli_instruction, load_prompts
from rerank.policies import parse_policy
from rerank.pool_options import PoolOptions
from rerank.report import print_ranking_summary
from rerank.rerank_run import rank_run
from rerank.run_config import load_run_config, resolve_reward
from rerank.run_records import MANIFEST, read_run
from rerank.scaling_run import ScalingConfig, run_scaling, selection_scorer

#: The generator of ``--tiny`` runs when ``--generator`` is not given.
TINY_GENERATOR = "tiny-musicgen"

_GEN = "Generation"
_POOL = "Scorer pool"
_SEL = "Selection"

Lyrics = Annotated[Optional[str], typer.Option("--lyrics", "-l", help="Lyrics, or the path of a lyrics text file.")]
RefAudio = Annotated[Optional[str], typer.Option("--ref-audio", "-r", help="Reference audio file.")]
Prompts = Annotated[Optional[Path], typer.Option(
    "--prompts", help="JSONL, one instruction per line: text, lyrics, ref_audio (relative to the file), optional id.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output directory (rerunning into it resumes).")]
GeneratorName = Annotated[Optional[str], typer.Option(
    "--generator", "-g", rich_help_panel=_GEN,
    help=f"Generator name (musicgen-small, stable-audio-open, py:module:fn, ...) (--tiny: {TINY_GENERATOR}).")]
RewardOpt = Annotated[Optional[str], typer.Option(
    "--reward", "-m", help="Reward model: hub id or folder (default HaiwenXia/CMI-RM).")]
Policy = Annotated[str, typer.Option(
    "--policy", rich_help_panel=_SEL,
    help="axis:musicality | weighted:alignment=0.5,musicality=0.5 | zsum | lex:alignment,tol=0.1 | pareto.")]
Minimums = Annotated[Optional[list[str]], typer.Option(
    "--min", rich_help_panel=_SEL, help="Threshold axis=value (repeatable): candidates below it are never selected.")]
Duration = Annotated[float, typer.Option("--duration", rich_help_panel=_GEN, help="Seconds per candidate.")]
Temperature = Annotated[Optional[float], typer.Option(
    "--temperature", rich_help_panel=_GEN, help="Sampling temperature (LM generators).")]
TopK = Annotated[Optional[int], typer.Option("--top-k", rich_help_panel=_GEN, help="Top-k sampling (LM generators).")]
TopP = Annotated[Optional[float], typer.Option(
    "--top-p", rich_help_panel=_GEN, help="Nucleus sampling; > 0 overrides top-k.")]
Guidance = Annotated[Optional[float], typer.Option(
    "--guidance", rich_help_panel=_GEN, help="Classifier-free guidance scale.")]
Steps = Annotated[Optional[int], typer.Option(
    "--steps", rich_help_panel=_GEN, help="Denoising steps (diffusion generators).")]
Params = Annotated[Optional[list[str]], typer.Option(
    "--param", rich_help_panel=_GEN,
    help="Any other generator parameter, key=value (value read as JSON if it parses).")]
SeedBase = Annotated[int, typer.Option(
    "--seed-base", rich_help_panel=_GEN, help="Candidate i gets seed seed_base + i.")]
Seeds = Annotated[Optional[str], typer.Option(
    "--seeds", rich_help_panel=_GEN, help="Explicit comma-separated seeds (one candidate each; replaces -n).")]
GenBatch = Annotated[int, typer.Option("--gen-batch-size", rich_help_panel=_GEN, help="Seeds per generator call.")]
Backend = Annotated[str, typer.Option(
    "--backend", rich_help_panel=_POOL, help="ray | local | auto (local for one actor, else ray).")]
NumActors = Annotated[int, typer.Option("--num-actors", rich_help_panel=_POOL, help="Scorer actors.")]
GpusPerActor = Annotated[float, typer.Option(
    "--num-gpus-per-actor", rich_help_panel=_POOL, help="GPUs per actor (fractions share a GPU).")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads-per-actor", rich_help_panel=_POOL, help="Torch threads per actor (default CPUs / actors).")]
ScoreBatch = Annotated[int, typer.Option(
    "--score-batch-size", rich_help_panel=_POOL, help="Candidates per scoring batch.")]
InFlight = Annotated[int, typer.Option("--max-in-flight", rich_help_panel=_POOL, help="Batches queued per actor.")]
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray-address", rich_help_panel=_POOL, help="Join this Ray cluster.")]
Device = Annotated[Optional[str], typer.Option(
    "--device", help="cpu, cuda, cuda:1 ... for the generator and the scorers (default cuda if available).")]
MaxDur = Annotated[float, typer.Option("--max-dur", help="Seconds of each candidate that are scored.")]
Tiny = Annotated[bool, typer.Option(
    "--tiny", help=f"Offline smoke run: tiny random generator ({TINY_GENERATOR}) and reward model; audio is noise.")]
RetryErrors = Annotated[bool, typer.Option(
    "--retry-errors", help="Regenerate failed candidates and rescore failed scorings of earlier runs.")]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def generation_params(temperature: float | None, top_k: int | None, top_p: float | None, guidance: float | None,
                      steps: int | None, extra: list[str] | None) -> dict[str, Any]:
    """The generator parameters the options set (unset ones keep the generator's defaults)."""
    named = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "guidance_scale": guidance, "steps": steps}
    params = {key: value for key, value in named.items() if value is not None}
    for item in extra or []:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--param expects key=value, got {item!r}")
        if key in params:
            raise ConfigError(f"generator parameter {key!r} is given twice")
        params[key] = _value(text.strip())
    return params


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers, got {text!r}") from None


def _generator_name(generator: str | None, tiny: bool) -> str:
    if generator:
        return generator
    if tiny:
        return TINY_GENERATOR
    raise ConfigError("give --generator NAME (e.g. musicgen-small), or --tiny for an offline smoke run")


def generate(
    text: Annotated[Optional[str], typer.Argument(help="Text description (or use --prompts).")] = None,
    out: Out = ...,
    lyrics: Lyrics = None,
    ref_audio: RefAudio = None,
    prompts: Prompts = None,
    n: Annotated[int, typer.Option("-n", "--n", help="Candidates per instruction.")] = 8,
    k: Annotated[int, typer.Option("-k", "--k", rich_help_panel=_SEL, help="Candidates kept per instruction.")] = 2,
    generator: GeneratorName = None,
    reward: RewardOpt = None,
    policy: Policy = DEFAULT_POLICY,
    minimums: Minimums = None,
    duration: Duration = 10.0,
    temperature: Temperature = None,
    top_k: TopK = None,
    top_p: TopP = None,
    guidance: Guidance = None,
    steps: Steps = None,
    param: Params = None,
    seed_base: SeedBase = 0,
    seeds: Seeds = None,
    gen_batch_size: GenBatch = 1,
    backend: Backend = "auto",
    num_actors: NumActors = 1,
    num_gpus_per_actor: GpusPerActor = 0.0,
    threads_per_actor: Threads = None,
    score_batch_size: ScoreBatch = 8,
    max_in_flight: InFlight = 2,
    ray_address: RayAddress = None,
    device: Device = None,
    max_dur: MaxDur = DEFAULT_MAX_DUR,
    tiny: Tiny = False,
    retry_errors: RetryErrors = False,
) -> None:
    """Sample N candidates per instruction, score them with CMI-RM, keep the top k.

    Writes OUT/candidates/*.wav, OUT/manifest.jsonl (append-only), OUT/run.json, OUT/ranking.jsonl
    and OUT/top/<instruction>_rank<r>.wav. Rerunning into OUT resumes: finished candidates are
    neither regenerated nor rescored.
    """
    if prompts is not None and any(v is not None for v in (text, lyrics, ref_audio)):
        raise ConfigError("give the instruction as TEXT [--lyrics] [--ref-audio] or as --prompts FILE, not both")
    instructions = load_prompts(prompts) if prompts is not None else [cli_instruction(text, lyrics, ref_audio)]
    config = GenerateConfig(
        out=out, instructions=instructions, generator=_generator_name(generator, tiny),
        reward=resolve_reward(reward, tiny), n=n, k=k, policy=policy, minimums=minimums or (), duration=duration,
        params=generation_params(temperature, top_k, top_p, guidance, steps, param), seed_base=seed_base,
        seeds=_seeds(seeds), gen_batch_size=gen_batch_size, device=device, max_dur=max_dur,
        pool=PoolOptions(backend, num_actors, num_gpus_per_actor, threads_per_actor, score_batch_size, max_in_flight,
                         ray_address, device),
        retry_errors=retry_errors)
    console = Console()
    result = run_generate(config, console=console)
    c = result.counts
    console.print(f"generated {c.generated} new candidate(s) ({c.generation_failed} failed, {c.reused} reused), "
                  f"scored {c.scored} ({c.score_failed} failed)")
    print_ranking_summary(console, result.ranking)


def rerank(
    run: Annotated[Path, typer.Argument(help="A run directory, or its manifest.jsonl.")],
    k: Annotated[int, typer.Option("-k", "--k", help="Candidates kept per instruction.")] = 2,
    policy: Policy = DEFAULT_POLICY,
    minimums: Minimums = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Where ranking.jsonl and top/ go (default the run directory).")] = None,
    scorer: Annotated[Optional[str], typer.Option(
        "--scorer", help="Rank by this scorer's records (default the run's reward model).")] = None,
) -> None:
    """Rerank the candidates of a run without generating or scoring: rewrites ranking.jsonl and top/."""
    if run.is_file() and run.name != MANIFEST:
        raise ConfigError(f"'{run}': expected a run directory or its {MANIFEST}")
    run_dir = run.parent if run.is_file() else run
    if not (run_dir / MANIFEST).is_file():
        raise ConfigError(f"'{run}': no {MANIFEST} there; give a `cmirm generate` output directory")
    views = read_run(run_dir)
    scorer = scorer or selection_scorer(run_dir, views)
    if not any(scorer in v.scores for v in views):
        known = sorted({s for v in views for s in v.scores})
        raise ConfigError(f"{run_dir / MANIFEST}: no candidate has scores from {scorer!r} (scorers with scores: "
                          f"{', '.join(known) or 'none'}); rerun `cmirm generate` into it to score them")
    ranking = rank_run(run_dir, views, scorer, parse_policy(policy, minimums or ()), k, out)
    print_ranking_summary(Console(), ranking)


def _ks(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--ks expects comma-separated integers, got {text!r}") from None


def scaling(
    out: Out = ...,
    prompts: Prompts = None,
    from_dir: Annotated[Optional[Path], typer.Option(
        "--from",
        help="Reuse the candidates and scores of a `cmirm generate` directory (nothing is generated).")] = None,
    n_max: Annotated[Optional[int], typer.Option(
        "--n-max",
        help="M: candidates per instruction (with --from: use the first M; required with --prompts).")] = None,
    generator: GeneratorName = None,
    reward: RewardOpt = None,
    policy: Policy = DEFAULT_POLICY,
    minimums: Minimums = None,
    eval_reward: Annotated[Optional[str], typer.Option(
        "--eval-reward",
        help="Score the same candidates with this model too and report its view of the selections.")] = None,
    eval_axis: Annotated[str, typer.Option(
        "--eval-axis",
        help="Axis the summary table reports: alignment, musicality or composite (files hold all).")] = "composite",
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples of the instructions.")] = 1000,
    ci: Annotated[float, typer.Option("--ci", help="Bootstrap band level.")] = 0.95,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    ks: Annotated[str, typer.Option("--ks", help="Comma-separated k of the top-k-of-N curves (1 = best-of-N).")] = "1",
    duration: Duration = 10.0,
    temperature: Temperature = None,
    top_k: TopK = None,
    top_p: TopP = None,
    guidance: Guidance = None,
    steps: Steps = None,
    param: Params = None,
    seed_base: SeedBase = 0,
    gen_batch_size: GenBatch = 1,
    backend: Backend = "auto",
    num_actors: NumActors = 1,
    num_gpus_per_actor: GpusPerActor = 0.0,
    threads_per_actor: Threads = None,
    score_batch_size: ScoreBatch = 8,
    max_in_flight: InFlight = 2,
    ray_address: RayAddress = None,
    device: Device = None,
    max_dur: MaxDur = DEFAULT_MAX_DUR,
    tiny: Tiny = False,
) -> None:
    """Best-of-N / top-k-of-N curves (N = 1, 2, 4, ..., M) from one pool of M candidates per instruction.

    Writes OUT/curve.csv, OUT/curve.json, OUT/curve.png (+ curve_k<k>.png), and with --eval-reward
    OUT/curve_selection.* (the selection model's own view). Without --from, OUT is also a run
    directory like `cmirm generate`'s, and rerunning resumes.
    """
    pool = PoolOptions(backend, num_actors, num_gpus_per_actor, threads_per_actor, score_batch_size, max_in_flight,
                       ray_address, device)
    generate_config = None
    if from_dir is not None:
        if prompts is not None or generator is not None or reward is not None:
            raise ConfigError("--from reuses a run's candidates and reward model: "
                              "drop --prompts, --generator and --reward")
        if load_run_config(from_dir) is None and not (from_dir / MANIFEST).is_file():
            raise ConfigError(f"--from '{from_dir}': not a `cmirm generate` output directory (no {MANIFEST})")
    else:
        if prompts is None or n_max is None:
            raise ConfigError("give --prompts FILE.jsonl and --n-max M (or --from DIR to reuse a generate run)")
        generate_config = GenerateConfig(
            out=out, instructions=load_prompts(prompts), generator=_generator_name(generator, tiny),
            reward=resolve_reward(reward, tiny), n=n_max, k=min(_ks(ks)), policy=policy, minimums=minimums or (),
            duration=duration, params=generation_params(temperature, top_k, top_p, guidance, steps, param),
            seed_base=seed_base, gen_batch_size=gen_batch_size, device=device, max_dur=max_dur, pool=pool)
    config = ScalingConfig(
        out=out, policy=policy, minimums=minimums or (), ks=_ks(ks), n_boot=n_boot, ci=ci, seed=seed, n_max=n_max,
        generate=generate_config, source=from_dir,
        eval_reward=resolve_reward(eval_reward, False, "--eval-reward") if eval_reward else None,
        eval_axis=eval_axis, pool=pool)
    console = Console()
    result = run_scaling(config, console=console)
    for path in result.files:
        console.print(f"wrote {path}")
