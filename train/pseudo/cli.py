"""``cmirm pseudo-label``: judge unlabeled pairs in both orders and write the consistent labels.

Registered under the ``cmirm.commands`` entry-point group (pyproject.toml). Heavy imports happen
inside the command, so listing ``cmirm --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cmirm_plugin.errors import ConfigError


def _reward_judge(model: Optional[str], tiny: bool, margin: float, max_dur: Optional[float],
                  device: Optional[str]):
    from cmirm_plugin.models_needed import check_available
    from cmirm_plugin.scoring import ScorerSpec, ScoringSettings, load_scorer
    from train.pseudo.judges.reward import RewardJudge

    spec = ScorerSpec.from_options(model, tiny, "--judge-model")
    check_available(scorers=[(spec, "--judge-model")])
    settings = ScoringSettings().with_options(max_dur=max_dur)
    return RewardJudge(load_scorer(spec, settings, device), spec.label, margin)


def _local_judge(model: Optional[str], tiny: bool, max_dur: float, max_new_tokens: int, device: Optional[str]):
    from train.pseudo.judges.local import LocalAudioLLMJudge

    if tiny:
        from train.pseudo.judges.tiny import default_tiny_audio_llm

        return LocalAudioLLMJudge.from_pretrained(default_tiny_audio_llm(), device, name="tiny-qwen2-audio",
                                                  max_new_tokens=max_new_tokens, max_dur=max_dur)
    if not model:
        raise ConfigError("--judge local needs --judge-model (a transformers folder or hub id, e.g. "
                          "Qwen/Qwen2-Audio-7B-Instruct) or --tiny")
    return LocalAudioLLMJudge.from_pretrained(model, device, max_new_tokens=max_new_tokens, max_dur=max_dur)


def pseudo_label(
    pairs: Path = typer.Option(..., "--pairs", help="Unlabeled pairs, JSONL in the CMI-Pref layout (audio-path, audio2, "
                                                    "prompt, lyrics, ref-audio-path, split)."),
    out: Path = typer.Option(..., "--out", help="Pseudo pairs to write (JSONL that cmirm train reads); "
                                                "OUT.judgments.jsonl next to it keeps every answer and makes reruns resume."),
    dataset_root: Optional[Path] = typer.Option(None, "--dataset-root", help="Folder the clip paths start from "
                                                                             "\\[default: the pair file's folder]."),
    judge: str = typer.Option(..., "--judge", help="reward (a CMI-RM), http (OpenAI-compatible endpoint) or local "
                                                   "(transformers audio-language model)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="reward: a scorer spec (tiny, a CMI-RM folder "
                                              "or hub id, package.module:Name) \\[default: HaiwenXia/CMI-RM]; local: "
                                              "Qwen2-Audio / Qwen2.5-Omni / Qwen3-Omni folder or hub id."),
    url: Optional[str] = typer.Option(None, "--url", help="http: base URL of the server, e.g. http://127.0.0.1:8000/v1."),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="http: the model name the server hosts."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="http: environment variable holding the "
                                                                          "API key (unset = no Authorization header)."),
    axes: str = typer.Option("alignment,musicality", "--axes", help="Comma-separated axes to label."),
    ties: str = typer.Option("drop", "--ties", help="drop: a tie in either order leaves the axis unlabelled; both: any "
                                                    "tie labels it 'both'; keep-if-consistent: 'both' only when both "
                                                    "orders say tie."),
    filter_mode: str = typer.Option("per-axis", "--filter", help="per-axis: keep each axis's label on its own; joint: "
                                                                 "keep a row only when every axis has a label."),
    margin: float = typer.Option(0.0, "--margin", help="reward: score differences within this are ties."),
    timeout: float = typer.Option(120.0, "--timeout", help="http: read timeout per request, seconds."),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", help="http: connect timeout, seconds."),
    retries: int = typer.Option(4, "--retries", help="http: retries on 429 / 5xx / timeouts / connection errors."),
    backoff: float = typer.Option(1.0, "--backoff", help="http: first retry delay, doubled each retry (max 30 s)."),
    max_dur: Optional[float] = typer.Option(None, "--max-dur", help="Seconds of each clip the judge hears \\[default: "
                                                                   "the scoring default (120) for reward, 30 for LLM "
                                                                   "judges]."),
    max_new_tokens: int = typer.Option(16, "--max-new-tokens", help="LLM judges: answer length limit in tokens."),
    device: Optional[str] = typer.Option(None, "--device", help="reward / local: cpu, cuda ... \\[default: cuda if "
                                                                "available]."),
    report: Optional[Path] = typer.Option(None, "--report", help="Report JSON \\[default: OUT.report.json, next "
                                                                 "to --out, named after it]."),
    tiny: bool = typer.Option(False, "--tiny", help="reward / local: a tiny random judge (offline smoke run; "
                                                    "labels are meaningless)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Pseudo-label unlabeled pairs with position consistency: judge each pair as (A,B) and (B,A), keep a label
    only when both orders name the same winner. Reruns resume; the report (agreement rate, position bias per
    axis) is printed and written as JSON."""
    from rich.console import Console

    from train.pseudo.runner import PseudoLabelOptions
    from train.pseudo.runner import pseudo_label as run

    options = PseudoLabelOptions(axes=[a.strip() for a in axes.split(",") if a.strip()], ties=ties,  # type: ignore[arg-type]
                                 filter=filter_mode)  # type: ignore[arg-type]
    if tiny and judge == "http":
        raise ConfigError("--tiny applies to --judge reward and --judge local")
    if judge == "reward":
        chosen = _reward_judge(judge_model, tiny, margin, max_dur, device)
    elif judge == "local":
        chosen = _local_judge(judge_model, tiny, max_dur or 30.0, max_new_tokens, device)
    elif judge == "http":
        from train.pseudo.judges.http import HttpJudge, HttpJudgeSettings

        if not url:
            raise ConfigError("--judge http needs --url (e.g. http://127.0.0.1:8000/v1) and --model-name")
        chosen = HttpJudge(HttpJudgeSettings(url, model_name or "", api_key_env, timeout, connect_timeout, retries,
                                             backoff, max_tokens=max_new_tokens, max_dur=max_dur or 30.0))
    else:
        raise ConfigError(f"--judge: expected reward, http or local, got {judge!r}")
    run(pairs, out, chosen, dataset_root, options, report, Console(), progress)
