"""FloWaveNet: invertibility, likelihood, DDI, parameter count, chunked synthesis, the
authors' feature front end, refusal of foreign mels, and the import of the authors'
checkpoints.

Everything runs on tiny configurations. The authors' checkpoints are built here in their
layout, and their computations are re-stated below from their equations, independently of
flowspeech's implementation (which tracks the conditioning halves instead of swapping them).
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowspeech.audio import MelConfig, MelSpectrogram, compress_mel, decompress_mel, normalize_peak
from flowspeech.config import load_config
from flowspeech.errors import CheckpointError, ConfigError
from flowspeech.models.flowavenet import FloWaveNet
from flowspeech.models.flowavenet_import import import_flowavenet, load_authors_flowavenet
from flowspeech.models.registry import count_parameters

torch.set_num_threads(1)

# 4 bands, hop 16 = 4 x 4; 3 blocks (2**3 = 8 divides 16), a split after block 2.
TINY_MEL = MelConfig.from_dict({**MelConfig.flowavenet().to_dict(), "n_mels": 4, "hop_length": 16})
TINY = dict(n_blocks=3, n_flows=2, n_layers=2, channels=8, block_per_split=2, upsample_scales=(4, 4),
            n_prior_layers=1)


def tiny(seed: int = 0, mel_config: MelConfig = TINY_MEL, **overrides) -> FloWaveNet:
    """A tiny model whose every layer does something: random ActNorms (some negative scales),
    small random coupling / prior outputs (they start at zero)."""
    torch.manual_seed(seed)
    model = FloWaveNet(mel_config, **{**TINY, **overrides})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("actnorm.loc"):
                p.normal_(0.0, 0.1)
            elif name.endswith("actnorm.scale"):
                p.uniform_(0.7, 1.3).mul_(torch.where(torch.rand_like(p) < 0.2, -1.0, 1.0))
            elif ".end." in name:
                p.normal_(0.0, 0.1)
        for m in model.modules():
            if hasattr(m, "mark_initialized"):
                m.mark_initialized()
    return model.eval()


def mel_and_audio(batch=2, frames=4, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 4, frames, generator=g, dtype=dtype)
    audio = 0.3 * torch.randn(batch, frames * 16, generator=g, dtype=dtype)
    return mel, audio


# --- the model ------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [{}, dict(n_flows=3), dict(affine=False, block_per_split=1)])
def test_forward_then_inverse_gives_back_the_audio(overrides):
    model = tiny(**overrides)
    mel, audio = mel_and_audio()
    out = model(audio, mel)
    assert out.z.shape == audio.shape and out.logdet.shape == (2,) and out.log_p.shape == (2,)
    assert (model.inverse(out.z, mel) - audio).abs().max() < 1e-4
    assert (model.infer(mel, sigma=1.0, noise=out.z).waveforms - audio).abs().max() < 1e-4
    model.prepare_for_inference()  # weight norm folded: the same map
    assert (model.infer(mel, sigma=1.0, noise=out.z).waveforms - audio).abs().max() < 1e-4


def test_bfloat16_couplings_and_priors_stay_close_to_float32():
    model = tiny()
    mel, _ = mel_and_audio()
    z = torch.randn(2, 64, generator=torch.Generator().manual_seed(3))
    reference = model.infer(mel, sigma=1.0, noise=z).waveforms
    model.set_waveform_dtype(torch.bfloat16)
    priors = [block.prior for block in model.blocks if block.split]
    assert priors and all(p.end.conv.weight.dtype == torch.bfloat16 for p in priors)
    assert model.blocks[0].flows[0].actnorm.scale.dtype == torch.float32
    out = model.infer(mel, sigma=1.0, noise=z).waveforms
    assert out.dtype == torch.float32
    assert 0 < (out - reference).abs().max() < 0.03 * reference.abs().max()


def test_nll_is_the_change_of_variables_formula():
    """nll = -(log N(z; 0, I) + log|det dz/dx|) / T, with the Jacobian of audio -> latent taken
    by autograd: checks every flow's logdet and every split prior's density at once."""
    model = tiny().double()
    mel, audio = mel_and_audio(frames=1, dtype=torch.float64)  # T = 16 samples
    out = model(audio, mel)
    for b in range(2):
        jac = torch.autograd.functional.jacobian(lambda x: model(x[None], mel[b:b + 1]).z[0], audio[b])
        log_det = torch.linalg.slogdet(jac)[1]
        z = out.z[b]
        log_normal = -0.5 * (z.pow(2).sum() + z.numel() * math.log(2 * math.pi))
        expected = -(log_normal + log_det) / z.numel()
        torch.testing.assert_close(FloWaveNet.nll(out)[b], expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(FloWaveNet.loss(out), FloWaveNet.nll(out).mean())


def test_first_training_forward_initialises_actnorm_then_never_again():
    model = FloWaveNet(TINY_MEL, **TINY).train()
    first = model.blocks[0].flows[0].actnorm
    seen = []
    first.register_forward_hook(lambda m, i, o: seen.append(o[0].detach()))
    mel, audio = mel_and_audio(batch=3, frames=8)
    with torch.no_grad():
        model(audio, mel)
    y = seen[0].transpose(0, 1).reshape(first.channels, -1)
    torch.testing.assert_close(y.mean(1), torch.zeros(first.channels), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(1), torch.ones(first.channels), atol=1e-4, rtol=0)
    assert all(bool(m.initialized) for m in model.modules() if hasattr(m, "initialized"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(audio * 3, mel)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_training_reduces_the_loss():
    model = tiny().train()
    mel, audio = mel_and_audio(batch=2, frames=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = FloWaveNet.loss(model(audio, mel))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


def authors_parameter_count(n_mels=80, n_block=8, n_flow=6, n_layer=2, h=256, block_per_split=4,
                            scales=(16, 16), prior_layers=2) -> int:
    """Parameters of the authors' ``model.Flowavenet`` (weight norm: ``g`` [out] + ``v`` + bias
    per conv), block by block as their constructor builds it."""

    def wavenet(c_in, c_out, c_cond, layers):
        front = 3 * c_in * h + 2 * h                     # Conv(c_in, h, 3)
        per_layer = 2 * (3 * h * h + 2 * h)              # filter_conv, gate_conv (kernel 3)
        per_layer += 2 * (h * h + 2 * h)                 # res_conv, skip_conv
        per_layer += 2 * (c_cond * h + 2 * h)            # filter_conv_c, gate_conv_c
        final = (h * h + 2 * h) + (h * c_out + 2 * c_out)  # Conv(h, h, 1); ZeroConv1d (+ scale)
        return front + layers * per_layer + final

    total = sum(3 * 2 * s + 2 for s in scales)           # ConvTranspose2d(1, 1, (3, 2s))
    c, cin = 1, n_mels
    for i in range(n_block):
        split = (i + 1) % block_per_split == 0 and i != n_block - 1
        d, e = 2 * c, 2 * cin                            # squeezed audio / conditioning channels
        total += n_flow * (2 * d + wavenet(d // 2, d, e // 2, n_layer))   # ActNorm + coupling
        if split:
            total += wavenet(d // 2, d, e, prior_layers)
        cin *= 2
        c = c if split else 2 * c
    return total


def test_parameter_count_of_the_paper_model():
    # By hand, for the paper's model (80 mels, 8 blocks, 6 flows, 2 layers, 256 channels, a
    # split after block 4). A weight-normed conv C_in -> C_out, kernel k, holds
    # C_out*C_in*k + 2*C_out parameters. One coupling WaveNet with input a, output o, conditioning
    # e: front 768a + 512; per layer 2*197,120 (filter, gate) + 2*66,048 (res, skip)
    # + 2*(256e + 512) (conditioning); final 66,048; ZeroConv 258o. So one flow (ActNorm 2D,
    # a = D/2, o = D, e = E/2, two layers) has 644 D + 1,121,280 + 512 E parameters, with
    # D = 2, 4, 8, 16, 16, 32, 64, 128 (sum 270) and E = 160 * 2**i (sum 40,800) over the
    # blocks: 6 * (644 * 270 + 8 * 1,121,280 + 512 * 40,800) = 180,202,320. The prior of
    # block 4 (a = 8, o = 16, e = 1,280): 6,144 + 512 + 2 * (527,360 + 655,360) + 66,048
    # + 4,128 = 2,442,272. The upsampler: 2 * (96 + 2) = 196.
    # Total 180,202,320 + 2,442,272 + 196 = 182,644,788 (the paper's 182.64 M).
    assert authors_parameter_count() == 182_644_788
    assert count_parameters(load_config("flowavenet-base")) == 182_644_788
    small = load_config("flowavenet-small")
    a = small["model_args"]
    assert count_parameters(small) == authors_parameter_count(
        80, a["n_blocks"], a["n_flows"], a["n_layers"], a["channels"], a["block_per_split"])
    assert "not the paper" in small["description"]


def test_chunked_inference_equals_whole_with_the_same_noise():
    model = tiny().double()
    mel = torch.rand(2, 4, 40, dtype=torch.float64)
    noise = torch.randn(2, 40 * 16, dtype=torch.float64)
    whole = model.infer(mel, sigma=0.8, noise=noise).waveforms
    chunked = model.infer_chunked(mel, chunk_frames=7, sigma=0.8, noise=noise).waveforms
    assert (chunked - whole).abs().max() < 1e-10
    assert model.receptive_field_frames() + 1 < 40 - 7  # the overlap really cut the input
    one = model.infer_chunked(mel, chunk_frames=64, sigma=0.8, noise=noise).waveforms
    assert (one - whole).abs().max() < 1e-12
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(model.infer(mel, generator=g1).waveforms, model.infer_chunked(mel, chunk_frames=9, generator=g2).waveforms)
    with pytest.raises(ValueError, match="crossfade"):
        model.infer_chunked(mel, chunk_frames=7, overlap=0, crossfade=16)


def test_mismatched_mels_are_refused():
    model = tiny()
    _, audio = mel_and_audio()
    log_mel = torch.randn(2, 4, 4) * 2 - 6  # log-mel range
    with pytest.raises(ConfigError, match=r"\[0, 1\].*MelConfig.flowavenet"):
        model.infer(log_mel)
    with pytest.raises(ConfigError, match="log-mels"):
        model(audio, log_mel)
    with pytest.raises(ConfigError, match="4-band"):
        model.infer(torch.rand(2, 80, 4))
    log_model = tiny(mel_config=MelConfig.from_dict({**MelConfig.glow_tts().to_dict(), "n_mels": 4,
                                                     "hop_length": 16}))
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        log_model.infer(torch.rand(1, 4, 4))
    assert log_model.infer(torch.randn(1, 4, 4) - 5).waveforms.shape == (1, 64)
    assert log_model.infer(torch.zeros(1, 4, 4)).waveforms.shape == (1, 64)  # a constant mel (bias estimation) is fine


def test_presets_and_config_errors():
    model_args = load_config("flowavenet-base")["model_args"]
    assert model_args == dict(n_blocks=8, n_flows=6, n_layers=2, channels=256, block_per_split=4,
                              upsample_scales=[16, 16], affine=True, n_prior_layers=2)
    with torch.device("meta"):
        model = FloWaveNet.from_config(load_config("flowavenet-base"))
    assert model.mel_config == MelConfig.flowavenet() and model.receptive_field_frames() == 55
    with pytest.raises(ConfigError, match="multiply to"):
        FloWaveNet(TINY_MEL, **{**TINY, "upsample_scales": (4, 2)})
    with pytest.raises(ConfigError, match="must divide the hop"):
        FloWaveNet(TINY_MEL, **{**TINY, "n_blocks": 5})
    with pytest.raises(ConfigError, match="bad model_args"):
        FloWaveNet.from_config({"model": "flowavenet", "audio": {"preset": "flowavenet"},
                                "model_args": {"n_blockz": 2}})
    model = tiny()
    with pytest.raises(ValueError, match="multiple of 2\\*\\*n_blocks"):
        model(torch.zeros(1, 20), torch.rand(1, 4, 2))


# --- the authors' front end -------------------------------------------------------------------
def authors_features(wav: np.ndarray) -> np.ndarray:
    """The authors' preprocessing.py: peak 0.999, librosa power mel (their librosa: centred,
    reflect padding, Slaney bands 125-7600 Hz), 20 log10 re 20 dB, -100 dB..0 dB -> [0, 1]."""
    wav = wav / np.abs(wav).max() * 0.999
    mel = librosa.feature.melspectrogram(y=wav, sr=22050, n_fft=1024, hop_length=256, n_mels=80, fmin=125,
                                         fmax=7600, pad_mode="reflect")
    db = 20 * np.log10(np.maximum(1e-4, mel)) - 20.0
    return np.clip((db + 100) / 100, 0, 1)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-9), (np.float32, 2e-5)])
def test_front_end_matches_the_authors_preprocessing(dtype, tol):
    rng = np.random.default_rng(0)
    t = np.arange(int(0.8 * 22050)) / 22050
    wav = sum(np.sin(2 * np.pi * 140 * k * t + k) / k for k in range(1, 12)) * np.hanning(t.size)
    wav = 0.4 * wav + 0.01 * rng.standard_normal(t.size)
    wav[:4000] = 0.0  # silence: features clipped at 0 (the -100 dB floor)
    wav = wav.astype(dtype)
    expected = authors_features(wav)
    x = normalize_peak(torch.from_numpy(wav), 20 * math.log10(0.999))
    ours = MelSpectrogram(MelConfig.flowavenet())(x).numpy()
    assert ours.shape == expected.shape == (80, t.size // 256 + 1)
    assert 0.0 <= ours.min() and ours.max() <= 1.0 and (ours == 0).any() and ours.max() > 0.5
    assert np.abs(ours - expected).max() < tol
    mel = torch.logspace(-4, 1, 50, dtype=torch.float64)  # the range [0, 1] covers: -80..+20 dB
    torch.testing.assert_close(decompress_mel(compress_mel(mel, MelConfig.flowavenet()), MelConfig.flowavenet()), mel)


# --- the authors' checkpoints -----------------------------------------------------------------
AUTHORS = dict(n_mels=4, n_block=3, n_flow=2, n_layer=2, h=8, block_per_split=2, scales=(4, 4))


def authors_state_dict(n_mels, n_block, n_flow, n_layer, h, block_per_split, scales, seed=0):
    """Random weights in the layout of the authors' ``Flowavenet.state_dict()`` (old weight
    norm: ``weight_g [out, 1, ...]``, ``weight_v``; the prior always has 2 layers)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(prefix, c_out, c_in, k, shape=None):
        shape = shape or (c_out, c_in, k)
        sd[prefix + "weight_g"] = 0.4 + 0.6 * torch.rand(shape[0], *([1] * (len(shape) - 1)), generator=g)
        sd[prefix + "weight_v"] = torch.randn(*shape, generator=g)
        sd[prefix + "bias"] = 0.1 * torch.randn(shape[0] if len(shape) == 3 else 1, generator=g)

    def wavenet(p, c_in, c_out, c_cond, layers):
        conv(p + "front_conv.0.conv.", h, c_in, 3)
        for n in range(layers):
            q = f"{p}res_blocks.{n}."
            conv(q + "filter_conv.conv.", h, h, 3)
            conv(q + "gate_conv.conv.", h, h, 3)
            conv(q + "res_conv.", h, h, 1)
            conv(q + "skip_conv.", h, h, 1)
            conv(q + "filter_conv_c.", h, c_cond, 1)
            conv(q + "gate_conv_c.", h, c_cond, 1)
        conv(p + "final_conv.1.conv.", h, h, 1)
        sd[p + "final_conv.3.conv.weight"] = 0.05 * torch.randn(c_out, h, 1, generator=g)
        sd[p + "final_conv.3.conv.bias"] = 0.05 * torch.randn(c_out, generator=g)
        sd[p + "final_conv.3.scale"] = 0.05 * torch.randn(1, c_out, 1, generator=g)

    c, cin = 1, n_mels
    for i in range(n_block):
        split = (i + 1) % block_per_split == 0 and i != n_block - 1
        d, e = 2 * c, 2 * cin
        for j in range(n_flow):
            p = f"blocks.{i}.flows.{j}."
            sd[p + "actnorm.loc"] = 0.1 * torch.randn(1, d, 1, generator=g)
            sd[p + "actnorm.scale"] = 0.8 + 0.4 * torch.rand(1, d, 1, generator=g)
            wavenet(p + "coupling.net.", d // 2, d, e // 2, n_layer)
        if split:
            wavenet(f"blocks.{i}.prior.", d // 2, d, e, 2)
        cin *= 2
        c = c if split else 2 * c
    for k, s in enumerate(scales):
        conv(f"upsample_conv.{2 * k}.", 1, 1, 0, shape=(1, 1, 3, 2 * s))
    return sd


def _w(sd, p):
    """A weight-normed weight ``g v / |v|`` (norm over all but the first dim) or a plain one."""
    if p + "weight" in sd:
        return sd[p + "weight"]
    v = sd[p + "weight_v"]
    return sd[p + "weight_g"] * v / v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def _wavenet(sd, p, x, c, layers):
    """The authors' ``modules.Wavenet`` (non-causal), from its equations."""
    h = F.relu(F.conv1d(x, _w(sd, p + "front_conv.0.conv."), sd[p + "front_conv.0.conv.bias"], padding=1))
    skip = 0
    for n in range(layers):
        q, d = f"{p}res_blocks.{n}.", 2**n

        def conv(name, inp, dil=1, pad=0):
            return F.conv1d(inp, _w(sd, q + name), sd[q + name + "bias"], padding=pad, dilation=dil)

        filt = conv("filter_conv.conv.", h, d, d) + conv("filter_conv_c.", c)
        gate = conv("gate_conv.conv.", h, d, d) + conv("gate_conv_c.", c)
        a = torch.tanh(filt) * torch.sigmoid(gate)
        skip = skip + conv("skip_conv.", a)
        h = (h + conv("res_conv.", a)) * math.sqrt(0.5)
    out = F.relu(F.conv1d(F.relu(skip), _w(sd, p + "final_conv.1.conv."), sd[p + "final_conv.1.conv.bias"]))
    out = F.conv1d(out, sd[p + "final_conv.3.conv.weight"], sd[p + "final_conv.3.conv.bias"])
    return out * torch.exp(3 * sd[p + "final_conv.3.scale"])


def _upsample(sd, mel, scales):
    c = mel[:, None]
    for k, s in enumerate(scales):
        w = _w(sd, f"upsample_conv.{2 * k}.")
        c = F.leaky_relu(F.conv_transpose2d(c, w, sd[f"upsample_conv.{2 * k}.bias"], stride=(1, s),
                                            padding=(1, s // 2)), 0.4)
    return c[:, 0]


def _sq(x):
    b, ch, t = x.shape
    return x.view(b, ch, t // 2, 2).permute(0, 1, 3, 2).reshape(b, 2 * ch, t // 2)


def _unsq(x):
    b, ch, t = x.shape
    return x.view(b, ch // 2, 2, t).permute(0, 1, 3, 2).reshape(b, ch // 2, 2 * t)


def _swap(x):
    a, b = x.chunk(2, 1)
    return torch.cat([b, a], 1)


def _splits(hp):
    return [(i + 1) % hp["block_per_split"] == 0 and i != hp["n_block"] - 1 for i in range(hp["n_block"])]


def authors_forward(sd, hp, audio, mel):
    """The authors' ``Flowavenet.forward``, per utterance: ``(log_p [B], logdet [B])`` in nats."""
    c = _upsample(sd, mel, hp["scales"])[:, :, :audio.size(1)]
    x, logdet, log_p = audio[:, None], 0, 0
    for i, split in enumerate(_splits(hp)):
        x, c = _sq(x), _sq(c)
        for j in range(hp["n_flow"]):
            p = f"blocks.{i}.flows.{j}."
            scale, loc = sd[p + "actnorm.scale"], sd[p + "actnorm.loc"]
            x = scale * (x + loc)
            logdet = logdet + x.size(2) * torch.log(scale.abs()).sum()
            a, b = x.chunk(2, 1)
            log_s, t = _wavenet(sd, p + "coupling.net.", a, c.chunk(2, 1)[0], hp["n_layer"]).chunk(2, 1)
            x = torch.cat([a, (b - t) * torch.exp(-log_s)], 1)
            logdet = logdet - log_s.sum(dim=(1, 2))
            x, c = _swap(x), _swap(c)
        if split:
            x, z = x.chunk(2, 1)
            mean, log_sd = _wavenet(sd, f"blocks.{i}.prior.", x, c, 2).chunk(2, 1)
            log_p = log_p + (-0.5 * math.log(2 * math.pi) - log_sd
                             - 0.5 * (z - mean) ** 2 / torch.exp(2 * log_sd)).sum(dim=(1, 2))
    log_p = log_p + (-0.5 * math.log(2 * math.pi) - 0.5 * x.pow(2)).sum(dim=(1, 2))
    return log_p, logdet


def authors_reverse(sd, hp, z, mel):
    """The authors' ``Flowavenet.reverse(z, c)``: ``z [B, T]`` (already times the temperature)."""
    c = _upsample(sd, mel, hp["scales"])
    x, eps = z[:, None], {}
    for i, split in enumerate(_splits(hp)):
        x, c = _sq(x), _sq(c)
        if split:
            x, eps[i] = x.chunk(2, 1)
    for i, split in reversed(list(enumerate(_splits(hp)))):
        if split:
            mean, log_sd = _wavenet(sd, f"blocks.{i}.prior.", x, c, 2).chunk(2, 1)
            x = torch.cat([x, mean + torch.exp(log_sd) * eps[i]], 1)
        for j in reversed(range(hp["n_flow"])):
            p = f"blocks.{i}.flows.{j}."
            x, c = _swap(x), _swap(c)
            a, b = x.chunk(2, 1)
            log_s, t = _wavenet(sd, p + "coupling.net.", a, c.chunk(2, 1)[0], hp["n_layer"]).chunk(2, 1)
            x = torch.cat([a, b * torch.exp(log_s) + t], 1)
            x = x / sd[p + "actnorm.scale"] - sd[p + "actnorm.loc"]
        x, c = _unsq(x), _unsq(c)
    return x[:, 0]


def test_import_of_the_authors_checkpoint(tmp_path):
    from flowspeech.inference.loading import load_model
    from flowspeech.inference.vocoders import load_vocoder
    from flowspeech.models.registry import build_model
    from flowspeech.checkpoints import load_checkpoint, load_state_dict_checked

    sd = authors_state_dict(**AUTHORS)
    # A DataParallel run's checkpoint (train.py's save_checkpoint), one conv with weight norm folded.
    saved = {"module." + k: v for k, v in sd.items()}
    w = _w(sd, "blocks.1.flows.0.coupling.net.res_blocks.1.gate_conv_c.")
    for key in ("weight_g", "weight_v"):
        del saved["module.blocks.1.flows.0.coupling.net.res_blocks.1.gate_conv_c." + key]
    saved["module.blocks.1.flows.0.coupling.net.res_blocks.1.gate_conv_c.weight"] = w
    src = tmp_path / "checkpoint_step000001000.pth"
    torch.save({"state_dict": saved, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
                "scheduler": {"step_size": 200000, "gamma": 0.5, "last_epoch": 1000}, "global_step": 1000,
                "global_epoch": 3}, src)
    out = tmp_path / "imported.pt"
    config = import_flowavenet(src, out)
    assert config["model"] == "flowavenet" and config["audio"] == {"preset": "flowavenet", "n_mels": 4, "hop_length": 16}
    assert config["model_args"] == dict(n_blocks=3, n_flows=2, n_layers=2, channels=8, block_per_split=2,
                                        upsample_scales=[4, 4], affine=True, n_prior_layers=2)

    g = torch.Generator().manual_seed(3)
    mel = torch.rand(2, 4, 6, generator=g)
    noise = torch.randn(2, 6 * 16, generator=g)
    audio = 0.3 * torch.randn(2, 6 * 16, generator=g)

    # Synthesis: same mel and same noise -> same waveform as the authors' reverse.
    model, _ = load_model(out)
    theirs = authors_reverse(sd, AUTHORS, 0.8 * noise, mel)
    assert (model.infer(mel, sigma=0.8, noise=noise).waveforms - theirs).abs().max() < 1e-4
    assert theirs.abs().max() > 0.3
    vocoder = load_vocoder(out, TINY_MEL, sigma=0.8)  # the synthesizer's vocoder interface
    wavs = vocoder.vocode(mel, torch.tensor([6, 4]), generator=torch.Generator().manual_seed(0))
    assert wavs.waveforms.shape == (2, 96) and wavs.waveform_lengths.tolist() == [96, 64]
    assert not wavs.waveforms[1, 64:].any()

    # Training mode: the imported ActNorms are initialised, the first forward keeps them, and the
    # likelihood terms are the authors'.
    payload = load_checkpoint(out, model_type="flowavenet")
    model = build_model(payload["config"])
    load_state_dict_checked(model, payload["model"], str(out))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "actnorm" in k}
    result = model(audio, mel)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    log_p, logdet = authors_forward(sd, AUTHORS, audio, mel)
    torch.testing.assert_close(result.log_p, log_p, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(result.logdet, logdet, rtol=1e-5, atol=1e-3)
    # Their loss -(log_p + logdet) / (B T) is the batch mean of nll.
    torch.testing.assert_close(FloWaveNet.loss(result), -(log_p + logdet).sum() / audio.numel())


def test_import_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_authors_flowavenet(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(2, 2, 1)}}, bad)
    with pytest.raises(CheckpointError, match="does not hold FloWaveNet weights"):
        load_authors_flowavenet(bad)
    sd = authors_state_dict(**AUTHORS)
    sd["blocks.0.flows.0.coupling.net.extra.bias"] = torch.zeros(8)  # a tensor no layer takes
    stray = tmp_path / "stray.pth"
    torch.save({"state_dict": sd}, stray)
    with pytest.raises(CheckpointError, match="unused blocks.0.flows.0.coupling.net.extra"):
        load_authors_flowavenet(stray)
    from flowspeech.models.registry import get_spec

    assert get_spec("flowavenet").importer == "flowspeech.models.flowavenet_import:import_flowavenet"
