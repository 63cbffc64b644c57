"""The accelerator paths, checked against the CPU: every test runs on each available device.

CI has no GPU, so there only the ``cpu`` cases run (they keep the checks themselves
honest); on a CUDA machine ``pytest tests/test_devices.py`` also runs the ``cuda`` cases:
the GPU implementations of MAS and soft-DTW, the vocoders' inference (float32 and reduced
coupling networks), NaturalSpeech synthesis, and two training steps of every model in each
mixed precision the trainer offers there. ``benchmarks/gpu_check.sh`` runs this file first.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                              reason="no CUDA device"))]


def close(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    """``max |a - b| <= rel * max |b|`` (on the CPU, in float64)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max()) <= rel * max(float(b.abs().max()), 1e-12)


# --- alignment -------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_maximum_path_on_the_device_equals_the_numba_search(device):
    from flowspeech.align.mas import maximum_path, maximum_path_numba

    g = torch.Generator().manual_seed(0)
    value = torch.randn(3, 7, 20, generator=g)
    text, frames = torch.tensor([7, 5, 3]), torch.tensor([20, 12, 9])
    mask = ((torch.arange(7)[None, :, None] < text[:, None, None])
            & (torch.arange(20)[None, None, :] < frames[:, None, None])).float()
    expected = maximum_path_numba(value, mask)
    path = maximum_path(value.to(device), mask.to(device))
    assert path.device.type == device and torch.equal(path.cpu(), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_soft_dtw_on_the_device_equals_the_numba_kernel(device):
    from flowspeech.align.soft_dtw import _soft_dtw

    g = torch.Generator().manual_seed(1)
    cost = torch.rand(2, 6, 9, generator=g, dtype=torch.float64)
    lx, ly = torch.tensor([6, 4]), torch.tensor([9, 7])
    reference = cost.clone().requires_grad_(True)
    expected = _soft_dtw(reference, lx, ly, 0.01, 0.07, False, backend="numba")
    expected.sum().backward()
    on_device = cost.to(device).requires_grad_(True)
    value = _soft_dtw(on_device, lx.to(device), ly.to(device), 0.01, 0.07, False, backend="torch")
    value.sum().backward()
    assert close(value, expected, 1e-9) and close(on_device.grad, reference.grad, 1e-7)


# --- vocoder inference -----------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_waveglow_inference_on_the_device(device):
    from test_waveglow import tiny

    model = tiny()
    mel, z = torch.randn(2, 3, 40), torch.randn(2, 8, 80)
    expected = model.infer(mel, sigma=1.0, noise=z).waveforms
    model.to(device).prepare_for_inference()
    out = model.infer(mel.to(device), sigma=1.0, noise=z.to(device)).waveforms
    assert out.device.type == device and close(out, expected, 1e-4)
    chunked = model.infer_chunked(mel.to(device), chunk_frames=16, sigma=1.0, noise=z.to(device)).waveforms
    assert close(chunked, expected, 1e-4)
    low = torch.float16 if device == "cuda" else torch.bfloat16
    model.set_waveform_dtype(low)
    reduced = model.infer(mel.to(device), sigma=1.0, noise=z.to(device)).waveforms
    assert reduced.dtype == torch.float32 and close(reduced, expected, 0.03)


@pytest.mark.parametrize("device", DEVICES)
def test_flowavenet_inference_on_the_device(device):
    from test_flowavenet import tiny

    model = tiny()
    mel, z = torch.rand(2, 4, 10), torch.randn(2, 160)
    expected = model.infer(mel, sigma=1.0, noise=z).waveforms
    model.to(device).prepare_for_inference()
    out = model.infer(mel.to(device), sigma=1.0, noise=z.to(device)).waveforms
    assert out.device.type == device and close(out, expected, 1e-4)
    model.set_waveform_dtype(torch.float16 if device == "cuda" else torch.bfloat16)
    assert close(model.infer(mel.to(device), sigma=1.0, noise=z.to(device)).waveforms, expected, 0.03)


@pytest.mark.parametrize("device", DEVICES)
def test_naturalspeech_synthesis_on_the_device(device):
    from test_naturalspeech import tiny_config

    from flowspeech.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config()).prepare_for_inference()
    tokens, lengths = torch.randint(1, 20, (2, 6)), torch.tensor([6, 4])
    wav, wav_lengths, _ = model.infer(tokens, lengths, generator=torch.Generator().manual_seed(0))
    model.to(device)
    # A CPU generator (what --seed makes) drives the model on any device, to the same noise.
    out, out_lengths, _ = model.infer(tokens.to(device), lengths.to(device),
                                      generator=torch.Generator().manual_seed(0))
    assert out.device.type == device and torch.equal(out_lengths.cpu(), wav_lengths)
    assert close(out, wav, 1e-3)


@pytest.mark.parametrize("device", DEVICES + ["meta"])
def test_noise_from_a_cpu_generator_is_the_same_on_every_device(device):
    from flowspeech.utils.noise import randn

    noise = randn(2, 5, generator=torch.Generator().manual_seed(3), device=device)
    assert noise.device.type == device
    if device != "meta":
        assert torch.equal(noise.cpu(), torch.randn(2, 5, generator=torch.Generator().manual_seed(3)))


# --- training --------------------------------------------------------------------------------
def _precisions(device):
    return ["fp32", "bf16"] + (["fp16"] if device == "cuda" else [])


# CUDA only: on the CPU the same runs are test_trainer's bf16 test and each model's own tests.
@pytest.mark.parametrize("device", DEVICES[1:])
@pytest.mark.parametrize("model", ["glow-tts", "waveglow", "flowavenet", "naturalspeech"])
def test_two_training_steps_on_the_device_in_each_precision(model, device, tiny_glow_tts_config, tmp_path):
    import yaml
    from conftest import make_ljspeech
    from test_flowavenet_training import TINY_FLOWAVENET
    from test_naturalspeech import tiny_config as tiny_naturalspeech
    from test_waveglow_training import TINY_WAVEGLOW

    from flowspeech.cli.main import main
    from flowspeech.training.checkpoint import CheckpointManager

    config = {"glow-tts": yaml.safe_load(tiny_glow_tts_config.read_text()), "waveglow": TINY_WAVEGLOW,
              "flowavenet": TINY_FLOWAVENET, "naturalspeech": tiny_naturalspeech()}[model]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    data = make_ljspeech(tmp_path / "data", n=4)
    for precision in _precisions(device):
        run = tmp_path / f"run-{precision}"
        assert main(["train", model, "--config", str(path), "--data", str(data), "--out", str(run),
                     "--no-progress", "--device", device, "--max-steps", "2", "--precision", precision,
                     "--set", "train.checkpoint_every=2"]) == 0, precision
        assert [s for s, _ in CheckpointManager(run).list()] == [2]
        values = re.findall(r"step 2 epoch \d+ \S+=(\S+)", (run / "train.log").read_text())
        assert values and all(math.isfinite(float(v)) for v in values), (precision, values)
