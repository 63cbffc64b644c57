"""What the importers of the authors' checkpoints (``*_import.py``) have in common."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flowspeech.checkpoints import save_checkpoint
from flowspeech.config import load_config


def save_imported_vocoder(out_path: str | Path, src: Path, model_type: str, display_name: str,
                          state: dict[str, torch.Tensor], model_args: dict[str, Any],
                          audio_preset: str, n_mels: int, hop_length: int) -> dict[str, Any]:
    """Write an imported vocoder as a flowspeech checkpoint: the ``<model_type>-base`` preset
    with ``model_args`` read from the weights, and the audio section's ``n_mels`` /
    ``hop_length`` where they differ from 80 / 256. Returns the config written."""
    config = load_config(f"{model_type}-base")
    config["name"] = f"{model_type}-imported"
    config["description"] = f"{display_name} imported from the authors' checkpoint {src.name}"
    audio: dict[str, Any] = {"preset": audio_preset}
    if n_mels != 80:
        audio["n_mels"] = n_mels
    if hop_length != 256:
        audio["hop_length"] = hop_length
    config["audio"] = audio
    config["model_args"] = model_args
    save_checkpoint(out_path, {"model_type": model_type, "config": config, "model": state, "step": 0,
                               "inference": {"imported_from": str(src)}})
    return config
