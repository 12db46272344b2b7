"""Bradley-Terry training of CMI-RM on preference pairs: `train_reward_model(TrainConfig)`.

One run: read and validate the pairs, split off the held-out pairs, build the model (fresh or
``--init``), cache the frozen towers' features, then train the trainable part with AdamW (warm-up
+ cosine decay, gradient clipping) for ``epochs`` passes. After each epoch the held-out pairs are
scored (pairwise accuracy per axis and per modality); the best epoch is saved to ``best/`` and
every epoch end (and every ``save_steps`` steps) to ``last/``, both in the released layout, so
``cmirm score`` / ``cmirm bench`` / `CMIRewardModel.from_pretrained` read them directly. Metrics go
to ``OUT/metrics`` (`train.metrics_log`) and, with ``report_to``, to TensorBoard or W&B (`train.reporters`).

Reproducibility: the data order of epoch e depends only on (seed, e), and the global torch RNG
(modality dropout, dropout) is saved with ``last/``, so an interrupted run resumed with
``resume=True`` ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.model.reward_model import CMIRewardModel
from cmirm_plugin.scoring import autocast
from train.batching import (AudioSource, CachedAudio, CachedText, LiveAudio, LiveText, TextSource, needed_inputs,
                            score_pairs)
from train.checkpoint import (BEST, LAST, ResumePoint, TrainState, atomic_directory, find_last, load_last, save_last,
                              save_release)
from train.config import TrainConfig
from train.data import PreferencePair, load_pairs
from train.evaluation import PairwiseMetrics, evaluate_pairs
from train.feature_cache import FeatureCache
from train.losses import LossConfig, bradley_terry_loss, make_targets
from train.metrics_log import MetricsLog
from train.reporters import TENSORBOARD_DIR, open_reporter, require_reporter
from train.model_setup import build_training_model, count_parameters
from train.optim import build_optimizer, warmup_cosine
from train.splits import Split, split_pairs, subsample

#: Called after every optimisation step with the run's state (e.g. to stop early, or in tests to interrupt).
StepCallback = Callable[[TrainState], None]
#: Metric that picks the best epoch: held-out pairwise accuracy averaged over the two axes.
BEST_METRIC = "eval/acc"
#: Prepared waveforms kept in memory when MuQ layers train (the audio tower then runs on every batch).
WAVEFORM_CACHE_BYTES = 2 * 2**30


@dataclass
class TrainResult:
    """Where a finished run left its outputs, and its state (with the per-epoch history)."""

    out: Path
    best: Path | None
    last: Path
    state: TrainState


def _data_fingerprint(split: Split) -> str:
    """Identifies the training and held-out pairs (content, labels, order) so a resume uses the same data."""
    digest = hashlib.sha256()
    for group in (split.train, split.eval):
        for p in group:
            digest.update(json.dumps([p.key, p.labels, p.confidences]).encode())
        digest.update(b"|")
    return digest.hexdigest()


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def _prefixed(prefix: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}/{k}": v for k, v in metrics.items()}


class Trainer:
    """One training run (see the module docstring); `run` does everything and returns a `TrainResult`."""

    def __init__(self, config: TrainConfig, callbacks: Sequence[StepCallback] = (), console: Console | None = None) -> None:
        require_reporter(config.report_to)
        self.config = config
        self.callbacks = list(callbacks)
        self.console = console or Console()
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.out = Path(config.out)
        self.log = MetricsLog(self.out / "metrics")
        self.loss_config = LossConfig(config.smoothing, config.both, config.confidence_weighting)

    # ------------------------------------------------------------------ setup
    def _load_data(self) -> Split:
        c = self.config
        pair_set = load_pairs(c.pairs, c.dataset_root, skip_invalid=c.skip_invalid)
        if pair_set.skipped_lines:
            self.console.print(f"[yellow]skipped {pair_set.skipped_lines} invalid line(s) of {escape(str(c.pairs))} "
                               f"({len(pair_set.skipped)} problem(s)); first: {escape(pair_set.skipped[0])}")
        split = split_pairs(pair_set.pairs, c.train_split, c.eval_split, c.eval_fraction, c.seed)
        kept = subsample(split.train, c.max_pairs, c.seed)
        note = f" (seeded subset of {len(split.train)})" if len(kept) < len(split.train) else ""
        self.console.print(f"pairs: {len(kept)} training{note}, {len(split.eval)} held out; {split.how}")
        return Split(train=kept, eval=split.eval, how=split.how)

    def _sources(self, model: CMIRewardModel, pairs: Sequence[PreferencePair]) -> tuple[TextSource, AudioSource]:
        """Text and audio sources: cached for frozen towers (filled now), live for towers that train."""
        c = self.config
        text_live = not c.feature_cache or any(p.requires_grad for p in model.text_module.parameters())
        audio_live = not c.feature_cache or any(p.requires_grad for p in model.audio_module.parameters())
        text: TextSource = LiveText(model)
        # Prepared waveforms are kept when the tower trains; --no-feature-cache measures everything live.
        audio: AudioSource = LiveAudio(model, c.max_dur, c.encode_batch_size,
                                       cache_bytes=WAVEFORM_CACHE_BYTES if c.feature_cache else 0)
        if not (text_live and audio_live):
            cache = FeatureCache(c.features_dir, model, c.max_dur, c.cache_dtype, c.encode_batch_size, c.progress)
            texts, clips = needed_inputs(pairs)
            done = cache.precompute(texts=() if text_live else sorted(texts), audio=() if audio_live else sorted(clips))
            self.console.print(f"feature cache {c.features_dir}: encoded {done['text']} new texts and "
                               f"{done['audio']} new clips")
            text = text if text_live else CachedText(model, cache)
            audio = audio if audio_live else CachedAudio(model, cache)
        for name, live in (("text", text_live), ("audio", audio_live)):
            if live:
                self.console.print(f"{name} tower runs live on every batch")
        return text, audio

    def _resume_point(self) -> ResumePoint | None:
        """The checkpoint to continue from (None: a new run); refuses to overwrite a run or change its options."""
        last = find_last(self.out)
        if last is not None and not self.config.resume:
            raise ConfigError(f"'{self.out}' already holds a run ({last}); pass --resume to continue it, or choose "
                              f"another --out")
        if last is None:
            if self.config.resume:
                self.console.print(f"nothing to resume in {self.out}: starting a new run")
            return None
        point = load_last(last)
        changed = self.config.changed_fields(point.config)
        if changed:
            raise ConfigError(f"cannot resume {last}: option(s) {', '.join(changed)} differ from the interrupted "
                              f"run (saved values: {', '.join(f'{k}={point.config.get(k)!r}' for k in changed)})")
        return point

    # ------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        with self.log:
            return self._run()

    def _run(self) -> TrainResult:
        c = self.config
        point = self._resume_point()
        split = self._load_data()
        state = self._start_state(point, split)
        self._start_metrics(point, state)
        torch.manual_seed(c.seed)
        model, source = build_training_model(c)
        model.to(self.device)
        self.console.print(f"model: {source}")
        self.console.print(count_parameters(model).describe())
        text, audio = self._sources(model, split.train + split.eval)
        self.model, self.text, self.audio, self.split = model, text, audio, split

        steps_per_epoch = math.ceil(len(split.train) / c.batch_size)
        total = steps_per_epoch * c.epochs
        self.optimizer = build_optimizer(model, c.lr, c.weight_decay)
        self.scheduler = warmup_cosine(self.optimizer, total, int(c.warmup * total))
        if point is not None:
            point.restore(model, self.optimizer, self.scheduler)
            self.console.print(f"resumed {point.directory} at step {state.global_step} (epoch {state.epoch + 1}, "
                               f"{state.batches_done} batches done)")
        elif split.eval:
            self._log_epoch(state, {}, self._evaluate())

        with self._progress() as progress:
            task = progress.add_task("training", total=total, completed=state.global_step)
            while state.epoch < c.epochs:
                train_metrics = self._train_epoch(state, progress, task)
                eval_metrics = self._evaluate() if split.eval else {}
                state.epoch += 1
                state.batches_done = 0
                self._log_epoch(state, train_metrics, eval_metrics)
                self._save_last(state)
        self.log.write_csv()
        best = self.out / BEST
        return TrainResult(out=self.out, best=best if best.is_dir() else None, last=self.out / LAST, state=state)

    def _start_state(self, point: ResumePoint | None, split: Split) -> TrainState:
        """A fresh state, or the checkpoint's (refused when the pairs differ from the interrupted run's)."""
        state = TrainState(data_fingerprint=_data_fingerprint(split))
        if point is None:
            return state
        if point.state.data_fingerprint != state.data_fingerprint:
            raise ConfigError(f"cannot resume {point.directory}: the training or held-out pairs differ from the "
                              f"interrupted run's (was {self.config.pairs} edited, or the run started by an older "
                              f"cmirm version?); start a new run with another --out")
        return point.state

    def _start_metrics(self, point: ResumePoint | None, state: TrainState) -> None:
        """Start the metric files (cut back to the checkpoint when resuming) and the ``--report-to`` reporter.

        Runs before the model is built, so that a reporter that cannot start (e.g. W&B without a
        login) stops the run before any encoding.
        """
        c = self.config
        if point is not None:
            self.log.truncate(state.global_step, state.epoch)
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            self.log.reset()
            (self.out / "train_config.json").write_text(json.dumps(c.to_dict(), indent=1))
        self.log.reporter = open_reporter(c.report_to, self.out, c.to_dict(),
                                          None if point is None else state.global_step)
        if c.report_to != "none":
            self.console.print(f"metrics also go to {c.report_to}"
                               + (f": tensorboard --logdir {escape(str(self.out / TENSORBOARD_DIR))}"
                                  if c.report_to == "tensorboard" else ""))

    def _progress(self) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=self.console, disable=not self.config.progress)

    def _autocast(self):
        """bf16 autocast when ``--bf16`` is set and training runs on CUDA (fp32 otherwise)."""
        return autocast(self.device, "bf16" if self.config.bf16 and self.device.type == "cuda" else "fp32")

    def _train_epoch(self, state: TrainState, progress: Progress, task: Any) -> dict[str, Any]:
        """Train the rest of epoch ``state.epoch``; return the whole epoch's training metrics.

        Per step, the score differences, the loss and the gradient norm come to the CPU in one copy;
        the metrics (epoch so far, in every step line too) are summed there. Mid-epoch saves carry
        the sums, so a resumed epoch reports all its batches.
        """
        c, model = self.config, self.model
        pairs = self.split.train
        order = _epoch_order(len(pairs), c.seed, state.epoch)
        batches = [order[s : s + c.batch_size] for s in range(0, len(order), c.batch_size)]
        metrics = PairwiseMetrics.from_state(state.train_sums) if state.batches_done else PairwiseMetrics()
        window_pairs, window_start = 0, time.perf_counter()
        params = [p for p in model.parameters() if p.requires_grad]
        model.train()
        for indices in batches[state.batches_done:]:
            batch = [pairs[i] for i in indices]
            labels = [p.labels for p in batch]
            targets = make_targets(labels, [p.confidences for p in batch], self.loss_config)   # CPU, for the metrics
            with self._autocast():
                score_a, score_b = score_pairs(model, batch, self.text, self.audio, c.missing)
            loss, _ = bradley_terry_loss(score_a.float(), score_b.float(), targets.to(self.device))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm if c.max_grad_norm > 0 else math.inf)
            lr = self.optimizer.param_groups[0]["lr"]                       # the rate this step uses
            self.optimizer.step()
            self.scheduler.step()
            diff = (score_a - score_b).detach().float()
            host = torch.cat([diff.flatten(), loss.detach().float().view(1), norm.detach().float().view(1)]).cpu()
            loss_value, norm_value = float(host[-2]), float(host[-1])
            metrics.update(host[:-2].view(diff.shape), targets, labels, [p.modality for p in batch])
            state.global_step += 1
            state.batches_done += 1
            state.window_norms.append(norm_value)
            window_pairs += len(batch)
            progress.update(task, advance=1, description=f"epoch {state.epoch + 1}/{c.epochs} loss {loss_value:.4f}")
            if state.global_step % c.log_steps == 0 or state.batches_done == len(batches):
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                self.log.log_step({"step": state.global_step, "epoch": state.epoch + 1,
                                   "lr": lr,
                                   "grad_norm": sum(state.window_norms) / len(state.window_norms),
                                   "pairs_per_s": window_pairs / elapsed, **_prefixed("train", metrics.compute())})
                state.window_norms, window_pairs, window_start = [], 0, time.perf_counter()
            if c.save_steps and state.global_step % c.save_steps == 0 and state.batches_done < len(batches):
                state.train_sums = metrics.state()
                self._save_last(state)
            for callback in self.callbacks:
                callback(state)
        state.train_sums = {}
        return metrics.compute()

    def _evaluate(self) -> dict[str, Any]:
        with self._autocast():
            return evaluate_pairs(self.model, self.split.eval, self.text, self.audio, self.loss_config,
                                  batch_size=2 * self.config.batch_size, missing=self.config.missing)

    def _info(self, state: TrainState) -> dict[str, Any]:
        """``train_info.json`` next to a saved model: where training stood and on which data (for model cards)."""
        split = self.split
        return {"stage": self.config.stage, "step": state.global_step, "epoch": state.epoch,
                "best_metric": state.best_metric, "best_epoch": state.best_epoch,
                "metrics": state.history[-1] if state.history else None,
                "data": {"pairs": Path(self.config.pairs).name, "train_pairs": len(split.train),
                         "eval_pairs": len(split.eval), "held_out": split.how}}

    def _log_epoch(self, state: TrainState, train_metrics: dict[str, Any], eval_metrics: dict[str, Any]) -> None:
        record = {"epoch": state.epoch, "step": state.global_step, **_prefixed("train", train_metrics),
                  **_prefixed("eval", eval_metrics)}
        state.history.append(record)
        self.log.log_epoch(record)
        self.console.print(self._summary(record))
        score = record.get(BEST_METRIC)
        if state.epoch > 0 and score is not None and (state.best_metric is None or score > state.best_metric):
            state.best_metric, state.best_epoch = score, state.epoch
            with atomic_directory(self.out / BEST) as tmp:
                save_release(self.model, tmp, self.config.merge_lora, self._info(state))

    @staticmethod
    def _summary(record: dict[str, Any]) -> str:
        def fmt(key: str) -> str:
            value = record.get(key)
            return "-" if value is None else f"{value:.4f}"

        parts = [f"epoch {record['epoch']} (step {record['step']})"]
        if "train/loss" in record:
            parts.append(f"train loss {fmt('train/loss')} acc {fmt('train/acc')}")
        if "eval/loss" in record:
            parts.append(f"eval loss {fmt('eval/loss')} acc alignment {fmt('eval/acc/alignment')} "
                         f"musicality {fmt('eval/acc/musicality')}")
        return " | ".join(parts)

    def _save_last(self, state: TrainState) -> None:
        save_last(self.out, self.model, self.optimizer, self.scheduler, state, self.config.to_dict(),
                  self.config.merge_lora, self._info(state))


def train_reward_model(config: TrainConfig, callbacks: Sequence[StepCallback] = (),
                       console: Console | None = None) -> TrainResult:
    """Run one training stage (see the module docstring) and return where its outputs are."""
    return Trainer(config, callbacks, console).run()
