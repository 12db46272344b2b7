"""Pseudo-labelling preference pairs with a judge, filtered by position consistency (spec §12).

``pseudo_label(pairs_file, out, judge, ...)`` (`train.pseudo.runner`; ``cmirm pseudo-label`` on the
command line) asks a `Judge` about every unlabeled pair twice, clips swapped, and keeps a label
only when both orders name the same winner (`train.pseudo.consistency`). Judges:
`RewardJudge` (a CMI-RM score difference), `HttpJudge` (an OpenAI-compatible endpoint) and
`LocalAudioLLMJudge` (Qwen2-Audio / Qwen2.5-Omni / Qwen3-Omni through transformers), the last two
sharing one prompt template and strict answer parser (`train.pseudo.prompt`). Output: pseudo pairs
in the CMI-Pref layout for ``cmirm train --stage pretrain``, a judgments manifest that makes runs
resumable, and a report of agreement and position bias (`train.pseudo.report`).

Names are imported on first use, so importing this package stays light.
"""

from __future__ import annotations

from cmirm_plugin.importing import lazy_exports

_EXPORTS = {
    "pseudo_label": "train.pseudo.runner", "PseudoLabelOptions": "train.pseudo.runner",
    "judgments_path": "train.pseudo.runner", "default_report_path": "train.pseudo.runner",
    "PseudoLabelReport": "train.pseudo.report",
    "Judge": "train.pseudo.judges.base", "JudgeReply": "train.pseudo.judges.base",
    "AxisVerdict": "train.pseudo.judges.base", "PairView": "train.pseudo.judges.base",
    "JudgeUnavailable": "train.pseudo.judges.base", "RewardJudge": "train.pseudo.judges.reward",
    "HttpJudge": "train.pseudo.judges.http", "HttpJudgeSettings": "train.pseudo.judges.http",
    "LocalAudioLLMJudge": "train.pseudo.judges.local", "load_model": "train.pseudo.judges.local",
    "build_tiny_audio_llm": "train.pseudo.judges.tiny", "build_prompt": "train.pseudo.prompt",
    "parse_verdicts": "train.pseudo.prompt", "load_unlabeled_pairs": "train.pseudo.pairs",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("train.pseudo", _EXPORTS)
