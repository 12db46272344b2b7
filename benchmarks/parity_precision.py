"""How far our scores move from the official fp32 CPU scores with device and precision.

Loads the two parity checkpoints (tests/fixtures/parity, tiny random towers) and scores their 13
items (a) on CPU fp32, (b) on CUDA fp32, (c) on CUDA with bf16 autocast (the default there), and
prints the largest |ours - official| per variant and setting. Also compares the CPU mel spectrogram
with the official intermediate (float32 FFT rounding depends on the machine's CPU).
Usage: python benchmarks/parity_precision.py
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch

PARITY = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "parity"


def _max_error(scorer, variant: str) -> tuple[float, float]:
    from cmirm_plugin import Instruction

    root = PARITY / variant
    errors = []
    for item in json.loads((root / "expected.json").read_text())["items"]:
        scorer.max_dur = item["max_dur"]
        ref = str(root / item["ref_audio"]) if item["ref_audio"] else None
        ours = scorer.score_batch([str(root / item["audio"])],
                                  Instruction(text=item["text"], lyrics=item["lyrics"], ref_audio=ref))[0]
        errors.append((item["id"], float(np.abs(ours - np.array(item["official"])).max())))
    non_mp3 = [e for i, e in errors if not i.startswith("mp3")]
    return max(non_mp3), float(np.median(non_mp3))


def main() -> None:
    import huggingface_hub.constants as constants

    from cmirm_plugin import Audio
    from cmirm_plugin.scoring import RewardScorer
    from safetensors.torch import load_file

    constants.HF_HUB_CACHE = str(PARITY / "hf_home" / "hub")
    constants.HF_HUB_OFFLINE = True
    settings = [("cpu", False)] + ([("cuda", False), ("cuda", True)] if torch.cuda.is_available() else [])
    print(f"CPU: {platform.processor() or platform.machine()}; torch {torch.__version__}; "
          f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}\n")
    print("| variant | device | precision | max abs err vs official (excl. MP3) | median |")
    print("|---|---|---|---:|---:|")
    for variant in ("sa_none", "sa_meanpool_mlp"):
        for device, bf16 in settings:
            scorer = RewardScorer.from_pretrained(str(PARITY / variant / "model"), device=device, bf16=bf16)
            worst, median = _max_error(scorer, variant)
            print(f"| {variant} | {device} | {'bf16 autocast' if bf16 else 'fp32'} | {worst:.2e} | {median:.2e} |")
    debug = load_file(str(PARITY / "towers_debug.safetensors"))
    wave = Audio.load(PARITY / "inputs" / "a_24k_mono_3s.wav").waveform
    mel = scorer.model.audio_module.model.model.frontend.cpu()(wave)[0]
    print(f"\nCPU mel vs official intermediate: max |diff| {float((mel - debug['audio.mel_normalized']).abs().max()):.2e}")


if __name__ == "__main__":
    main()
