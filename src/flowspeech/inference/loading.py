"""Load any flowspeech checkpoint as a ready-to-run model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flowspeech.checkpoints import load_checkpoint, load_state_dict_checked
from flowspeech.errors import ConfigError
from flowspeech.models.registry import Role, get_spec
from flowspeech.models.roles import SpeechModel


def load_model(path: str | Path, model_type: str | None = None,
               device: str | torch.device = "cpu",
               roles: tuple[Role, ...] | None = None) -> tuple[SpeechModel, dict[str, Any]]:
    """Build the model a checkpoint describes, load its weights and prepare it for inference
    (eval mode, weight norm folded, the model's own caches), with what the checkpoint stores
    for inference attached (:meth:`SpeechModel.attach_inference_extras`).

    Args:
        model_type: refuse a checkpoint of another type.
        roles: refuse a model of another role (the message names the roles wanted).

    Raises:
        CheckpointError: missing, corrupt, foreign or mismatched checkpoint, or a model of
            another type.
        ConfigError: a model of another role.
    """
    payload = load_checkpoint(path, model_type=model_type)
    spec = get_spec(payload["model_type"])
    if roles is not None and spec.role not in roles:
        wanted = " or ".join(r.noun for r in roles)
        what = spec.role.noun if spec.role is not None else "not a synthesis model"
        raise ConfigError(f"{path} holds a {spec.name!r} model, {what}; not {wanted}")
    cls = spec.model_class()
    model = cls.from_config(payload["config"])
    load_state_dict_checked(model, cls.inference_state_dict(payload["model"]), str(path))
    model.attach_inference_extras(payload.get("inference") or {})
    model.to(device)
    model.prepare_for_inference()
    return model, payload
