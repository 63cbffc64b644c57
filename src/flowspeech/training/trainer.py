"""The one training loop every flowspeech model uses.

Features: torchrun/DDP (NCCL or gloo), bf16/fp16 autocast on CUDA and bf16 on CPU, gradient clipping by
norm or value, NaN/inf guards that skip a step on every rank at once, atomic checkpoints
with keep-last-K rotation, exact resume (weights, optimisers, schedulers, grad scaler, step,
data position and every rank's RNG state), an optional moving average of the weights,
TensorBoard logs and a progress bar with step/s and ETA. What differs between models lives in a :class:`~flowspeech.training.recipe.Recipe`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from flowspeech.checkpoints import load_checkpoint, load_state_dict_checked, load_state_dict_partial
from flowspeech.config import load_yaml
from flowspeech.data import BucketBatchSampler
from flowspeech.errors import CheckpointError, ConfigError
from flowspeech.training import distributed as fdist
from flowspeech.training.checkpoint import CheckpointManager
from flowspeech.training.recipe import Recipe
from flowspeech.training.weight_average import WeightAverage
from flowspeech.utils.files import FolderLock, atomic_write

log = logging.getLogger("flowspeech.train")


# --- random state, in a form torch.load(weights_only=True) accepts --------------------------
def capture_rng(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StepContext:
    """Handed to ``Recipe.training_step``: runs forward passes under autocast and turns a
    loss into a guarded optimiser step."""

    def __init__(self, trainer: "Trainer"):
        self.t = trainer
        self.model = trainer.model          # DDP-wrapped when distributed
        self.raw_model = trainer.raw_model
        self.step = trainer.step
        self.device = trainer.device
        self.grad_norms: dict[str, float] = {}
        self.skipped: list[str] = []

    def autocast(self):
        return self.t.autocast()

    def optimize(self, loss: torch.Tensor, name: str = "main",
                 parameters: list[torch.nn.Parameter] | None = None) -> bool:
        """Backward + clip + step for optimiser ``name``. Returns False (and changes no weight)
        when the loss or the gradients are not finite, on every rank at once."""
        t = self.t
        opt = t.optimizers[name]
        finite = bool(torch.isfinite(loss.detach()).all())
        if not fdist.all_true(finite, t.dist, t.device):
            opt.zero_grad(set_to_none=True)
            self.skipped.append(f"{name}: loss is {float(loss.detach().float().mean())}")
            return False
        scaler = t.scaler
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        params = parameters or [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        cfg = t.recipe.train
        if cfg.grad_clip_value is not None:
            torch.nn.utils.clip_grad_value_(params, cfg.grad_clip_value)
        max_norm = cfg.grad_clip_norm if cfg.grad_clip_norm is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.grad_norms[name] = float(grad_norm)
        # DDP has already averaged the gradients, so every rank sees the same norm here.
        if not math.isfinite(self.grad_norms[name]) and not t.scaler.is_enabled():
            opt.zero_grad(set_to_none=True)
            self.skipped.append(f"{name}: gradient norm is {self.grad_norms[name]}")
            return False
        scaler.step(opt)  # an fp16 scaler skips the step itself on inf gradients
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return True

    # For recipes that do more than a step now and then (e.g. start a module from data).
    @property
    def train_set(self):
        return self.t.train_set

    @property
    def dist(self) -> fdist.DistInfo:
        return self.t.dist

    def to_device(self, batch):
        return self.t._to_device(batch)

    def log(self, msg: str) -> None:
        """A message on the console and in train.log (main process only)."""
        self.t._print(msg)


class Trainer:
    """Train ``recipe``'s model on ``data``, writing into ``run_dir``.

    ``run_dir`` layout: ``config.yaml`` (the resolved config), ``checkpoints/step_*.pt``,
    ``tensorboard/`` (event files), ``train.log``, and what the recipe keeps beside them
    (:meth:`Recipe.save_run_state`: Glow-TTS's ``latent_cache/``).
    """

    def __init__(self, recipe: Recipe, run_dir: str | Path, data: str, *, val_data: str | None = None,
                 cache_dir: str | None = None, resume: bool = False, max_steps: int | None = None,
                 device: str | None = None, progress: bool = True, tensorboard: bool = True,
                 init_from: str | None = None, init_partial: bool = False):
        self.recipe = recipe
        self.init_from, self.init_partial = init_from, init_partial
        self.run_dir = Path(run_dir)
        self.data, self.val_data, self.cache_dir = data, val_data, cache_dir
        self.resume = resume
        self.cfg = recipe.train
        self.max_steps = int(max_steps if max_steps is not None else self.cfg.max_steps)
        self.progress = progress
        self.use_tensorboard = tensorboard
        want = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dist = fdist.init_distributed(torch.device(want).type)
        if torch.device(want).type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank if self.dist.enabled else
                                       (torch.device(want).index or 0))
        else:
            self.device = torch.device(want)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.ckpt = CheckpointManager(self.run_dir, keep=self.cfg.keep_checkpoints)
        self.writer = None
        self.weight_average: WeightAverage | None = None
        self._average_model: torch.nn.Module | None = None  # the average's copy, for validation

    # --- set-up ------------------------------------------------------------------------------
    def autocast(self):
        p = self.cfg.precision
        if p == "bf16" and self.device.type in ("cuda", "cpu"):
            # On CPUs with AVX512-BF16 or AMX the convolutions run ~1.7x faster (WaveGlow and
            # FloWaveNet small presets; docs/benchmarks.md, "Training in bfloat16 on a CPU").
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if p == "fp16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()  # fp32, or fp16 off CUDA (as the presets say)

    def _prepare_run_dir(self) -> None:
        existing = self.ckpt.list()
        if existing and not self.resume:
            raise ConfigError(
                f"{self.run_dir} already holds checkpoints (latest: step {existing[-1][0]}); pass "
                f"--resume to continue that run, or choose another --out folder")
        if self.dist.is_main:

            self.run_dir.mkdir(parents=True, exist_ok=True)
            saved = self.run_dir / "config.yaml"
            if self.resume and saved.is_file():
                self._check_same_model(load_yaml(saved.read_text()))

            text = yaml.safe_dump(self.recipe.config, sort_keys=False)
            atomic_write(saved, lambda tmp: Path(tmp).write_text(text))
            self._attach_log_handlers()
        fdist.barrier(self.dist)

    def _attach_log_handlers(self) -> None:
        """train.log gets every line; the console gets them only without a progress bar
        (the bar's postfix shows the losses)."""
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
        log.setLevel(logging.INFO)
        log.propagate = False
        file_handler = logging.FileHandler(self.run_dir / "train.log")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(file_handler)
        if not self.progress:

            console = logging.StreamHandler(sys.stdout)
            console.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(console)

    def _check_same_model(self, saved: dict) -> None:
        for key in ("model", "model_args", "audio", "text"):
            if saved.get(key) != self.recipe.config.get(key):
                raise ConfigError(
                    f"--resume with a config whose {key!r} section differs from the run's "
                    f"{self.run_dir / 'config.yaml'}; resume with that config (or no --config)")

    def _build(self) -> None:
        recipe = self.recipe
        self.train_set, self.val_set = recipe.build_datasets(self.data, self.val_data, self.cache_dir)
        self.sampler = BucketBatchSampler(
            self.train_set.lengths, self.cfg.batch_size,
            n_buckets=max(self.cfg.n_buckets, 1), shuffle=True, seed=self.cfg.seed,
            num_replicas=self.dist.world_size, rank=self.dist.rank, drop_last=False)
        self.raw_model = recipe.build_model().to(self.device)
        self.optimizers = recipe.build_optimizers(self.raw_model)
        self.schedulers = recipe.build_schedulers(self.optimizers)
        fp16 = self.cfg.precision == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)

    def _loader(self):
        # The loader gets its own generator so creating it mid-epoch (after a resume) draws
        # nothing from the global RNG: the resumed run then matches the uninterrupted one.
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + self.epoch)
        return torch.utils.data.DataLoader(
            self.train_set, batch_sampler=self.sampler, collate_fn=self.recipe.collate,
            num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda",
            generator=generator, persistent_workers=False)

    def _to_device(self, batch):
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
            return type(batch)(self._to_device(v) for v in batch)
        return batch

    def _first_batch(self) -> dict:
        self.sampler.set_epoch(0)
        indices = next(iter(self.sampler))
        return self._to_device(self.recipe.collate([self.train_set[i] for i in indices]))

    # --- checkpoints -------------------------------------------------------------------------
    def _payload(self, rng_states: list) -> dict[str, Any]:
        payload = {
            "model_type": self.recipe.model_type,
            "config": self.recipe.config,
            "model": self.raw_model.state_dict(),
            "step": self.step,
            "inference": self.recipe.inference_extras(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "trainer": {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                        "world_size": self.dist.world_size, "rng": rng_states},
        }
        if self.weight_average is not None:
            payload["weight_average"] = self.weight_average.state_dict(self.raw_model)
        return payload

    def save(self) -> None:
        rng = fdist.gather_objects(capture_rng(self.device), self.dist)
        if self.dist.is_main:
            path = self.ckpt.save(self.step, self._payload(rng))
            log.info("step %d: checkpoint %s", self.step, path)
        self.recipe.save_run_state(self.run_dir, self.raw_model, self.dist.rank)
        fdist.barrier(self.dist)

    def _restore(self) -> bool:
        payload = self.ckpt.load_latest(self.recipe.model_type, log=self._print)
        if payload is None:
            return False
        source = payload["_path"]
        load_state_dict_checked(self.raw_model, payload["model"], source)
        for name, opt in self.optimizers.items():
            if name not in payload.get("optimizers", {}):
                raise CheckpointError(f"{source} has no state for optimiser {name!r}: it is not a "
                                      f"training checkpoint of this recipe")
            opt.load_state_dict(payload["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(payload["schedulers"][name])
        self.scaler.load_state_dict(payload["scaler"])
        self.step = int(payload["step"])
        tr = payload["trainer"]
        self.epoch, self.batch_in_epoch = int(tr["epoch"]), int(tr["batch_in_epoch"])
        rng = tr["rng"]
        if tr.get("world_size", 1) == self.dist.world_size:
            restore_rng(rng[self.dist.rank], self.device)
        else:
            self._print(f"warning: {source} was written by {tr.get('world_size')} processes and "
                        f"this run has {self.dist.world_size}: data order and RNG are re-seeded, "
                        f"so the continuation is not bit-exact")
            seed_all(self.cfg.seed + self.step * 7919 + self.dist.rank)
            self.batch_in_epoch = 0
            self.epoch += 1
        self._saved_average = payload.get("weight_average")
        self._print(f"resumed from {source} at step {self.step}")
        return True

    _saved_average = None

    def _start_weight_average(self) -> None:
        """The average, from the resumed checkpoint's or (a new run, or one that did not keep
        one) from the weights as they are now."""
        decay = self.cfg.weight_average_decay
        if decay is None:
            if self._saved_average is not None:
                self._print("note: the checkpoint's weight average is dropped "
                            "(train.weight_average_decay is null)")
            return
        self.weight_average = WeightAverage(self.raw_model, decay)
        if self._saved_average is not None:
            self.weight_average.load_state_dict(self._saved_average)
        elif self.step > 0:
            self._print(f"note: the weight average (decay {decay}) starts at step {self.step} "
                        f"from the weights as they are")
        self._saved_average = None

    # --- logging -----------------------------------------------------------------------------
    def _print(self, msg: str) -> None:
        """A message for the user: on the console (above the bar) and in train.log."""
        if self.dist.is_main:
            if self._bar is not None:
                self._bar.write(msg)
            elif self.progress or not log.handlers:
                print(msg, flush=True)
            log.info(msg)

    _bar = None

    def _warm_start(self, path: str) -> None:
        # Weights only (a training checkpoint, or an exported/float16 voice): optimiser,
        # schedule and step start afresh, so the learning-rate warm-up runs again. Partial:
        # the tensors that fit replace the fresh ones (after the recipe's initialisation).

        payload = load_checkpoint(path, model_type=self.recipe.model_type)
        what = "the weights"
        if self.init_partial:
            kept, ignored = load_state_dict_partial(self.raw_model, payload["model"], str(path))
            what = f"{len(payload['model']) - len(ignored)} of the model's {len(self.raw_model.state_dict())} tensors"
            for title, names in (("kept fresh", kept), ("ignored from the checkpoint", ignored)):
                if names:
                    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
                    self._print(f"--init-partial: {title}: {shown}")
        else:
            load_state_dict_checked(self.raw_model, payload["model"], str(path))
        self._print(f"initialised {what} from {path} (its step {payload.get('step')}); "
                    f"optimiser and schedule start at step 0")

    def _open_writer(self):
        if self.dist.is_main and self.use_tensorboard:

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step + 1)

    # --- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until ``max_steps``; returns the last logged averages.

        The run folder is locked while training (by the main process): a second ``train``
        into the same ``--out`` fails at once and names this one."""
        finished = False
        lock = contextlib.ExitStack()
        try:
            if self.dist.is_main:
                lock.enter_context(FolderLock(self.run_dir, f"flowspeech train {self.recipe.model_type}"))
            out = self._fit()
            finished = True
            return out
        finally:
            lock.close()
            if self.writer is not None:
                self.writer.close()
            for h in list(log.handlers):
                log.removeHandler(h)
                h.close()
            self.model = getattr(self, "raw_model", None)  # drop DDP wrappers: they hold the group
            fdist.cleanup(self.dist, finished)

    def _fit(self) -> dict[str, float]:
        self._prepare_run_dir()
        seed_all(self.cfg.seed + self.dist.rank)
        self._build()
        resumed = self.resume and self._restore()
        if self.resume and not resumed:
            self._print(f"note: {self.run_dir} holds no checkpoint to resume: starting at step 0")
        if not resumed and (not self.init_from or self.init_partial):
            self.raw_model.train()
            self.recipe.initialize(self.raw_model, self._first_batch())
        if not resumed and self.init_from:
            self._warm_start(self.init_from)
        self._start_weight_average()
        self.recipe.load_run_state(self.run_dir, self.raw_model)
        self.model = self.raw_model
        if self.dist.enabled:

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = self.recipe.wrap_distributed(
                self.raw_model, lambda module: DDP(module, device_ids=ids,
                                                   find_unused_parameters=self.cfg.find_unused_parameters))
        self._open_writer()
        val_chunks = self._val_chunks()
        if self.step >= self.max_steps:
            self._print(f"nothing to do: the run is at step {self.step} >= --max-steps {self.max_steps}")
            return {}
        self.raw_model.train()
        sums: dict[str, float] = defaultdict(float)
        count, skipped_in_row, last = 0, 0, {}
        t_log = time.perf_counter()
        bar = None
        if self.progress and self.dist.is_main:

            bar = tqdm(total=self.max_steps, initial=self.step, unit="step", dynamic_ncols=True,
                       desc=f"{self.recipe.model_type}", mininterval=1.0)
            self._bar = bar
        try:
            while self.step < self.max_steps:
                self.sampler.set_epoch(self.epoch)
                if hasattr(self.train_set, "set_epoch"):  # e.g. random vocoder segments
                    self.train_set.set_epoch(self.epoch)
                self.sampler.load_state_dict({"epoch": self.epoch, "batches_yielded": self.batch_in_epoch})
                for batch in self._loader():
                    batch = self._to_device(batch)
                    ctx = StepContext(self)
                    scalars = self.recipe.training_step(ctx, batch)
                    for sched in self.schedulers.values():
                        sched.step()
                    if self.weight_average is not None:
                        self.weight_average.update(self.raw_model)
                    self.step += 1
                    self.batch_in_epoch += 1
                    if ctx.skipped:
                        skipped_in_row += 1
                        self._print(f"step {self.step}: skipped ({'; '.join(ctx.skipped)})")
                        if self.writer is not None:
                            self.writer.add_scalar("train/skipped_steps", 1, self.step)
                        if skipped_in_row >= self.cfg.max_consecutive_skips:
                            raise FloatingPointError(
                                f"{skipped_in_row} steps in a row had NaN/inf losses or gradients; "
                                f"training stopped (the last good checkpoint is untouched). Lower "
                                f"the learning rate or check the data.")
                    else:
                        skipped_in_row = 0
                        for k, v in scalars.items():
                            sums[k] += float(v)
                        for k, v in ctx.grad_norms.items():
                            sums[f"grad_norm/{k}"] += v
                        count += 1
                    if bar is not None:
                        bar.update(1)
                        if count:
                            bar.set_postfix({k: f"{v / count:.3f}" for k, v in list(sums.items())[:3]},
                                            refresh=False)
                    if self.step % self.cfg.log_every == 0 and count:
                        now = time.perf_counter()
                        last = {k: v / count for k, v in sums.items()}
                        self._log_scalars(last, steps_per_s=self.cfg.log_every / (now - t_log))
                        sums.clear()
                        count, t_log = 0, now
                    if val_chunks and self.step % self.cfg.eval_every == 0:
                        self._validate(val_chunks)
                    if self.step % self.cfg.checkpoint_every == 0 or self.step >= self.max_steps:
                        self.save()
                    if self.step >= self.max_steps:
                        break
                else:
                    self.epoch += 1
                    self.batch_in_epoch = 0
        except KeyboardInterrupt:
            if not self.dist.enabled:  # one process: keep what was learnt since the last save
                self._print(f"interrupted at step {self.step}: saving a checkpoint")
                self.save()
            raise
        finally:
            if bar is not None:
                bar.close()
                self._bar = None
        if count:
            last = {k: v / count for k, v in sums.items()}
        return last

    def _log_scalars(self, values: dict[str, float], steps_per_s: float) -> None:
        lrs = {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}
        text = " ".join(f"{k}={v:.4f}" for k, v in values.items())
        log.info("step %d epoch %d %s lr=%s %.2f step/s", self.step, self.epoch, text,
                 ",".join(f"{v:.3g}" for v in lrs.values()), steps_per_s)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k if "/" in k else f"train/{k}", v, self.step)
            for name, lr in lrs.items():
                self.writer.add_scalar(f"lr/{name}", lr, self.step)
            self.writer.add_scalar("speed/steps_per_s", steps_per_s, self.step)

    def _val_chunks(self) -> list[range]:
        """Utterance indices of each validation batch: the whole validation split (as the
        authors' code averages it), or its first ``train.val_max_utterances``."""
        if self.val_set is None or len(self.val_set) == 0 or not self.dist.is_main:
            return []
        n = len(self.val_set)
        if self.cfg.val_max_utterances is not None:
            n = min(n, self.cfg.val_max_utterances)
        size = self.cfg.batch_size
        return [range(start, min(n, start + size)) for start in range(0, n, size)]

    def _validate(self, chunks: list[range]) -> None:
        """The recipe's scalars averaged over every validation utterance (each batch's
        values weighted by its utterances), and its samples of the first batch; then the
        scalars of the moving average of the weights, if the run keeps one."""
        if not self.dist.is_main:
            return
        values = self._validation_scalars(self.raw_model, chunks, samples=True)
        if values:
            values["utterances"] = float(sum(len(c) for c in chunks))
        self._report_validation(values, "validation", "val")
        if self.weight_average is not None:
            if self._average_model is None:
                self._average_model = copy.deepcopy(self.raw_model)
            self._average_model.load_state_dict(self.weight_average.model_state(self.raw_model))
            values = self._validation_scalars(self._average_model, chunks, samples=False)
            self._report_validation(values, "validation (weight average)", "val_weight_average")

    def _validation_scalars(self, model: torch.nn.Module, chunks: list[range], samples: bool) -> dict[str, float]:
        """``model``'s validation scalars over ``chunks``, with the recipe's samples of the
        first batch if ``samples``; ``model`` is left in training mode."""
        model.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        totals: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        extra: dict[str, float] = {}
        try:
            # Validation samples noise; a forked RNG keeps training's random stream the same
            # whether or not (and how often) validation runs.
            with torch.random.fork_rng(devices=devices, device_type=self.device.type):
                for i, chunk in enumerate(chunks):
                    batch = self._to_device(self.recipe.collate([self.val_set[j] for j in chunk]))
                    for k, v in self.recipe.validate(model, batch).items():
                        totals[k] += float(v) * len(chunk)
                        counts[k] += len(chunk)
                    if samples and i == 0:
                        extra = self.recipe.validate_samples(model, batch, self.step, self.writer)
        finally:
            model.train()
        values = {k: totals[k] / counts[k] for k in totals}
        values.update(extra)
        return values

    def _report_validation(self, values: dict[str, float], label: str, tag: str) -> None:
        if values:
            log.info("step %d %s %s", self.step, label, " ".join(f"{k}={v:.4f}" for k, v in values.items()))
            if self.writer is not None:
                for k, v in values.items():
                    self.writer.add_scalar(f"{tag}/{k}", v, self.step)
