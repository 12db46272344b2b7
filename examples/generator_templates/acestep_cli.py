"""Generate one ACE-Step clip from flags: the command ``ace-step.yaml`` runs, in ACE-Step's environment.

ACE-Step's own ``infer.py`` renders an example drawn from its data sampler, so this wrapper calls
its pipeline (``acestep.pipeline_ace_step.ACEStepPipeline``, checked against commit d612523) with
the instruction instead. It imports nothing from cmirm. Install ACE-Step first (``pip install
git+https://github.com/ace-step/ACE-Step`` in its own venv); checkpoints download to
``~/.cache/ace-step/checkpoints``, or to ``--checkpoint-dir`` when given. With ``--ref-audio``
(audio2audio) the song takes the reference's length, not ``--duration``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--prompt", required=True, help="style tags / description")
    p.add_argument("--lyrics-file", required=True, help="lyrics with [verse]/[chorus] tags; empty = instrumental")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--output", required=True, help="the .wav file to write")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--guidance-scale", type=float, default=15.0)
    p.add_argument("--ref-audio", default="", help="reference clip for audio2audio (optional)")
    p.add_argument("--ref-strength", type=float, default=0.5)
    p.add_argument("--checkpoint-dir", default="", help="where checkpoints are (or are downloaded to)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    return p.parse_args()


def main() -> None:
    args = parse_args()
    from acestep.pipeline_ace_step import ACEStepPipeline

    lyrics = Path(args.lyrics_file).read_text(encoding="utf-8").strip() or "[instrumental]"
    checkpoint_dir = os.path.expanduser(args.checkpoint_dir) if args.checkpoint_dir else None
    pipeline = ACEStepPipeline(checkpoint_dir=checkpoint_dir, dtype=args.dtype)
    pipeline(
        format="wav", audio_duration=args.duration, prompt=args.prompt, lyrics=lyrics,
        infer_step=args.steps, guidance_scale=args.guidance_scale, manual_seeds=[args.seed],
        audio2audio_enable=bool(args.ref_audio), ref_audio_input=args.ref_audio or None,
        ref_audio_strength=args.ref_strength, save_path=args.output,
    )


if __name__ == "__main__":
    main()
