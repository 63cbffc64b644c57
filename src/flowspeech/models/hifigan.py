"""HiFi-GAN: the waveform decoder of NaturalSpeech, its discriminators and its GAN losses.

NaturalSpeech (Tan et al., 2022, "NaturalSpeech: End-to-End Text to Speech Synthesis with
Human-Level Quality", arXiv:2205.04421) decodes its frame-level latent to a waveform with the
generator of HiFi-GAN and trains it adversarially, as VITS (Kim, Kong and Son, 2021) does.
HiFi-GAN is Kong, Kim and Bae, "HiFi-GAN: Generative Adversarial Networks for Efficient and
High Fidelity Speech Synthesis", NeurIPS 2020 (arXiv:2010.05646); the authors' code is github
jik876/hifi-gan (``models.py``) and VITS's is jaywalnut310/vits (``models.py``, ``losses.py``).

* :class:`HiFiGANGenerator` (Sec. 2.1): transposed convolutions upsample ``[B, C, F]`` frames
  to ``[B, 1, F * hop]`` samples; after each one a multi-receptive-field fusion (MRF) module
  averages residual blocks of different kernel sizes and dilations.
* Discriminators (Sec. 2.2): :class:`PeriodDiscriminator` folds the audio into ``period``
  columns and applies 2-D convolutions along time; :class:`ScaleDiscriminator` is MelGAN's
  1-D discriminator (Kumar et al., 2019). :class:`MultiPeriodDiscriminator` (VITS's layout:
  one scale discriminator and the period discriminators), :class:`MultiScaleDiscriminator`
  (raw, x2 and x4 average-pooled audio) and :class:`CombinedDiscriminator` (HiFi-GAN's MPD +
  MSD pair) group them.
* Losses (Sec. 2.3, eqs. 1-6): least-squares GAN losses, feature matching and mel L1.

Every discriminator's ``forward(y)`` takes audio ``[B, 1, T]`` and returns
``(scores, fmaps)``: a list with one score tensor ``[B, N_k]`` per sub-discriminator, and a
list (one entry per sub-discriminator) of lists of its feature maps (``[B, C, T']`` for scale,
``[B, C, T', period]`` for period discriminators), so that the losses below can take the
lists of any discriminator unchanged.

Parameter names follow the authors' code (``conv_pre``, ``ups``, ``resblocks``, ``conv_post``,
``cond``; ``convs1``/``convs2``/``convs`` in the residual blocks; ``discriminators``,
``meanpools``, ``convs``, ``conv_post`` in the discriminators). A VITS generator or
discriminator state dict therefore loads key by key (PyTorch maps the hook-based
``weight_g``/``weight_v`` keys onto the weight-norm parametrisation); a HiFi-GAN generator
additionally has weight norm on ``conv_pre`` and a bias on ``conv_post``, which an importer
has to fold and drop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from flowspeech.errors import ConfigError
from flowspeech.flows.base import check_input, remove_weight_norm, weight_norm

__all__ = [
    "CombinedDiscriminator",
    "HiFiGANGenerator",
    "MultiPeriodDiscriminator",
    "MultiScaleDiscriminator",
    "PeriodDiscriminator",
    "ResBlock1",
    "ResBlock2",
    "ScaleDiscriminator",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "mel_l1_loss",
]

#: Negative slope of the leaky ReLUs inside the generator and the discriminators (HiFi-GAN code).
LRELU_SLOPE = 0.1

#: Standard deviation of the generator's initial convolution weights (HiFi-GAN code).
INIT_STD = 0.01

#: ``(scores, fmaps)`` of one discriminator, one entry per sub-discriminator.
DiscriminatorOutput = tuple[list[torch.Tensor], list[list[torch.Tensor]]]
#: ``(real_scores, fake_scores, real_fmaps, fake_fmaps)`` of :class:`CombinedDiscriminator`.
CombinedOutput = tuple[
    list[torch.Tensor], list[torch.Tensor], list[list[torch.Tensor]], list[list[torch.Tensor]]]


def _same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the length of a stride-1 convolution with an odd kernel."""
    return (kernel_size * dilation - dilation) // 2


def _init_weight_norm(conv: nn.Module, std: float | None = INIT_STD) -> nn.Module:
    """Draw ``conv.weight`` from N(0, std), then attach weight norm; ``std=None`` keeps
    PyTorch's default initialisation.

    Drawing first makes ``g = ||v||``, so the effective weight is the draw. (The authors' code
    draws after attaching the hook-based weight norm, whose hook recomputes the weight from
    ``g`` and ``v`` at the first call, so there the draw has no effect and training starts from
    PyTorch's default; ``init_std=None`` reproduces that.)
    """
    if std is not None:
        nn.init.normal_(conv.weight, 0.0, std)
    return weight_norm(conv)


def _check_audio(y: torch.Tensor, name: str) -> None:
    if y.dim() != 3 or y.size(1) != 1:
        raise ValueError(f"{name}: expected audio of shape [B, 1, T], got {tuple(y.shape)}")


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def _int_tuple(values: object, what: str) -> tuple[int, ...]:
    """``values`` (a list from YAML or a tuple) as a non-empty tuple of positive integers."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ConfigError(f"{what} must be a non-empty list of positive integers, got {values!r}")
    return tuple(_positive_int(v, f"{what} entries") for v in values)


# --- generator -------------------------------------------------------------------------------


class ResBlock1(nn.Module):
    """Residual block of HiFi-GAN V1/V2 (Kong et al., 2020, Sec. 2.1 and Fig. 1, ``ResBlock1``).

    For each dilation ``d``: ``x = x + conv_1(lrelu(conv_d(lrelu(x))))``, both convolutions
    weight-normalised with kernel ``kernel_size``; the second is undilated.

    ``init_std``: see :class:`HiFiGANGenerator`.

    Shapes: ``x [B, channels, T]`` -> ``[B, channels, T]``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilations: Sequence[int] = (1, 3, 5),
                 init_std: float | None = INIT_STD):
        super().__init__()
        self.convs1 = nn.ModuleList(
            _init_weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d,
                                        padding=_same_padding(kernel_size, d)), init_std)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            _init_weight_norm(nn.Conv1d(channels, channels, kernel_size,
                                        padding=_same_padding(kernel_size)), init_std)
            for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c1(F.leaky_relu(x, LRELU_SLOPE))
            xt = c2(F.leaky_relu(xt, LRELU_SLOPE))
            x = x + xt
        return x


class ResBlock2(nn.Module):
    """Residual block of HiFi-GAN V3 (Kong et al., 2020, Sec. 2.1 and Appendix A, ``ResBlock2``).

    For each dilation ``d``: ``x = x + conv_d(lrelu(x))`` with one weight-normalised convolution.

    ``init_std``: see :class:`HiFiGANGenerator`.

    Shapes: ``x [B, channels, T]`` -> ``[B, channels, T]``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilations: Sequence[int] = (1, 3),
                 init_std: float | None = INIT_STD):
        super().__init__()
        self.convs = nn.ModuleList(
            _init_weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d,
                                        padding=_same_padding(kernel_size, d)), init_std)
            for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x


class HiFiGANGenerator(nn.Module):
    """HiFi-GAN generator (Kong et al., 2020, Sec. 2.1), NaturalSpeech's waveform decoder.

    ``conv_pre`` (kernel 7) maps the input to ``upsample_initial_channel`` channels; a global
    condition ``g`` (e.g. a speaker embedding) is added there through a 1x1 convolution
    (``cond``, VITS). Then, for each stage ``i``: leaky ReLU (slope 0.1), a weight-normalised
    transposed convolution (stride ``upsample_rates[i]``, kernel ``upsample_kernel_sizes[i]``)
    that halves the channels, and the MRF module: the mean of one residual block per
    ``(resblock_kernel_sizes[j], resblock_dilation_sizes[j])``. Finally leaky ReLU with slope
    0.01 (the default of ``F.leaky_relu``, as the authors' code calls it), ``conv_post``
    (kernel 7, one channel, no bias as in VITS) and ``tanh``.

    The defaults are HiFi-GAN V1 (Table 1 and Appendix A). Parameter counts of this module
    once weight norm is folded (:meth:`remove_weight_norm`): **13,926,016** with
    ``in_channels=80``, which is the paper's 13.92 M for V1 (the paper truncates: its V2 and
    V3 figures, 0.92 M and 1.46 M, are likewise 925,984 and 1,462,272 truncated), and
    **14,327,424** (14.33 M) with ``in_channels=192``, NaturalSpeech's latent. While training,
    weight norm's per-channel gains add 9,601: 13,935,617 and 14,337,025.

    ``conv_pre`` has no weight norm, as in VITS; the transposed convolutions, the residual
    blocks and ``conv_post`` start from N(0, ``init_std``) weights, ``conv_pre`` and ``cond``
    from PyTorch's default.

    Args:
        in_channels: channels of the input frames (80 mel bands for a vocoder, 192 for the
            NaturalSpeech/VITS latent).
        upsample_initial_channel: ``h_u``, channels after ``conv_pre`` (512).
        upsample_rates: stride of each transposed convolution; their product is the hop.
        upsample_kernel_sizes: ``k_u``, kernel of each transposed convolution.
        resblock: ``"1"`` (:class:`ResBlock1`, V1/V2) or ``"2"`` (:class:`ResBlock2`, V3).
        resblock_kernel_sizes: ``k_r``, one kernel size per MRF branch (odd).
        resblock_dilation_sizes: ``D_r``, the dilations of each MRF branch.
        gin_channels: channels of the global condition ``g``; 0 for none.
        init_std: standard deviation of the initial weights of the weight-normalised
            convolutions; 0.01 is what the HiFi-GAN and VITS code ask for. Their code draws it
            after attaching weight norm, which discards the draw, so their models actually
            trained from PyTorch's default initialisation: ``None`` reproduces that. With 0.01
            V1's initial output is nearly constant (standard deviation about 3e-4 on a log-mel
            input, against 6e-3 with the default).

    Shapes: ``x [B, in_channels, F]``, ``g [B, gin_channels, 1]`` -> ``[B, 1, F * hop_length]``
    in ``[-1, 1]``.
    """

    def __init__(
        self,
        in_channels: int,
        upsample_initial_channel: int = 512,
        upsample_rates: Sequence[int] = (8, 8, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (16, 16, 4, 4),
        resblock: str = "1",
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        gin_channels: int = 0,
        init_std: float | None = INIT_STD,
    ):
        super().__init__()
        name = "HiFiGANGenerator"
        in_channels = _positive_int(in_channels, f"{name}: in_channels")
        upsample_initial_channel = _positive_int(
            upsample_initial_channel, f"{name}: upsample_initial_channel")
        rates = _int_tuple(upsample_rates, f"{name}: upsample_rates")
        up_kernels = _int_tuple(upsample_kernel_sizes, f"{name}: upsample_kernel_sizes")
        if len(rates) != len(up_kernels):
            raise ConfigError(
                f"{name}: upsample_rates {list(rates)} and upsample_kernel_sizes "
                f"{list(up_kernels)} must have the same length (one kernel per upsampling stage)")
        for u, k in zip(rates, up_kernels):
            # Output length (F - 1) * u - 2 * (k - u) // 2 + k is exactly F * u only when k - u
            # is even and non-negative.
            if k < u or (k - u) % 2:
                raise ConfigError(
                    f"{name}: upsample kernel {k} for rate {u} must be >= the rate and differ "
                    f"from it by an even number (e.g. kernel = 2 * rate), so that each stage "
                    f"multiplies the length exactly by its rate")
        if upsample_initial_channel % (2 ** len(rates)):
            raise ConfigError(
                f"{name}: upsample_initial_channel ({upsample_initial_channel}) must be divisible "
                f"by 2 ** {len(rates)} = {2 ** len(rates)}: each of the {len(rates)} stages "
                f"halves the channels")
        resblock = str(resblock)
        if resblock not in ("1", "2"):
            raise ConfigError(f"{name}: resblock must be '1' (HiFi-GAN V1/V2) or '2' (V3), "
                              f"got {resblock!r}")
        rb_kernels = _int_tuple(resblock_kernel_sizes, f"{name}: resblock_kernel_sizes")
        if isinstance(resblock_dilation_sizes, (str, bytes)) or not isinstance(
                resblock_dilation_sizes, Sequence):
            raise ConfigError(f"{name}: resblock_dilation_sizes must be a list of lists of "
                              f"dilations, got {resblock_dilation_sizes!r}")
        rb_dilations = tuple(_int_tuple(d, f"{name}: resblock_dilation_sizes[{j}]")
                             for j, d in enumerate(resblock_dilation_sizes))
        if len(rb_kernels) != len(rb_dilations):
            raise ConfigError(
                f"{name}: resblock_kernel_sizes {list(rb_kernels)} and resblock_dilation_sizes "
                f"{[list(d) for d in rb_dilations]} must have the same length (one list of "
                f"dilations per residual-block kernel)")
        if any(k % 2 == 0 for k in rb_kernels):
            raise ConfigError(f"{name}: resblock_kernel_sizes must be odd so that the residual "
                              f"blocks keep the length, got {list(rb_kernels)}")
        if isinstance(gin_channels, bool) or not isinstance(gin_channels, int) or gin_channels < 0:
            raise ConfigError(f"{name}: gin_channels must be a non-negative integer, "
                              f"got {gin_channels!r}")
        if init_std is not None and (isinstance(init_std, bool) or not isinstance(
                init_std, (int, float)) or not 0 < init_std < math.inf):
            raise ConfigError(f"{name}: init_std must be a positive number or null (PyTorch's "
                              f"default initialisation), got {init_std!r}")

        self.in_channels = in_channels
        self.upsample_rates = rates
        self.gin_channels = gin_channels
        self.num_kernels = len(rb_kernels)
        self.num_upsamples = len(rates)

        self.conv_pre = nn.Conv1d(in_channels, upsample_initial_channel, 7, padding=3)
        self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1) if gin_channels else None

        block = ResBlock1 if resblock == "1" else ResBlock2
        self.ups = nn.ModuleList()
        # Flat and stage-major (block j of stage i at i * num_kernels + j), as the authors' keys.
        self.resblocks = nn.ModuleList()
        ch = upsample_initial_channel
        for u, k in zip(rates, up_kernels):
            self.ups.append(_init_weight_norm(
                nn.ConvTranspose1d(ch, ch // 2, k, stride=u, padding=(k - u) // 2), init_std))
            ch //= 2
            for rk, rd in zip(rb_kernels, rb_dilations):
                self.resblocks.append(block(ch, rk, rd, init_std))
        self.conv_post = _init_weight_norm(nn.Conv1d(ch, 1, 7, padding=3, bias=False), init_std)

    @property
    def hop_length(self) -> int:
        """Audio samples per input frame, ``prod(upsample_rates)`` (256 for V1)."""
        return math.prod(self.upsample_rates)

    def receptive_field_frames(self) -> int:
        """Input frames on either side that one output sample depends on: measured once
        (the gradient of a sample in the middle of 96 random frames), then kept. Decoding a
        window with this much context on each side gives its core exactly."""
        if getattr(self, "_receptive_field", None) is None:
            p = next(self.parameters())
            with torch.inference_mode(False), torch.enable_grad():
                x = torch.randn(1, self.in_channels, 96, device=p.device, dtype=p.dtype,
                                requires_grad=True)
                self(x)[0, 0, 48 * self.hop_length].backward()
            reach = (x.grad.abs().sum(1)[0] > 0).nonzero().flatten()
            self.zero_grad(set_to_none=True)
            self._receptive_field = int(max(48 - reach.min(), reach.max() - 48))
        return self._receptive_field

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """Frames ``x [B, in_channels, F]`` (and ``g [B, gin_channels, 1]``) to audio
        ``[B, 1, F * hop_length]``.

        ``g`` may also be per frame, ``[B, gin_channels, F]``, and may be left out of a
        conditioned generator (nothing is added then), as in VITS.
        """
        check_input(x, None, self.in_channels, "HiFiGANGenerator")
        x = self.conv_pre(x)
        if g is not None:
            if self.cond is None:
                raise ValueError("HiFiGANGenerator: got g but the generator was built with "
                                 "gin_channels=0; build it with gin_channels > 0 or pass g=None")
            if (g.dim() != 3 or g.size(0) != x.size(0) or g.size(1) != self.gin_channels
                    or g.size(2) not in (1, x.size(2))):
                raise ValueError(f"HiFiGANGenerator: g must be [B, gin_channels, 1] = "
                                 f"[{x.size(0)}, {self.gin_channels}, 1] (or one per frame, "
                                 f"[{x.size(0)}, {self.gin_channels}, {x.size(2)}]), "
                                 f"got {tuple(g.shape)}")
            x = x + self.cond(g)
        nk = self.num_kernels
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            xs = self.resblocks[i * nk](x)
            for j in range(1, nk):
                xs = xs + self.resblocks[i * nk + j](x)
            x = xs / nk
        x = F.leaky_relu(x)  # slope 0.01 here, unlike the 0.1 elsewhere (authors' code)
        return torch.tanh(self.conv_post(x))

    def remove_weight_norm(self) -> None:
        """Fold every weight-normalised convolution into a plain weight, in place, for inference.

        Outputs are unchanged; training afterwards would optimise the plain weights.
        """
        remove_weight_norm(self)


# --- discriminators --------------------------------------------------------------------------


def _norm_f(use_spectral_norm: bool):
    return spectral_norm if use_spectral_norm else weight_norm


def _check_scale(channels_scale: object, name: str) -> float:
    if isinstance(channels_scale, bool) or not isinstance(channels_scale, (int, float)) or not (
            0 < channels_scale < math.inf):
        raise ConfigError(f"{name}: channels_scale must be a positive number (1 = the paper's "
                          f"widths), got {channels_scale!r}")
    return float(channels_scale)


def _width(channels: int, scale: float) -> int:
    """``channels * scale`` rounded, at least 1 (``channels_scale`` shrinks test-size models)."""
    return max(1, round(channels * scale))


class PeriodDiscriminator(nn.Module):
    """One sub-discriminator of HiFi-GAN's multi-period discriminator (Kong et al., 2020,
    Sec. 2.2).

    The audio is right-padded by reflection to a multiple of ``period`` and reshaped to
    ``[B, 1, T / period, period]``, so that the 2-D convolutions (kernel ``(kernel_size, 1)``)
    see samples ``period`` apart. Channels 1 -> 32 -> 128 -> 512 -> 1024 with stride
    ``(stride, 1)``, one more 1024-channel convolution with stride 1, leaky ReLU (0.1) after
    each, and a 1-channel ``conv_post`` (kernel (3, 1)) whose output, flattened, is the score.

    Args:
        period: the fold (2, 3, 5, 7 or 11 in HiFi-GAN).
        kernel_size, stride: along the folded time axis (5 and 3).
        use_spectral_norm: spectral instead of weight normalisation.
        channels_scale: multiplies every hidden width (1 = the paper's; small values make
            test- and laptop-size discriminators).

    Shapes: ``y [B, 1, T]`` -> ``([score [B, N]], [[fmap [B, C, T', period], ...]])`` (one
    sub-discriminator, in the list form every discriminator here returns). ``T`` must exceed
    half the period, as reflection padding needs.
    """

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3,
                 use_spectral_norm: bool = False, channels_scale: float = 1.0):
        super().__init__()
        self.period = _positive_int(period, "PeriodDiscriminator: period")
        kernel_size = _positive_int(kernel_size, "PeriodDiscriminator: kernel_size")
        stride = _positive_int(stride, "PeriodDiscriminator: stride")
        scale = _check_scale(channels_scale, "PeriodDiscriminator")
        norm = _norm_f(use_spectral_norm)
        pad = (_same_padding(kernel_size), 0)
        chans = (1,) + tuple(_width(c, scale) for c in (32, 128, 512, 1024))
        convs = [norm(nn.Conv2d(a, b, (kernel_size, 1), (stride, 1), padding=pad))
                 for a, b in zip(chans[:-1], chans[1:])]
        convs.append(norm(nn.Conv2d(chans[-1], chans[-1], (kernel_size, 1), 1, padding=pad)))
        self.convs = nn.ModuleList(convs)
        self.conv_post = norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, y: torch.Tensor) -> DiscriminatorOutput:
        _check_audio(y, "PeriodDiscriminator")
        b, c, t = y.shape
        if t % self.period:
            n_pad = self.period - t % self.period
            if n_pad >= t:
                raise ValueError(f"PeriodDiscriminator: {t} samples are too few to pad to a "
                                 f"multiple of period {self.period} by reflection")
            y = F.pad(y, (0, n_pad), mode="reflect")
            t += n_pad
        return _score(self.convs, self.conv_post, y.view(b, c, t // self.period, self.period))


class ScaleDiscriminator(nn.Module):
    """One sub-discriminator of the multi-scale discriminator (Kong et al., 2020, Sec. 2.2,
    after MelGAN, Kumar et al., 2019).

    Strided and grouped 1-D convolutions (channels 1 -> 16 -> 64 -> 256 -> 1024 -> 1024 ->
    1024, kernels 15, 41 x 4, 5; strides 1, 4 x 4, 1; groups 1, 4, 16, 64, 256, 1) with leaky
    ReLU (0.1) after each, then a 1-channel ``conv_post`` (kernel 3) whose output, flattened,
    is the score.

    Args:
        use_spectral_norm: spectral instead of weight normalisation (HiFi-GAN uses it on the
            raw-audio scale, where it stabilised training).
        channels_scale: multiplies every hidden width and the group counts (1 = the paper's);
            groups are cut to a divisor of both widths where scaling leaves none.

    Shapes: ``y [B, 1, T]`` -> ``([score [B, N]], [[fmap [B, C, T'], ...]])``.
    """

    def __init__(self, use_spectral_norm: bool = False, channels_scale: float = 1.0):
        super().__init__()
        scale = _check_scale(channels_scale, "ScaleDiscriminator")
        norm = _norm_f(use_spectral_norm)
        # (in, out, kernel, stride, groups)
        layers = ((1, 16, 15, 1, 1), (16, 64, 41, 4, 4), (64, 256, 41, 4, 16),
                  (256, 1024, 41, 4, 64), (1024, 1024, 41, 4, 256), (1024, 1024, 5, 1, 1))
        convs = []
        for a, b, k, st, gr in layers:
            a = 1 if a == 1 else _width(a, scale)  # the audio stays one channel
            b = _width(b, scale)
            gr = math.gcd(_width(gr, scale), math.gcd(a, b))  # unchanged at scale 1
            convs.append(norm(nn.Conv1d(a, b, k, st, groups=gr, padding=_same_padding(k))))
        self.convs = nn.ModuleList(convs)
        self.conv_post = norm(nn.Conv1d(_width(1024, scale), 1, 3, 1, padding=1))

    def forward(self, y: torch.Tensor) -> DiscriminatorOutput:
        _check_audio(y, "ScaleDiscriminator")
        return _score(self.convs, self.conv_post, y)


def _score(convs: nn.ModuleList, conv_post: nn.Module, x: torch.Tensor) -> DiscriminatorOutput:
    """The body every sub-discriminator shares: leaky-ReLU convs, then ``conv_post``; every
    activation is a feature map and the flattened last one the score."""
    fmap = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        fmap.append(x)
    x = conv_post(x)
    fmap.append(x)
    return [torch.flatten(x, 1)], [fmap]


def _run_all(discriminators: nn.ModuleList, inputs: Sequence[torch.Tensor]) -> DiscriminatorOutput:
    """Concatenate the (scores, fmaps) lists of ``discriminators[k](inputs[k])``."""
    scores: list[torch.Tensor] = []
    fmaps: list[list[torch.Tensor]] = []
    for d, y in zip(discriminators, inputs):
        s, f = d(y)
        scores.extend(s)
        fmaps.extend(f)
    return scores, fmaps


class MultiPeriodDiscriminator(nn.Module):
    """Multi-period discriminator as VITS builds it (Kim et al., 2021; HiFi-GAN, Kong et al.,
    2020, Sec. 2.2): one :class:`ScaleDiscriminator` on the raw audio followed by one
    :class:`PeriodDiscriminator` per period.

    Args:
        periods: the folds, primes so that the sub-discriminators overlap little (2, 3, 5, 7, 11).
        use_spectral_norm: spectral norm in every sub-discriminator. VITS passes its config's
            ``use_spectral_norm``, which is false in every published config, so all of them,
            the scale discriminator included, use weight norm by default.
        with_scale_discriminator: False gives HiFi-GAN's MPD (the period discriminators only).
        channels_scale: of every sub-discriminator's widths (1 = the paper's).

    Shapes: ``y [B, 1, T]`` -> ``(scores, fmaps)`` with ``len(periods) + 1`` entries each
    (``len(periods)`` without the scale discriminator), the scale discriminator first.
    """

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), use_spectral_norm: bool = False,
                 with_scale_discriminator: bool = True, channels_scale: float = 1.0):
        super().__init__()
        periods = _int_tuple(periods, "MultiPeriodDiscriminator: periods")
        discs: list[nn.Module] = []
        if with_scale_discriminator:
            discs.append(ScaleDiscriminator(use_spectral_norm, channels_scale))
        discs += [PeriodDiscriminator(p, use_spectral_norm=use_spectral_norm,
                                      channels_scale=channels_scale) for p in periods]
        self.discriminators = nn.ModuleList(discs)
        self.periods = periods

    def forward(self, y: torch.Tensor) -> DiscriminatorOutput:
        _check_audio(y, "MultiPeriodDiscriminator")
        return _run_all(self.discriminators, [y] * len(self.discriminators))


class MultiScaleDiscriminator(nn.Module):
    """HiFi-GAN's multi-scale discriminator (Kong et al., 2020, Sec. 2.2, after MelGAN).

    ``n_scales`` :class:`ScaleDiscriminator` s see the raw audio, then audio average-pooled
    (kernel 4, stride 2, padding 2) once, twice, ...: x2 and x4 for the default 3 scales. The
    raw-audio one uses spectral norm, the others weight norm. ``channels_scale`` multiplies
    the widths of all of them (1 = the paper's).

    Shapes: ``y [B, 1, T]`` -> ``(scores, fmaps)`` with ``n_scales`` entries each, raw first.
    """

    def __init__(self, n_scales: int = 3, channels_scale: float = 1.0):
        super().__init__()
        n_scales = _positive_int(n_scales, "MultiScaleDiscriminator: n_scales")
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(use_spectral_norm=(i == 0), channels_scale=channels_scale)
            for i in range(n_scales))
        self.meanpools = nn.ModuleList(nn.AvgPool1d(4, 2, padding=2) for _ in range(n_scales - 1))

    def forward(self, y: torch.Tensor) -> DiscriminatorOutput:
        _check_audio(y, "MultiScaleDiscriminator")
        inputs = [y]
        for pool in self.meanpools:
            inputs.append(pool(inputs[-1]))
        return _run_all(self.discriminators, inputs)


class CombinedDiscriminator(nn.Module):
    """HiFi-GAN's pair (Kong et al., 2020, Sec. 2.2 and eq. 6): the multi-period discriminator
    (period discriminators only, since the multi-scale one already covers the raw audio) and
    the multi-scale discriminator.

    Args:
        periods: of the period discriminators (2, 3, 5, 7, 11).
        n_scales: of the multi-scale discriminator (3).
        channels_scale: multiplies every sub-discriminator's widths (1 = the paper's, whose
            eight sub-discriminators hold 58.0 M parameters; small configs use less).

    ``forward(y_real, y_fake)`` runs both on both inputs (in one batch when their shapes
    match) and returns ``(real_scores, fake_scores, real_fmaps, fake_fmaps)``, each a list
    over the ``len(periods) + n_scales`` sub-discriminators, period ones first, with the
    element shapes of :class:`PeriodDiscriminator` and :class:`ScaleDiscriminator`.
    For the discriminator step pass ``y_fake.detach()``.

    Shapes: ``y_real``, ``y_fake`` ``[B, 1, T]``.
    """

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), n_scales: int = 3,
                 channels_scale: float = 1.0):
        super().__init__()
        self.mpd = MultiPeriodDiscriminator(periods, with_scale_discriminator=False,
                                            channels_scale=channels_scale)
        self.msd = MultiScaleDiscriminator(n_scales, channels_scale=channels_scale)

    def _run(self, y: torch.Tensor) -> DiscriminatorOutput:
        s1, f1 = self.mpd(y)
        s2, f2 = self.msd(y)
        return s1 + s2, f1 + f2

    def forward(self, y_real: torch.Tensor, y_fake: torch.Tensor) -> CombinedOutput:
        _check_audio(y_real, "CombinedDiscriminator")
        _check_audio(y_fake, "CombinedDiscriminator")
        if y_real.shape == y_fake.shape:
            # One pass over a doubled batch: the same numbers (no layer mixes samples), half
            # the kernel launches.
            b = y_real.size(0)
            scores, fmaps = self._run(torch.cat([y_real, y_fake], dim=0))
            return ([s[:b] for s in scores], [s[b:] for s in scores],
                    [[f[:b] for f in fm] for fm in fmaps], [[f[b:] for f in fm] for fm in fmaps])
        real_scores, real_fmaps = self._run(y_real)
        fake_scores, fake_fmaps = self._run(y_fake)
        return real_scores, fake_scores, real_fmaps, fake_fmaps


# --- losses ----------------------------------------------------------------------------------


def discriminator_loss(
    real_scores: Sequence[torch.Tensor], fake_scores: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Least-squares discriminator loss (Kong et al., 2020, Sec. 2.3, eq. 1; Mao et al., 2017).

    ``sum_k mean((1 - D_k(x))^2) + mean(D_k(G(s))^2)``, computed in float32 at least.

    Args:
        real_scores, fake_scores: one tensor per sub-discriminator (any shape, e.g. ``[B, N_k]``),
            the fake ones from detached generator output.

    Returns:
        ``(total, per_disc)``: the scalar sum and the list of each sub-discriminator's loss.
    """
    if len(real_scores) != len(fake_scores):
        raise ValueError(f"discriminator_loss: {len(real_scores)} real but {len(fake_scores)} "
                         f"fake score tensors")
    losses = []
    for dr, dg in zip(real_scores, fake_scores):
        # float32: squared scores of a half-precision forward would lose precision.
        dr, dg = dr.float(), dg.float()
        losses.append(torch.mean((1 - dr) ** 2) + torch.mean(dg ** 2))
    return torch.stack(losses).sum(), losses


def generator_adversarial_loss(fake_scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Least-squares adversarial loss of the generator (Kong et al., 2020, Sec. 2.3, eq. 2).

    ``sum_k mean((1 - D_k(G(s)))^2)`` over the sub-discriminators' score tensors (any shape,
    e.g. ``[B, N_k]``); a scalar in float32 at least.
    """
    return torch.stack([torch.mean((1 - dg.float()) ** 2) for dg in fake_scores]).sum()


def feature_matching_loss(
    real_fmaps: Sequence[Sequence[torch.Tensor]], fake_fmaps: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """Feature matching loss (Kong et al., 2020, Sec. 2.3, eq. 4; Larsen et al., 2016), times 2.

    ``2 * sum_k sum_i mean|D_k^i(x) - D_k^i(G(s))|`` over every feature map ``i`` of every
    sub-discriminator ``k``; the real maps are detached, so only the generator is pulled.
    The factor 2 is ``lambda_fm`` of eq. 5, which the HiFi-GAN and VITS code apply inside this
    function; the caller adds the result unscaled.

    Args:
        real_fmaps, fake_fmaps: per sub-discriminator, the list of its feature maps (matching
            shapes, e.g. ``[B, C, T']`` or ``[B, C, T', period]``).

    Returns:
        A scalar, float32 at least.
    """
    if len(real_fmaps) != len(fake_fmaps):
        raise ValueError(f"feature_matching_loss: {len(real_fmaps)} real but {len(fake_fmaps)} "
                         f"fake feature-map lists")
    terms = []
    for dr, dg in zip(real_fmaps, fake_fmaps):
        for r, g in zip(dr, dg):
            terms.append(torch.mean(torch.abs(r.detach().float() - g.float())))
    return 2 * torch.stack(terms).sum()


def mel_l1_loss(mel_fake: torch.Tensor, mel_real: torch.Tensor) -> torch.Tensor:
    """Mel-spectrogram L1 loss (Kong et al., 2020, Sec. 2.3, eq. 3), unweighted.

    The mean absolute difference of the (log-)mel spectrograms of the generated and the real
    audio. The caller multiplies it by ``lambda_mel = 45`` (eq. 5).

    Shapes: ``mel_fake``, ``mel_real`` ``[B, n_mels, F]`` (equal) -> scalar.
    """
    if mel_fake.shape != mel_real.shape:
        raise ValueError(f"mel_l1_loss: shapes differ, {tuple(mel_fake.shape)} (generated) vs "
                         f"{tuple(mel_real.shape)} (real); cut both to the same frames")
    return F.l1_loss(mel_fake.float(), mel_real.float())
