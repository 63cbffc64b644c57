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
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from flowspeech.data import load_manifest
from flowspeech.errors import ConfigError, DatasetError
from flowspeech.models.registry import build_model
from flowspeech.training.schedules import build_scheduler


@dataclass
class TrainConfig:
    """The ``train:`` section of a config. Recipes subclass it to add their own fields, so
    that every option is typed: :meth:`from_dict` refuses unknown keys and values of the
    wrong type, and :meth:`validate` their ranges, each error naming the key."""

    batch_size: int = 32
    max_steps: int = 100_000
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    scheduler: Literal["none", "noam", "exponential"] = "none"
    warmup_steps: int = 4000         # noam
    lr_gamma: float = 1.0            # exponential, per step
    grad_clip_norm: float | None = None
    grad_clip_value: float | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16: autocast on CUDA and CPU; fp16: CUDA
    seed: int = 1234
    num_workers: int = 2
    n_buckets: int = 10              # length buckets for the batch sampler (1: no bucketing)
    log_every: int = 50
    eval_every: int = 1000
    val_max_utterances: int | None = None  # validate on the first N of the split (None: all)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 5
    max_consecutive_skips: int = 100  # NaN/inf steps in a row before training stops
    find_unused_parameters: bool = False
    # An exponential moving average of the weights, saved in each checkpoint beside them
    # (flowspeech.training.weight_average); null: none. Not in the papers' recipes.
    weight_average_decay: float | None = None

    #: Keys of the former ``train.extra`` whose name is taken by another option here.
    renamed_from_extra: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_dict(cls, section: dict[str, Any] | None):
        """The config of a ``train:`` section.

        Raises:
            ConfigError: an unknown key, a value of the wrong type or out of range (the
                message names ``train.KEY``).
        """
        section = dict(section or {})
        if "extra" in section:
            raise ConfigError(cls._extra_is_gone(section["extra"]))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - names)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join('train.' + k for k in unknown)}; known in "
                              f"train: {', '.join(sorted(names))}")
        hints = typing.get_type_hints(cls)
        cfg = cls(**{name: coerce(value, hints[name], f"train.{name}") for name, value in section.items()})
        cfg.validate()
        return cfg

    @classmethod
    def _extra_is_gone(cls, extra: Any) -> str:
        """How to move an old ``train.extra`` section: its keys up one level, renamed where a
        name was taken (a key moved as is would silently set another option)."""
        names = {f.name for f in dataclasses.fields(cls)}
        keys = sorted(extra) if isinstance(extra, dict) else []
        moved = [k for k in keys if k not in cls.renamed_from_extra and k in names]
        renamed = [f"{k} as {cls.renamed_from_extra[k]}" for k in keys if k in cls.renamed_from_extra]
        dropped = [k for k in keys if k not in cls.renamed_from_extra and k not in names]
        steps = ([f"move {', '.join(moved)} there"] if moved else []) + \
                ([f"move {', '.join(renamed)}"] if renamed else []) + \
                ([f"delete {', '.join(dropped)}, which this model does not have"] if dropped else [])
        return ("train.extra is gone: its keys now live directly under train:"
                + (f" ({'; '.join(steps)})" if steps else ""))

    def validate(self) -> None:
        """Ranges (types are checked by :meth:`from_dict`); subclasses add their own."""
        for name in ("batch_size", "max_steps", "log_every", "eval_every", "checkpoint_every",
                     "keep_checkpoints", "n_buckets", "max_consecutive_skips"):
            require(getattr(self, name) >= 1, f"train.{name} must be >= 1, got {getattr(self, name)}")
        require(self.num_workers >= 0, f"train.num_workers must be >= 0, got {self.num_workers}")
        require(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        require(self.learning_rate > 0, f"train.learning_rate must be > 0, got {self.learning_rate}")
        require(self.eps > 0 and self.weight_decay >= 0 and self.lr_gamma > 0,
                "train.eps and train.lr_gamma must be > 0 and train.weight_decay >= 0")
        require(all(0 <= b < 1 for b in self.betas), f"train.betas must lie in [0, 1), got {list(self.betas)}")
        for name in ("grad_clip_norm", "grad_clip_value"):
            value = getattr(self, name)
            require(value is None or value > 0, f"train.{name} must be > 0 or null, got {value}")
        require(self.weight_average_decay is None or 0 <= self.weight_average_decay < 1,
                f"train.weight_average_decay must lie in [0, 1) or be null (off), got "
                f"{self.weight_average_decay}")
        require(self.val_max_utterances is None or self.val_max_utterances >= 1,
                f"train.val_max_utterances must be >= 1 or null (all), got {self.val_max_utterances}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(d["betas"])
        return d


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def coerce(value: Any, kind: Any, key: str) -> Any:
    """``value`` checked against the annotation ``kind`` (int, float, bool, str, ``X | None``,
    ``Literal[...]``, ``tuple[float, float]``), ints accepted for floats; a ConfigError
    naming ``key`` otherwise. YAML gives these types; a ``--set`` value is parsed as YAML."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(options) == 1 else f"{key}: {value!r} is none of "
                          f"{', '.join(getattr(o, '__name__', str(o)) for o in options)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {value!r}")
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"{key}: no check for the annotation {kind!r}")  # a new field's type


class Recipe:
    """Base class; see the module docstring. Subclasses set ``model_type`` and
    ``train_config_class`` and implement the methods that raise NotImplementedError."""

    model_type: str = ""
    train_config_class = TrainConfig
    config_sections: tuple[str, ...] = ()  # top-level config sections beyond the usual ones

    @classmethod
    def check_config_sections(cls, config: dict[str, Any]) -> None:
        """Raise a ConfigError for a bad value in one of :attr:`config_sections` (called by
        :func:`flowspeech.training.config_check.check_config` before any work)."""

    @classmethod
    def check_model(cls, model: torch.nn.Module, train: TrainConfig) -> None:
        """Raise a ConfigError when the train options do not fit the model the config builds
        (e.g. a segment length the model cannot take). Called by :meth:`build_model` and,
        on a meta-device model, by ``check_config`` before any work."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.train = self.train_config_class.from_dict(config.get("train"))

    # --- what to train -------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
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
    def validate(self, model: torch.nn.Module, batch: dict) -> dict[str, float]:
        """Scalars of one validation batch (the loop averages them over the whole validation
        split, weighted by utterances)."""
        return {}

    @torch.no_grad()
    def validate_samples(self, model: torch.nn.Module, batch: dict, step: int, writer) -> dict[str, float]:
        """Once per validation, on the first validation batch: synthesis of an utterance and
        what it measures, and figures and audio for ``writer`` (TensorBoard; may be None)."""
        return {}

    # --- what a run keeps beside its checkpoints ------------------------------------------
    def load_run_state(self, run_dir: Path, model: torch.nn.Module) -> None:
        """Reload what :meth:`save_run_state` wrote into ``run_dir`` (e.g. a cache that
        depends only on frozen weights). Called on every rank once the weights are in place
        (resumed, warm-started or initialised), before the first step."""

    def save_run_state(self, run_dir: Path, model: torch.nn.Module, rank: int) -> None:
        """Write what the recipe keeps in ``run_dir`` besides the checkpoints. Called on
        every rank (``rank``: this process's) after each checkpoint."""

    def inference_extras(self) -> dict[str, Any]:
        """What inference needs besides the weights (stored in every checkpoint)."""
        return {}
