"""``cmirm generate``, ``cmirm rerank`` and ``cmirm scaling`` (registered through the ``cmirm.commands`` entry points).

This module only turns options into the typed configs of `rerank.generate`, `rerank.rerank_run`
and `rerank.scaling_run` and prints their results. The options ``generate`` and ``scaling`` share
are the fields of `GenOptions` (and the scoring group `cmirm_plugin.cli_options.ScoringOptions`),
added to both commands by `with_options`; their defaults are the defaults of the config fields
they feed (`rerank.defaults`). The pipeline (torch, Ray, matplotlib) is imported inside the
commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Optional, Sequence

import typer

from cmirm_plugin.cli_options import ScoringOptions, changed_options, with_options
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.hub import DEFAULT_MODEL
from cmirm_plugin.models_needed import check_available
from cmirm_plugin.records import Instruction
from cmirm_plugin.scoring.spec import TINY, ScorerSpec
from rerank import defaults
from rerank.instructions import cli_instruction, load_prompts

if TYPE_CHECKING:
    from rerank.generate import CandidatesConfig, GenerateConfig
    from rerank.pool_options import PoolOptions

#: The generator of ``--tiny`` runs when ``--generator`` is not given.
TINY_GENERATOR = "tiny-musicgen"

_GEN = "Generation"
_POOL = "Workers (generators and scorers)"
_SEL = "Selection"

#: What an interrupted job prints before exiting with status 130.
INTERRUPTED = "interrupted; rerun the same command to resume"

Lyrics = Annotated[Optional[str], typer.Option("--lyrics", "-l", help="Lyrics, or the path of a lyrics text file.")]
RefAudio = Annotated[Optional[str], typer.Option("--ref-audio", "-r", help="Reference audio file.")]
Prompts = Annotated[Optional[Path], typer.Option(
    "--prompts", help="JSONL, one instruction per line: text, lyrics, ref_audio (relative to the file), optional id.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output directory (rerunning into it resumes).")]
GeneratorName = Annotated[Optional[str], typer.Option(
    "--generator", "-g", rich_help_panel=_GEN, show_default=False,
    help="Generator name (musicgen-small, stable-audio-open, a checkpoint folder, py:module:fn, ...) "
         f"\\[default: none, give one; --tiny: {TINY_GENERATOR}].")]
RewardOpt = Annotated[Optional[str], typer.Option(
    "--reward", "-m", show_default=False,
    help=f"Scorer: tiny, a CMI-RM folder or hub id, package.module:Name, or http://host:port (a `cmirm serve` "
         f"reward server) \\[default: {DEFAULT_MODEL}; "
         f"--tiny: {TINY}].")]
Policy = Annotated[Optional[str], typer.Option(
    "--policy", rich_help_panel=_SEL, show_default=False,
    help="axis:musicality | weighted:alignment=0.5,musicality=0.5 | zsum | lex:alignment,tol=0.1 | pareto "
         f"\\[default: {defaults.POLICY}, or the one axis of a single-axis scorer].")]
K_HELP = (f"Candidates kept per instruction, at most the candidates it has \\[default: {defaults.K}, "
          "or all when fewer].")
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
GenBatch = Annotated[int, typer.Option(
    "--gen-batch-size", rich_help_panel=_GEN, help="Seeds per generator call (one work item).")]
Backend = Annotated[str, typer.Option(
    "--backend", rich_help_panel=_POOL,
    help="ray | local | auto (local for one generator and one scorer without --ray-address, else ray).")]
Schedule = Annotated[str, typer.Option(
    "--schedule", rich_help_panel=_POOL,
    help="stream (generate and score at once) | phased (generate all, then score) | auto (stream on Ray).")]
GenActors = Annotated[int, typer.Option("--gen-actors", rich_help_panel=_POOL, help="Generator actors.")]
GenGpus = Annotated[Optional[float], typer.Option(
    "--gen-gpus-per-actor", rich_help_panel=_POOL, show_default=False,
    help="GPUs per generator actor (fractions share a GPU) \\[default: 1 when this machine has a GPU, else 0].")]
GenCpus = Annotated[float, typer.Option(
    "--gen-cpus-per-actor", rich_help_panel=_POOL, help="CPUs per generator actor (fractions allowed).")]
NumActors = Annotated[int, typer.Option("--num-actors", rich_help_panel=_POOL, help="Scorer actors.")]
GpusPerActor = Annotated[float, typer.Option(
    "--num-gpus-per-actor", rich_help_panel=_POOL, help="GPUs per scorer actor (fractions share a GPU).")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads-per-actor", rich_help_panel=_POOL, help="Torch threads per scorer actor (default CPUs / actors).")]
ScoreBatch = Annotated[int, typer.Option(
    "--score-batch-size", rich_help_panel=_POOL, help="Candidates per scoring batch.")]
InFlight = Annotated[int, typer.Option("--max-in-flight", rich_help_panel=_POOL, help="Batches queued per actor.")]
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray-address", rich_help_panel=_POOL,
    help="Join this Ray cluster: auto or HOST:PORT (default: a private one on this machine when on Ray).")]
Device = Annotated[Optional[str], typer.Option(
    "--device", help="cpu, cuda, cuda:1 ... for the generator and the scorers (default cuda if available).")]
Tiny = Annotated[bool, typer.Option(
    "--tiny", help=f"Offline smoke run: tiny random generator ({TINY_GENERATOR}) and reward model; audio is noise.")]
RetryErrors = Annotated[bool, typer.Option(
    "--retry-errors", help="Regenerate failed candidates and rescore failed scorings of earlier runs.")]


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C ends a job with `INTERRUPTED` and status 130 (the job's own cleanup has run: workers stopped,
    Ray left or shut down); everything finished is on disk, so the same command resumes."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED, err=True)
        raise typer.Exit(130) from None


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


def _int_list(text: str, option: str, minimum: int) -> list[int]:
    """The comma-separated integers of ``option``'s value, each >= ``minimum``; errors name ``option``."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise ConfigError(f"{option} expects comma-separated integers (e.g. 1,2,4), got {text!r}")
    below = [value for value in values if value < minimum]
    if below:
        raise ConfigError(f"{option} values must be >= {minimum}, got {below[0]} in {text!r}")
    return values


def _generator_name(generator: str | None, tiny: bool) -> str:
    if generator:
        return generator
    if tiny:
        return TINY_GENERATOR
    raise ConfigError("give --generator NAME (e.g. musicgen-small), or --tiny for an offline smoke run")


@dataclass
class GenOptions:
    """The options ``generate`` and ``scaling`` share: generation, reward, selection policy, scorer pool.

    Each field is one command-line option: its type is the option's ``Annotated`` declaration and
    its default the default of the config field it feeds. `with_options` adds them to a command.
    """

    generator: GeneratorName = None
    reward: RewardOpt = None
    policy: Policy = None
    minimums: Minimums = None
    duration: Duration = defaults.DURATION
    temperature: Temperature = None
    top_k: TopK = None
    top_p: TopP = None
    guidance: Guidance = None
    steps: Steps = None
    param: Params = None
    seed_base: SeedBase = defaults.SEED_BASE
    gen_batch_size: GenBatch = defaults.GEN_BATCH_SIZE
    backend: Backend = defaults.BACKEND
    schedule: Schedule = defaults.SCHEDULE
    gen_actors: GenActors = defaults.GEN_ACTORS
    gen_gpus_per_actor: GenGpus = None
    gen_cpus_per_actor: GenCpus = defaults.GEN_CPUS_PER_ACTOR
    num_actors: NumActors = defaults.NUM_ACTORS
    num_gpus_per_actor: GpusPerActor = defaults.NUM_GPUS_PER_ACTOR
    threads_per_actor: Threads = None
    score_batch_size: ScoreBatch = defaults.SCORE_BATCH_SIZE
    max_in_flight: InFlight = defaults.MAX_IN_FLIGHT
    ray_address: RayAddress = None
    device: Device = None
    tiny: Tiny = False

    def pool(self) -> PoolOptions:
        """The worker pools' options (validated: a bad value fails before any work)."""
        from rerank.pool_options import PoolOptions

        return PoolOptions(backend=self.backend, num_actors=self.num_actors, num_gpus_per_actor=self.num_gpus_per_actor,
                           threads_per_actor=self.threads_per_actor, score_batch_size=self.score_batch_size,
                           max_in_flight=self.max_in_flight, ray_address=self.ray_address, device=self.device,
                           gen_actors=self.gen_actors, gen_gpus_per_actor=self.gen_gpus_per_actor,
                           gen_cpus_per_actor=self.gen_cpus_per_actor, schedule=self.schedule)  # type: ignore[arg-type]

    def reward_spec(self) -> ScorerSpec:
        """``--reward``; with ``--tiny`` and no ``--reward``, the tiny CMI-RM."""
        return ScorerSpec.parse(self.reward if self.reward is not None else (TINY if self.tiny else None))

    def _job(self, out: Path, instructions: Sequence[Instruction], n: int, seeds: Sequence[int] | None,
             retry_errors: bool, scoring: ScoringOptions) -> dict[str, Any]:
        return dict(out=out, instructions=instructions, generator=_generator_name(self.generator, self.tiny),
                    reward=self.reward_spec(), n=n, duration=self.duration,
                    params=generation_params(self.temperature, self.top_k, self.top_p, self.guidance, self.steps,
                                             self.param),
                    seed_base=self.seed_base, seeds=seeds, gen_batch_size=self.gen_batch_size, device=self.device,
                    scoring=scoring.settings(), pool=self.pool(), retry_errors=retry_errors)

    def candidates(self, out: Path, instructions: Sequence[Instruction], scoring: ScoringOptions, *, n: int,
                   seeds: Sequence[int] | None = None, retry_errors: bool = False) -> CandidatesConfig:
        """The pool-only job these options describe (``scaling``: no k, no ranking)."""
        from rerank.generate import CandidatesConfig

        return CandidatesConfig(**self._job(out, instructions, n, seeds, retry_errors, scoring))

    def config(self, out: Path, instructions: Sequence[Instruction], scoring: ScoringOptions, *, n: int, k: int | None,
               seeds: Sequence[int] | None = None, retry_errors: bool = False,
               search: str = defaults.SEARCH) -> GenerateConfig:
        """The ``generate`` job these options describe."""
        from rerank.generate import GenerateConfig

        return GenerateConfig(**self._job(out, instructions, n, seeds, retry_errors, scoring), k=k,
                              policy=self.policy, minimums=self.minimums or (), search=search)


#: `GenOptions` fields that only shape how candidates are made and scored (refused by ``scaling --from``).
GENERATION_ONLY = ("generator", "reward", "duration", "temperature", "top_k", "top_p", "guidance", "steps", "param",
                   "seed_base", "gen_batch_size", "gen_actors", "gen_gpus_per_actor", "gen_cpus_per_actor", "tiny")


@with_options(opts=GenOptions, scoring=ScoringOptions)
def generate(
    text: Annotated[Optional[str], typer.Argument(help="Text description (or use --prompts).")] = None,
    out: Out = ...,
    lyrics: Lyrics = None,
    ref_audio: RefAudio = None,
    prompts: Prompts = None,
    n: Annotated[int, typer.Option("-n", "--n", help="Candidates per instruction.")] = defaults.CANDIDATES,
    k: Annotated[Optional[int], typer.Option("-k", "--k", rich_help_panel=_SEL, show_default=False, help=K_HELP)]
        = None,
    seeds: Seeds = None,
    retry_errors: RetryErrors = False,
    search: Annotated[str, typer.Option(
        "--search", rich_help_panel=_SEL,
        help="best-of-n | beam:width=4,expand=2,segment=5 or smc:particles=8,segment=5,lambda=10 (generators "
             "that continue clips) | noise:rounds=4,neighbors=4,radius=0.3 (diffusion generators taking latents); "
             "a setting left out (expand, particles, rounds) is filled so the search spends -n clips' worth of "
             "audio.")] = defaults.SEARCH,
    report: Annotated[bool, typer.Option(
        "--report", help="Also write the HTML report (OUT/report/index.html, as `cmirm report OUT`).")] = False,
    *,
    opts: GenOptions,
    scoring: ScoringOptions,
) -> None:
    """Sample N candidates per instruction, score them with CMI-RM (or any --reward scorer), keep the top k.

    Writes OUT/candidates/*.wav, OUT/manifest.jsonl (append-only), OUT/run.json, OUT/ranking.jsonl
    and .csv (kept under OUT/rankings/) and OUT/top/<instruction>_rank<r>_s<seed>_<prompt>.wav (a search also
    OUT/search_state.json). Rerunning into OUT resumes: finished candidates are neither regenerated nor
    rescored, a search resumes at its step.
    """
    from rich.console import Console

    from generators.registry import require_inputs
    from rerank.generate import run_generate
    from rerank.report import print_ranking_summary

    if prompts is not None and any(v is not None for v in (text, lyrics, ref_audio)):
        raise ConfigError("give the instruction as TEXT [--lyrics] [--ref-audio] or as --prompts FILE, not both")
    instructions = load_prompts(prompts) if prompts is not None else [cli_instruction(text, lyrics, ref_audio)]
    config = opts.config(out, instructions, scoring, n=n, k=k,
                         seeds=_int_list(seeds, "--seeds", 0) if seeds is not None else None,
                         retry_errors=retry_errors, search=search)
    require_inputs(config.generator, config.instructions)   # cheap checks before the models are looked for
    check_available([config.generator], [(config.reward, "--reward")])
    console = Console()
    with interruptible():
        result = run_generate(config, console=console)
    c = result.counts
    repaired = f", {c.repaired} broken wav(s) regenerated" if c.repaired else ""
    console.print(f"generated {c.generated} new candidate(s) ({c.generation_failed} failed, {c.reused} reused"
                  f"{repaired}), scored {c.scored} ({c.score_failed} failed)")
    print_ranking_summary(console, result.ranking)
    if report:
        from rerank.listen.report_html import ReportConfig, write_report

        console.print(f"report: {write_report(ReportConfig(out)).index}")


def rerank(
    run: Annotated[Path, typer.Argument(help="A run directory, or its manifest.jsonl.")],
    k: Annotated[Optional[int], typer.Option("-k", "--k", show_default=False, help=K_HELP)]
        = None,
    policy: Policy = None,
    minimums: Minimums = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Where ranking.jsonl and top/ go (default the run directory).")] = None,
    scorer: Annotated[Optional[str], typer.Option(
        "--scorer", help="Rank by this scorer's records (default the run's reward model).")] = None,
) -> None:
    """Rerank the candidates of a run without generating or scoring: rewrites ranking.jsonl/.csv and top/ (each
    ranking is also kept under rankings/<policy>_k<k>_<scorer>/)."""
    from collections import Counter

    from rich.console import Console

    from rerank.policies import check_k_of_n, default_policy, parse_policy
    from rerank.report import print_ranking_summary
    from rerank.rerank_run import rank_run
    from rerank.run_config import load_run_config
    from rerank.run_records import MANIFEST, read_run, require_run_dir, score_axes
    from rerank.run_config import selection_scorer

    run_dir = require_run_dir(run)
    views = read_run(run_dir)
    scorer = scorer or selection_scorer(run_dir, views, load_run_config(run_dir))
    axes = score_axes(views, scorer)
    if axes is None:
        known = sorted({s for v in views for s in v.scores})
        raise ConfigError(f"{run_dir / MANIFEST}: no candidate has scores from {scorer!r} (scorers with scores: "
                          f"{', '.join(known) or 'none'}); rerun `cmirm generate` into it to score them")
    k = check_k_of_n(k, max(Counter(v.instruction.id for v in views).values()), "-k",
                     f"the most any instruction has in {run_dir}")
    ranking = rank_run(run_dir, views, scorer, parse_policy(policy or default_policy(axes), minimums or ()), k, out)
    print_ranking_summary(Console(), ranking)


@with_options(opts=GenOptions, scoring=ScoringOptions)
def scaling(
    out: Out = ...,
    prompts: Prompts = None,
    from_dir: Annotated[Optional[Path], typer.Option(
        "--from",
        help="Reuse the candidates and scores of a `cmirm generate` directory (nothing is generated).")] = None,
    n_max: Annotated[Optional[int], typer.Option(
        "--n-max",
        help="M: candidates per instruction (with --from: use the first M; required with --prompts).")] = None,
    scorer: Annotated[Optional[str], typer.Option(
        "--scorer", rich_help_panel=_SEL,
        help="With --from: select by this scorer's records (default the run's reward model).")] = None,
    eval_reward: Annotated[Optional[str], typer.Option(
        "--eval-reward",
        help="Score the same candidates with this scorer too (a --reward spec: tiny, folder, hub id, "
             "package.module:Name or http://host:port) and report its view of the selections.")] = None,
    eval_axis: Annotated[Optional[str], typer.Option(
        "--eval-axis", show_default=False,
        help="Axis the summary table reports: one of the evaluation scorer's axes or composite (files hold all) "
             "\\[default: composite].")] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples of the instructions.")]
        = defaults.N_BOOT,
    ci: Annotated[float, typer.Option("--ci", help="Bootstrap band level.")] = defaults.CI,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = defaults.SCALING_SEED,
    ks: Annotated[str, typer.Option("--ks", help="Comma-separated k of the top-k-of-N curves (1 = best-of-N).")]
        = ",".join(map(str, defaults.KS)),
    methods: Annotated[Optional[str], typer.Option(
        "--methods", help="Search methods to compare at equal compute, e.g. best-of-n,beam:width=2,segment=5,"
                          "smc:segment=5,lambda=10,noise:neighbors=4,radius=0.3 (leave expand / particles / rounds open "
                          "for the budgets to fill).")] = None,
    budgets: Annotated[Optional[str], typer.Option(
        "--budgets", help="With --methods: budgets in clips' worth of generated audio, e.g. 4,8,16,32.")] = None,
    *,
    opts: GenOptions,
    scoring: ScoringOptions,
) -> None:
    """Best-of-N / top-k-of-N curves (N = 1, 2, 4, ..., M) from one pool of M candidates per instruction,
    or, with --methods and --budgets, reward against compute per search method.

    Writes OUT/curve.csv, OUT/curve.json, OUT/curve.png (+ curve_k<k>.png), and with --eval-reward
    OUT/curve_selection.* (the selection model's own view). Without --from, OUT is also a run
    directory like `cmirm generate`'s, and rerunning resumes. With --methods (or --from a search
    run) curve.csv/json hold each method's rows with compute columns and OUT/compute.png overlays
    the methods; the runs are under OUT/runs/.
    """
    from rich.console import Console

    from generators.registry import require_inputs
    from cmirm_plugin.errors import check_count
    from rerank.scaling_run import ScalingConfig, run_scaling

    k_values = _int_list(ks, "--ks", 1)
    if n_max is not None:
        check_count("--n-max", n_max)
    method_list, budget_list = [], []
    if methods is not None or budgets is not None:
        from rerank.search_scaling import check_methods_budgets, parse_methods

        method_list = parse_methods(methods) if methods is not None else []
        budget_list = _int_list(budgets, "--budgets", 1) if budgets is not None else []
        check_methods_budgets(method_list, budget_list, from_run=from_dir is not None)
    generate_config = None
    if from_dir is not None:
        given = (["--prompts"] if prompts is not None else []) + changed_options(opts, GENERATION_ONLY) \
            + scoring.given()
        if given:
            raise ConfigError(f"--from reuses a run's candidates, scores and settings (reward model, --max-dur), so "
                              f"generation options do not apply: drop {', '.join(given)}")
    else:
        if prompts is None or (n_max is None and not method_list):
            raise ConfigError("give --prompts FILE.jsonl and --n-max M (or --from DIR to reuse a generate run)")
        generate_config = opts.candidates(out, load_prompts(prompts), scoring, n=n_max or max(budget_list))
        require_inputs(generate_config.generator, generate_config.instructions)
    config = ScalingConfig(
        out=out, policy=opts.policy, minimums=opts.minimums or (), ks=k_values, n_boot=n_boot, ci=ci, seed=seed,
        n_max=n_max, generate=generate_config, source=from_dir, scorer=scorer,
        eval_reward=ScorerSpec.parse(eval_reward, "--eval-reward") if eval_reward else None,
        eval_axis=eval_axis, pool=opts.pool(), methods=method_list, budgets=budget_list)
    check_available([generate_config and generate_config.generator],
                    [(generate_config and generate_config.reward, "--reward"), (config.eval_reward, "--eval-reward")])
    console = Console()
    with interruptible():
        result = run_scaling(config, console=console)
    for path in result.files:
        console.print(f"wrote {path}")
