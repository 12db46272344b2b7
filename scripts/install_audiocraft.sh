#!/usr/bin/env bash
# Install the optional audiocraft backend (MusicGen, MusicGen-Melody, MAGNeT) into the active
# Python environment WITHOUT changing its torch / torchaudio.
#
# audiocraft 1.3.0 pins torch==2.1.0, torchaudio<2.1.2, av==11.0.0 (no wheel for Python 3.11, and
# its source build fails) and xformers<0.0.23; none of them can live next to this project's torch.
# So audiocraft and xformers go in with --no-deps, and the packages audiocraft imports go in
# normally but under a constraints file that holds torch and torchaudio at their installed
# versions (pip then fails loudly rather than downgrade them). Afterwards `pip check` still lists
# audiocraft's own pins (torch==2.1.0, av==11, xformers<0.0.23, torchvision, torchtext, gradio):
# that is expected and harmless for generation.
#
# Usage: scripts/install_audiocraft.sh            (uses `python` of the active environment)
#        PYTHON=/path/to/venv/bin/python scripts/install_audiocraft.sh
set -euo pipefail
PYTHON=${PYTHON:-python}

pins() {
  "$PYTHON" -c 'import importlib.metadata as m; print(*(f"{p}=={m.version(p)}" for p in ("torch", "torchaudio")), sep="\n")'
}
before=$(pins) || { echo "install_audiocraft: install torch and torchaudio first (see README)" >&2; exit 1; }
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
printf '%s\n' "$before" > "$constraints"

# 1. audiocraft itself and xformers (0.0.35 imports with torch 2.14; attention then runs on torch).
"$PYTHON" -m pip install --quiet --no-deps "audiocraft==1.3.0" "xformers==0.0.35"
# 2. What audiocraft imports (av: any current wheel works for reading/writing through audiocraft).
"$PYTHON" -m pip install --quiet -c "$constraints" \
  av julius hydra-core hydra-colorlog num2words spacy librosa flashy torchmetrics einops \
  sentencepiece omegaconf encodec demucs protobuf "transformers>=4.31"

after=$(pins)
if [ "$before" != "$after" ]; then
  echo "install_audiocraft: torch/torchaudio changed from [$before] to [$after]; reinstall them" >&2
  exit 1
fi
"$PYTHON" -W ignore -c "import audiocraft.models; print('audiocraft', audiocraft.__version__, 'backend ready')"
