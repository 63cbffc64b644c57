"""FloWaveNet: a generative flow for raw audio, conditioned on mel spectrograms.

Kim, Lee, Song, Kim and Yoon, "FloWaveNet: A Generative Flow for Raw Audio", ICML 2019
(arXiv:1811.02155); the authors' code is github ksw0306/FloWaveNet (``model.py``,
``modules.py``). Names below are theirs where they exist.

The model maps audio ``x [B, T]`` to a Gaussian latent with ``n_blocks`` context blocks
(Sec. 3). Block ``i`` works at a time resolution of ``2**(i+1)`` samples per position:

* **squeeze**: the block folds pairs of positions into channels, of the audio and of the
  conditioning alike (``squeeze(order="flowavenet")``; channel ``2c + k``);
* **flows** (``n_flows`` per block): ActNorm (``parameterization="scale"``, data-dependent
  initialisation on the first training forward), an affine coupling whose network is the
  non-causal WaveNet below, conditioned on the first half of the conditioning channels, then
  a swap of the two halves of both the audio channels and the conditioning channels (their
  ``change_order``);
* **multi-scale split**: after every ``block_per_split``-th block (never the last) half of the
  channels leave the flow and are modelled by a Gaussian whose mean and log-scale a WaveNet
  "prior" computes from the other half and the conditioning (Sec. 3; Dinh et al. 2017,
  Sec. 3.6); the last block's output is standard normal.

The mel is brought to the sample rate by a learned upsampler: transposed 2-D convolutions
over (band, time) with one channel, kernel ``(3, 2s)``, stride ``(1, s)``, each followed by a
leaky ReLU (slope 0.4), ``s = 16, 16`` for a hop of 256.

Likelihood (nats), with ``eps`` the split-off channels standardised by their prior::

    log p(x | mel) = sum_blocks sum_flows logdet  +  sum_splits log N(z; mean, exp(log_sd))
                     + log N(x_last; 0, I)

``log_p`` below is the authors' ``log_p`` (the Gaussian terms, constants included) and
``logdet`` theirs, per utterance instead of summed over the batch; their training loss
``-(log_p + logdet) / (B T)`` is the batch mean of :meth:`FloWaveNet.nll`.

Synthesis draws a latent ``z [B, T] ~ N(0, sigma^2 I)`` (the authors' "temperature") laid out like the audio (the
authors' ``q_0.sample() * temp``), squeezes it down block by block, reads each split's
``eps`` from the channels that leave there, and inverts the blocks from the last to the
first, all positions in parallel.

Shapes: audio ``[B, T]``; mel ``[B, n_mels, F]``; ``T`` a multiple of ``2**n_blocks`` and
at most ``F * hop``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from flowspeech.audio.config import MelConfig
from flowspeech.config import mel_config
from flowspeech.errors import ConfigError
from flowspeech.flows import (
    ActNorm,
    AffineCoupling,
    ChannelSwap,
    call_in_own_dtype,
    gated_activation,
    set_coupling_dtype,
    squeeze,
    unsqueeze,
    weight_norm,
)
from flowspeech.models.roles import MelToWaveform
from flowspeech.utils.noise import randn

__all__ = ["FloWaveNet", "FloWaveNetOutput", "NonCausalWaveNet"]

LOG_2PI = math.log(2 * math.pi)
SQRT_HALF = math.sqrt(0.5)


@dataclass
class FloWaveNetOutput:
    """What :meth:`FloWaveNet.forward` returns, per utterance."""

    z: torch.Tensor       # [B, T] latent in the layout of the synthesis noise (split parts standardised)
    logdet: torch.Tensor  # [B] sum of the flows' log|det|, nats
    log_p: torch.Tensor   # [B] log-density of the latent parts under their Gaussians, nats


# --- the coupling network ---------------------------------------------------------------------
class ZeroConv1d(nn.Module):
    """1x1 convolution initialised to zero whose output is scaled by ``exp(3 * scale)``,
    ``scale [1, C_out, 1]`` also starting at 0 (the authors' ``ZeroConv1d``, after Glow's
    zero-initialised last layer), so a new coupling is the identity."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.scale = nn.Parameter(torch.zeros(1, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(self.scale * 3)


class ResBlock(nn.Module):
    """One gated layer of FloWaveNet's WaveNet (the authors' ``modules.ResBlock``)::

        a    = tanh(filter_conv(h) + filter_conv_c(c)) * sigmoid(gate_conv(h) + gate_conv_c(c))
        skip = skip_conv(a)
        h'   = (h + res_conv(a)) * sqrt(0.5)

    ``filter_conv`` / ``gate_conv``: kernel 3, dilation ``d``, "same" padding; the others
    1x1; all weight-normalised. Each pair that reads the same input is stored as the two
    halves of one convolution: ``in_conv = [filter_conv; gate_conv]`` (``H -> 2H``),
    ``cond_conv = [filter_conv_c; gate_conv_c]`` (``C_cond -> 2H``), ``res_skip_conv =
    [res_conv; skip_conv]`` (``H -> 2H``). Weight norm is per output channel, so this is the
    same parameterisation (and parameter count) as the authors' separate convolutions, with
    one matrix product instead of two (about 1.4x faster on the CPU for the widest blocks).

    Shapes: ``h`` ``[B, H, T]``, ``c`` ``[B, C_cond, T]``.
    """

    def __init__(self, channels: int, cond_channels: int, dilation: int):
        super().__init__()
        self.channels, self.dilation = channels, dilation
        self.in_conv = weight_norm(nn.Conv1d(channels, 2 * channels, 3, dilation=dilation, padding=dilation))
        self.cond_conv = weight_norm(nn.Conv1d(cond_channels, 2 * channels, 1))
        self.res_skip_conv = weight_norm(nn.Conv1d(channels, 2 * channels, 1))

    def forward(self, h: torch.Tensor, c: torch.Tensor, residual: bool = True):
        """Returns ``(h', skip)``; ``h'`` is None when ``residual`` is False (the last layer,
        whose residual output nothing reads: only its skip half is computed)."""
        a = self.in_conv(h)
        a = a + self.cond_conv(c) if torch.is_grad_enabled() else a.add_(self.cond_conv(c))
        acts = gated_activation(a, self.channels)
        if not residual:
            w = self.res_skip_conv.weight
            return None, F.conv1d(acts, w[self.channels:], self.res_skip_conv.bias[self.channels:])
        rs = self.res_skip_conv(acts)
        return (h + rs[:, :self.channels]) * SQRT_HALF, rs[:, self.channels:]


class NonCausalWaveNet(nn.Module):
    """FloWaveNet's coupling and prior network (the authors' ``modules.Wavenet``, ``causal=False``).

    ``front_conv`` (weight-normed, kernel 3) + ReLU; ``n_layers`` :class:`ResBlock` with
    dilations ``1, 2, 4, ...``; the sum of their skips goes through ReLU, ``final_conv``
    (weight-normed 1x1), ReLU and ``end`` (:class:`ZeroConv1d`).

    The last layer's ``res_conv`` (the first half of its ``res_skip_conv``) is kept, as a
    parameter of the authors' model, but never evaluated: nothing reads its output, in their
    code or here, so its rows get zero gradient.

    Used as an :class:`~flowspeech.flows.AffineCoupling` network: ``forward(x_a, mask, cond)``.

    Shapes: ``x`` ``[B, C_in, T]``, ``cond`` ``[B, C_cond, T]``, output ``[B, C_out, T]``;
    ``mask`` ``[B, 1, T]`` or None (the model itself never pads).
    """

    def __init__(self, in_channels: int, out_channels: int, n_layers: int, channels: int, cond_channels: int):
        super().__init__()
        self.cond_channels = cond_channels
        self.front_conv = weight_norm(nn.Conv1d(in_channels, channels, 3, padding=1))
        self.res_blocks = nn.ModuleList(ResBlock(channels, cond_channels, 2**n) for n in range(n_layers))
        self.final_conv = weight_norm(nn.Conv1d(channels, channels, 1))
        self.end = ZeroConv1d(channels, out_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None or cond.dim() != 3 or cond.size(1) != self.cond_channels or cond.size(2) != x.size(2):
            raise ValueError(f"NonCausalWaveNet: cond must be [B, {self.cond_channels}, {x.size(2)}], got "
                             f"{None if cond is None else tuple(cond.shape)}")
        h = F.relu(self.front_conv(x))
        skip = None
        last = len(self.res_blocks) - 1
        for n, block in enumerate(self.res_blocks):
            if mask is not None:
                h = h * mask
            h, s = block(h, cond, residual=n < last)
            skip = s if skip is None else skip + s
        out = self.end(F.relu(self.final_conv(F.relu(skip))))
        return out if mask is None else out * mask


# --- flows and blocks -------------------------------------------------------------------------
class FlowStep(nn.Module):
    """ActNorm, affine coupling, swap of the halves (the authors' ``model.Flow``).

    ``forward(x, cond_a)``: ``cond_a`` is the half of the block's conditioning this step's
    coupling sees (the model alternates the halves, which is their swap of ``c``).
    Shapes: ``x`` ``[B, C, T]``, ``cond_a`` ``[B, C_cond / 2, T]``, logdet ``[B]``.
    """

    def __init__(self, channels: int, cond_channels: int, n_layers: int, hidden: int, affine: bool):
        super().__init__()
        c_a = channels // 2
        self.actnorm = ActNorm(channels, parameterization="scale")
        net = NonCausalWaveNet(c_a, channels if affine else channels - c_a, n_layers, hidden, cond_channels)
        self.coupling = AffineCoupling(net, mean_only=not affine, parameterization="flowavenet")
        self.swap = ChannelSwap()

    def forward(self, x: torch.Tensor, cond_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet = self.actnorm(x)
        x, logdet_coupling = self.coupling(x, None, cond_a)
        return self.swap(x)[0], logdet + logdet_coupling

    def inverse(self, y: torch.Tensor, cond_a: torch.Tensor) -> torch.Tensor:
        y = self.swap.inverse(y)
        return self.actnorm.inverse(self.coupling.inverse(y, None, cond_a))


class ContextBlock(nn.Module):
    """Squeeze by 2, ``n_flows`` :class:`FlowStep`, optional split with a WaveNet prior
    (the authors' ``model.Block``).

    Args:
        in_channels, cond_channels: channels of the audio and of the conditioning before
            the squeeze (the flows see twice as many).
        split: half of the channels leave after the flows, modelled by ``prior``.

    The conditioning is carried between blocks as the authors carry it: after the flows its
    halves have been swapped ``n_flows`` times (so for odd ``n_flows`` it leaves swapped).
    """

    def __init__(self, in_channels: int, cond_channels: int, n_flows: int, n_layers: int, hidden: int,
                 affine: bool, split: bool, n_prior_layers: int):
        super().__init__()
        channels, cond = 2 * in_channels, 2 * cond_channels
        self.flows = nn.ModuleList(FlowStep(channels, cond // 2, n_layers, hidden, affine) for _ in range(n_flows))
        self.prior = NonCausalWaveNet(channels // 2, channels, n_prior_layers, hidden, cond) if split else None

    @property
    def split(self) -> bool:
        return self.prior is not None

    def _swapped(self) -> bool:
        return len(self.flows) % 2 == 1

    def squeeze_cond(self, c: torch.Tensor) -> torch.Tensor:
        """Conditioning as the block's flows leave it: squeezed, halves swapped ``n_flows`` times."""
        c = squeeze(c, None, 2, order="flowavenet")[0]
        if self._swapped():
            c = torch.cat(c.chunk(2, 1)[::-1], 1)
        return c

    def unsqueeze_cond(self, c_out: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`squeeze_cond`."""
        if self._swapped():
            c_out = torch.cat(c_out.chunk(2, 1)[::-1], 1)
        return unsqueeze(c_out, None, 2, order="flowavenet")[0]

    def _halves(self, c_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The halves of the conditioning as the first flow sees them (views, no copy)."""
        a, b = c_out.chunk(2, 1)
        return (b, a) if self._swapped() else (a, b)

    def prior_params(self, x: torch.Tensor, c_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, log_sd)`` of the split-off channels given the kept ones ``x`` (in ``x``'s
        dtype, whatever the prior network's)."""
        return call_in_own_dtype(self.prior, x, None, c_out).chunk(2, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor):
        """``x [B, C, T]``, ``c [B, C_cond, T]`` (before the squeeze) -> ``(x_out, c_out, eps,
        logdet [B], log_p [B])``; ``eps`` (standardised split-off channels) and ``log_p``
        are None / 0 without a split."""
        x = squeeze(x, None, 2, order="flowavenet")[0]
        c_out = self.squeeze_cond(c)
        halves = self._halves(c_out)
        logdet = x.new_zeros(x.size(0), dtype=torch.promote_types(x.dtype, torch.float32))
        for j, flow in enumerate(self.flows):
            x, ld = flow(x, halves[j % 2])
            logdet = logdet + ld
        eps, log_p = None, torch.zeros_like(logdet)
        if self.split:
            x, z = x.chunk(2, 1)
            mean, log_sd = self.prior_params(x, c_out)
            eps = (z - mean) * torch.exp(-log_sd)
            log_p = (-0.5 * LOG_2PI - log_sd - 0.5 * eps.pow(2)).sum(dim=(1, 2), dtype=logdet.dtype)
        return x, c_out, eps, logdet, log_p

    def inverse(self, x: torch.Tensor, c_out: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Inverse of :meth:`forward`: ``x`` (kept channels), ``c_out`` and, with a split,
        ``eps`` -> the block's input ``[B, C, 2T]``."""
        if self.split:
            mean, log_sd = self.prior_params(x, c_out)
            x = torch.cat([x, mean + torch.exp(log_sd) * eps], 1)
        net = self.flows[0].coupling.net
        halves = [h.to(next(net.parameters()).dtype) for h in self._halves(c_out)]  # cast once
        for j in reversed(range(len(self.flows))):
            x = self.flows[j].inverse(x, halves[j % 2])
        return unsqueeze(x, None, 2, order="flowavenet")[0]


# --- the model ----------------------------------------------------------------------------------
class FloWaveNet(MelToWaveform):
    """FloWaveNet (Kim et al., 2019). Defaults are the paper's model (``flowavenet-base``,
    182,644,788 parameters).

    Args:
        mel_config: the feature front end the model reads (default ``MelConfig.flowavenet()``:
            80 bands, [0, 1]); ``n_mels`` and ``hop_length`` come from it, and mels that do not
            look like its features are refused.
        n_blocks: context blocks (8); ``2**n_blocks`` must divide ``hop_length``.
        n_flows: flows per block (6).
        n_layers: WaveNet layers per coupling (2), dilations ``1, 2, ...``.
        channels: WaveNet residual / gate / skip channels (256).
        block_per_split: a split after every this many blocks, never after the last (4).
        upsample_scales: time strides of the upsampler's stages; their product is the hop.
        affine: affine coupling (True) or additive (the authors' ``affine=False``).
        n_prior_layers: WaveNet layers of each split's prior (2 in the authors' code).

    Parameter names follow the authors' (``blocks.{i}.flows.{j}.actnorm`` / ``.coupling.net``,
    ``blocks.{i}.prior``, ``upsample``), except that convolutions reading the same input are
    stored together (:class:`ResBlock`); :mod:`flowspeech.models.flowavenet_import` maps their
    checkpoints onto them.
    """

    default_sigma = 0.8  # the authors' synthesize.py temperature

    def __init__(self, mel_config: MelConfig | dict | None = None, n_blocks: int = 8, n_flows: int = 6,
                 n_layers: int = 2, channels: int = 256, block_per_split: int = 4,
                 upsample_scales: tuple[int, ...] | list[int] = (16, 16), affine: bool = True,
                 n_prior_layers: int = 2):
        super().__init__()
        if mel_config is None:
            mel_config = MelConfig.flowavenet()
        elif isinstance(mel_config, dict):
            mel_config = MelConfig.from_dict(mel_config)
        for name, value in (("n_blocks", n_blocks), ("n_flows", n_flows), ("n_layers", n_layers),
                            ("channels", channels), ("block_per_split", block_per_split),
                            ("n_prior_layers", n_prior_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"FloWaveNet: {name} must be a positive integer, got {value!r}")
        scales = tuple(upsample_scales)
        if not scales or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in scales):
            raise ConfigError(f"FloWaveNet: upsample_scales must be positive integers, got {upsample_scales!r}")
        hop = mel_config.hop_length
        if math.prod(scales) != hop:
            raise ConfigError(f"FloWaveNet: upsample_scales {list(scales)} multiply to {math.prod(scales)}, "
                              f"but the mel hop is {hop}; they must be equal")
        if hop % 2**n_blocks:
            raise ConfigError(f"FloWaveNet: {n_blocks} blocks halve time {n_blocks} times, so 2**n_blocks = "
                              f"{2**n_blocks} must divide the hop ({hop}); use fewer blocks")
        self.mel_config = mel_config
        self.n_mels, self.hop_length = mel_config.n_mels, hop
        self.n_mel_channels = self.n_mels
        self.n_blocks, self.n_flows, self.n_layers = n_blocks, n_flows, n_layers
        self.channels, self.block_per_split, self.affine = channels, block_per_split, affine
        self.upsample_scales, self.n_prior_layers = scales, n_prior_layers

        self.upsample = nn.ModuleList(
            weight_norm(nn.ConvTranspose2d(1, 1, (3, 2 * s), padding=(1, s // 2), stride=(1, s))) for s in scales)
        self.blocks = nn.ModuleList()
        in_ch, cond_ch = 1, self.n_mels
        for i in range(n_blocks):
            split = (i + 1) % block_per_split == 0 and i != n_blocks - 1
            self.blocks.append(ContextBlock(in_ch, cond_ch, n_flows, n_layers, channels, affine, split,
                                            n_prior_layers))
            cond_ch *= 2
            if not split:
                in_ch *= 2

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "FloWaveNet":
        """Build from a flowspeech config: the ``audio`` section is the front end
        (:func:`flowspeech.config.mel_config`), ``model_args`` the other arguments."""

        args = dict(config.get("model_args") or {})
        if "mel_config" in args:
            raise ConfigError("flowavenet: set the features in the audio section, not model_args.mel_config")
        try:
            return cls(mel_config=mel_config(config), **args)
        except TypeError as err:
            raise ConfigError(f"flowavenet: bad model_args: {err}") from None

    # --- conditioning and checks -----------------------------------------------------------------
    def check_mel(self, mel: torch.Tensor) -> None:
        """Refuse a mel that is not this model's features: wrong shape or band count, or values
        outside the front end's range ([0, 1] features vs log-mels), with
        :class:`~flowspeech.errors.ConfigError`. Reads two numbers back from the device."""
        if not isinstance(mel, torch.Tensor) or mel.dim() != 3 or mel.size(2) < 1:
            raise ValueError(f"FloWaveNet: mel must be [B, {self.n_mels}, F >= 1], got "
                             f"{tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__}")
        front = _describe(self.mel_config)
        if mel.size(1) != self.n_mels:
            raise ConfigError(f"FloWaveNet: this model reads {self.n_mels}-band mels ({front}), got "
                              f"{mel.size(1)} bands (mel shape {tuple(mel.shape)}); compute the features "
                              f"with the model's mel_config")
        lo, hi = (float(v) for v in torch.aminmax(mel.detach()))
        if self.mel_config.compression == "db_normalized":
            # Features lie in [0, 1]; allow an acoustic model's overshoot, not a log-mel's range.
            if lo < -0.5 or hi > 1.5:
                raise ConfigError(
                    f"FloWaveNet: this model reads {front}, values in [0, 1], but the mel spans "
                    f"[{lo:.3g}, {hi:.3g}], like log-mels (MelConfig.glow_tts()); compute the "
                    f"features with the model's mel_config (MelConfig.flowavenet())")
        elif 0.0 <= lo < hi <= 1.0:
            raise ConfigError(
                f"FloWaveNet: this model reads {front}, but every value of the mel lies in [0, 1] "
                f"([{lo:.3g}, {hi:.3g}]), like FloWaveNet's normalised dB features "
                f"(MelConfig.flowavenet()); compute the features with the model's mel_config")

    def _as_model_input(self, mel: torch.Tensor) -> torch.Tensor:
        self.check_mel(mel)
        w = self.upsample[0].bias
        return mel.to(device=w.device, dtype=w.dtype)

    def conditioning(self, mel: torch.Tensor, n_samples: int) -> torch.Tensor:
        """The learned upsampling of the mel to the sample rate, cut to ``n_samples``:
        ``[B, n_mels, F] -> [B, n_mels, n_samples]`` (the authors' ``upsample``)."""
        c = mel.unsqueeze(1)
        for conv in self.upsample:
            c = F.leaky_relu(conv(c), 0.4)
        c = c.squeeze(1)
        if c.size(2) < n_samples:
            raise ValueError(f"FloWaveNet: {mel.size(2)} mel frames cover {c.size(2)} samples, fewer than "
                             f"the {n_samples} requested")
        return c[:, :, :n_samples]

    def _check_length(self, n: int, what: str) -> None:
        unit = 2**self.n_blocks
        if n < unit or n % unit:
            raise ValueError(f"FloWaveNet: {what} length {n} must be a positive multiple of 2**n_blocks = {unit}")

    # --- likelihood --------------------------------------------------------------------------
    def forward(self, audio: torch.Tensor, mel: torch.Tensor) -> FloWaveNetOutput:
        """Audio to latent, with the log-likelihood terms (the authors' ``Flowavenet.forward``).

        The first call in training mode initialises every ActNorm from this batch (DDI).

        Args:
            audio: ``[B, T]`` in [-1, 1], ``T`` a multiple of ``2**n_blocks``.
            mel: ``[B, n_mels, F]`` with ``F * hop >= T`` (the conditioning is cut to ``T``).

        Returns:
            :class:`FloWaveNetOutput`: ``z [B, T]``, ``logdet [B]``, ``log_p [B]``.
        """
        if audio.dim() != 2:
            raise ValueError(f"FloWaveNet: audio must be [B, T], got {tuple(audio.shape)}")
        self._check_length(audio.size(1), "audio")
        if mel.dim() == 3 and mel.size(0) != audio.size(0):
            raise ValueError(f"FloWaveNet: batch sizes differ: audio {audio.size(0)}, mel {mel.size(0)}")
        self.check_mel(mel)
        c = self.conditioning(mel, audio.size(1))
        x = audio.unsqueeze(1)
        logdet = log_p = 0
        eps_list = []
        for block in self.blocks:
            x, c, eps, ld, lp = block(x, c)
            logdet, log_p = logdet + ld, log_p + lp
            eps_list.append(eps)
        log_p = log_p + (-0.5 * LOG_2PI - 0.5 * x.pow(2)).sum(dim=(1, 2), dtype=logdet.dtype)
        return FloWaveNetOutput(self._merge_latent(x, eps_list), logdet, log_p)

    @staticmethod
    def nll(out: FloWaveNetOutput) -> torch.Tensor:
        """Negative log-likelihood of each utterance in nats per audio sample, ``[B]``:
        ``-(log_p + logdet) / T`` (divide by ``ln 2`` for bits per sample)."""
        return -(out.log_p + out.logdet) / out.z.size(1)

    @staticmethod
    def loss(out: FloWaveNetOutput) -> torch.Tensor:
        """The authors' training loss ``-(log_p + logdet)`` per audio sample, averaged over the
        batch (= ``nll(out).mean()``)."""
        return FloWaveNet.nll(out).mean()

    # --- latent layout ------------------------------------------------------------------------
    def _merge_latent(self, x_last: torch.Tensor, eps_list: list) -> torch.Tensor:
        """Put the last block's output and the split-offs back into the audio-shaped layout of
        the synthesis noise (inverse of :meth:`_split_latent`)."""
        x = x_last
        for block, eps in zip(reversed(self.blocks), reversed(eps_list)):
            if block.split:
                x = torch.cat([x, eps], 1)
            x = unsqueeze(x, None, 2, order="flowavenet")[0]
        return x.squeeze(1)

    def _split_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, list]:
        """``z [B, T]`` squeezed down the blocks; each split takes the second half of the
        channels (the authors' ``reverse``). Returns ``(x_last, eps per block or None)``."""
        x = z.unsqueeze(1)
        eps_list = []
        for block in self.blocks:
            x = squeeze(x, None, 2, order="flowavenet")[0]
            eps = None
            if block.split:
                x, eps = x.chunk(2, 1)
            eps_list.append(eps)
        return x, eps_list

    # --- synthesis ------------------------------------------------------------------------------
    def inverse(self, z: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """Latent to audio through the layers (differentiable): ``z [B, T]`` in the layout of
        :attr:`FloWaveNetOutput.z`, ``mel [B, n_mels, F]`` with ``F * hop >= T`` -> ``[B, T]``."""
        if z.dim() != 2:
            raise ValueError(f"FloWaveNet: z must be [B, T], got {tuple(z.shape)}")
        self._check_length(z.size(1), "z")
        self.check_mel(mel)
        c = self.conditioning(mel, z.size(1))
        x, eps_list = self._split_latent(z)
        for block in self.blocks:  # the conditioning as each block's flows leave it
            c = block.squeeze_cond(c)
        for block, eps in zip(reversed(self.blocks), reversed(eps_list)):
            x = block.inverse(x, c, eps)
            c = block.unsqueeze_cond(c)
        return x.squeeze(1)

    def sample_noise(self, batch: int, n_frames: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
        """``N(0, I)`` of shape ``[B, n_frames * hop]`` (the authors' ``z``, laid out like the
        audio)."""
        w = self.upsample[0].bias
        return randn(batch, n_frames * self.hop_length, generator=generator,
                     device=w.device if device is None else device,
                     dtype=w.dtype if dtype is None else dtype)

    def noise_frames(self, noise: torch.Tensor, start: int, end: int) -> torch.Tensor:
        return noise[:, start * self.hop_length:end * self.hop_length]

    def synthesize_window(self, mels: torch.Tensor, noise: torch.Tensor, lead: int = 0) -> torch.Tensor:
        """Through the layers (:meth:`inverse`), all samples in parallel (the authors'
        ``reverse``)."""
        return self.inverse(noise, mels[:, :, lead:])

    def set_waveform_dtype(self, dtype: torch.dtype) -> "FloWaveNet":
        """Run the coupling WaveNets and the priors of the split-off channels in ``dtype`` at
        inference, e.g. ``torch.bfloat16`` on CPUs with AVX512-BF16 or AMX, or
        ``torch.float16`` on a GPU. The audio, the upsampler, ActNorms and the affine maps stay
        in the model's dtype (see :func:`flowspeech.flows.set_coupling_dtype`; the weights
        are rounded in place). Returns ``self``."""
        set_coupling_dtype(self, dtype)
        for block in self.blocks:
            if block.split:
                block.prior.to(dtype)
        return self

    def receptive_field_frames(self) -> int:
        """Mel frames of context on each side beyond which an output sample no longer depends
        on its inputs: each coupling's WaveNet reaches ``2**n_layers`` positions each way
        (front conv 1, dilated convs ``1 + 2 + ...``), the prior ``2**n_prior_layers``, a
        position of block ``i`` is ``2**(i+1)`` samples, plus one position of slack per block
        and two frames per upsampler stage (kernel ``2s``). 55 frames for the base model."""
        samples = 0
        for i, block in enumerate(self.blocks):
            reach = self.n_flows * 2**self.n_layers + 1 + (2**self.n_prior_layers if block.split else 0)
            samples += reach * 2 ** (i + 1)
        return math.ceil(samples / self.hop_length) + 2 * len(self.upsample_scales)

def _describe(config: MelConfig) -> str:
    if config.compression == "db_normalized":
        return f"FloWaveNet's [0, 1] dB features ({config.n_mels} bands, {config.fmin:g}-{config.fmax_hz:g} Hz)"
    return f"log-mels ({config.n_mels} bands, {config.fmin:g}-{config.fmax_hz:g} Hz)"
