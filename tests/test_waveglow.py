"""WaveGlow: invertibility, likelihood, the folded inference engine, chunked synthesis, the
denoiser, presets, and the import of the authors' checkpoints (both published formats).

Everything runs on tiny configurations; the authors' checkpoints are built here in their
layouts and compared against an independent re-statement of their inference equations.
"""

from __future__ import annotations

import math
import sys
import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flowspeech.config import load_config
from flowspeech.errors import CheckpointError, ConfigError
from flowspeech.models.waveglow import Denoiser, WaveGlow
from flowspeech.models.waveglow_import import import_waveglow, load_authors_waveglow
from flowspeech.checkpoints import load_checkpoint, load_state_dict_checked
from flowspeech.training.recipes.waveglow import WaveGlowTrainConfig

torch.set_num_threads(1)

TINY = dict(n_mel_channels=3, n_flows=6, n_group=8, n_early_every=2, n_early_size=2,
            n_layers=3, n_channels=16, kernel_size=3, hop_length=16, upsample_kernel_size=64)


def randomize(module: nn.Module, std: float = 0.1) -> nn.Module:
    """Give the zero-initialised output layers and the biases random values, so that every
    coupling does something."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "end" in name or name.endswith("bias"):
                p.normal_(0.0, std)
    return module


def tiny(seed: int = 0, **overrides) -> WaveGlow:
    torch.manual_seed(seed)
    return randomize(WaveGlow(**{**TINY, **overrides})).eval()


# --- the model ------------------------------------------------------------------------------
def test_forward_then_infer_gives_back_the_audio():
    model = tiny()
    mel = torch.randn(2, 3, 9)
    audio = 0.3 * torch.randn(2, 9 * 16)
    out = model(audio, mel)
    assert out.z.shape == (2, 8, 18) and out.logdet.shape == (2,)
    torch.testing.assert_close(out.logdet, out.log_s_sum + out.log_det_w)
    back = model.infer(mel, sigma=1.0, noise=out.z).waveforms
    assert (back - audio).abs().max() < 1e-4
    assert (model.inverse(out.z, mel) - audio).abs().max() < 1e-4


@pytest.mark.parametrize("overrides", [
    {},
    dict(kernel_size=5, n_layers=1, n_group=4, n_early_every=5, hop_length=8, upsample_kernel_size=20),
    dict(n_flows=3, n_early_every=1, n_layers=2),
])
def test_inference_engine_equals_the_layer_modules(overrides):
    """The folded weights compute the same maps as the flow layers (float64: to rounding)."""
    model = tiny(**overrides).double()
    mel = torch.randn(2, 3, 5, dtype=torch.float64)
    z = model.sample_noise(2, 5, dtype=torch.float64)
    fast = model.infer(mel, sigma=1.0, noise=z).waveforms
    assert (fast - model.inverse(z, mel)).abs().max() < 1e-10
    model.prepare_for_inference()  # weight norm folded: same numbers
    assert (model.infer(mel, sigma=1.0, noise=z).waveforms - fast).abs().max() < 1e-10
    chunked = model.infer_chunked(mel, chunk_frames=2, overlap=model.receptive_field_frames() + 1,
                                  sigma=1.0, noise=z).waveforms
    assert (chunked - fast).abs().max() < 1e-10


def test_engine_follows_weight_changes():
    model = tiny()
    mel, z = torch.randn(1, 3, 4), torch.randn(1, 8, 8)
    before = model.infer(mel, sigma=1.0, noise=z).waveforms
    with torch.no_grad():
        model.coupling[2].net.end.bias.add_(0.5)
    after = model.infer(mel, sigma=1.0, noise=z).waveforms
    assert (after - before).abs().max() > 1e-3
    assert (after - model.inverse(z, mel)).abs().max() < 1e-5


def test_bfloat16_couplings_in_the_engine_and_the_layers():
    """set_waveform_dtype: the engine and the layer modules both run the WaveNets in bfloat16
    and stay close to float32; the audio and the inverse 1x1 matrices stay float32."""
    model = tiny()
    mel, z = torch.randn(2, 3, 6), torch.randn(2, 8, 12)
    reference = model.infer(mel, sigma=1.0, noise=z).waveforms
    model.set_waveform_dtype(torch.bfloat16)
    assert model.convinv[0].weight.dtype == torch.float32
    fast, layers = model.infer(mel, sigma=1.0, noise=z).waveforms, model.inverse(z, mel)
    assert fast.dtype == layers.dtype == torch.float32
    scale = reference.abs().max()
    assert 0 < (fast - reference).abs().max() < 0.03 * scale
    assert (fast - layers).abs().max() < 0.03 * scale


def test_logdet_matches_autograd_jacobian_and_nll_is_change_of_variables():
    model = tiny().double()
    mel = torch.randn(1, 3, 4, dtype=torch.float64)
    audio = 0.3 * torch.randn(1, 64, dtype=torch.float64)
    out = model(audio, mel)
    jac = torch.autograd.functional.jacobian(lambda a: model(a[None], mel).z.reshape(-1), audio[0])
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign > 0
    assert abs(out.logdet.item() - logabsdet.item()) < 1e-8
    n = audio.numel()
    expected = (0.5 * out.z.pow(2).sum() + 0.5 * n * math.log(2 * math.pi) - logabsdet) / n
    assert abs(WaveGlow.nll(out).item() - expected.item()) < 1e-6
    sigma = 0.7
    expected = (out.z.pow(2).sum() / (2 * sigma**2) + 0.5 * n * math.log(2 * math.pi * sigma**2)
                - logabsdet) / n
    assert abs(WaveGlow.nll(out, sigma).item() - expected.item()) < 1e-6
    # The authors' loss is the same objective without the Gaussian constant.
    constant = 0.5 * math.log(2 * math.pi)
    assert abs(WaveGlow.loss(out).item() - (WaveGlow.nll(out).mean().item() - constant)) < 1e-6


def test_training_reduces_the_loss():
    model = tiny(seed=3)
    model.train()
    mel, audio = torch.randn(2, 3, 5), 0.2 * torch.randn(2, 80)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = WaveGlow.loss(model(audio, mel))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


def authors_parameter_count(n_mels, n_flows, n_group, n_early_every, n_early_size, n_layers,
                            n_channels, kernel_size):
    """Parameters of the authors' glow.WaveGlow (weight norm: g [out] and v per conv)."""
    h = n_channels
    total = n_mels * n_mels * 1024 + n_mels                          # upsample
    remaining = n_group
    for k in range(n_flows):
        if k % n_early_every == 0 and k > 0:
            remaining -= n_early_size
        half = remaining // 2
        total += remaining * remaining                                # convinv
        total += h * half + 2 * h                                     # start: v, g, bias
        total += n_layers * (2 * h * h * kernel_size + 4 * h)         # in_layers
        total += (n_layers - 1) * (2 * h * h + 4 * h) + (h * h + 2 * h)  # res_skip_layers
        total += 2 * h * n_layers * n_mels * n_group + 4 * h * n_layers  # cond_layer
        total += 2 * half * h + 2 * half                              # end
    return total


def test_parameter_count_of_the_paper_model():
    expected = authors_parameter_count(80, 12, 8, 4, 2, 8, 256, 3)
    assert expected == 87_879_272
    with torch.device("meta"):
        model = WaveGlow.from_config(load_config("waveglow-base"))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_presets_and_config_errors():
    for name in ("waveglow-base", "waveglow-small"):
        config = load_config(name)
        assert WaveGlowTrainConfig.from_dict(config["train"]).segment_length > 0
    small = load_config("waveglow-small")
    assert "not the paper" in small["description"]
    with torch.device("meta"):
        assert sum(p.numel() for p in WaveGlow.from_config(small).parameters()) < 15_000_000
    with pytest.raises(ConfigError):
        WaveGlow(n_group=7)
    with pytest.raises(ConfigError):
        WaveGlow(n_flows=12, n_early_every=2, n_early_size=2)  # runs out of channels
    with pytest.raises(ConfigError):
        WaveGlow.from_config({**small, "model_args": {**small["model_args"], "bogus": 1}})
    model = tiny()
    with pytest.raises(ValueError, match="fewer than"):
        model(torch.zeros(1, 200), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match=r"expected mels \[B, 3, F\]"):
        model.infer(torch.zeros(1, 5, 2))


# --- chunked synthesis and the denoiser -----------------------------------------------------
def test_chunked_inference_matches_whole_with_the_same_noise():
    model = tiny(n_layers=2)
    mel = torch.randn(1, 3, 40)
    z = torch.randn(1, 8, 80)
    whole = model.infer(mel, sigma=0.8, noise=z).waveforms
    assert model.receptive_field_frames() == 9
    chunked = model.infer_chunked(mel, chunk_frames=7, sigma=0.8, noise=z).waveforms
    assert (chunked - whole).abs().max() < 1e-5
    # Same generator seed, same audio; a short overlap stays finite and the right length.
    a = model.infer_chunked(mel, chunk_frames=16, generator=torch.Generator().manual_seed(5)).waveforms
    b = model.infer(mel, generator=torch.Generator().manual_seed(5)).waveforms
    assert (a - b).abs().max() < 1e-5
    rough = model.infer_chunked(mel, chunk_frames=10, overlap=1, crossfade=16, sigma=0.8, noise=z).waveforms
    assert rough.shape == whole.shape and torch.isfinite(rough).all()
    with pytest.raises(ValueError):
        model.infer_chunked(mel, chunk_frames=10, overlap=0, crossfade=16)


def test_denoiser_shapes_and_bias_removal():
    model = tiny()
    denoiser = Denoiser(model, filter_length=64, n_overlap=4, win_length=64, n_frames=12)
    assert denoiser.bias_spec.shape == (1, 33, 1)
    bias = model.infer(torch.zeros(2, 3, 30), sigma=0.0).waveforms
    assert denoiser(bias, strength=0.0).shape == bias.shape
    torch.testing.assert_close(denoiser(bias, strength=0.0), bias, atol=1e-5, rtol=0)
    cleaned = denoiser(bias, strength=1.0)
    assert cleaned.pow(2).mean() < 0.2 * bias.pow(2).mean()
    tone = 0.3 * torch.sin(torch.arange(bias.size(1)) * 0.37)
    noisy = tone + bias[0]
    # The bias leaves; the signal stays.
    assert (denoiser(noisy, 1.0)[0] - tone).pow(2).mean() < 0.3 * (noisy - tone).pow(2).mean()
    assert Denoiser(model, 64, 4, 64, mode="normal", n_frames=12).bias_spec.shape == (1, 33, 1)


# --- the authors' checkpoints ---------------------------------------------------------------
AUTHORS = dict(n_mel_channels=3, n_flows=6, n_group=8, n_early_every=2, n_early_size=2)
AUTHORS_WN = dict(n_layers=3, n_channels=8, kernel_size=3)


def make_glow_module(per_layer_cond: bool) -> types.ModuleType:
    """Classes with the names and attributes of the authors' ``glow.py`` (own code), in a
    module registered as ``glow`` so that pickles refer to ``glow.WaveGlow`` etc."""
    wn_old = nn.utils.weight_norm  # the hook-based weight norm their checkpoints carry

    class Invertible1x1Conv(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv1d(c, c, 1, bias=False)
            w = torch.linalg.qr(torch.randn(c, c))[0]
            if torch.det(w) < 0:
                w[:, 0] = -w[:, 0]
            self.conv.weight.data = w[..., None]

    class WN(nn.Module):
        def __init__(self, n_in, n_cond, n_layers, n_channels, kernel_size):
            super().__init__()
            self.n_layers, self.n_channels = n_layers, n_channels
            self.in_layers, self.res_skip_layers = nn.ModuleList(), nn.ModuleList()
            self.start = wn_old(nn.Conv1d(n_in, n_channels, 1))
            self.end = nn.Conv1d(n_channels, 2 * n_in, 1)
            if per_layer_cond:
                self.cond_layers = nn.ModuleList()
            else:
                self.cond_layer = wn_old(nn.Conv1d(n_cond, 2 * n_channels * n_layers, 1))
            for i in range(n_layers):
                d = 2 ** i
                self.in_layers.append(wn_old(nn.Conv1d(n_channels, 2 * n_channels, kernel_size,
                                                       dilation=d, padding=(kernel_size * d - d) // 2)))
                if per_layer_cond:
                    self.cond_layers.append(wn_old(nn.Conv1d(n_cond, 2 * n_channels, 1)))
                out = 2 * n_channels if i < n_layers - 1 else n_channels
                self.res_skip_layers.append(wn_old(nn.Conv1d(n_channels, out, 1)))

    class WaveGlow_(nn.Module):
        def __init__(self, n_mel_channels, n_flows, n_group, n_early_every, n_early_size, WN_config):
            super().__init__()
            self.upsample = nn.ConvTranspose1d(n_mel_channels, n_mel_channels, 1024, stride=256)
            self.n_flows, self.n_group = n_flows, n_group
            self.n_early_every, self.n_early_size = n_early_every, n_early_size
            self.WN, self.convinv = nn.ModuleList(), nn.ModuleList()
            half, remaining = n_group // 2, n_group
            for k in range(n_flows):
                if k % n_early_every == 0 and k > 0:
                    half -= n_early_size // 2
                    remaining -= n_early_size
                self.convinv.append(Invertible1x1Conv(remaining))
                self.WN.append(WN(half, n_mel_channels * n_group, **WN_config))
            self.n_remaining_channels = remaining

    module = types.ModuleType("glow")
    for cls, name in ((Invertible1x1Conv, "Invertible1x1Conv"), (WN, "WN"), (WaveGlow_, "WaveGlow")):
        cls.__name__ = cls.__qualname__ = name
        cls.__module__ = "glow"
        setattr(module, name, cls)
    return module


def authors_model(per_layer_cond: bool, seed: int = 0):
    """An authors'-layout model object with random weights; returns (module, object)."""
    module = make_glow_module(per_layer_cond)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the hook-based weight norm is deprecated
        obj = module.WaveGlow(**AUTHORS, WN_config=AUTHORS_WN)
    randomize(obj)
    return module, obj


def authors_infer(sd: dict, mel: torch.Tensor, sigma: float) -> torch.Tensor:
    """The authors' inference (``glow.WaveGlow.infer``) re-stated from their equations, on a
    state dict in their key layout. Draws the noise from the global RNG in their order."""
    def weight(prefix):
        if prefix + "weight_v" in sd:
            v, g = sd[prefix + "weight_v"], sd[prefix + "weight_g"]
            return g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1)
        return sd[prefix + "weight"]

    n_mels = mel.size(1)
    up = F.conv_transpose1d(mel, sd["upsample.weight"], sd["upsample.bias"], stride=256)
    up = up[:, :, :-(1024 - 256)]
    batch, _, n = up.shape
    spect = up.unfold(2, 8, 8).permute(0, 2, 1, 3).reshape(batch, n // 8, n_mels * 8).permute(0, 2, 1)
    n_flows = sum(1 for k in sd if k.startswith("convinv.") and k.endswith(".conv.weight"))
    n_layers = sum(1 for k in sd if k.startswith("WN.0.in_layers.") and k.endswith(".bias"))
    h_ch = sd["WN.0.in_layers.0.bias"].numel() // 2

    def wavenet(k, x):
        p = f"WN.{k}."
        h = F.conv1d(x, weight(p + "start."), sd[p + "start.bias"])
        if p + "cond_layer.bias" in sd:
            cond = F.conv1d(spect, weight(p + "cond_layer."), sd[p + "cond_layer.bias"])
        else:
            cond = torch.cat([F.conv1d(spect, weight(f"{p}cond_layers.{i}."),
                                       sd[f"{p}cond_layers.{i}.bias"]) for i in range(n_layers)], dim=1)
        out = 0
        for i in range(n_layers):
            d = 2 ** i
            pre = F.conv1d(h, weight(f"{p}in_layers.{i}."), sd[f"{p}in_layers.{i}.bias"],
                           dilation=d, padding=d)
            pre = pre + cond[:, 2 * h_ch * i:2 * h_ch * (i + 1)]
            acts = torch.tanh(pre[:, :h_ch]) * torch.sigmoid(pre[:, h_ch:])
            rs = F.conv1d(acts, weight(f"{p}res_skip_layers.{i}."), sd[f"{p}res_skip_layers.{i}.bias"])
            if i < n_layers - 1:
                h = h + rs[:, :h_ch]
                out = out + rs[:, h_ch:]
            else:
                out = out + rs
        return F.conv1d(out, sd[p + "end.weight"], sd[p + "end.bias"])

    remaining = sd[f"convinv.{n_flows - 1}.conv.weight"].size(0)
    x = sigma * torch.randn(batch, remaining, spect.size(2))
    for k in reversed(range(n_flows)):
        half = x.size(1) // 2
        out = wavenet(k, x[:, :half])
        s, b = out[:, half:], out[:, :half]
        x = torch.cat([x[:, :half], (x[:, half:] - b) / torch.exp(s)], dim=1)
        w = sd[f"convinv.{k}.conv.weight"].squeeze(-1)
        x = F.conv1d(x, torch.linalg.inv(w.double()).float()[..., None])
        if k % AUTHORS["n_early_every"] == 0 and k > 0:
            x = torch.cat([sigma * torch.randn(batch, AUTHORS["n_early_size"], spect.size(2)), x], dim=1)
    return x.permute(0, 2, 1).reshape(batch, -1)


def check_against_authors(state, args, authors_sd):
    model = WaveGlow(**args)
    model.load_state_dict(state)
    model.eval()
    mel = torch.randn(2, 3, 3)
    torch.manual_seed(11)
    ours = model.infer(mel, sigma=0.7).waveforms
    torch.manual_seed(11)
    with torch.no_grad():
        theirs = authors_infer(authors_sd, mel, sigma=0.7)
    assert ours.shape == theirs.shape == (2, 768)
    assert (ours - theirs).abs().max() < 1e-4
    return model


@pytest.mark.parametrize("per_layer_cond", [False, True])
@pytest.mark.parametrize("zipfile", [True, False])
def test_import_of_authors_whole_model_pickle(tmp_path, per_layer_cond, zipfile):
    module, obj = authors_model(per_layer_cond)
    path = tmp_path / "waveglow_256channels.pt"
    sys.modules["glow"] = module
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy format looks for the classes' source
            torch.save({"model": obj, "iteration": 1234, "learning_rate": 1e-4}, path,
                       _use_new_zipfile_serialization=zipfile)
    finally:
        del sys.modules["glow"]  # the loader must do without their code
    state, args = load_authors_waveglow(path)
    assert args == dict(**AUTHORS, **AUTHORS_WN, hop_length=256, upsample_kernel_size=1024)
    check_against_authors(state, args, {k: v.detach() for k, v in obj.state_dict().items()})


def test_import_of_state_dict_checkpoint_and_conversion(tmp_path):
    _, obj = authors_model(per_layer_cond=True, seed=1)
    sd = {k: v.detach().clone() for k, v in obj.state_dict().items()}
    path = tmp_path / "nvidia_waveglowpyt.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3,
                "config": {"n_mel_channels": 3, "n_flows": 6}}, path)
    state, args = load_authors_waveglow(path)
    reference = check_against_authors(state, args, sd)

    out = tmp_path / "converted.pt"
    config = import_waveglow(path, out)
    payload = load_checkpoint(out, model_type="waveglow")
    assert payload["config"] == config
    assert payload["config"]["model"] == "waveglow" and payload["step"] == 0
    model = WaveGlow.from_config(payload["config"])
    load_state_dict_checked(model, payload["model"], str(out))
    mel = torch.randn(1, 3, 2)
    z = torch.randn(1, 8, 64)
    torch.testing.assert_close(model.infer(mel, sigma=1.0, noise=z).waveforms, reference.infer(mel, sigma=1.0, noise=z).waveforms)
    # The generic loader builds it from the registry and prepares it for inference.
    from flowspeech.inference.loading import load_model
    loaded, _ = load_model(out, model_type="waveglow")
    torch.testing.assert_close(loaded.infer(mel, sigma=1.0, noise=z).waveforms, reference.infer(mel, sigma=1.0, noise=z).waveforms)


_side_effects: list[str] = []


def _side_effect(*args):
    _side_effects.append("ran")


class Payload:
    def __reduce__(self):
        return (_side_effect, ("pwned",))


def test_restricted_unpickler_refuses_unknown_classes(tmp_path):
    module, obj = authors_model(per_layer_cond=False)
    path = tmp_path / "evil.pt"
    sys.modules["glow"] = module
    try:
        torch.save({"model": obj, "extra": Payload()}, path)
    finally:
        del sys.modules["glow"]
    with pytest.raises(CheckpointError, match="_side_effect.*refusing"):
        load_authors_waveglow(path)
    assert _side_effects == []
    # Not WaveGlow weights, the authors' first layout, and missing files are explained too.
    torch.save({"state_dict": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not hold WaveGlow"):
        load_authors_waveglow(tmp_path / "other.pt")
    sd = {k: v.detach() for k, v in obj.state_dict().items()}
    sd["WN.0.res_layers.0.bias"] = torch.zeros(8)
    torch.save(sd, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="glow_old"):
        load_authors_waveglow(tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_authors_waveglow(tmp_path / "missing.pt")
