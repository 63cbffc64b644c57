"""Model types: the one table from a config's ``model:`` key to its class.

Classes are imported only when a model of that type is built, so listing or parsing
configs never imports the models' code.
"""

from __future__ import annotations

import importlib
from typing import Any

from flowspeech.errors import ConfigError

# model type -> (module, class). Each class has ``from_config(config: dict)``.
MODELS: dict[str, tuple[str, str]] = {
    "glow-tts": ("flowspeech.models.glow_tts", "GlowTTS"),
    "waveglow": ("flowspeech.models.waveglow", "WaveGlow"),
    "flowavenet": ("flowspeech.models.flowavenet", "FloWaveNet"),
    "naturalspeech": ("flowspeech.models.naturalspeech", "NaturalSpeech"),
}


def model_class(model_type: str):
    """The class implementing ``model_type``."""
    try:
        module_name, class_name = MODELS[model_type]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown model type {model_type!r}; known types: {known}") from None
    return getattr(importlib.import_module(module_name), class_name)


def build_model(config: dict[str, Any]):
    """Instantiate the model a config describes (random weights)."""
    return model_class(config["model"]).from_config(config)


def count_parameters(config: dict[str, Any]) -> int:
    """Exact number of parameters of the model a config describes.

    The model is built on the ``meta`` device, so no memory is allocated and no
    initialisation runs: counting even the largest presets takes milliseconds.
    """
    import torch

    with torch.device("meta"):
        model = build_model(config)
    return sum(p.numel() for p in model.parameters())
