"""``flowspeech train MODEL``: train any model with the shared loop (also under torchrun)."""

from __future__ import annotations


def register(subparsers) -> None:
    from flowspeech.cli.common import add_threads_arg

    p = subparsers.add_parser(
        "train", help="train a model (single process, or multi-GPU/multi-node under torchrun)",
        description="Train MODEL on DATA, writing checkpoints, config.yaml, train.log and "
        "TensorBoard logs into OUT. Multi-GPU: torchrun --nproc_per_node=N "
        "$(which flowspeech) train ...",
    )
    from flowspeech.models.registry import model_specs  # a plain table: no heavy imports

    known = ", ".join(s.name for s in model_specs(trainable=True, plugins=False))
    p.add_argument("model", metavar="MODEL", help=f"model type: {known}, or one a plugin registers")
    p.add_argument("--config", help="preset name (see `flowspeech presets`) or YAML file; "
                   "with --resume defaults to OUT/config.yaml")
    p.add_argument("--data", required=True, help="dataset folder (LJSpeech layout, optionally "
                   "with filelists/) or a path|text filelist")
    p.add_argument("--val-data", help="validation set (default: the dataset's val split, if any)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (default: the config's)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT")
    p.add_argument("--init-from", metavar="CKPT", help="start from these weights (a checkpoint or "
                   "an exported voice of the same model and config) instead of a fresh "
                   "initialisation; the optimiser and schedule start afresh")
    p.add_argument("--init-partial", action="store_true", help="with --init-from: take only the "
                   "tensors whose names and shapes match (e.g. all but the token embedding of a "
                   "model trained on another symbol set); the rest start fresh, and the log "
                   "lists them")
    p.add_argument("--cache-dir", help="feature cache folder (default: DATA/.flowspeech_cache)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--batch-size", type=int, help="override train.batch_size (per process)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="override train.precision: bf16 autocast runs on CUDA and on CPUs (fast with "
                   "AVX512-BF16 or AMX); fp16 needs CUDA (fp32 elsewhere)")
    p.add_argument("--num-workers", type=int, help="override train.num_workers")
    add_threads_arg(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.learning_rate=0.5 "
                   "(value parsed as YAML; repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def parse_overrides(items: list[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML).

    Raises:
        ConfigError: an item that is not KEY=VALUE with a dotted key of names, a value YAML
            cannot read, or a key given both as a value and as a section.
    """
    import re

    import yaml

    from flowspeech.config import load_yaml
    from flowspeech.errors import ConfigError

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", p) for p in parts):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key such as "
                              f"train.learning_rate=1e-4")
        try:
            parsed = load_yaml(value)
        except yaml.YAMLError as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({reason})") from None
        node = out
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:depth + 1])} was set to a "
                                  f"value by another --set, so it has no keys")
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"--set {item!r}: {key} is a section set by another --set")
        node[parts[-1]] = parsed
    return out


def run(args) -> int:
    from pathlib import Path

    from flowspeech.config import load_config
    from flowspeech.errors import ConfigError
    from flowspeech.models.registry import get_spec, model_specs

    if get_spec(args.model).recipe is None:  # get_spec names the known types for a typo
        trainable = ", ".join(s.name for s in model_specs(trainable=True))
        raise ConfigError(f"{args.model!r} models are not trained with `flowspeech train`; "
                          f"trainable: {trainable}")
    if args.init_partial and not args.init_from:
        raise ConfigError("--init-partial needs --init-from CKPT")
    config_source = args.config
    if config_source is None:
        saved = Path(args.out) / "config.yaml"
        if args.resume and saved.is_file():
            config_source = str(saved)
        elif args.resume:
            raise ConfigError(f"--resume: {args.out} holds no run to continue (no config.yaml); "
                              f"check --out, or start a run there with --config PRESET")
        else:
            raise ConfigError("give --config (a preset name or YAML file); "
                              "only --resume can take it from the run folder")
    overrides = parse_overrides(args.set)
    # Each override labelled as the user typed it, so that a check names the one at fault.
    layers = [(f"--set {item}", parse_overrides([item])) for item in args.set]
    train = overrides.setdefault("train", {})
    for flag, key in (("batch_size", "batch_size"), ("precision", "precision"), ("num_workers", "num_workers")):
        value = getattr(args, flag)
        if value is not None:
            train[key] = value
            layers.append((f"--{flag.replace('_', '-')} {value}", {"train": {key: value}}))
    config = load_config(config_source, overrides)
    if config["model"] != args.model:
        raise ConfigError(f"config {config_source} describes a {config['model']!r} model, not {args.model!r}")
    from flowspeech.training.config_check import check_config

    check_config(config, config_source, layers)

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from flowspeech.training.recipes import recipe_for
    from flowspeech.training.trainer import Trainer

    from flowspeech.cli.common import resolve_device, set_torch_threads

    set_torch_threads(args.threads)
    if args.device is not None:
        resolve_device(args.device)  # a typo or a missing GPU: one line now, not a traceback later
    trainer = Trainer(recipe_for(config), args.out, args.data, val_data=args.val_data,
                      cache_dir=args.cache_dir, resume=args.resume, max_steps=args.max_steps,
                      device=args.device, progress=not args.no_progress, init_from=args.init_from,
                      init_partial=args.init_partial)
    result = trainer.fit()
    if not trainer.dist.is_main:
        return 0
    if result:
        print("last averages: " + " ".join(f"{k}={v:.4f}" for k, v in result.items()))
    print(f"run folder: {args.out} (step {trainer.step})")
    return 0
