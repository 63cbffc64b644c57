"""WaveGlow: a flow-based vocoder from mel spectrograms to audio.

Prenger, Valle and Catanzaro, "WaveGlow: A Flow-based Generative Network for Speech
Synthesis", ICASSP 2019 (arXiv:1811.00002); the authors' code is github NVIDIA/waveglow
(``glow.py``) and NVIDIA DeepLearningExamples ``Tacotron2/waveglow/model.py``.

The model maps audio ``x`` to a Gaussian latent ``z`` with ``n_flows`` steps, each an
invertible 1x1 convolution (Sec. 2.3) and an affine coupling whose scale and shift come from
a non-causal WaveNet conditioned on the mel (Sec. 2.2):

* the audio ``[B, T]`` is grouped by ``n_group`` = 8 consecutive samples into channels
  ``[B, 8, T/8]`` (channel ``k`` of position ``t`` is sample ``8t + k``);
* the mel ``[B, n_mels, F]`` is upsampled to the sample rate by a transposed convolution
  (kernel 1024, stride 256), cut to the audio length and grouped the same way, so the
  conditioning has ``n_mels * 8`` channels (channel ``8c + k``: mel band ``c``, sample
  ``8t + k``);
* every ``n_early_every`` = 4 flows, ``n_early_size`` = 2 channels leave the flow early
  (Sec. 2.4, "early outputs"); they come first in ``z``.

Training maximises (Sec. 2, eq. 1-4)::

    log p(x | mel) = -z.z / (2 sigma^2) - (N/2) log(2 pi sigma^2) + sum_j log s_j + sum_k log|det W_k|

with ``sigma = 1``; the authors' loss drops the constant and divides by the number of audio
samples. Synthesis draws ``z ~ N(0, sigma^2 I)`` (``sigma = 0.6`` in the paper's listening
tests) and inverts the flows.

Inference runs on a folded copy of the weights (:class:`_InverseEngine`): weight norm
evaluated, the coupling's output projection folded into the skip projections, the input
projection folded into the first dilated layer, the upsampler computed as matrix products
straight into the conditioning layout, one matrix product per WaveNet layer for the dilated
convolution, the conditioning and every bias, and a gated unit of two elementwise passes;
see ``docs/waveglow.md`` and ``docs/benchmarks.md``. It gives the same numbers as the layer
modules (to float rounding) and is checked against them in the tests.

Shapes: audio ``[B, T]``; mel ``[B, n_mels, F]``; ``z`` ``[B, n_group, T / n_group]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from flowspeech.errors import ConfigError
from flowspeech.flows import (
    AffineCoupling,
    InvertibleConv1x1,
    WaveNetCouplingNet,
    ensure_finite,
    remove_weight_norm,
    set_coupling_dtype,
    squeeze,
)
from flowspeech.utils.noise import randn

__all__ = ["Denoiser", "WaveGlow", "WaveGlowOutput"]

LOG_2PI = math.log(2 * math.pi)


@dataclass
class WaveGlowOutput:
    """What :meth:`WaveGlow.forward` returns (the authors' ``(z, log_s_list, log_det_W_list)``,
    summed per utterance)."""

    z: torch.Tensor           # [B, n_group, T / n_group], early outputs first
    logdet: torch.Tensor      # [B] log|det dz/dx| = log_s_sum + log_det_w
    log_s_sum: torch.Tensor   # [B] sum of the coupling log-scales
    log_det_w: torch.Tensor   # [B] sum of the 1x1 convolutions' log|det W| * T / n_group


class WaveGlow(nn.Module):
    """WaveGlow (Prenger et al., 2019). Defaults are the paper's model (``waveglow-base``).

    Args:
        n_mel_channels: mel bands (80).
        n_flows: flow steps (12).
        n_group: audio samples per group / channels of the flow (8).
        n_early_every: flows between early outputs (4).
        n_early_size: channels output early each time (2); even.
        n_layers: WaveNet layers per coupling (8); layer ``i`` has dilation ``2**i``.
        n_channels: WaveNet width (256).
        kernel_size: WaveNet dilated-convolution kernel (3); odd.
        hop_length: mel frame hop in samples, the upsampler's stride (256).
        upsample_kernel_size: the upsampler's kernel (1024).

    Parameter names: ``upsample`` (``ConvTranspose1d``), ``convinv.{k}``
    (:class:`~flowspeech.flows.InvertibleConv1x1`) and ``coupling.{k}``
    (:class:`~flowspeech.flows.AffineCoupling` around a
    :class:`~flowspeech.flows.WaveNetCouplingNet`); ``docs/flows.md`` maps the authors' keys
    onto them and :mod:`flowspeech.models.waveglow_import` converts their checkpoints.
    """

    def __init__(self, n_mel_channels: int = 80, n_flows: int = 12, n_group: int = 8,
                 n_early_every: int = 4, n_early_size: int = 2, n_layers: int = 8,
                 n_channels: int = 256, kernel_size: int = 3, hop_length: int = 256,
                 upsample_kernel_size: int = 1024):
        super().__init__()
        for name, value in (("n_mel_channels", n_mel_channels), ("n_flows", n_flows),
                            ("n_group", n_group), ("n_early_every", n_early_every),
                            ("n_layers", n_layers), ("n_channels", n_channels),
                            ("kernel_size", kernel_size), ("hop_length", hop_length),
                            ("upsample_kernel_size", upsample_kernel_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"WaveGlow: {name} must be a positive integer, got {value!r}")
        if n_group < 2 or n_group % 2:
            raise ConfigError(f"WaveGlow: n_group must be even and >= 2, got {n_group}")
        if n_early_size < 0 or n_early_size % 2:
            raise ConfigError(f"WaveGlow: n_early_size must be even and >= 0, got {n_early_size}")
        if hop_length % n_group:
            raise ConfigError(f"WaveGlow: hop_length ({hop_length}) must be a multiple of "
                              f"n_group ({n_group}) so that every mel frame covers whole groups")
        if upsample_kernel_size < hop_length:
            raise ConfigError(f"WaveGlow: upsample_kernel_size ({upsample_kernel_size}) must be "
                              f">= hop_length ({hop_length})")
        self.n_mel_channels, self.n_flows, self.n_group = n_mel_channels, n_flows, n_group
        self.n_early_every, self.n_early_size = n_early_every, n_early_size
        self.n_layers, self.n_channels, self.kernel_size = n_layers, n_channels, kernel_size
        self.hop_length, self.upsample_kernel_size = hop_length, upsample_kernel_size

        # Channels left in the flow at step k (the authors' n_remaining_channels).
        channels, remaining = [], n_group
        for k in range(n_flows):
            if self._is_early(k):
                remaining -= n_early_size
            channels.append(remaining)
        if remaining < 2:
            raise ConfigError(
                f"WaveGlow: {n_flows} flows with {n_early_size} channels out every "
                f"{n_early_every} flows leave {remaining} of {n_group} channels; at least 2 are needed")
        self.flow_channels: list[int] = channels

        self.upsample = nn.ConvTranspose1d(n_mel_channels, n_mel_channels, upsample_kernel_size,
                                           stride=hop_length)
        self.convinv = nn.ModuleList()
        self.coupling = nn.ModuleList()
        for c in channels:
            self.convinv.append(InvertibleConv1x1(c))
            c_a = c // 2
            net = WaveNetCouplingNet(c_a, 2 * (c - c_a), n_channels, kernel_size, dilation_rate=2,
                                     n_layers=n_layers, cond_channels=n_mel_channels * n_group)
            self.coupling.append(AffineCoupling(net))
        self._engine_cache: tuple[tuple, _InverseEngine] | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "WaveGlow":
        """Build from a flowspeech config; ``n_mel_channels`` and ``hop_length`` come from the
        ``audio`` section (:func:`flowspeech.config.mel_config`)."""
        from flowspeech.config import mel_config

        mel = mel_config(config)
        args = dict(config.get("model_args") or {})
        args.setdefault("n_mel_channels", mel.n_mels)
        args.setdefault("hop_length", mel.hop_length)
        if args["n_mel_channels"] != mel.n_mels or args["hop_length"] != mel.hop_length:
            raise ConfigError(
                f"waveglow: model_args (n_mel_channels={args['n_mel_channels']}, hop_length="
                f"{args['hop_length']}) disagree with the audio section ({mel.n_mels} mels, hop "
                f"{mel.hop_length}); remove them from model_args")
        try:
            return cls(**args)
        except TypeError as err:
            raise ConfigError(f"waveglow: bad model_args: {err}") from None

    # --- structure -------------------------------------------------------------------------
    def _is_early(self, k: int) -> bool:
        """Whether ``n_early_size`` channels leave the flow before step ``k``."""
        return k > 0 and k % self.n_early_every == 0

    def receptive_field_frames(self) -> int:
        """Mel frames of context on each side after which a sample no longer depends on the
        WaveNets' zero padding: every flow's WaveNet reaches ``(kernel_size - 1) / 2 *
        (2**n_layers - 1)`` groups each way, and ``n_flows`` of them are chained (95.6 -> 96
        frames for the base model). :meth:`infer_chunked` uses it as the default overlap."""
        groups = self.n_flows * (self.kernel_size - 1) // 2 * (2 ** self.n_layers - 1)
        return math.ceil(groups * self.n_group / self.hop_length)

    def _check_mel(self, mel: torch.Tensor) -> None:
        if mel.dim() != 3 or mel.size(1) != self.n_mel_channels or mel.size(2) < 1:
            raise ValueError(f"WaveGlow: mel must be [B, {self.n_mel_channels}, F >= 1], got "
                             f"{tuple(mel.shape)}")

    def conditioning(self, mel: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Upsampled mel cut to ``n_samples`` and grouped: ``[B, n_mels * n_group, n_samples /
        n_group]``, channel ``c * n_group + k`` = band ``c`` at sample ``t * n_group + k``
        (the authors' ``unfold(2, 8, 8).permute(0, 2, 1, 3)``)."""
        self._check_mel(mel)
        up = self.upsample(mel)
        if up.size(2) < n_samples:
            raise ValueError(
                f"WaveGlow: {mel.size(2)} mel frames cover {up.size(2)} samples, fewer than the "
                f"{n_samples} requested; a mel of F frames goes with at most (F - 1) * "
                f"{self.hop_length} + {self.upsample_kernel_size} samples")
        return squeeze(up[:, :, :n_samples], None, self.n_group, order="flowavenet")[0]

    # --- training / scoring ----------------------------------------------------------------
    def forward(self, audio: torch.Tensor, mel: torch.Tensor) -> WaveGlowOutput:
        """Audio to latent (the authors' ``WaveGlow.forward``).

        Args:
            audio: ``[B, T]`` in [-1, 1]; ``T`` is cut to a multiple of ``n_group``.
            mel: ``[B, n_mels, F]`` with ``(F - 1) * hop + kernel >= T``.

        Returns:
            :class:`WaveGlowOutput` with ``z`` ``[B, n_group, T / n_group]`` and per-utterance
            log-determinants ``[B]``.
        """
        if audio.dim() != 2:
            raise ValueError(f"WaveGlow: audio must be [B, T], got {tuple(audio.shape)}")
        n = audio.size(1) // self.n_group * self.n_group
        if n == 0:
            raise ValueError(f"WaveGlow: audio needs at least n_group = {self.n_group} samples")
        if mel.size(0) != audio.size(0):
            raise ValueError(f"WaveGlow: batch sizes differ: audio {audio.size(0)}, mel {mel.size(0)}")
        cond = self.conditioning(mel, n)
        x = squeeze(audio[:, None, :n], None, self.n_group)[0]  # [B, n_group, T / n_group]
        early = []
        log_s_sum = x.new_zeros(x.size(0), dtype=torch.promote_types(x.dtype, torch.float32))
        log_det_w = torch.zeros_like(log_s_sum)
        for k in range(self.n_flows):
            if self._is_early(k):
                early.append(x[:, :self.n_early_size])
                x = x[:, self.n_early_size:]
            x, ld = self.convinv[k](x)
            log_det_w = log_det_w + ld
            x, ls = self.coupling[k](x, None, cond)
            log_s_sum = log_s_sum + ls
        z = torch.cat(early + [x], dim=1)
        return WaveGlowOutput(z, log_s_sum + log_det_w, log_s_sum, log_det_w)

    @staticmethod
    def loss(out: WaveGlowOutput, sigma: float = 1.0) -> torch.Tensor:
        """The authors' training loss (``WaveGlowLoss``; the negated eq. 1 of the paper without
        its constant) averaged over every audio sample of the batch::

            (sum z^2 / (2 sigma^2) - sum log s - sum log|det W|) / (B * T)

        It equals the mean of :meth:`nll` minus ``0.5 * log(2 pi sigma^2)``."""
        z = out.z.float()
        return (z.pow(2).sum() / (2 * sigma * sigma) - out.logdet.float().sum()) / z.numel()

    @staticmethod
    def nll(out: WaveGlowOutput, sigma: float = 1.0) -> torch.Tensor:
        """Negative log-likelihood of each utterance in nats per audio sample, ``[B]``::

            (sum z^2 / (2 sigma^2) + N/2 log(2 pi sigma^2) - log|det dz/dx|) / N,  N = samples

        (the density of the continuous audio in [-1, 1]; a lower value is better)."""
        z = out.z.float()
        n = z[0].numel()
        quad = z.pow(2).sum(dim=(1, 2)) / (2 * sigma * sigma)
        return (quad - out.logdet.float()) / n + 0.5 * (LOG_2PI + 2 * math.log(sigma))

    # --- synthesis -------------------------------------------------------------------------
    def sample_noise(self, batch: int, n_positions: int, sigma: float = 1.0,
                     generator: torch.Generator | None = None,
                     device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
        """``sigma * N(0, I)`` in the layout of ``z`` ``[B, n_group, n_positions]``, drawn in the
        authors' order (the last flow's channels first, then each early block from the last to
        the first), so the same seed gives the same audio as their ``infer``."""
        device = self.upsample.weight.device if device is None else device
        dtype = self.upsample.weight.dtype if dtype is None else dtype
        n_early = sum(self._is_early(k) for k in range(self.n_flows))
        final = randn(batch, self.flow_channels[-1], n_positions, generator=generator,
                      device=device, dtype=dtype)
        early = [randn(batch, self.n_early_size, n_positions, generator=generator,
                       device=device, dtype=dtype) for _ in range(n_early)]
        return torch.cat(early[::-1] + [final], dim=1) * sigma

    def inverse(self, z: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """Latent to audio through the layer modules (differentiable; :meth:`infer` is the fast
        path for synthesis). ``z`` ``[B, n_group, F * hop / n_group]`` -> audio ``[B, F * hop]``."""
        n = mel.size(2) * self.hop_length
        if z.dim() != 3 or z.size(1) != self.n_group or z.size(2) * self.n_group != n:
            raise ValueError(f"WaveGlow: z must be [B, {self.n_group}, {n // self.n_group}] for "
                             f"{mel.size(2)} mel frames, got {tuple(z.shape)}")
        cond = self.conditioning(mel, n)
        lo = self.n_group - self.flow_channels[-1]
        x = z[:, lo:]
        for k in reversed(range(self.n_flows)):
            x = self.coupling[k].inverse(x, None, cond)
            x = self.convinv[k].inverse(x)
            if self._is_early(k):
                lo -= self.n_early_size
                x = torch.cat([z[:, lo:lo + self.n_early_size], x], dim=1)
        return x.transpose(1, 2).reshape(x.size(0), -1)

    def _engine(self) -> "_InverseEngine":
        """The folded-weight inference engine, rebuilt whenever a parameter changed."""
        params = list(self.parameters())
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if self._engine_cache is None or self._engine_cache[0] != key:
            self._engine_cache = None  # free the old copy first
            with torch.inference_mode(False), torch.no_grad():
                self._engine_cache = (key, _InverseEngine(self))
        return self._engine_cache[1]

    def _apply(self, fn, *args, **kwargs):
        self._engine_cache = None  # .to() / .half(): drop the folded copy on the old device
        return super()._apply(fn, *args, **kwargs)

    def prepare_for_inference(self) -> "WaveGlow":
        """Switch to eval mode, fold weight norm into plain weights (as the authors'
        ``remove_weightnorm``) and build the folded inference weights once (the authors'
        ``W_inverse`` cache and more; see :class:`_InverseEngine`). Returns ``self``."""
        self.eval()
        remove_weight_norm(self)
        self._engine()
        return self

    def set_coupling_dtype(self, dtype: torch.dtype) -> "WaveGlow":
        """Run the coupling WaveNets (and the upsampler's products, which feed only them) in
        ``dtype`` at inference, e.g. ``torch.bfloat16`` on CPUs with AVX512-BF16 or AMX, or
        ``torch.float16`` on a GPU. The audio, the affine maps and the inverse 1x1
        convolutions stay in the model's dtype (see
        :func:`flowspeech.flows.set_coupling_dtype`; the weights are rounded in place).
        Returns ``self``."""
        set_coupling_dtype(self, dtype)
        return self

    def _noise_for(self, mel: torch.Tensor, sigma: float, generator, noise) -> torch.Tensor:
        n_positions = mel.size(2) * self.hop_length // self.n_group
        if noise is None:
            return self.sample_noise(mel.size(0), n_positions, sigma, generator, mel.device, mel.dtype)
        expected = (mel.size(0), self.n_group, n_positions)
        if tuple(noise.shape) != expected:
            raise ValueError(f"WaveGlow: noise must be {list(expected)} for this mel, got "
                             f"{tuple(noise.shape)}")
        return noise.to(mel.device, mel.dtype) * sigma

    def _as_model_input(self, mel: torch.Tensor) -> torch.Tensor:
        self._check_mel(mel)
        w = self.upsample.weight
        return mel.to(device=w.device, dtype=w.dtype)

    @torch.inference_mode()
    def infer(self, mel: torch.Tensor, sigma: float = 0.6,
              generator: torch.Generator | None = None,
              noise: torch.Tensor | None = None) -> torch.Tensor:
        """Synthesise audio from mels (the authors' ``infer``), on the folded weights.

        Args:
            mel: ``[B, n_mels, F]``.
            sigma: standard deviation of the latent (0.6 in the paper's listening tests; the
                authors' ``inference.py`` defaults to 1.0). ``0`` gives the model's "bias" audio.
            generator: torch generator for the noise; ``None`` uses the global RNG, which then
                gives the same audio as the authors' ``infer`` after the same ``manual_seed``.
            noise: standard-normal latent ``[B, n_group, F * hop / n_group]`` in the layout of
                :attr:`WaveGlowOutput.z` (scaled by ``sigma``) instead of a fresh draw.

        Returns:
            audio ``[B, F * hop]`` in the model's dtype.
        """
        mel = self._as_model_input(mel)
        return self._engine().run(mel, self._noise_for(mel, sigma, generator, noise))

    @torch.inference_mode()
    def infer_chunked(self, mel: torch.Tensor, chunk_frames: int = 512, overlap: int | None = None,
                      crossfade: int | None = None, sigma: float = 0.6,
                      generator: torch.Generator | None = None,
                      noise: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`infer` for long mels with memory bounded by ``chunk_frames``.

        The mel is cut into chunks of ``chunk_frames`` frames; each is synthesised with
        ``overlap`` frames of context on both sides (plus the frames the upsampler's kernel
        reaches back to) and the same slice of one latent drawn for the whole utterance, and
        neighbouring chunks are crossfaded linearly over ``crossfade`` samples centred on their
        boundary. With the default ``overlap`` every sample sees the same inputs as in
        :meth:`infer`, so the output equals it to float rounding;
        a smaller overlap trades exactness for speed (the crossfade hides the seams).

        Args:
            mel: ``[B, n_mels, F]``.
            chunk_frames: frames synthesised per chunk (memory ~ ``chunk_frames + 2 * overlap``).
            overlap: context frames on each side (default: :meth:`receptive_field_frames`
                plus one frame for the crossfade, which makes the result exact).
            crossfade: samples of linear crossfade at each boundary (default ``hop_length``,
                at most ``2 * overlap * hop_length``; 0 without overlap).
            sigma, generator, noise: as in :meth:`infer`.

        Returns:
            audio ``[B, F * hop]``.
        """
        mel = self._as_model_input(mel)
        if chunk_frames < 1:
            raise ValueError(f"infer_chunked: chunk_frames must be >= 1, got {chunk_frames}")
        overlap = self.receptive_field_frames() + 1 if overlap is None else overlap
        if overlap < 0:
            raise ValueError(f"infer_chunked: overlap must be >= 0, got {overlap}")
        hop = self.hop_length
        if crossfade is None:
            crossfade = min(hop, 2 * overlap * hop)
        if crossfade < 0 or crossfade > 2 * overlap * hop or crossfade > chunk_frames * hop:
            raise ValueError(
                f"infer_chunked: crossfade ({crossfade} samples) must lie in [0, "
                f"min(2 * overlap * hop, chunk_frames * hop)] = [0, "
                f"{min(2 * overlap * hop, chunk_frames * hop)}]")
        z = self._noise_for(mel, sigma, generator, noise)
        engine = self._engine()
        n_frames = mel.size(2)
        lead_max = math.ceil(self.upsample_kernel_size / hop) - 1  # frames the upsampler reaches back
        per_group = hop // self.n_group
        out = mel.new_zeros(mel.size(0), n_frames * hop)
        half = crossfade // 2
        ramp = (torch.arange(crossfade, device=mel.device, dtype=mel.dtype) + 0.5) / max(crossfade, 1)
        for start in range(0, n_frames, chunk_frames):
            end = min(n_frames, start + chunk_frames)
            lo, hi = max(0, start - overlap), min(n_frames, end + overlap)
            lead = min(lo, lead_max)
            audio = engine.run(mel[:, :, lo - lead:hi], z[:, :, lo * per_group:hi * per_group],
                               skip_frames=lead)
            # This chunk's share: its core frames plus half a crossfade on each inner side.
            a = start * hop - (half if start > 0 else 0)
            b = end * hop + (crossfade - half if end < n_frames else 0)
            piece = audio[:, a - lo * hop:b - lo * hop]
            if crossfade:
                piece = piece.clone()
                if start > 0:
                    piece[:, :crossfade] *= ramp
                if end < n_frames:
                    piece[:, -crossfade:] *= 1 - ramp
            out[:, a:b] += piece
        return out


class _InverseEngine:
    """WaveGlow's inverse on folded weights, in time-major buffers (one row per group).

    Per flow ``k`` (in reverse) and per WaveNet layer ``i`` the authors compute
    ``acts = gate(in_layer_i(h) + cond_layer(c)_i)``, ``h += res_i(acts)``,
    ``out += skip_i(acts)``, then ``end(out)``. Here, exactly the same maps are regrouped:

    * one workspace row per group position holds ``[h(t - d) | h(t) | s | h(t + d) | c(t) | 1 |
      x_a taps]``; ``c`` is the grouped upsampled mel (no bias) and ``s`` accumulates the
      coupling output; so a layer's dilated conv, its conditioning projection and all biases
      are ONE matrix product ``a = row @ W_i``;
    * ``end`` is linear, so ``end(sum_i skip_i(acts_i)) = sum_i (E S_i) acts_i + const``: the
      skip projections shrink from ``H x H`` to ``2 C_b x H`` and the residual and skip outputs
      of a layer are one product accumulated in place into ``[h(t) | s]``;
    * ``start`` (``C_a -> H``) is folded into layer 0's taps, which then read the ``C_a``
      input channels instead of ``H`` (the start bias seen through zero padding is corrected
      on the edge rows);
    * ``tanh(x) sigmoid(y) = sigmoid(y) - 2 sigmoid(-2x) sigmoid(y)``: the ``-2`` is folded
      into the weights, so the gate is one in-place sigmoid and one ``addcmul``;
    * the upsampler is ``n_taps = kernel / hop`` matrix products of the mel with the kernel
      slices, overlap-added straight into the grouped, time-major conditioning columns.

    Folding is done in float64, then cast to the device and to the coupling networks' dtype
    (the workspace and all matrix products but the 1x1 inverses); the audio and the inverse
    1x1 matrices keep the model's dtype (``state_dtype``), which differs after
    :meth:`WaveGlow.set_coupling_dtype`.
    """

    def __init__(self, model: WaveGlow):
        p = model.upsample.weight
        self.state_dtype, self.device = p.dtype, p.device
        self.dtype = next(model.coupling[0].net.parameters()).dtype
        self.n_group, self.hop = model.n_group, model.hop_length
        self.flow_channels = list(model.flow_channels)
        H, G, k = model.n_channels, model.n_group, model.kernel_size
        self.H, self.L, self.k, self.c = H, model.n_layers, k, (k - 1) // 2
        self.n_mels = model.n_mel_channels
        cc = self.n_mels * G
        # Workspace columns.
        self.A = G // 2                               # widest x_a
        self.off_center = self.c * H
        self.off_s = self.off_center + H
        self.off_right = self.off_s + G               # s holds up to 2 C_b = G columns
        self.off_g = k * H + G
        self.off_one = self.off_g + cc
        self.off_xa = self.off_one + 1
        width = self.off_xa + k * self.A
        self.width = (width + 15) // 16 * 16          # 64-byte rows
        self.acts_width = (H + 1 + 15) // 16 * 16

        f64 = dict(dtype=torch.float64, device=self.device)
        cast = dict(dtype=self.dtype, device=self.device)
        # Upsampler: kernel zero-padded to n_taps * hop; slice m as [n_mels_in, (p, c, k')].
        w_up = model.upsample.weight.detach().to(**f64)            # [c_in, c, K]
        n_taps = math.ceil(model.upsample_kernel_size / self.hop)
        w_up = F.pad(w_up, (0, n_taps * self.hop - w_up.size(2)))
        w_up = w_up.view(self.n_mels, self.n_mels, n_taps, self.hop // G, G)
        self.up = [w_up[:, :, m].permute(0, 2, 1, 3).reshape(self.n_mels, -1).to(**cast)
                   for m in range(n_taps)]
        up_bias = model.upsample.bias.detach().to(**f64).repeat_interleave(G)  # [cc]

        gate_scale = torch.ones(2 * H, **f64)
        gate_scale[:H] = -2.0
        self.flows = []
        for kk, ch in enumerate(model.flow_channels):
            net = model.coupling[kk].net
            wn = net.wn
            c_a, c_b = ch // 2, ch - ch // 2
            s_w = net.start.weight.detach().to(**f64)[:, :, 0]            # [H, C_a]
            s_b = net.start.bias.detach().to(**f64)
            e_w = net.end.weight.detach().to(**f64)[:, :, 0]              # [2 C_b, H]
            e_b = net.end.bias.detach().to(**f64)
            c_w = wn.cond_layer.weight.detach().to(**f64)[:, :, 0]        # [2 H L, cc]
            cond_b = wn.cond_layer.bias.detach().to(**f64) + c_w @ up_bias
            layers = []
            for i in range(self.L):
                w_in = wn.in_layers[i].weight.detach().to(**f64)         # [2H, H, k]
                b_in = wn.in_layers[i].bias.detach().to(**f64)
                rows = slice(2 * H * i, 2 * H * (i + 1))
                corr = None
                if i == 0:
                    taps = [w_in[:, :, j] @ s_w for j in range(k)]        # [2H, C_a]
                    w = torch.zeros(cc + 1 + k * self.A, 2 * H, **f64)
                    w[:cc] = c_w[rows].T
                    w[cc] = b_in + cond_b[rows] + sum(w_in[:, :, j] @ s_b for j in range(k))
                    for j in range(k):
                        w[cc + 1 + j * self.A: cc + 1 + j * self.A + c_a] = taps[j].T
                    corr = [((w_in[:, :, j] @ s_b) * gate_scale).to(**cast) for j in range(k)]
                else:
                    w = torch.zeros(self.off_one + 1, 2 * H, **f64)
                    for j in range(k):
                        w[self._tap_offset(j):self._tap_offset(j) + H] = w_in[:, :, j].T
                    w[self.off_g:self.off_one] = c_w[rows].T
                    w[self.off_one] = b_in + cond_b[rows]
                w = (w * gate_scale).to(**cast)
                rs_w = wn.res_skip_layers[i].weight.detach().to(**f64)[:, :, 0]
                rs_b = wn.res_skip_layers[i].bias.detach().to(**f64)
                if i < self.L - 1:   # [h | s] += acts @ rs: residual then folded skip
                    rs = torch.zeros(H + 1, H + ch, **f64)
                    rs[:H, :H], rs[H, :H] = rs_w[:H].T, rs_b[:H]
                    rs[:H, H:], rs[H, H:] = (e_w @ rs_w[H:]).T, e_w @ rs_b[H:]
                else:                # the last layer has a skip output only
                    rs = torch.cat([(e_w @ rs_w).T, (e_w @ rs_b)[None]], dim=0)
                layers.append((w, rs.to(**cast), corr))
            w_inv = model.convinv[kk].inverse_matrix().detach().to(**f64)
            self.flows.append(dict(
                start_w=s_w.T.to(**cast), start_b=s_b.to(**cast), end_b=e_b.to(**cast),
                layers=layers, w_inv_t=w_inv.T.to(dtype=self.state_dtype, device=self.device),
                c_a=c_a, c_b=c_b))

    def _tap_offset(self, j: int) -> int:
        """First workspace column of dilated tap ``j`` (the centre tap is ``h`` itself)."""
        if j < self.c:
            return j * self.H
        if j == self.c:
            return self.off_center
        return self.off_right + (j - self.c - 1) * self.H

    @staticmethod
    def _shift(dst: torch.Tensor, src: torch.Tensor, offset: int) -> None:
        """``dst[t] = src[t + offset]``, zero outside (the convolution's zero padding)."""
        n = src.size(0) - abs(offset)
        if n <= 0:
            dst.zero_()
        elif offset >= 0:
            dst[:n].copy_(src[offset:])
            dst[n:].zero_()
        else:
            dst[-offset:].copy_(src[:n])
            dst[:-offset].zero_()

    def _conditioning(self, cols: torch.Tensor, mel: torch.Tensor, skip: int) -> None:
        """Fill the ``c`` columns with the grouped upsampled mel of frames ``skip..F-1``
        (earlier frames only contribute through the kernel's reach). ``mel`` ``[n_mels, F]``."""
        n_frames = mel.size(1) - skip
        per_frame = self.hop // self.n_group
        g = cols[:, self.off_g:self.off_one].view(n_frames, per_frame, self.n_mels, self.n_group)
        mel_t = mel.T
        for m, w in enumerate(self.up):
            # Sample hop * q + r gets kernel tap hop * m + r of frame q - m.
            q0 = max(0, m - skip)
            if q0 >= n_frames:
                break
            part = torch.mm(mel_t[q0 + skip - m:n_frames + skip - m], w)
            part = part.view(n_frames - q0, per_frame, self.n_mels, self.n_group)
            if m == 0:
                g.copy_(part)
            else:
                g[q0:].add_(part)

    def run(self, mel: torch.Tensor, z: torch.Tensor, skip_frames: int = 0) -> torch.Tensor:
        """Audio ``[B, (F - skip_frames) * hop]`` from mel ``[B, n_mels, F]`` and latent ``z``
        ``[B, n_group, T]`` (already scaled by sigma); the first ``skip_frames`` mel frames
        are upsampler context only."""
        batch, _, n_frames = mel.shape
        n = (n_frames - skip_frames) * self.hop
        t = n // self.n_group
        if tuple(z.shape) != (batch, self.n_group, t):
            raise ValueError(f"expected z of shape {[batch, self.n_group, t]}, got {tuple(z.shape)}")
        H = self.H
        mel = mel.to(self.dtype)
        # Zeroed, not empty: the matrix products read strided views of these buffers, and
        # oneDNN's AMX bfloat16 kernels read past a view's last column up to a multiple of
        # 32 (oneDNN issue 5717), relying on zeros in the packed weights. Garbage there
        # (NaN * 0 = NaN) made the audio NaN on such CPUs; finite neighbours contribute 0.
        cols = torch.zeros(t, self.width, dtype=self.dtype, device=self.device)
        cols[:, self.off_one] = 1
        a = torch.zeros(t, 2 * H, dtype=self.dtype, device=self.device)
        acts = torch.zeros(t, self.acts_width, dtype=self.dtype, device=self.device)
        acts[:, H] = 1
        acts1 = acts[:, :H + 1]
        out = torch.empty(batch, n, dtype=self.state_dtype, device=self.device)
        for b in range(batch):
            self._conditioning(cols, mel[b], skip_frames)
            x = out[b].view(t, self.n_group)      # final layout = audio sample order
            x.copy_(z[b].T)
            for kk in reversed(range(len(self.flows))):
                self._flow(kk, x, cols, a, acts, acts1)
        if self.dtype != self.state_dtype:
            ensure_finite(out, f"WaveGlow's coupling networks in {self.dtype}".replace("torch.", ""))
        return out

    def _flow(self, kk, x, cols, a, acts, acts1) -> None:
        fl = self.flows[kk]
        H, k, c = self.H, self.k, self.c
        ch = self.flow_channels[kk]
        lo = self.n_group - ch
        c_a, c_b = fl["c_a"], fl["c_b"]
        x_a, y_b = x[:, lo:lo + c_a], x[:, lo + c_a:]
        # Layer-0 taps read x_a directly; unused columns must hold finite values.
        for j in range(k):
            col = self.off_xa + j * self.A
            self._shift(cols[:, col:col + c_a], x_a, j - c)
            if c_a < self.A:
                cols[:, col + c_a:col + self.A].zero_()
        h = cols[:, self.off_center:self.off_s]
        centre_tap = self.off_xa + c * self.A        # x_a itself, in the workspace's dtype
        torch.addmm(fl["start_b"], cols[:, centre_tap:centre_tap + c_a], fl["start_w"], out=h)
        s = cols[:, self.off_s:self.off_s + ch]
        s.copy_(fl["end_b"].expand_as(s))
        if ch < self.n_group:
            cols[:, self.off_s + ch:self.off_right].zero_()
        hs = cols[:, self.off_center:self.off_s + ch]
        rows = x.size(0)
        for i, (w, rs, corr) in enumerate(fl["layers"]):
            if i == 0:
                torch.mm(cols[:, self.off_g:self.off_xa + k * self.A], w, out=a)
                for j in range(k):  # taps that fell into the zero padding saw no start bias
                    o = j - c
                    if o < 0:
                        a[:min(-o, rows)] -= corr[j]
                    elif o > 0:
                        a[max(rows - o, 0):] -= corr[j]
            else:
                d = 2 ** i
                for j in range(k):
                    if j != c:
                        col = self._tap_offset(j)
                        self._shift(cols[:, col:col + H], h, (j - c) * d)
                torch.mm(cols[:, :self.off_one + 1], w, out=a)
            a.sigmoid_()
            torch.addcmul(a[:, H:], a[:, :H], a[:, H:], value=-2.0, out=acts[:, :H])
            if i < self.L - 1:
                hs.addmm_(acts1, rs)
            else:
                s.addmm_(acts1, rs)
        # Inverse affine coupling, then the inverse 1x1 convolution.
        y_b.sub_(s[:, :c_b]).mul_(torch.exp(-s[:, c_b:2 * c_b].to(x.dtype)))
        cur = x[:, lo:]
        cur.copy_(torch.mm(cur, fl["w_inv_t"]))


class Denoiser(nn.Module):
    """The authors' WaveGlow "denoiser" (``denoiser.py``): removes the model's bias.

    The bias is the audio WaveGlow makes from a constant mel with ``sigma = 0``
    (``mode="zeros"``: an all-zero mel of ``n_frames`` frames; ``"normal"``: a standard-normal
    one); its STFT magnitude in the first frame, ``[1, n_fft/2 + 1, 1]``, is subtracted from
    every frame of the audio's magnitude (times ``strength``), negative values are set to 0,
    and the audio is resynthesised with its own phase. STFT: periodic Hann window of
    ``win_length`` (centred in ``filter_length``), hop ``filter_length / n_overlap``,
    reflect-padded centred frames, as the authors' ``STFT``; the inverse is the overlap-add
    with window-power normalisation (``torch.istft``), trimmed to the input length.

    Shapes: ``forward(audio [B, T] or [T], strength) -> [B, T]`` float32.
    """

    def __init__(self, waveglow: WaveGlow, filter_length: int = 1024, n_overlap: int = 4,
                 win_length: int = 1024, mode: str = "zeros", n_frames: int = 88,
                 generator: torch.Generator | None = None):
        super().__init__()
        if mode not in ("zeros", "normal"):
            raise ConfigError(f"Denoiser: mode must be 'zeros' or 'normal', got {mode!r}")
        if win_length > filter_length or filter_length % n_overlap:
            raise ConfigError(f"Denoiser: need win_length <= filter_length and filter_length a "
                              f"multiple of n_overlap, got {win_length}, {filter_length}, {n_overlap}")
        self.filter_length, self.win_length = filter_length, win_length
        self.hop_length = filter_length // n_overlap
        w = waveglow.upsample.weight
        self.register_buffer("window", torch.hann_window(win_length, device=w.device), persistent=False)
        shape = (1, waveglow.n_mel_channels, n_frames)
        if mode == "zeros":
            mel = torch.zeros(shape, dtype=w.dtype, device=w.device)
        else:
            mel = randn(*shape, generator=generator, device=w.device).to(w.dtype)
        bias_audio = waveglow.infer(mel, sigma=0.0).float()
        self.register_buffer("bias_spec", self._stft(bias_audio).abs()[:, :, :1].clone())

    def _stft(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.stft(audio, self.filter_length, self.hop_length, self.win_length,
                          self.window, center=True, pad_mode="reflect", return_complex=True)

    @torch.inference_mode()
    def forward(self, audio: torch.Tensor, strength: float = 0.1) -> torch.Tensor:
        if audio.dim() == 1:
            audio = audio[None]
        if audio.dim() != 2:
            raise ValueError(f"Denoiser: audio must be [B, T] or [T], got {tuple(audio.shape)}")
        if audio.size(1) <= self.filter_length // 2:
            raise ValueError(f"Denoiser: audio needs more than {self.filter_length // 2} samples "
                             f"(reflect padding), got {audio.size(1)}")
        audio = audio.to(self.bias_spec.device, torch.float32)
        spec = self._stft(audio)
        magnitude = (spec.abs() - self.bias_spec * strength).clamp_min(0.0)
        spec = torch.polar(magnitude, spec.angle())
        return torch.istft(spec, self.filter_length, self.hop_length, self.win_length, self.window,
                           center=True, length=audio.size(1))
