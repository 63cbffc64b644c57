"""HiFi-GAN (Kong et al., 2020): generator shapes, conditioning, weight-norm folding, the V1
parameter count, the discriminators, the least-squares GAN losses and a short optimisation.

Generators are tiny (16 channels, two upsampling stages); the full-size V1-V3 generators are
only built on the meta device, to count their parameters.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from flowspeech.errors import ConfigError, FlowspeechError
from flowspeech.flows import remove_weight_norm
from flowspeech.models.hifigan import (
    CombinedDiscriminator,
    HiFiGANGenerator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    PeriodDiscriminator,
    ScaleDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_l1_loss,
)

torch.set_num_threads(1)

TINY = dict(upsample_initial_channel=16, upsample_rates=(4, 4), upsample_kernel_sizes=(8, 8),
            resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 3), (1, 3)))


def tiny_generator(in_channels: int = 4, **kw) -> HiFiGANGenerator:
    return HiFiGANGenerator(in_channels, **{**TINY, **kw})


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- generator -------------------------------------------------------------------------------


@pytest.mark.parametrize("resblock", ["1", "2"])
def test_output_length_is_frames_times_hop(resblock):
    torch.manual_seed(0)
    gen = tiny_generator(resblock=resblock)
    assert gen.hop_length == 16
    for frames in (1, 7):
        wav = gen(torch.randn(2, 4, frames))
        assert wav.shape == (2, 1, frames * 16)
        assert wav.abs().max() <= 1


def test_initial_weights_follow_init_std():
    # The effective (weight-normalised) weight is the N(0, 0.01) draw, not PyTorch's default.
    torch.manual_seed(0)
    gen = HiFiGANGenerator(4, upsample_initial_channel=64, upsample_rates=(4,),
                           upsample_kernel_sizes=(8,))
    assert gen.ups[0].weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert gen.resblocks[0].convs1[0].weight.std().item() == pytest.approx(0.01, rel=0.1)
    # init_std=None: PyTorch's default, what the authors' models actually trained from.
    torch.manual_seed(0)
    default = HiFiGANGenerator(4, upsample_initial_channel=64, upsample_rates=(4,),
                               upsample_kernel_sizes=(8,), init_std=None)
    assert default.ups[0].weight.std().item() > 0.02


def test_global_conditioning_changes_output():
    torch.manual_seed(0)
    gen = tiny_generator(gin_channels=3).eval()
    x = torch.randn(2, 4, 5)
    g1, g2 = torch.randn(2, 3, 1), torch.randn(2, 3, 1)
    with torch.no_grad():
        plain, y1, y2 = gen(x), gen(x, g1), gen(x, g2)
    assert y1.shape == plain.shape == (2, 1, 80)
    # The N(0, 0.01) initialisation keeps the output near 1e-3, so compare on that scale
    # (float32 rounding there is ~1e-10).
    scale = plain.abs().max()
    assert (y1 - plain).abs().max() > 1e-3 * scale
    assert (y1 - y2).abs().max() > 1e-3 * scale
    # Each sample is conditioned on its own g only.
    with torch.no_grad():
        mixed = gen(x, torch.cat([g1[:1], g2[1:]]))
    torch.testing.assert_close(mixed[0], y1[0])
    torch.testing.assert_close(mixed[1], y2[1])


def test_remove_weight_norm_keeps_output():
    torch.manual_seed(0)
    gen = tiny_generator(gin_channels=2).eval()
    x, g = torch.randn(2, 4, 6), torch.randn(2, 2, 1)
    with torch.no_grad():
        before = gen(x, g)
        gen.remove_weight_norm()
        after = gen(x, g)
    assert not any(parametrize.is_parametrized(m) for m in gen.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_v1_parameter_count_matches_paper():
    # Kong et al. (2020), Table 1: V1 13.92 M, V2 0.92 M, V3 1.46 M (counted without weight
    # norm's gains; the paper truncates to two decimals).
    with torch.device("meta"):
        v1 = HiFiGANGenerator(80)
        v2 = HiFiGANGenerator(80, upsample_initial_channel=128)
        v3 = HiFiGANGenerator(80, 256, (8, 8, 4), (16, 16, 8), "2", (3, 5, 7),
                              ((1, 2), (2, 6), (3, 12)))
        ns = HiFiGANGenerator(192)
        for gen in (v1, v2, v3, ns):
            gen.remove_weight_norm()
    assert v1.hop_length == 256
    assert abs(n_params(v1) / 1e6 - 13.92) <= 0.01
    assert n_params(v1) == 13_926_016
    assert math.floor(n_params(v2) / 1e4) / 100 == 0.92
    assert math.floor(n_params(v3) / 1e4) / 100 == 1.46
    assert n_params(ns) == 14_327_424


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(upsample_rates=(4, 4), upsample_kernel_sizes=(8,)), "same length"),
        (dict(upsample_rates=(4,), upsample_kernel_sizes=(3,)), "kernel 3 for rate 4"),
        (dict(upsample_rates=(4,), upsample_kernel_sizes=(7,)), "even number"),
        (dict(upsample_initial_channel=10), "divisible"),
        (dict(resblock="3"), "resblock"),
        (dict(resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 3),)), "same length"),
        (dict(resblock_kernel_sizes=(4, 5)), "odd"),
        (dict(resblock_dilation_sizes=((1, 0), (1, 3))), "positive"),
        (dict(upsample_rates=()), "non-empty"),
        (dict(gin_channels=-1), "gin_channels"),
        (dict(init_std=0.0), "init_std"),
    ],
)
def test_invalid_config_raises_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        tiny_generator(**kwargs)
    assert issubclass(ConfigError, FlowspeechError)


def test_bad_inputs_raise():
    gen = tiny_generator()
    with pytest.raises(ValueError, match="4 channels"):
        gen(torch.randn(1, 5, 3))
    with pytest.raises(ValueError, match="gin_channels=0"):
        gen(torch.randn(1, 4, 3), torch.randn(1, 2, 1))
    with pytest.raises(ConfigError):
        MultiPeriodDiscriminator(periods=(2, 0))


# --- discriminators --------------------------------------------------------------------------


def _check(scores, fmaps, n_discs, batch, n_maps):
    assert len(scores) == len(fmaps) == n_discs
    assert [len(f) for f in fmaps] == n_maps
    for s in scores:
        assert s.dim() == 2 and s.size(0) == batch
    for fm in fmaps:
        assert all(f.size(0) == batch for f in fm)


def _norm_kinds(module: torch.nn.Module) -> set[str]:
    """Names of the weight parametrisations in ``module`` (``_WeightNorm``, ``_SpectralNorm``)."""
    return {type(p).__name__ for m in module.modules() if parametrize.is_parametrized(m, "weight")
            for p in m.parametrizations["weight"]}


def test_default_discriminator_layouts():
    with torch.device("meta"):
        mpd, comb = MultiPeriodDiscriminator(), CombinedDiscriminator()
    # VITS: a scale discriminator, then periods 2, 3, 5, 7, 11, all weight-normalised.
    assert isinstance(mpd.discriminators[0], ScaleDiscriminator)
    assert [d.period for d in mpd.discriminators[1:]] == [2, 3, 5, 7, 11]
    assert _norm_kinds(mpd) == {"_WeightNorm"}
    # HiFi-GAN: five period discriminators and three scales, spectral norm on the raw one only.
    assert [d.period for d in comb.mpd.discriminators] == [2, 3, 5, 7, 11]
    assert len(comb.msd.discriminators) == 3
    assert _norm_kinds(comb.msd.discriminators[0]) == {"_SpectralNorm"}
    assert _norm_kinds(comb.msd.discriminators[1]) == {"_WeightNorm"}


def test_channels_scale_shrinks_the_discriminators():
    with torch.device("meta"):
        full = CombinedDiscriminator()
        assert n_params(CombinedDiscriminator(channels_scale=1.0)) == n_params(full) == 58_026_447
        quarter = CombinedDiscriminator(channels_scale=0.25)
    assert n_params(quarter) < n_params(full) / 10
    # At 1/16 the grouped convolutions keep groups that divide both widths.
    disc = CombinedDiscriminator(periods=(2, 3), n_scales=2, channels_scale=0.0625)
    assert [c.groups for c in disc.msd.discriminators[0].convs] == [1, 1, 1, 4, 16, 1]
    y = torch.randn(2, 1, 200)
    with torch.no_grad():
        real_scores, _, real_fmaps, _ = disc(y, y)
    _check(real_scores, real_fmaps, 4, 2, [6, 6, 7, 7])
    with pytest.raises(ConfigError, match="channels_scale"):
        ScaleDiscriminator(channels_scale=0)


def test_discriminators_return_one_score_and_fmap_list_per_subdiscriminator():
    torch.manual_seed(0)
    y = torch.randn(2, 1, 300).clamp(-1, 1)
    with torch.no_grad():
        _check(*PeriodDiscriminator(3)(y), 1, 2, [6])
        _check(*ScaleDiscriminator()(y), 1, 2, [7])
        mpd = MultiPeriodDiscriminator(periods=(2, 3))
        _check(*mpd(y), 3, 2, [7, 6, 6])
        periods_only = MultiPeriodDiscriminator(periods=(2, 3), with_scale_discriminator=False)
        assert len(periods_only(y)[0]) == 2
        msd = MultiScaleDiscriminator()
        scores, fmaps = msd(y)
        _check(scores, fmaps, 3, 2, [7] * 3)
        # Raw, x2 and x4 pooled audio: the first feature maps keep the input lengths.
        assert [fm[0].size(-1) for fm in fmaps] == [300, 151, 76]


def test_combined_discriminator_batches_real_and_fake_like_separate_calls():
    torch.manual_seed(0)
    disc = CombinedDiscriminator(periods=(2, 3), n_scales=2).eval()  # eval: no power iteration
    y_real, y_fake = torch.randn(2, 1, 257).tanh(), torch.randn(2, 1, 257).tanh()
    with torch.no_grad():
        rs, fs, rf, ff = disc(y_real, y_fake)
        _check(rs, rf, 4, 2, [6, 6, 7, 7])
        _check(fs, ff, 4, 2, [6, 6, 7, 7])
        # The unbatched path (shapes differ) gives the same numbers for the real audio.
        rs2, _, rf2, _ = disc(y_real, y_fake[..., :200])
    for a, b in zip(rs, rs2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for fa, fb in zip(rf, rf2):
        for a, b in zip(fa, fb):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # Fake scores are those of the fake audio alone.
    with torch.no_grad():
        s_mpd, _ = disc.mpd(y_fake)
    torch.testing.assert_close(fs[0], s_mpd[0], atol=1e-5, rtol=1e-4)


def test_period_discriminator_reflect_pads_lengths_not_a_multiple_of_the_period():
    torch.manual_seed(0)
    disc = PeriodDiscriminator(5).eval()
    y = torch.randn(1, 1, 103)
    with torch.no_grad():
        scores, fmaps = disc(y)
        ref_scores, ref_fmaps = disc(F.pad(y, (0, 2), mode="reflect"))
    assert fmaps[0][0].shape == (1, 32, 7, 5)  # 105 / 5 = 21 rows, stride 3 -> 7
    torch.testing.assert_close(scores[0], ref_scores[0])
    with pytest.raises(ValueError, match="too few"):
        PeriodDiscriminator(11)(torch.randn(1, 1, 4))


# --- losses ----------------------------------------------------------------------------------


def test_losses_vanish_at_their_optimum():
    real = [torch.ones(2, 5), torch.ones(2, 3)]
    fake = [torch.zeros(2, 5), torch.zeros(2, 3)]
    total, per_disc = discriminator_loss(real, fake)
    assert total.item() == 0 and len(per_disc) == 2
    assert generator_adversarial_loss([torch.ones(2, 5), torch.ones(2, 3)]).item() == 0
    # Worst case: every score wrong by 1 costs 1 per term.
    total, per_disc = discriminator_loss(fake, real)
    assert total.item() == pytest.approx(4.0) and [p.item() for p in per_disc] == [2.0, 2.0]
    assert generator_adversarial_loss(fake).item() == pytest.approx(2.0)


def test_feature_matching_is_twice_the_l1_and_ignores_the_real_side():
    real = [[torch.zeros(2, 3, 4, requires_grad=True), torch.zeros(2, 1, 4, requires_grad=True)]]
    fake = [[torch.full((2, 3, 4), 0.5, requires_grad=True),
             torch.ones(2, 1, 4, requires_grad=True)]]
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(2 * (0.5 + 1.0))
    loss.backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None
    assert feature_matching_loss(fake, fake).item() == 0


def test_mel_l1_loss():
    a, b = torch.zeros(2, 8, 5), torch.ones(2, 8, 5)
    assert mel_l1_loss(a, b).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        mel_l1_loss(a, b[..., :4])


def log_band_spectrogram(wav: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` -> ``[B, 8, F]``: log STFT magnitude averaged over 8 equal frequency bands.

    A stand-in for the mel spectrogram of the same shape (the L1 loss does not care which filter
    bank made it) that spares the test librosa's start-up time.
    """
    spec = torch.stft(wav, n_fft=64, hop_length=16, window=torch.hann_window(64), center=True,
                      return_complex=True)
    mag = torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-6)  # eps: finite gradient at 0
    bands = F.avg_pool1d(mag[:, 1:].transpose(1, 2), 4).transpose(1, 2)  # 32 bins -> 8 bands
    return torch.log(bands.clamp(min=1e-5))


def test_optimisation_reduces_mel_and_feature_matching_loss():
    torch.manual_seed(0)
    gen = tiny_generator(in_channels=4)
    disc = ScaleDiscriminator().eval()  # fixed: the generator chases its features
    remove_weight_norm(disc)  # frozen, so fold it once instead of on every call
    disc.requires_grad_(False)
    frames = 8
    t = torch.arange(frames * 16) / 8000
    target = (0.5 * torch.sin(2 * math.pi * 440 * t)).view(1, 1, -1)
    x = torch.randn(1, 4, frames)
    mel_real = log_band_spectrogram(target.squeeze(1))
    _, real_fmaps = disc(target)

    def loss_fn() -> torch.Tensor:
        wav = gen(x)
        _, fake_fmaps = disc(wav)
        mel = log_band_spectrogram(wav.squeeze(1))
        return 45 * mel_l1_loss(mel, mel_real) + feature_matching_loss(real_fmaps, fake_fmaps)

    with torch.no_grad():
        first = loss_fn().item()
    # Adam written out: the first torch.optim optimiser imports torch._dynamo, over a second.
    params = list(gen.parameters())
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    lr, b1, b2 = 5e-3, 0.9, 0.999
    for step in range(1, 11):
        grads = torch.autograd.grad(loss_fn(), params)
        with torch.no_grad():
            for p, g, mp, vp in zip(params, grads, m, v):
                mp.mul_(b1).add_(g, alpha=1 - b1)
                vp.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.sub_(lr * (mp / (1 - b1 ** step)) / ((vp / (1 - b2 ** step)).sqrt() + 1e-8))
    with torch.no_grad():
        last = loss_fn().item()
    # Seeds 0-3 end at 0.43-0.55 of the first loss; most of the drop is the mel term, which
    # dominates while the output is still near silent.
    assert math.isfinite(last) and last < 0.75 * first
