"""Load any flowspeech checkpoint as a ready-to-run model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_model(path: str | Path, model_type: str | None = None,
               device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model a checkpoint describes, load its weights and prepare it for inference
    (eval mode, weight norm folded, inverse matrices cached where the model supports it).

    Raises:
        CheckpointError: missing, corrupt, foreign or mismatched checkpoint.
    """
    from flowspeech.models.registry import build_model
    from flowspeech.training.checkpoint import load_checkpoint, load_state_dict_checked

    payload = load_checkpoint(path, model_type=model_type)
    model = build_model(payload["config"])
    state = payload["model"]
    if hasattr(model, "inference_state_dict"):  # e.g. a GAN checkpoint: keep the generator
        state = model.inference_state_dict(state)
    load_state_dict_checked(model, state, str(path))
    model.to(device)
    if hasattr(model, "prepare_for_inference"):
        model.prepare_for_inference()
    model.eval()
    return model, payload
