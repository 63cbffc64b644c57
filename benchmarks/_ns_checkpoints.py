"""NaturalSpeech checkpoints and the corpus clips the diagnostic scripts run them on
(``ns_memory.py``, ``ns_alignment.py``)."""

from __future__ import annotations

import argparse


def add_checkpoint_args(ap: argparse.ArgumentParser, clips: int) -> None:
    """``CHECKPOINT...``, ``--corpus``, ``--split`` (val) and ``--clips`` (``clips``)."""
    ap.add_argument("checkpoint", nargs="+")
    ap.add_argument("--corpus", required=True, help="LJSpeech-layout corpus with filelists/")
    ap.add_argument("--split", default="val")
    ap.add_argument("--clips", type=int, default=clips)


def checkpoints_and_clips(args: argparse.Namespace):
    """For each checkpoint of ``args``: ``(path, model, recipe, items)``, ``items`` the first
    ``args.clips`` dataset items of the split with that checkpoint's text front end and
    features. The RNG is seeded (0) before each model loads, so sampled latents repeat."""
    import torch

    from flowspeech.data import TextAudioDataset, load_manifest
    from flowspeech.inference.loading import load_model
    from flowspeech.training.recipes.naturalspeech import NaturalSpeechRecipe

    manifest = load_manifest(args.corpus, split=args.split)
    for path in args.checkpoint:
        torch.manual_seed(0)
        model, payload = load_model(path, model_type="naturalspeech")
        recipe = NaturalSpeechRecipe(payload["config"])
        dataset = TextAudioDataset(manifest, recipe.frontend, recipe.mel_config, None)
        yield path, model, recipe, [dataset[i] for i in range(min(args.clips, len(dataset)))]
