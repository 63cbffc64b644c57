"""Activation normalisation (Kingma & Dhariwal 2018, "Glow", section 3.1)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from flowspeech.errors import ConfigError
from flowspeech.flows.base import Flow, check_input, logdet_dtype, valid_frames

__all__ = ["ActNorm"]


class ActNorm(Flow):
    """Per-channel affine flow with data-dependent initialisation.

    ``parameterization="log_scale"`` (Glow-TTS, ``modules.ActNorm``; parameters ``logs`` and
    ``bias``, each ``[1, C, 1]``)::

        forward:  y = exp(logs) * x + bias
        inverse:  x = (y - bias) * exp(-logs)
        logdet:   sum_c logs_c * T_valid

    ``parameterization="scale"`` (FloWaveNet, ``model.ActNorm``; parameters ``loc`` and
    ``scale``, each ``[1, C, 1]``)::

        forward:  y = scale * (x + loc)
        inverse:  x = y / scale - loc
        logdet:   sum_c log|scale_c| * T_valid

    Data-dependent initialisation (DDI): the first ``forward`` in training mode sets the
    parameters so that this batch comes out with zero mean and unit variance per channel,
    statistics taken over the batch and the valid frames only. Glow-TTS uses the population
    variance clamped at 1e-6 (``bias = -mean / std``, ``logs = -log std``); FloWaveNet the
    unbiased standard deviation (``loc = -mean``, ``scale = 1 / (std + 1e-6)``).

    Whether DDI has run is the persistent buffer ``initialized``: it is saved in checkpoints,
    so a loaded model never re-initialises. Loading a checkpoint that lacks the key (one
    converted from the authors' code) counts as initialised.

    Args:
        channels: ``C``.
        ddi: run DDI on the first training-mode forward. ``False`` starts as the identity
            and marks the layer initialised.
        parameterization: ``"log_scale"`` (Glow-TTS) or ``"scale"`` (FloWaveNet).

    Shapes: ``x``, ``y`` ``[B, C, T]``; ``mask`` ``[B, 1, T]``; ``logdet`` ``[B]``.
    """

    initialized: torch.Tensor

    def __init__(
        self,
        channels: int,
        ddi: bool = True,
        parameterization: Literal["log_scale", "scale"] = "log_scale",
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ConfigError(f"ActNorm: channels must be positive, got {channels}")
        if parameterization not in ("log_scale", "scale"):
            raise ConfigError(
                f"ActNorm: parameterization must be 'log_scale' (Glow-TTS) or 'scale' "
                f"(FloWaveNet), got {parameterization!r}"
            )
        self.channels = channels
        self.parameterization = parameterization
        if parameterization == "log_scale":
            self.logs = nn.Parameter(torch.zeros(1, channels, 1))
            self.bias = nn.Parameter(torch.zeros(1, channels, 1))
        else:
            self.loc = nn.Parameter(torch.zeros(1, channels, 1))
            self.scale = nn.Parameter(torch.ones(1, channels, 1))
        self.register_buffer("initialized", torch.tensor(not ddi))
        # Python mirror of the buffer: reading a CUDA buffer in every forward would force a
        # host-device synchronisation. Kept in step by every method that writes the buffer.
        self._initialized = not ddi

    # -- DDI control --------------------------------------------------------------------

    def mark_initialized(self) -> None:
        """Declare the current parameters final: DDI will not run."""
        self.initialized.fill_(True)
        self._initialized = True

    def set_ddi(self, ddi: bool) -> None:
        """``True``: re-run DDI on the next training-mode forward; ``False``: switch it off."""
        self.initialized.fill_(not ddi)
        self._initialized = not ddi

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        key = prefix + "initialized"
        if key not in state_dict:
            # A checkpoint without the flag holds trained parameters (e.g. converted from the
            # authors' code, which keeps the flag outside the state dict): never re-initialise.
            state_dict[key] = torch.tensor(True)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
        self._initialized = bool(self.initialized)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Data-dependent initialisation from the batch ``x`` ``[B, C, T]`` (valid frames only)."""
        check_input(x, mask, self.channels, "ActNorm")
        x = x.detach().to(logdet_dtype(x))
        m = torch.ones_like(x[:, :1]) if mask is None else mask.to(x.dtype)
        count = m.sum(dim=(0, 2))  # [1]
        if not bool(count > 0):
            raise ValueError("ActNorm: data-dependent initialisation needs at least one valid frame")
        mean = (x * m).sum(dim=(0, 2)) / count  # [C]
        # Two-pass variance: same value as Glow-TTS's E[x^2] - E[x]^2, without the cancellation.
        sq_dev = (((x - mean.view(1, -1, 1)) * m) ** 2).sum(dim=(0, 2))
        if self.parameterization == "log_scale":
            log_std = 0.5 * torch.log(torch.clamp_min(sq_dev / count, 1e-6))
            self.bias.copy_((-mean * torch.exp(-log_std)).view_as(self.bias))
            self.logs.copy_((-log_std).view_as(self.logs))
        else:
            std = torch.sqrt(sq_dev / (count - 1).clamp_min(1))
            self.loc.copy_((-mean).view_as(self.loc))
            self.scale.copy_((1.0 / (std + 1e-6)).view_as(self.scale))
        self.mark_initialized()

    # -- flow -----------------------------------------------------------------------------

    def forward(self, x, mask=None, cond=None):
        check_input(x, mask, self.channels, "ActNorm")
        if self.training and not self._initialized:
            self.initialize(x, mask)
        if self.parameterization == "log_scale":
            y = self.bias + torch.exp(self.logs) * x
            log_scale = self.logs
        else:
            y = self.scale * (x + self.loc)
            log_scale = torch.log(torch.abs(self.scale))
        if mask is not None:
            y = y * mask
        logdet = log_scale.sum().to(logdet_dtype(x)) * valid_frames(x, mask)
        return y, logdet

    def inverse(self, y, mask=None, cond=None):
        check_input(y, mask, self.channels, "ActNorm")
        if self.parameterization == "log_scale":
            x = (y - self.bias) * torch.exp(-self.logs)
        else:
            x = y / self.scale - self.loc
        if mask is not None:
            x = x * mask
        return x

    def extra_repr(self) -> str:
        return f"{self.channels}, parameterization={self.parameterization!r}"
