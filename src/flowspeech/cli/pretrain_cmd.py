"""``flowspeech pretrain-phonemes``: mixed-phoneme pre-training of NaturalSpeech's phoneme
encoder on text (Tan et al., 2022, Sec. 3.1; Zhang et al., 2022), with the shared loop."""

from __future__ import annotations

#: The config used without --config: the IPA front end of VITS/NaturalSpeech and the
#: PhonemeEncoder defaults (NaturalSpeech's sizes).
DEFAULT_CONFIG = {
    "model": "phoneme-lm",
    "description": "Mixed-Phoneme BERT pre-training of the NaturalSpeech phoneme encoder",
    "text": {"symbol_set": "ipa", "phonemizer": "espeak"},
    "model_args": {
        "bpe_vocab_size": 30000,
        "phoneme_encoder": {"channels": 192, "filter_channels": 768, "n_heads": 2, "n_layers": 6,
                            "kernel_size": 3, "dropout": 0.1, "window_size": 4},
    },
    "train": {
        "batch_size": 32, "max_steps": 100_000, "learning_rate": 1.0, "betas": [0.9, 0.98],
        "eps": 1e-9, "scheduler": "noam", "warmup_steps": 4000, "grad_clip_norm": 1.0,
        "num_workers": 0, "log_every": 50, "eval_every": 1000, "checkpoint_every": 1000,
        "mask_ratio": 0.15,
    },
}


def register(subparsers) -> None:
    from flowspeech.cli.common import add_threads_arg

    p = subparsers.add_parser(
        "pretrain-phonemes",
        help="pre-train a NaturalSpeech phoneme encoder on text (mixed-phoneme masked LM)",
        description="Pre-train the phoneme encoder as a masked language model over phonemes "
        "and sup-phonemes (BPE units of phonemes), as NaturalSpeech does (Mixed-Phoneme BERT). "
        "Writes checkpoints, config.yaml, sup_phoneme_tokenizer.json, train.log and TensorBoard "
        "logs into OUT; the checkpoints are what the NaturalSpeech recipe loads.",
    )
    p.add_argument("--text", required=True, metavar="FILE_OR_DATASET",
                   help="a text file with one sentence per line, or an LJSpeech-layout folder "
                   "(its metadata.csv normalised text)")
    p.add_argument("--val-text", metavar="FILE_OR_DATASET",
                   help="validation sentences (default: the last 1%% of a corpus of 100+ lines)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", help="preset name or YAML file; a phoneme-lm config, or another "
                   "model's config whose text section and model_args.phoneme_encoder are taken "
                   "(default: IPA/espeak text and NaturalSpeech's encoder sizes; with --resume, "
                   "OUT/config.yaml)")
    p.add_argument("--bpe-vocab", type=int, metavar="N",
                   help="sup-phoneme vocabulary size (default 30000, as the papers; it counts the "
                   "single phonemes, and a small corpus yields fewer units)")
    p.add_argument("--max-steps", type=int,
                   help="stop after this many steps (default: the config's)")
    p.add_argument("--batch-size", type=int, help="sentences per batch (per process)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in OUT")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    add_threads_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def resolve_config(source: str | None) -> dict:
    """The phoneme-lm config for ``--config`` (None: :data:`DEFAULT_CONFIG`)."""
    from pathlib import Path

    from flowspeech.config import load_config, merge
    from flowspeech.errors import ConfigError

    if source is None:
        return merge(DEFAULT_CONFIG, {})
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        import yaml

        from flowspeech.config import load_yaml

        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = load_yaml(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read config {path}: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping, got {type(data).__name__}")
        # A file may be a partial phoneme-lm config: missing sections take the defaults.
        loaded = load_config(path) if "base" in data else data
    else:
        loaded = load_config(source)
    model = loaded.get("model", "phoneme-lm")
    if model == "phoneme-lm":
        config = merge(DEFAULT_CONFIG, loaded)
        if "text" in loaded:  # a front end is given whole, never mixed with the default's
            config["text"] = dict(loaded["text"] or {})
        return config
    # Another model's config (e.g. NaturalSpeech's): pre-train the encoder it will load.
    taken = {"text": loaded.get("text") or {}}
    encoder = (loaded.get("model_args") or {}).get("phoneme_encoder")
    if encoder is None:
        raise ConfigError(f"config {source} describes a {model!r} model without "
                          "model_args.phoneme_encoder: give a phoneme-lm config (model: "
                          "phoneme-lm) or one with a phoneme_encoder section")
    config = merge(DEFAULT_CONFIG, {"model_args": {"phoneme_encoder": encoder}})
    config["text"] = dict(taken["text"])
    return config


def run(args) -> int:
    from pathlib import Path

    from flowspeech.errors import ConfigError

    source = args.config
    saved = Path(args.out) / "config.yaml"
    if source is None and args.resume and saved.is_file():
        source = str(saved)
    config = resolve_config(source)
    if args.bpe_vocab is not None:
        config["model_args"]["bpe_vocab_size"] = args.bpe_vocab
    if args.batch_size is not None:
        config.setdefault("train", {})["batch_size"] = args.batch_size
    for flag, value in (("--bpe-vocab", args.bpe_vocab), ("--batch-size", args.batch_size),
                        ("--max-steps", args.max_steps)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive integer, got {value}")

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from flowspeech.training.recipes.phoneme_lm import TOKENIZER_FILE, PhonemeLMRecipe
    from flowspeech.training.trainer import Trainer

    recipe = PhonemeLMRecipe(config, run_dir=args.out)
    from flowspeech.cli.common import resolve_device, set_torch_threads

    set_torch_threads(args.threads)
    if args.device is not None:
        resolve_device(args.device)  # a typo or a missing GPU: one line now, not a traceback later
    trainer = Trainer(recipe, args.out, args.text, val_data=args.val_text, resume=args.resume,
                      max_steps=args.max_steps, device=args.device, progress=not args.no_progress)
    result = trainer.fit()
    if not trainer.dist.is_main:
        return 0
    if recipe.skipped:
        print(f"skipped {len(recipe.skipped)} line(s) the text front end rejects "
              f"(first: {recipe.skipped[0][0]}: {recipe.skipped[0][1]})")
    if recipe.tokenizer is not None:
        print(f"sup-phonemes: {recipe.tokenizer.vocab_size} ids (asked for "
              f"{recipe.bpe_vocab_size}); stored in {Path(args.out) / TOKENIZER_FILE} and in "
              f"every checkpoint")
    if result:
        print("last averages: " + " ".join(f"{k}={v:.4f}" for k, v in result.items()))
    print(f"run folder: {args.out} (step {trainer.step})")
    return 0
