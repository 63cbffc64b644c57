"""``flowspeech preprocess``: fill the feature cache of a dataset before training."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "preprocess", help="compute and cache the features a config needs, for every clip",
        description="Compute the mel (and, with --linear, linear) spectrogram of every clip of "
        "DATA once, in parallel, so that training starts at full speed. Training fills the same "
        "cache lazily if this is skipped.",
    )
    p.add_argument("--data", required=True, help="dataset folder or filelist")
    p.add_argument("--config", default="glow-tts-base", help="preset or YAML whose audio settings to use")
    p.add_argument("--split", action="append", help="only these splits of a dataset folder "
                   "(repeatable; default: every filelist split, or metadata.csv)")
    p.add_argument("--cache-dir", help="cache folder (default: DATA/.flowspeech_cache)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--linear", action="store_true", help="also cache linear spectrograms")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from flowspeech.config import load_config, mel_config
    from flowspeech.data import load_manifest, precompute_features

    config = mel_config(load_config(args.config))
    path = Path(args.data)
    splits = args.split
    if splits is None and path.is_dir() and (path / "filelists").is_dir():
        splits = sorted({name for name in ("train", "val", "test")
                         if any((path / "filelists").glob(f"*{name}*filelist*.txt"))}) or None
    manifests = [load_manifest(path, split=s) for s in splits] if splits else [load_manifest(path)]
    kinds = ("mel", "linear") if args.linear else ("mel",)
    for manifest in manifests:
        result = precompute_features(manifest, config, args.cache_dir, args.workers, kinds)
        print(f"{manifest.source}: {result['computed']} computed, {result['cached']} already cached, "
              f"{len(result['failed'])} failed -> {result['cache_dir']}")
    return 0
