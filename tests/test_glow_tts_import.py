"""Import of the authors' Glow-TTS checkpoints: a state dict built in their layout, and an
independent re-statement of their decoder's inverse pass to compare numbers with."""

from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowspeech.cli.main import main
from flowspeech.errors import CheckpointError
from flowspeech.models.glow_tts import GlowTTS
from flowspeech.models.glow_tts_import import convert_state_dict, import_glow_tts, infer_model_args
from flowspeech.checkpoints import load_checkpoint
from flowspeech.utils.masks import length_mask

SMALL = dict(hidden_channels=32, filter_channels=64, filter_channels_dp=32, n_layers_enc=2,
             n_blocks_dec=3, n_block_layers=3, hidden_channels_dec=32)


def authors_layout(model: GlowTTS) -> dict[str, torch.Tensor]:
    """Our trained weights written back in the authors' key layout (weight_g/weight_v, no
    `net.` level, no ActNorm flag)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith(".initialized"):
            continue
        key = key.replace(".net.", ".").replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        out[key] = value.clone()
    return out


def perturbed_model(**kwargs) -> GlowTTS:
    torch.manual_seed(0)
    model = GlowTTS(n_vocab=148, **{**SMALL, **kwargs})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


# --- the authors' decoder inverse, restated from their equations ------------------------
def wn_weight(state, prefix):
    g, v = state[prefix + ".weight_g"], state[prefix + ".weight_v"]
    return g * v / v.norm(dim=(1, 2), keepdim=True)


def ref_decoder_inverse(state, z, mask, n_blocks, n_layers, hidden, n_split=4, n_sqz=2):
    b, c, t = z.shape
    # squeeze: [b, c, t] -> [b, c * n, t / n] with channel index k * c + c'
    x = z.view(b, c, t // n_sqz, n_sqz).permute(0, 3, 1, 2).reshape(b, c * n_sqz, t // n_sqz)
    m = mask[:, :, n_sqz - 1::n_sqz]
    x = x * m
    ch = c * n_sqz
    for blk in reversed(range(n_blocks)):
        cp = f"decoder.flows.{3 * blk + 2}"
        x0, x1 = x[:, : ch // 2], x[:, ch // 2:]
        h = F.conv1d(x0, wn_weight(state, cp + ".start"), state[cp + ".start.bias"]) * m
        out = torch.zeros_like(h)
        for i in range(n_layers):
            w = wn_weight(state, f"{cp}.wn.in_layers.{i}")
            k = w.shape[2]
            x_in = F.conv1d(h, w, state[f"{cp}.wn.in_layers.{i}.bias"], padding=k // 2)
            acts = torch.tanh(x_in[:, :hidden]) * torch.sigmoid(x_in[:, hidden:])
            rs = F.conv1d(acts, wn_weight(state, f"{cp}.wn.res_skip_layers.{i}"),
                          state[f"{cp}.wn.res_skip_layers.{i}.bias"])
            if i < n_layers - 1:
                h = (h + rs[:, :hidden]) * m
                out = out + rs[:, hidden:]
            else:
                out = out + rs
        out = out * m
        end = F.conv1d(out, state[cp + ".end.weight"], state[cp + ".end.bias"])
        mean, logs = end[:, : ch // 2], end[:, ch // 2:]
        x1 = (x1 - mean) * torch.exp(-logs) * m
        x = torch.cat([x0, x1], 1)
        # InvConvNear inverse
        w_inv = torch.inverse(state[f"decoder.flows.{3 * blk + 1}.weight"])
        y = x.view(b, 2, ch // n_split, n_split // 2, -1).permute(0, 1, 3, 2, 4).reshape(b, n_split, ch // n_split, -1)
        y = F.conv2d(y, w_inv.view(n_split, n_split, 1, 1))
        x = y.view(b, 2, n_split // 2, ch // n_split, -1).permute(0, 1, 3, 2, 4).reshape(b, ch, -1) * m
        # ActNorm inverse
        a = f"decoder.flows.{3 * blk}"
        x = (x - state[a + ".bias"]) * torch.exp(-state[a + ".logs"]) * m
    # unsqueeze
    x = x.view(b, n_sqz, ch // n_sqz, -1).permute(0, 2, 3, 1).reshape(b, ch // n_sqz, -1)
    return x * mask


def test_converted_model_matches_the_authors_decoder_math(tmp_path):
    theirs = authors_layout(perturbed_model())
    src = tmp_path / "G_100.pth"
    torch.save({"model": theirs, "iteration": 100, "learning_rate": 1.0}, src)
    model = GlowTTS(n_vocab=148, **SMALL).eval()
    model.load_state_dict(convert_state_dict(theirs))
    z = torch.randn(2, 80, 24)
    mask = length_mask(torch.tensor([24, 16]), 24)
    ours = model.decoder.inverse(z * mask, mask)
    ref = ref_decoder_inverse(theirs, z * mask, mask, SMALL["n_blocks_dec"], SMALL["n_block_layers"], 32)
    assert (ours - ref).abs().max() < 1e-4


def test_infer_model_args_reads_shapes():
    args = infer_model_args(authors_layout(perturbed_model()))
    assert args["n_vocab"] == 148 and args["n_blocks_dec"] == 3 and args["n_block_layers"] == 3
    assert args["n_layers_enc"] == 2 and args["hidden_channels"] == 32 and args["mean_only"]
    assert args["window_size"] == 4 and args["n_sqz"] == 2 and args["kernel_size_dec"] == 5


def test_import_cli_round_trip(tmp_path, monkeypatch):
    """The full base preset through the CLI, with a 'module.' prefix; same mel after import."""
    torch.manual_seed(1)
    source = GlowTTS(n_vocab=148).eval()  # base preset
    with torch.no_grad():
        for p in source.decoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    theirs = {"module." + k: v for k, v in authors_layout(source).items()}
    src, out = tmp_path / "pretrained.pth", tmp_path / "imported.pt"
    # As their utils.save_checkpoint writes it: their commons.Adam computes the Noam learning
    # rate with np.power, so the optimizer state and 'learning_rate' hold numpy.float64.
    step, dim, warmup = 3, 192, 4000
    lr = 1.0 * np.power(dim, -0.5) * np.min([np.power(step, -0.5), step * np.power(warmup, -1.5)])
    optimizer = torch.optim.Adam(source.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9)
    assert type(optimizer.state_dict()["param_groups"][0]["lr"]) is np.float64
    torch.save({"model": theirs, "iteration": step, "optimizer": optimizer.state_dict(),
                "learning_rate": lr}, src)
    assert main(["import", "glow-tts", str(src), "--out", str(out), "--config", "base"]) == 0
    payload = load_checkpoint(out, "glow-tts")
    model = GlowTTS.from_config(payload["config"])
    model.load_state_dict(payload["model"])
    model.eval()
    tokens = torch.randint(1, 148, (1, 12))
    lengths = torch.tensor([12])
    a = source.infer(tokens, lengths, generator=torch.Generator().manual_seed(3))[0]
    b = model.infer(tokens, lengths, generator=torch.Generator().manual_seed(3))[0]
    assert (a - b).abs().max() < 1e-4


def test_import_refuses_wrong_config_and_foreign_files(tmp_path):
    theirs = authors_layout(perturbed_model())
    src = tmp_path / "small.pth"
    torch.save({"model": theirs}, src)
    with pytest.raises(CheckpointError, match="does not match the base configuration"):
        import_glow_tts(src, tmp_path / "x.pt", "base")
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"upsample.weight": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="Glow-TTS state dict"):
        import_glow_tts(other, tmp_path / "y.pt")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()
