"""What a model family tells the shared training loop.

The loop (:class:`flowspeech.training.trainer.Trainer`) owns everything models have in
common: devices, torchrun/DDP, mixed precision, gradient clipping, NaN guards, checkpoints,
exact resume, TensorBoard, the progress bar. A :class:`Recipe` owns what differs: the model,
its data, its optimisers and its loss. A recipe's ``training_step`` computes losses and hands
each one to ``ctx.optimize(loss, name)``, so models with two optimisers (GANs) fit the same
loop as models with one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from flowspeech.errors import ConfigError


@dataclass
class TrainConfig:
    """The ``train:`` section of a config. Recipes subclass it to add their own fields."""

    batch_size: int = 32
    max_steps: int = 100_000
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    scheduler: str = "none"          # none | noam | exponential
    warmup_steps: int = 4000         # noam
    lr_gamma: float = 1.0            # exponential, per step
    grad_clip_norm: float | None = None
    grad_clip_value: float | None = None
    precision: str = "fp32"          # fp32 | bf16 (autocast on CUDA and CPU) | fp16 (CUDA only)
    seed: int = 1234
    num_workers: int = 2
    n_buckets: int = 10              # length buckets for the batch sampler (1: no bucketing)
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 5
    max_consecutive_skips: int = 100  # NaN/inf steps in a row before training stops
    find_unused_parameters: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, section: dict[str, Any] | None):
        section = dict(section or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - names)
        if unknown:
            raise ConfigError(
                f"unknown key(s) in train section: {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        if "betas" in section:
            section["betas"] = tuple(section["betas"])
        cfg = cls(**section)
        if cfg.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be fp32, bf16 or fp16, not {cfg.precision!r}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(d["betas"])
        return d


class Recipe:
    """Base class; see the module docstring. Subclasses set ``model_type`` and
    ``train_config_class`` and implement the methods that raise NotImplementedError."""

    model_type: str = ""
    train_config_class = TrainConfig

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.train = self.train_config_class.from_dict(config.get("train"))

    # --- what to train -------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        from flowspeech.models.registry import build_model

        return build_model(self.config)

    def build_datasets(self, data: str, val_data: str | None, cache_dir: str | None):
        """Return ``(train_dataset, val_dataset_or_None)``; datasets have ``lengths``."""
        raise NotImplementedError

    @staticmethod
    def manifests(data: str, val_data: str | None):
        """Training and validation manifests.

        A dataset folder with ``filelists/*train*`` (the LJSpeech split, or one made by
        ``make_corpus.py``) trains on that split and validates on its ``val`` split; any other
        folder or filelist trains on all of it and validates on ``val_data`` if given.
        """
        from pathlib import Path

        from flowspeech.data import load_manifest
        from flowspeech.errors import DatasetError

        path = Path(data)
        train = None
        if path.is_dir() and (path / "filelists").is_dir():
            try:
                train = load_manifest(path, split="train")
            except DatasetError as err:
                if "no filelist for split" not in str(err):
                    raise
        if train is None:
            train = load_manifest(path)
        val = None
        if val_data is not None:
            val = load_manifest(val_data)
        elif path.is_dir() and train.source != path / "metadata.csv":
            try:
                val = load_manifest(path, split="val")
            except DatasetError:
                val = None
        return train, val

    def collate(self, items: list[dict]) -> dict:
        raise NotImplementedError

    def build_optimizers(self, model: torch.nn.Module) -> dict[str, torch.optim.Optimizer]:
        t = self.train
        return {"main": torch.optim.AdamW(model.parameters(), lr=t.learning_rate, betas=t.betas,
                                          eps=t.eps, weight_decay=t.weight_decay)
                if t.weight_decay else
                torch.optim.Adam(model.parameters(), lr=t.learning_rate, betas=t.betas, eps=t.eps)}

    def build_schedulers(self, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        from flowspeech.training.schedules import build_scheduler

        t = self.train
        kwargs = {"warmup_steps": t.warmup_steps, "gamma": t.lr_gamma,
                  "d_model": self.config.get("model_args", {}).get("hidden_channels", 1)}
        return {name: build_scheduler(opt, t.scheduler, **kwargs) for name, opt in optimizers.items()}

    # --- how to train --------------------------------------------------------------------
    def initialize(self, model: torch.nn.Module, batch: dict) -> None:
        """Data-dependent initialisation (e.g. ActNorm), run once before step 1 on every rank
        (DDP then broadcasts rank 0's weights)."""

    def wrap_distributed(self, model: torch.nn.Module, wrap) -> torch.nn.Module:
        """The module ``training_step`` calls as ``ctx.model`` under torchrun: ``wrap(module)``
        returns a DistributedDataParallel wrapper of ``module``. One wrapper around the whole
        model by default; GANs wrap generator and discriminator separately."""
        return wrap(model)

    def training_step(self, ctx, batch: dict) -> dict[str, float]:
        """Compute losses under ``ctx.autocast()``, call ``ctx.optimize(loss, name)`` for each
        optimiser, return scalars to log."""
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, batch: dict, step: int, writer) -> dict[str, float]:
        """Evaluate on a fixed validation batch; may write images/audio to ``writer``."""
        return {}

    def inference_extras(self) -> dict[str, Any]:
        """What inference needs besides the weights (stored in every checkpoint)."""
        return {}
