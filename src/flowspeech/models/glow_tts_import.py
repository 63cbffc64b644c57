"""Import checkpoints published with the authors' Glow-TTS code (github jaywalnut310/glow-tts).

Their ``utils.save_checkpoint`` writes ``{"model": state_dict, "iteration": ...,
"optimizer": ..., "learning_rate": ...}`` with the ``FlowGenerator``'s parameters (possibly
prefixed ``module.`` when saved from a DDP wrapper). Our :class:`GlowTTS` keeps their module
names, so the mapping is short and explicit:

==========================================  ============================================
theirs                                      ours
==========================================  ============================================
``decoder.flows.{i}.start.*``               ``decoder.flows.{i}.net.start.*``
``decoder.flows.{i}.wn.*``                  ``decoder.flows.{i}.net.wn.*``
``decoder.flows.{i}.end.*``                 ``decoder.flows.{i}.net.end.*``
``*.weight_g`` / ``*.weight_v``             ``*.parametrizations.weight.original0/1``
(ActNorm has no flag)                       ``decoder.flows.{i}.initialized = True``
everything else                             the same name
==========================================  ============================================

The model's hyper-parameters are read off the tensors' shapes and checked against the preset
the user names (``base`` or ``base-blank``), so a checkpoint of another configuration is
refused with a message instead of loading into the wrong model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from flowspeech.checkpoints import load_state_dict_checked, read_torch_file, save_checkpoint
from flowspeech.config import load_config
from flowspeech.errors import CheckpointError
from flowspeech.models.glow_tts import GlowTTS

_COUPLING = re.compile(r"^decoder\.flows\.(\d+)\.(start|wn|end)\.(.*)$")
PRESETS = {"base": "glow-tts-base", "base-blank": "glow-tts-base-blank"}


def _read_authors_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    payload = read_torch_file(path)
    if isinstance(payload, dict) and payload.get("format") == "flowspeech":
        raise CheckpointError(f"{path} is already a flowspeech checkpoint; use it directly")
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not any(k.endswith("encoder.emb.weight") for k in state):
        raise CheckpointError(f"{path} does not hold a Glow-TTS state dict (no 'model' with "
                              f"encoder.emb.weight); is it a checkpoint of the authors' code?")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the authors' keys to ours (see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    actnorms: set[str] = set()
    for key, value in state.items():
        m = _COUPLING.match(key)
        if m:
            key = f"decoder.flows.{m.group(1)}.net.{m.group(2)}.{m.group(3)}"
        if key.endswith(".weight_g"):
            key = key[: -len("weight_g")] + "parametrizations.weight.original0"
        elif key.endswith(".weight_v"):
            key = key[: -len("weight_v")] + "parametrizations.weight.original1"
        if re.match(r"^decoder\.flows\.\d+\.logs$", key):
            actnorms.add(key[: -len("logs")])
        out[key] = value.float() if value.is_floating_point() else value
    for prefix in actnorms:
        out[prefix + "initialized"] = torch.tensor(True)
    return out


def infer_model_args(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The hyper-parameters that the tensor shapes determine."""
    n_vocab, hidden = state["encoder.emb.weight"].shape
    n_layers = len({k.split(".")[3] for k in state if k.startswith("encoder.encoder.attn_layers.")})
    n_blocks = len([k for k in state if re.match(r"^decoder\.flows\.\d+\.logs$", k)])
    n_mels = state["encoder.proj_m.weight"].shape[0]
    sqz_channels = state["decoder.flows.0.logs"].shape[1]
    wn_layers = len({k.split(".")[5] for k in state if re.match(r"^decoder\.flows\.2\.wn\.in_layers\.", k)})
    in_layer = state.get("decoder.flows.2.wn.in_layers.0.weight_v", state.get("decoder.flows.2.wn.in_layers.0.weight"))
    return {
        "n_vocab": int(n_vocab), "n_mels": int(n_mels), "hidden_channels": int(hidden),
        "filter_channels": int(state["encoder.encoder.ffn_layers.0.conv_1.weight"].shape[0]),
        "filter_channels_dp": int(state["encoder.proj_w.conv_1.weight"].shape[0]),
        "n_layers_enc": n_layers, "n_blocks_dec": n_blocks, "n_block_layers": wn_layers,
        "kernel_size_dec": int(in_layer.shape[2]), "hidden_channels_dec": int(in_layer.shape[1]),
        "n_sqz": int(sqz_channels // n_mels), "n_split": int(state["decoder.flows.1.weight"].shape[0]),
        "mean_only": "encoder.proj_s.weight" not in state, "prenet": "encoder.pre.proj.weight" in state,
        "window_size": int((state["encoder.encoder.attn_layers.0.emb_rel_k"].shape[1] - 1) // 2)
        if "encoder.encoder.attn_layers.0.emb_rel_k" in state else None,
    }


def import_glow_tts(src: str | Path, out_path: str | Path, preset: str = "base") -> dict[str, Any]:
    """Convert the authors' checkpoint ``src`` into a flowspeech checkpoint at ``out_path``.

    Args:
        preset: ``base`` (no blanks, 148 tokens) or ``base-blank`` (149), whose text front end
            and audio settings the imported model uses.

    Returns:
        The config written into the checkpoint.
    """

    if preset not in PRESETS:
        raise CheckpointError(f"--config must be one of {', '.join(PRESETS)}, not {preset!r}")
    theirs = _read_authors_state(src)
    config = load_config(PRESETS[preset])
    found = infer_model_args(theirs)
    expected = GlowTTS.from_config(config)
    mismatched = {k: (v, getattr_arg(config, k, expected)) for k, v in found.items()
                  if getattr_arg(config, k, expected) is not None and getattr_arg(config, k, expected) != v}
    if mismatched:
        details = ", ".join(f"{k}: checkpoint {a} vs preset {b}" for k, (a, b) in mismatched.items())
        raise CheckpointError(f"{src} does not match the {preset} configuration ({details}); "
                              f"choose the other --config or a matching YAML")
    state = convert_state_dict(theirs)
    load_state_dict_checked(expected, state, str(src))
    config = dict(config, description=f"Glow-TTS imported from {Path(src).name} (authors' weights)")
    save_checkpoint(out_path, {"model_type": "glow-tts", "config": config,
                               "model": expected.state_dict(), "step": 0,
                               "inference": {"imported_from": str(src)}})
    return config


def getattr_arg(config: dict[str, Any], key: str, model) -> Any:
    """The value a preset implies for one inferred hyper-parameter."""
    if key == "n_vocab":
        return model.n_vocab
    if key == "n_mels":
        return model.n_mels
    args = config["model_args"]
    if key == "hidden_channels_dec":
        return args.get("hidden_channels_dec") or args.get("hidden_channels")
    return args.get(key)
