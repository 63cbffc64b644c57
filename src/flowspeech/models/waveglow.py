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

Inference runs on a folded copy of the weights (:mod:`flowspeech.models.waveglow_engine`): weight norm
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

from flowspeech.config import mel_config
from flowspeech.errors import ConfigError
from flowspeech.flows import (
    AffineCoupling,
    InvertibleConv1x1,
    WaveNetCouplingNet,
    set_coupling_dtype,
    squeeze,
)
from flowspeech.models.roles import MelToWaveform
from flowspeech.models.waveglow_engine import InverseEngine
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


class WaveGlow(MelToWaveform):
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

    default_sigma = 0.6  # the paper's listening tests (the authors' inference.py: 1.0)

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
        self._engine_cache: tuple[tuple, InverseEngine] | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "WaveGlow":
        """Build from a flowspeech config; ``n_mel_channels`` and ``hop_length`` come from the
        ``audio`` section (:func:`flowspeech.config.mel_config`)."""

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

    # --- synthesis (MelToWaveform) ----------------------------------------------------------
    def sample_noise(self, batch: int, n_frames: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
        """``N(0, I)`` for ``n_frames`` mel frames in the layout of ``z`` ``[B, n_group,
        n_frames * hop / n_group]``, drawn in the authors' order (the last flow's channels
        first, then each early block from the last to the first), so the same seed gives the
        same audio as their ``infer``."""
        device = self.upsample.weight.device if device is None else device
        dtype = self.upsample.weight.dtype if dtype is None else dtype
        n_positions = n_frames * self.hop_length // self.n_group
        n_early = sum(self._is_early(k) for k in range(self.n_flows))
        final = randn(batch, self.flow_channels[-1], n_positions, generator=generator,
                      device=device, dtype=dtype)
        early = [randn(batch, self.n_early_size, n_positions, generator=generator,
                       device=device, dtype=dtype) for _ in range(n_early)]
        return torch.cat(early[::-1] + [final], dim=1)

    def noise_frames(self, noise: torch.Tensor, start: int, end: int) -> torch.Tensor:
        per_frame = self.hop_length // self.n_group
        return noise[:, :, start * per_frame:end * per_frame]

    def lead_frames(self) -> int:
        """The upsampler's kernel reaches ``kernel / hop - 1`` frames back."""
        return math.ceil(self.upsample_kernel_size / self.hop_length) - 1

    def synthesize_window(self, mels: torch.Tensor, noise: torch.Tensor, lead: int = 0) -> torch.Tensor:
        """On the folded weights (:class:`~flowspeech.models.waveglow_engine.InverseEngine`);
        the same numbers as :meth:`inverse` to float rounding."""
        return self._engine().run(mels, noise, skip_frames=lead)

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

    def _engine(self) -> InverseEngine:
        """The folded-weight inference engine, rebuilt whenever a parameter changed."""
        params = list(self.parameters())
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if self._engine_cache is None or self._engine_cache[0] != key:
            self._engine_cache = None  # free the old copy first
            with torch.inference_mode(False), torch.no_grad():
                self._engine_cache = (key, InverseEngine(self))
        return self._engine_cache[1]

    def _apply(self, fn, *args, **kwargs):
        self._engine_cache = None  # .to() / .half(): drop the folded copy on the old device
        return super()._apply(fn, *args, **kwargs)

    def prepare_for_inference(self) -> "WaveGlow":
        """Switch to eval mode, fold weight norm into plain weights (as the authors'
        ``remove_weightnorm``) and build the folded inference weights once (the authors'
        ``W_inverse`` cache and more; see :class:`~flowspeech.models.waveglow_engine.InverseEngine`).
        Returns ``self``."""
        super().prepare_for_inference()
        self._engine()
        return self

    def set_waveform_dtype(self, dtype: torch.dtype) -> "WaveGlow":
        """Run the coupling WaveNets (and the upsampler's products, which feed only them) in
        ``dtype`` at inference, e.g. ``torch.bfloat16`` on CPUs with AVX512-BF16 or AMX, or
        ``torch.float16`` on a GPU. The audio, the affine maps and the inverse 1x1
        convolutions stay in the model's dtype (see
        :func:`flowspeech.flows.set_coupling_dtype`; the weights are rounded in place).
        Returns ``self``."""
        set_coupling_dtype(self, dtype)
        return self


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
        bias_audio = waveglow.infer(mel, sigma=0.0).waveforms.float()
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
