"""`RewardScorer`: CMI-RM behind the scorer contract (`cmirm_plugin.scoring.contract.Scorer`).

It wraps a `CMIRewardModel` with the reference's final-mode audio handling (mono, whole-file
resample to 24 kHz, crop to ``max_dur``, independent 30 s chunks) and two things the reference
lacks:

* a **prompt cache**: text, lyrics and reference audio of an instruction are encoded once and the
  resulting prompt tokens serve every candidate scored under it (the best-of-N case);
* **batch independence**: an item's score never depends on which other items share its batch.
  A missing reference is masked out (the reference code instead feeds 1 s of encoded silence when
  another item of the batch has a reference). ``missing="null"`` uses the learned null
  embeddings for absent text / lyrics / reference instead.

Missing text or lyrics are encoded as the empty string (``<s></s>``), as the released model does.
How it scores (crop, missing inputs, dtype, batch sizes) is a `ScoringSettings`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cmirm_plugin.audio import Audio, AudioLike, prepare_waveform
from cmirm_plugin.hub import DEFAULT_MODEL
from cmirm_plugin.model.muq import MIN_SAMPLES
from cmirm_plugin.model.reward_model import CMIRewardModel, NullFlags
from cmirm_plugin.model.sequence import TokenSeq
from cmirm_plugin.records import AXES, Instruction, Scores
from cmirm_plugin.scoring.contract import as_clips, as_instructions
from cmirm_plugin.scoring.settings import ScoringSettings


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``dtype`` is ``"bf16"``, else a no-op (fp32)."""
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _tiny_or(path_or_id: str) -> str:
    """The folder of the offline tiny checkpoint for ``"tiny"``, else ``path_or_id`` unchanged."""
    if path_or_id == "tiny":
        from cmirm_plugin.model.tiny import default_tiny_checkpoint

        return str(default_tiny_checkpoint())
    return path_or_id


class RewardScorer:
    """Score clips against instructions with CMI-RM (see the module docstring).

    Args:
        model: a loaded `CMIRewardModel` (moved to ``device`` and put in eval mode).
        settings: how to score (crop, missing inputs, dtype, batch sizes); default `ScoringSettings()`.
        device: where to run; default CUDA when available.
    """

    #: The score columns, in order.
    axes: tuple[str, ...] = AXES

    def __init__(self, model: CMIRewardModel, settings: ScoringSettings | None = None,
                 device: str | torch.device | None = None) -> None:
        self.settings = settings or ScoringSettings()
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = self.settings.resolved_dtype(self.device)
        self.encode_batch_size = self.settings.resolved_encode_batch_size(self.device)
        self.model = model.to(self.device).eval()
        self._prompts: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @classmethod
    def from_pretrained(cls, path_or_id: str = DEFAULT_MODEL, settings: ScoringSettings | None = None,
                        device: str | torch.device | None = None) -> "RewardScorer":
        """Load a released-layout checkpoint (folder or hub id; ``"tiny"``: the offline tiny model) and wrap it."""
        return cls(CMIRewardModel.from_pretrained(_tiny_or(path_or_id)), settings, device)

    def with_settings(self, settings: ScoringSettings) -> "RewardScorer":
        """The same model scoring with other ``settings`` (no reload; a fresh prompt cache)."""
        return RewardScorer(self.model, settings, self.device)

    @property
    def sr(self) -> int:
        """The model's sample rate (24 kHz)."""
        return self.model.config.sr

    @property
    def max_dur(self) -> float:
        return self.settings.max_dur

    # ------------------------------------------------------------------ inputs
    def prepare_audio(self, audio: AudioLike, sample_rate: int | None = None) -> torch.Tensor:
        """Mono, resampled (whole file) to 24 kHz, cropped to ``max_dur``: a 1-D float32 tensor.

        Raw tensors/arrays need ``sample_rate``. Raises `AudioError` naming the source when the
        clip is shorter than the front end's minimum (~43 ms).
        """
        return prepare_waveform(audio, self.sr, self.settings.max_dur, MIN_SAMPLES, sample_rate)

    def _prompt_key(self, inst: Instruction) -> tuple:
        ref = inst.ref_audio
        if isinstance(ref, Audio):
            ref_key: Any = hashlib.sha1(ref.waveform.numpy().tobytes() + str(ref.sample_rate).encode()).hexdigest()
        elif ref is not None:
            stat = os.stat(ref) if os.path.exists(ref) else None
            ref_key = (str(Path(ref).resolve()), stat.st_mtime_ns if stat else None, stat.st_size if stat else None)
        else:
            ref_key = None
        return (inst.text, inst.lyrics, ref_key)

    # ------------------------------------------------------------------ encoding
    def _encode_prompts(self, instructions: Sequence[Instruction]) -> list[torch.Tensor]:
        """Compact prompt tokens ``[n_i, dim]`` per instruction, from the cache or encoded together."""
        memo: dict[int, tuple] = {}   # one key per distinct object: N candidates usually share one
        keys = []
        for inst in instructions:
            if id(inst) not in memo:
                memo[id(inst)] = self._prompt_key(inst)
            keys.append(memo[id(inst)])
        found = {key: self._prompts[key] for key in keys if key in self._prompts}
        todo: dict[tuple, Instruction] = {}
        for key, inst in zip(keys, instructions):
            if key not in found:
                todo.setdefault(key, inst)
        if todo:
            new = list(todo.values())
            waves = {i: self.prepare_audio(ref) for i, ref in enumerate(inst.load_ref() for inst in new)
                     if ref is not None}
            prompt = self._encode_prompt_tokens(new, waves)
            for key, row, mask in zip(todo, prompt.x, prompt.mask):
                found[key] = row[mask]       # keys are order-free: compacting is exact
        for key, tokens in found.items():   # cache what this call used, most recent last
            self._prompts[key] = tokens
            self._prompts.move_to_end(key)
        while len(self._prompts) > self.settings.cache_size:
            self._prompts.popitem(last=False)
        return [found[key] for key in keys]

    def _encode_prompt_tokens(self, insts: Sequence[Instruction], ref_waves: dict[int, torch.Tensor]) -> TokenSeq:
        model = self.model
        n = len(insts)
        # Text and lyrics are encoded separately per item (own <s>...</s>) but in ONE tower call:
        # padding is masked, so sharing the batch does not change any item's tokens.
        both = model.encode_text([inst.text or "" for inst in insts] + [inst.lyrics or "" for inst in insts])
        text, lyrics = both.select(range(n)), both.select(range(n, 2 * n))
        dim = model.config.dim
        encoded = dict(zip(ref_waves, model.encode_audio(list(ref_waves.values()), self.encode_batch_size))) \
            if ref_waves else {}
        empty = torch.zeros(0, dim, device=self.device)
        ref = TokenSeq.pad([encoded.get(i, empty) for i in range(n)], dim, self.device, torch.float32)
        null = NullFlags.for_absent(insts, self.device) if self.settings.missing == "null" else None
        return model.encode_prompt(text, lyrics, ref, null)

    def clear_cache(self) -> None:
        self._prompts.clear()

    # ------------------------------------------------------------------ scoring
    def score_batch(self, audios: Sequence[AudioLike] | np.ndarray | torch.Tensor,
                    instructions: Instruction | Sequence[Instruction], sample_rate: int | None = None) -> np.ndarray:
        """Scores ``[N, 2]`` (float32; column 0 = alignment, column 1 = musicality).

        ``audios``: paths, bytes, `Audio`, arrays/tensors (1-D or ``[C, T]``, with ``sample_rate``),
        or one array/tensor ``[B, T]`` (``[B, C, T]``) holding the batch. ``instructions`` is one
        instruction shared by all clips or one per clip. Nothing touches the disk for in-memory audio.
        """
        clips = as_clips(audios)
        insts = as_instructions(instructions, len(clips))
        if not clips:
            return np.zeros((0, len(self.axes)), dtype=np.float32)
        return self.score_prepared([self.prepare_audio(a, sample_rate) for a in clips], insts)

    def score_prepared(self, waves: Sequence[torch.Tensor], instructions: Sequence[Instruction]) -> np.ndarray:
        """`score_batch` for clips already prepared with `prepare_audio` (1-D, 24 kHz, cropped)."""
        batch = self.settings.batch_size
        with torch.inference_mode(), autocast(self.device, self.dtype):
            prompts = self._encode_prompts(instructions)
            frames = self.model.encode_audio(list(waves), self.encode_batch_size)
            out = []
            dim = self.model.config.dim
            for s in range(0, len(waves), batch):
                p = TokenSeq.pad(prompts[s : s + batch], dim, self.device, torch.float32)
                e = TokenSeq.pad(frames[s : s + batch], dim, self.device, torch.float32)
                out.append(self.model.score(p, e).float().cpu())
        return torch.cat(out).numpy()

    def score(self, audio: AudioLike, instruction: Instruction | None = None, sample_rate: int | None = None) -> Scores:
        """`Scores` of one clip (an instruction of None means no text, lyrics or reference)."""
        return Scores.from_array(self.score_batch([audio], instruction or Instruction(), sample_rate)[0], self.axes)
