"""How far our scores move from the official fp32 CPU scores with device and precision.

Loads the two parity checkpoints (tests/fixtures/parity, tiny random towers) and scores their 13
items on CPU fp32, CPU bf16 autocast (where the CPU has native bf16), CUDA fp32 and CUDA bf16
autocast (the default there), and
prints the largest |ours - official| per variant and setting. Also compares the CPU mel spectrogram
with the official intermediate (float32 FFT rounding depends on the machine's CPU).
Usage: python benchmarks/parity_precision.py
"""

from __future__ import annotations

import json
import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

PARITY = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "parity"


def _max_error(scorer, variant: str) -> tuple[float, float]:
    from cmirm_plugin import Instruction

    root = PARITY / variant
    errors = []
    for item in json.loads((root / "expected.json").read_text())["items"]:
        scorer = scorer.with_settings(replace(scorer.settings, max_dur=item["max_dur"]))
        ref = str(root / item["ref_audio"]) if item["ref_audio"] else None
        ours = scorer.score_batch([str(root / item["audio"])],
                                  Instruction(text=item["text"], lyrics=item["lyrics"], ref_audio=ref))[0]
        errors.append((item["id"], float(np.abs(ours - np.array(item["official"])).max())))
    non_mp3 = [e for i, e in errors if not i.startswith("mp3")]
    return max(non_mp3), float(np.median(non_mp3))


def main() -> None:
    import huggingface_hub.constants as constants

    from cmirm_plugin import Audio
    from cmirm_plugin.scoring import RewardScorer, ScoringSettings
    from cmirm_plugin.scoring.settings import cpu_has_native_bf16
    from safetensors.torch import load_file

    constants.HF_HUB_CACHE = str(PARITY / "hf_home" / "hub")
    constants.HF_HUB_OFFLINE = True
    settings = [("cpu", "fp32")] + ([("cpu", "bf16")] if cpu_has_native_bf16() else []) \
        + ([("cuda", "fp32"), ("cuda", "bf16")] if torch.cuda.is_available() else [])
    print(f"CPU: {platform.processor() or platform.machine()}; torch {torch.__version__}; "
          f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}\n")
    print("| variant | device | precision | max abs err vs official (excl. MP3) | median |")
    print("|---|---|---|---:|---:|")
    for variant in ("sa_none", "sa_meanpool_mlp"):
        for device, dtype in settings:
            scorer = RewardScorer.from_pretrained(str(PARITY / variant / "model"), ScoringSettings(dtype=dtype),
                                                  device=device)
            worst, median = _max_error(scorer, variant)
            print(f"| {variant} | {device} | {'bf16 autocast' if dtype == 'bf16' else 'fp32'} | {worst:.2e} "
                  f"| {median:.2e} |")
    debug = load_file(str(PARITY / "towers_debug.safetensors"))
    wave = Audio.load(PARITY / "inputs" / "a_24k_mono_3s.wav").waveform
    mel = scorer.model.audio_module.model.model.frontend.cpu()(wave)[0]
    print(f"\nCPU mel vs official intermediate: max |diff| {float((mel - debug['audio.mel_normalized']).abs().max()):.2e}")


if __name__ == "__main__":
    main()
