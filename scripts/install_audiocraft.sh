#!/usr/bin/env bash
# Install the optional audiocraft backend without letting it downgrade torch.
# audiocraft 1.3.0 pins torch 2.1 / av 11 / xformers<0.0.23, none of which install on this stack,
# so it goes in with --no-deps plus the packages it needs at import time.
set -euo pipefail
python -m pip install --quiet --no-deps "audiocraft==1.3.0"
python -m pip install --quiet av julius hydra-core num2words spacy librosa flashy torchmetrics einops sentencepiece omegaconf encodec demucs
python -c "import audiocraft.models" && echo "audiocraft backend ready"
