"""The scoring API: ``score(audio, instruction) -> Scores`` and ``score_batch(...) -> [N, 2]``.

`RewardScorer` wraps a `CMIRewardModel` with the reference's final-mode audio handling (mono,
whole-file resample to 24 kHz, crop to ``max_dur``, independent 30 s chunks) and two things the
reference lacks:

* a **prompt cache**: text, lyrics and reference audio of an instruction are encoded once and the
  resulting prompt tokens serve every candidate scored under it (the best-of-N case);
* **batch independence**: an item's score never depends on which other items share its batch.
  A missing reference is masked out (the reference code instead feeds 1 s of encoded silence when
  another item of the batch has a reference). ``missing="null"`` uses the learned null
  embeddings for absent text / lyrics / reference instead.

Missing text or lyrics are encoded as the empty string (``<s></s>``), as the released model does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, List, Literal, Sequence

import numpy as np
import torch

from cmirm_plugin.audio import Audio, AudioLike, prepare_waveform
from cmirm_plugin.errors import CmirmError
from cmirm_plugin.hub import DEFAULT_MODEL
from cmirm_plugin.model.muq import MIN_SAMPLES
from cmirm_plugin.model.reward_model import CMIRewardModel, NullFlags
from cmirm_plugin.model.sequence import TokenSeq
from cmirm_plugin.plugin_contract import BenchmarkBatchInput
from cmirm_plugin.records import Instruction, Scores

MissingPolicy = Literal["mask", "null"]


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked (as the released model ran), else a no-op (fp32)."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class RewardScorer:
    """Score clips against instructions with CMI-RM (see module docstring).

    Args:
        model: a loaded `CMIRewardModel` (moved to ``device`` and put in eval mode).
        device: where to run; default CUDA when available.
        max_dur: seconds of each clip (and reference) that are scored; the rest is cropped.
        batch_size: candidates per joint-transformer batch.
        encode_batch_size: equal-length 30 s audio chunks per tower batch.
        missing: ``"mask"`` (released behaviour) or ``"null"`` (learned null embeddings).
        bf16: bf16 autocast; default on for CUDA, never on CPU.
        cache_size: how many encoded instructions to keep.
    """

    def __init__(self, model: CMIRewardModel, device: str | torch.device | None = None, max_dur: float = 120.0,
                 batch_size: int = 16, encode_batch_size: int = 8, missing: MissingPolicy = "mask",
                 bf16: bool | None = None, cache_size: int = 256) -> None:
        if missing not in ("mask", "null"):
            raise CmirmError(f"missing must be 'mask' or 'null', got {missing!r}")
        if not max_dur > 0:
            raise CmirmError(f"max_dur must be > 0 seconds, got {max_dur}")
        if batch_size < 1 or encode_batch_size < 1:
            raise CmirmError(f"batch sizes must be >= 1, got batch_size={batch_size}, encode_batch_size={encode_batch_size}")
        self.device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.max_dur = float(max_dur)
        self.batch_size = batch_size
        self.encode_batch_size = encode_batch_size
        self.missing = missing
        self.bf16 = (self.device.type == "cuda") if bf16 is None else bf16
        self.cache_size = cache_size
        self._prompts: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @classmethod
    def from_pretrained(cls, path_or_id: str = DEFAULT_MODEL, device: str | torch.device | None = None,
                        **options: Any) -> "RewardScorer":
        """Load a released-layout checkpoint (folder or hub id) and wrap it."""
        return cls(CMIRewardModel.from_pretrained(path_or_id), device=device, **options)

    @property
    def sr(self) -> int:
        """The model's sample rate (24 kHz)."""
        return self.model.config.sr

    # ------------------------------------------------------------------ inputs
    def prepare_audio(self, audio: AudioLike, sample_rate: int | None = None) -> torch.Tensor:
        """Mono, resampled (whole file) to 24 kHz, cropped to ``max_dur``: a 1-D float32 tensor.

        Raw tensors/arrays need ``sample_rate``. Raises `AudioError` naming the source when the
        clip is shorter than the front end's minimum (~43 ms).
        """
        return prepare_waveform(audio, self.sr, self.max_dur, MIN_SAMPLES, sample_rate)

    def _prompt_key(self, inst: Instruction) -> tuple:
        ref = inst.ref_audio
        if isinstance(ref, Audio):
            ref_key: Any = hashlib.sha1(ref.waveform.numpy().tobytes() + str(ref.sample_rate).encode()).hexdigest()
        elif ref is not None:
            stat = os.stat(ref) if os.path.exists(ref) else None
            ref_key = (str(Path(ref).resolve()), stat.st_mtime_ns if stat else None, stat.st_size if stat else None)
        else:
            ref_key = None
        return (inst.text, inst.lyrics, ref_key, self.max_dur, self.missing)

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
        while len(self._prompts) > self.cache_size:
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
        encoded = dict(zip(ref_waves, model.encode_audio(list(ref_waves.values()), self.encode_batch_size))) if ref_waves else {}
        empty = torch.zeros(0, dim, device=self.device)
        ref = TokenSeq.pad([encoded.get(i, empty) for i in range(n)], dim, self.device, torch.float32)
        null = NullFlags.for_absent(insts, self.device) if self.missing == "null" else None
        return model.encode_prompt(text, lyrics, ref, null)

    def clear_cache(self) -> None:
        self._prompts.clear()

    # ------------------------------------------------------------------ scoring
    def score_batch(self, audios: Sequence[AudioLike], instructions: Instruction | Sequence[Instruction],
                    sample_rate: int | None = None) -> np.ndarray:
        """Scores ``[N, 2]`` (float32; column 0 = alignment, column 1 = musicality).

        ``instructions`` is one instruction shared by all clips or one per clip. Clips may be
        paths, bytes, `Audio`, or arrays/tensors with ``sample_rate``.
        """
        if isinstance(instructions, Instruction):
            instructions = [instructions] * len(audios)
        if len(instructions) != len(audios):
            raise CmirmError(f"got {len(audios)} clips but {len(instructions)} instructions")
        if not audios:
            return np.zeros((0, 2), dtype=np.float32)
        return self.score_prepared([self.prepare_audio(a, sample_rate) for a in audios], list(instructions))

    def score_prepared(self, waves: Sequence[torch.Tensor], instructions: Sequence[Instruction]) -> np.ndarray:
        """`score_batch` for clips already prepared with `prepare_audio` (1-D, 24 kHz, cropped)."""
        with torch.inference_mode(), autocast(self.device, self.bf16):
            prompts = self._encode_prompts(instructions)
            frames = self.model.encode_audio(list(waves), self.encode_batch_size)
            out = []
            dim = self.model.config.dim
            for s in range(0, len(waves), self.batch_size):
                p = TokenSeq.pad(prompts[s : s + self.batch_size], dim, self.device, torch.float32)
                e = TokenSeq.pad(frames[s : s + self.batch_size], dim, self.device, torch.float32)
                out.append(self.model.score(p, e).float().cpu())
        return torch.cat(out).numpy()

    def score(self, audio: AudioLike, instruction: Instruction | None = None, sample_rate: int | None = None) -> Scores:
        """`Scores` of one clip (an instruction of None means no text, lyrics or reference)."""
        return Scores.from_array(self.score_batch([audio], instruction or Instruction(), sample_rate)[0])


class CMIRMBenchmarkModel:
    """CMI-RewardBench plug-in (spec §6): ``sr`` and ``score_batch(inputs, batch_size, max_dur)``.

    Tensor inputs are taken to be 24 kHz already (as the reference adapter does); paths are
    resampled. ``checkpoint`` is a released-layout folder or hub id.
    """

    def __init__(self, checkpoint: str = DEFAULT_MODEL, device: str | None = None, missing: MissingPolicy = "mask",
                 bf16: bool | None = None, encode_batch_size: int = 8) -> None:
        self.scorer = RewardScorer.from_pretrained(checkpoint, device=device, missing=missing, bf16=bf16,
                                                   encode_batch_size=encode_batch_size)

    @property
    def sr(self) -> int:
        return self.scorer.sr

    def score_batch(self, inputs: List[BenchmarkBatchInput | dict], batch_size: int = 12, max_dur: float = 120.0,
                    **kwargs: Any) -> np.ndarray:
        items = [BenchmarkBatchInput(**i) if isinstance(i, dict) else i for i in inputs]
        self.scorer.max_dur = float(max_dur)
        self.scorer.batch_size = max(1, int(batch_size))
        audios = [i.audio if not isinstance(i.audio, torch.Tensor) else Audio(i.audio, self.sr) for i in items]
        insts = [Instruction(text=i.text, lyrics=i.lyrics, ref_audio=_as_ref(i.ref_audio, self.sr)) for i in items]
        return self.scorer.score_batch(audios, insts)


def _as_ref(ref: Any, sr: int) -> str | Audio | None:
    if ref is None or isinstance(ref, (str, Path, Audio)):
        return ref
    if isinstance(ref, torch.Tensor):
        return Audio(ref, sr)
    raise CmirmError(f"ref_audio must be a path, tensor or None, got {type(ref).__name__}")
