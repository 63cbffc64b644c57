"""Glow-TTS: sizes, invertibility, likelihood, alignment, synthesis controls, learning."""

from __future__ import annotations

import math

import pytest
import torch

from flowspeech.config import load_config
from flowspeech.models.glow_tts import GlowTTS
from flowspeech.models.registry import count_parameters
from flowspeech.utils.masks import length_mask


def tiny_model(**overrides) -> GlowTTS:
    args = dict(n_vocab=40, n_mels=16, hidden_channels=32, filter_channels=64, filter_channels_dp=32,
                n_heads=2, n_layers_enc=1, n_blocks_dec=2, n_block_layers=2, hidden_channels_dec=32,
                p_dropout=0.0, p_dropout_dec=0.0)
    args.update(overrides)
    return GlowTTS(**args)


def batch(n_mels=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 40, (3, 9), generator=g)
    token_lengths = torch.tensor([9, 6, 4])
    mels = torch.randn(3, n_mels, 31, generator=g)
    mel_lengths = torch.tensor([31, 20, 12])
    return tokens, token_lengths, mels, mel_lengths


def test_paper_sizes():
    # Hand count of the authors' base model (configs/base.json): encoder 7,199,953 +
    # 12 decoder blocks x 1,785,328 = 28,623,889 ("28.6M" in the paper).
    assert count_parameters(load_config("glow-tts-base")) == 28_623_889
    # One more embedding row (192) for the blank token.
    assert count_parameters(load_config("glow-tts-base-blank")) == 28_623_889 + 192


def test_decoder_inverts_with_padding():
    torch.manual_seed(0)
    model = tiny_model().train()
    tokens, tl, mels, ml = batch()
    model(tokens, tl, mels, ml)  # data-dependent ActNorm init
    with torch.no_grad():
        for p in model.decoder.parameters():  # move away from the identity init of `end`
            p.add_(0.02 * torch.randn_like(p))
    model.eval()
    mels, ml = model._trim(mels, ml)
    mask = length_mask(ml, mels.size(2))
    mels = mels * mask
    z, logdet = model.decoder(mels, mask)
    back = model.decoder.inverse(z, mask)
    assert torch.allclose(back, mels, atol=1e-5)
    assert logdet.shape == (3,)


def test_nll_matches_change_of_variables():
    torch.manual_seed(1)
    model = tiny_model(mean_only=False).eval()
    tokens, tl, mels, ml = batch()
    with torch.no_grad():
        out = model(tokens, tl, mels, ml)
    per_item = GlowTTS.nll_per_dim(out, reduce=False)
    for b in range(3):
        f = int(out.mel_lengths[b])
        z, m, s = out.z[b, :, :f], out.z_mean[b, :, :f], out.z_log_scale[b, :, :f]
        log_prior = torch.distributions.Normal(m, torch.exp(s)).log_prob(z).sum()
        expected = -(log_prior + out.logdet[b]) / (z.numel())
        assert math.isclose(float(per_item[b]), float(expected), rel_tol=1e-4, abs_tol=1e-5)


def test_latents_given_to_forward_give_the_same_output_as_the_decoder_computing_them():
    torch.manual_seed(2)
    model = tiny_model(mean_only=False).eval()
    tokens, tl, mels, ml = batch()
    with torch.no_grad():
        out = model(tokens, tl, mels, ml)
        z, logdet, trimmed = model.mel_latents(mels, ml)
        given = model(tokens, tl, mels, ml, latents=(z, logdet))
    assert torch.equal(trimmed, out.mel_lengths) and trimmed.tolist() == [30, 20, 12]
    for name in ("z", "z_mean", "z_log_scale", "logdet", "z_mask", "attn", "log_durations_target"):
        assert torch.equal(getattr(given, name), getattr(out, name)), name


def test_mas_alignment_is_monotonic_and_surjective():
    model = tiny_model().eval()
    tokens, tl, mels, ml = batch()
    out = model(tokens, tl, mels, ml)
    attn = out.attn
    for b in range(3):
        n, f = int(tl[b]), int(out.mel_lengths[b])
        a = attn[b, :n, :f]
        assert torch.all(a.sum(0) == 1)          # each frame exactly one token
        assert torch.all(a.sum(1) >= 1)          # each token at least one frame
        idx = a.argmax(0)
        assert torch.all(idx[1:] >= idx[:-1])    # monotonic
        assert attn[b, n:].sum() == 0 and attn[b, :, f:].sum() == 0
    durations = model.align(tokens, tl, mels, ml)
    assert torch.equal(durations.sum(1), out.mel_lengths)


def test_prior_log_likelihood_matrix_form():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 5, 7, generator=g)
    mean = torch.randn(2, 5, 4, generator=g)
    log_scale = 0.3 * torch.randn(2, 5, 4, generator=g)
    got = GlowTTS.prior_log_likelihood(z, mean, log_scale)
    ref = torch.distributions.Normal(mean.unsqueeze(-1), torch.exp(log_scale).unsqueeze(-1)) \
        .log_prob(z.unsqueeze(2)).sum(1)
    assert torch.allclose(got, ref, atol=1e-4)


def test_inference_controls():
    torch.manual_seed(2)
    model = tiny_model().eval()
    with torch.no_grad():
        model.encoder.proj_w.proj.bias.fill_(1.0)  # about e frames per token
    tokens, tl, _, _ = batch()
    mel_a, len_a, dur_a = model.infer(tokens, tl, generator=torch.Generator().manual_seed(7))
    mel_b, len_b, _ = model.infer(tokens, tl, generator=torch.Generator().manual_seed(7))
    assert torch.equal(mel_a, mel_b)  # same seed, same output
    mel_c, _, _ = model.infer(tokens, tl, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(mel_a, mel_c)
    assert torch.equal(dur_a.sum(1) - dur_a.sum(1) % 2, len_a)
    _, len_slow, _ = model.infer(tokens, tl, length_scale=2.0)
    assert torch.all(len_slow >= 2 * len_a - 4)
    mel_0, _, _ = model.infer(tokens, tl, noise_scale=0.0)
    mel_0b, _, _ = model.infer(tokens, tl, noise_scale=0.0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(mel_0, mel_0b)  # zero temperature: the mean, whatever the noise
    # Padding frames are zero.
    assert mel_a[2, :, len_a[2]:].abs().sum() == 0


def test_batch_inference_equals_single():
    torch.manual_seed(4)
    model = tiny_model().eval()
    tokens, tl, _, _ = batch()
    mels, lengths, _ = model.infer(tokens, tl, noise_scale=0.0)
    for b in range(3):
        one, one_len, _ = model.infer(tokens[b:b + 1, :tl[b]], tl[b:b + 1], noise_scale=0.0)
        assert int(one_len) == int(lengths[b])
        assert torch.allclose(one[0], mels[b, :, :one_len[0]], atol=1e-4)


def test_max_frames_guard():
    model = tiny_model().eval()
    tokens, tl, _, _ = batch()
    with pytest.raises(ValueError, match="split the text"):
        model.infer(tokens, tl, length_scale=50.0, max_frames=10)


def test_multispeaker_needs_speaker_ids():
    model = tiny_model(n_speakers=3, gin_channels=8).eval()
    tokens, tl, mels, ml = batch()
    with pytest.raises(ValueError, match="speaker"):
        model(tokens, tl, mels, ml)
    out = model(tokens, tl, mels, ml, speakers=torch.tensor([0, 1, 2]))
    assert torch.isfinite(GlowTTS.nll_per_dim(out))


def test_prepare_for_inference_keeps_outputs():
    torch.manual_seed(5)
    model = tiny_model().eval()
    tokens, tl, _, _ = batch()
    before, _, _ = model.infer(tokens, tl, generator=torch.Generator().manual_seed(1))
    model.prepare_for_inference()
    after, _, _ = model.infer(tokens, tl, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(before, after, atol=1e-5)


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(6)
    model = tiny_model().train()
    tokens, tl, mels, ml = batch()
    with torch.no_grad():
        model(tokens, tl, mels, ml)  # DDI
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(tokens, tl, mels, ml)
        loss = GlowTTS.nll_per_dim(out) + GlowTTS.duration_loss(out, tl)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2, losses


def test_a_repeated_token_far_from_both_ends_knows_its_place_only_with_absolute_positions():
    # Relative attention sees 4 tokens either side: in a long run of one token, the middle
    # ones are indistinguishable to the paper's encoder, so it cannot place sentence-level
    # intonation there. The absolute position encoding tells them apart.
    tokens = torch.full((1, 60), 7)
    lengths = torch.tensor([60])
    plain = tiny_model(n_layers_enc=2).eval()
    mean = plain.encoder(tokens, lengths)[0]
    torch.testing.assert_close(mean[..., 25], mean[..., 35])
    placed = tiny_model(n_layers_enc=2, absolute_positions=True).eval()
    placed.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        placed.encoder.positions.proj.weight.copy_(torch.eye(32)[..., None])
    mean = placed.encoder(tokens, lengths)[0]
    assert (mean[..., 25] - mean[..., 35]).abs().max() > 1e-2


def test_absolute_positions_start_from_zero_so_a_trained_model_speaks_as_before():
    plain = tiny_model().eval()
    placed = tiny_model(absolute_positions=True).eval()
    missing = placed.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ["encoder.positions.proj.weight", "encoder.positions.proj.bias"]
    tokens, token_lengths, _, _ = batch()
    for ours, theirs in zip(placed.encoder(tokens, token_lengths), plain.encoder(tokens, token_lengths)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # Padding stays zero, and the paper's presets do not have it.
    with torch.no_grad():
        placed.encoder.positions.proj.weight.copy_(torch.eye(32)[..., None])
        mean, _, log_durations, mask = placed.encoder(tokens, token_lengths)
    assert float((mean * (1 - mask)).abs().max()) == 0.0 and float((log_durations * (1 - mask)).abs().max()) == 0.0
    for preset in ("glow-tts-base", "glow-tts-base-blank", "glow-tts-small"):
        assert GlowTTS.from_config(load_config(preset)).encoder.positions is None
