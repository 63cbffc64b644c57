"""Training recipes: each model type's spec (:mod:`flowspeech.models.registry`) names the
recipe that trains it."""

from __future__ import annotations

from flowspeech.errors import ConfigError
from flowspeech.models.registry import get_spec, model_specs, resolve


def recipe_for(config: dict):
    """The recipe instance that trains the model ``config`` describes."""
    spec = get_spec(config["model"])
    if spec.recipe is None:
        known = ", ".join(sorted(s.name for s in model_specs(trainable=True)))
        raise ConfigError(f"no training recipe for model type {spec.name!r}; trainable: {known}")
    return resolve(spec.recipe)(config)
