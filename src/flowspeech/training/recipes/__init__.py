"""Training recipes: one per model type, looked up by the ``model:`` key of a config."""

from __future__ import annotations

import importlib

from flowspeech.errors import ConfigError

RECIPES: dict[str, tuple[str, str]] = {
    "glow-tts": ("flowspeech.training.recipes.glow_tts", "GlowTTSRecipe"),
    "waveglow": ("flowspeech.training.recipes.waveglow", "WaveGlowRecipe"),
    "flowavenet": ("flowspeech.training.recipes.flowavenet", "FloWaveNetRecipe"),
    "naturalspeech": ("flowspeech.training.recipes.naturalspeech", "NaturalSpeechRecipe"),
    "phoneme-lm": ("flowspeech.training.recipes.phoneme_lm", "PhonemeLMRecipe"),
}


def recipe_for(config: dict):
    """The recipe instance that trains the model ``config`` describes."""
    model_type = config["model"]
    if model_type not in RECIPES:
        known = ", ".join(sorted(RECIPES))
        raise ConfigError(f"no training recipe for model type {model_type!r}; trainable: {known}")
    module, name = RECIPES[model_type]
    return getattr(importlib.import_module(module), name)(config)
