"""`flowspeech vocode`, the neural vocoder wrapper (denoiser, chunked synthesis, one
utterance at a time) and `flowspeech synthesize` with a WaveGlow checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from flowspeech.cli.main import main
from flowspeech.config import load_config
from flowspeech.errors import ConfigError
from flowspeech.audio import log_spectral_distance
from flowspeech.inference.vocoders import NeuralVocoder, load_vocoder
from flowspeech.models.registry import build_model
from flowspeech.training.checkpoint import CheckpointManager
from flowspeech.checkpoints import save_checkpoint

TINY_WAVEGLOW = {
    "base": "waveglow-small",
    "model_args": {"n_flows": 2, "n_early_every": 1, "n_layers": 2, "n_channels": 16,
                   "upsample_kernel_size": 512},
}


def make_waveglow_checkpoint(path: Path, audio: dict | None = None) -> Path:
    """A tiny WaveGlow with random coupling outputs (a trained-from-scratch one starts as the
    identity map, whose 'bias' audio is silence), saved as a flowspeech checkpoint."""
    spec = dict(TINY_WAVEGLOW, **({"audio": audio} if audio else {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "wg.yaml").write_text(yaml.safe_dump(spec))
    config = load_config(path.parent / "wg.yaml")
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for coupling in model.coupling:
            coupling.net.end.weight.normal_(0, 0.05)
            coupling.net.end.bias.normal_(0, 0.05)
    save_checkpoint(path, {"model_type": "waveglow", "config": config, "model": model.state_dict(), "step": 0})
    return path


@pytest.fixture
def waveglow_checkpoint(tmp_path) -> Path:
    return make_waveglow_checkpoint(tmp_path / "waveglow.pt")


def test_vocode_from_wav_and_from_mel(waveglow_checkpoint, tiny_dataset, tmp_path, capsys):
    wav = tiny_dataset / "wavs" / "LJ001-0001.wav"
    n = sf.info(wav).frames
    frames = n // 256 + 1
    out_wav, out_npy, other = tmp_path / "a.wav", tmp_path / "a.npy", tmp_path / "b.npy"
    assert main(["vocode", "--vocoder", str(waveglow_checkpoint), "--wav", str(wav), "--out", str(out_wav),
                 "--seed", "7"]) == 0
    report = capsys.readouterr().out
    assert f"({frames} frames)" in report and "log-spectral distance to the input" in report
    audio, sr = sf.read(out_wav)
    assert sr == 22050 and len(audio) == frames * 256
    # The same mel from `flowspeech mel`, the same seed: the same audio (up to 16-bit rounding).
    mel_path = tmp_path / "mel.npy"
    assert main(["mel", str(wav), str(mel_path)]) == 0
    assert main(["vocode", "--vocoder", str(waveglow_checkpoint), "--mel", str(mel_path), "--out",
                 str(out_npy), "--seed", "7"]) == 0
    samples = np.load(out_npy)
    assert samples.dtype == np.float32 and np.max(np.abs(audio - samples)) < 1.5 / 32768
    assert main(["vocode", "--vocoder", str(waveglow_checkpoint), "--mel", str(mel_path), "--out",
                 str(other), "--seed", "8"]) == 0
    assert not np.allclose(np.load(other), samples)  # another seed, another latent
    # Griffin-Lim through the same command (default mel settings).
    gl = tmp_path / "gl.wav"
    assert main(["vocode", "--vocoder", "griffin-lim", "--mel", str(mel_path), "--out", str(gl),
                 "--seed", "1"]) == 0
    assert len(sf.read(gl)[0]) == (frames - 1) * 256


def test_vocode_errors_are_clear(waveglow_checkpoint, tmp_path, capsys):
    np.save(tmp_path / "m40.npy", np.zeros((40, 20), np.float32))
    np.save(tmp_path / "m80.npy", np.zeros((80, 20), np.float32))
    np.save(tmp_path / "t.npy", np.zeros((20, 80), np.float32))
    ckpt = str(waveglow_checkpoint)
    cases = [
        (["--vocoder", ckpt, "--mel", str(tmp_path / "m40.npy")], "has 40 bands but the vocoder"),
        (["--vocoder", ckpt, "--mel", str(tmp_path / "t.npy")], "transposed"),
        (["--vocoder", ckpt, "--mel", str(tmp_path / "m80.npy"), "--denoise", "1.5"], r"in \[0, 1\]"),
        (["--vocoder", ckpt, "--mel", str(tmp_path / "m80.npy"), "--config", "glow-tts-base"],
         "griffin-lim only"),
        (["--vocoder", "griffin-lim", "--mel", str(tmp_path / "m80.npy"), "--denoise", "0.1"],
         "griffin-lim has none"),
        (["--vocoder", "griffin-lim", "--mel", str(tmp_path / "m80.npy"), "--sigma", "0.5"],
         "not griffin-lim"),
    ]
    for args, message in cases:
        assert main(["vocode", *args, "--out", str(tmp_path / "x.wav")]) == 1, args
        assert re.search(message, capsys.readouterr().err), message
    assert not (tmp_path / "x.wav").exists()


def _mel(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(80, frames, generator=torch.Generator().manual_seed(seed)) - 4


def test_denoiser_strength_changes_the_output(waveglow_checkpoint):
    mels, lengths = _mel(40)[None], torch.tensor([40])
    plain = load_vocoder(waveglow_checkpoint, None).vocode(mels, lengths, torch.Generator().manual_seed(1)).waveforms[0].numpy()
    voc = load_vocoder(waveglow_checkpoint, None, denoise=0.5)
    assert "denoiser 0.5" in voc.describe()
    denoised = voc.vocode(mels, lengths, torch.Generator().manual_seed(1)).waveforms[0].numpy()
    assert denoised.shape == plain.shape
    assert not np.allclose(denoised, plain, atol=1e-4)
    # Subtracting the bias spectrum only removes energy.
    assert np.sqrt(np.mean(denoised ** 2)) < np.sqrt(np.mean(plain ** 2))
    # The same generator seed with denoise = 0 (off) is the plain output.
    again = load_vocoder(waveglow_checkpoint, None, denoise=0.0).vocode(
        mels, lengths, torch.Generator().manual_seed(1)).waveforms[0].numpy()
    np.testing.assert_array_equal(again, plain)


def test_long_mels_are_chunked_exactly(waveglow_checkpoint):
    whole = load_vocoder(waveglow_checkpoint, None, chunk_frames=None)
    chunked = load_vocoder(waveglow_checkpoint, None, chunk_frames=16)
    calls = []
    original = chunked.model.infer_chunked
    chunked.model.infer_chunked = lambda *a, **k: calls.append(k["chunk_frames"]) or original(*a, **k)
    mels, lengths = _mel(70)[None], torch.tensor([70])
    a = whole.vocode(mels, lengths, torch.Generator().manual_seed(3)).waveforms[0].numpy()
    b = chunked.vocode(mels, lengths, torch.Generator().manual_seed(3)).waveforms[0].numpy()
    assert calls == [16]
    np.testing.assert_allclose(b, a, atol=1e-5)


def test_padding_of_a_batch_does_not_reach_its_shorter_utterances(waveglow_checkpoint):
    voc = load_vocoder(waveglow_checkpoint, None, sigma=0.0)  # no noise: deterministic
    long, short = _mel(50, 1), _mel(30, 2)
    batch = torch.full((2, 80, 50), 3.0)  # loud padding
    batch[0], batch[1, :, :30] = long, short
    out = voc.vocode(batch, torch.tensor([50, 30]))
    alone = voc.vocode(short[None], torch.tensor([30])).waveforms[0].numpy()
    assert out.waveform_lengths.tolist() == [50 * 256, 30 * 256]
    np.testing.assert_allclose(out.waveforms[1, :30 * 256].numpy(), alone, atol=1e-6)
    assert not out.waveforms[1, 30 * 256:].any()


def test_neural_vocoder_checks_its_options(waveglow_checkpoint):
    from flowspeech.inference.loading import load_model

    from test_flowavenet import tiny as tiny_flowavenet

    model, payload = load_model(waveglow_checkpoint)
    cfg = payload["config"]
    with pytest.raises(ConfigError, match="not available for flowavenet"):
        NeuralVocoder(tiny_flowavenet(), load_config("flowavenet-small"), denoise=0.1)
    with pytest.raises(ConfigError, match="sigma"):
        NeuralVocoder(model, cfg, sigma=-1.0)
    with pytest.raises(ConfigError, match="chunk_frames"):
        NeuralVocoder(model, cfg, chunk_frames=0)
    with pytest.raises(ConfigError, match="unknown vocoder precision"):
        NeuralVocoder(model, cfg, precision="int8")
    with pytest.raises(ConfigError, match="precision applies to neural vocoders"):
        load_vocoder("griffin-lim", None, precision="bfloat16")


def test_bfloat16_vocoder_stays_close_to_float32(waveglow_checkpoint, tmp_path, capsys):
    mel = _mel(40)
    lengths = torch.tensor([40])
    full = load_vocoder(waveglow_checkpoint, None).vocode(mel[None], lengths, torch.Generator().manual_seed(0)).waveforms[0].numpy()
    voc = load_vocoder(waveglow_checkpoint, None, precision="bfloat16")
    assert "bfloat16 couplings" in voc.describe()
    low = voc.vocode(mel[None], lengths, torch.Generator().manual_seed(0)).waveforms[0].numpy()
    assert low.dtype == np.float32
    snr = 10 * np.log10(np.mean(full**2) / np.mean((full - low) ** 2))
    assert snr > 20, snr
    np.save(tmp_path / "mel.npy", mel.numpy())
    assert main(["vocode", "--vocoder", str(waveglow_checkpoint), "--mel", str(tmp_path / "mel.npy"),
                 "--out", str(tmp_path / "a.wav"), "--precision", "bfloat16"]) == 0


def test_log_spectral_distance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(22050).astype(np.float32) * 0.1
    assert log_spectral_distance(x, x) == 0.0
    assert log_spectral_distance(x, x * 10 ** (6 / 20)) == pytest.approx(6.0, abs=1e-6)  # +6 dB
    y = x + 0.05 * rng.standard_normal(22050).astype(np.float32)
    # Both spectra are floored 80 dB below the reference's loudest bin: what lies under it,
    # like the rounding noise of 16-bit audio in a pause, does not count.
    pause = np.concatenate([x, np.zeros(22050, np.float32)])
    hiss = rng.standard_normal(len(pause)).astype(np.float32)
    assert log_spectral_distance(pause, pause + 1e-6 * hiss) < 0.01
    assert log_spectral_distance(pause, pause + 1e-3 * hiss) > 10
    assert 0 < log_spectral_distance(x, y) < log_spectral_distance(x, 0.2 * rng.standard_normal(22050))
    assert log_spectral_distance(x, np.concatenate([x, np.ones(300)])) == 0.0  # cut to the shorter
    with pytest.raises(ValueError, match="more than 512 samples"):
        log_spectral_distance(x[:500], x[:500])


@pytest.fixture
def tiny_glow_tts_checkpoint(tiny_glow_tts_config, tiny_dataset, tmp_path) -> Path:
    run = tmp_path / "glow-run"
    assert main(["train", "glow-tts", "--config", str(tiny_glow_tts_config), "--data", str(tiny_dataset),
                 "--out", str(run), "--max-steps", "2", "--no-progress", "--device", "cpu"]) == 0
    return CheckpointManager(run).list()[-1][1]


def test_synthesize_with_a_waveglow_vocoder(tiny_glow_tts_checkpoint, waveglow_checkpoint, tmp_path, capsys):
    out = tmp_path / "hello.wav"
    args = ["synthesize", "--acoustic", str(tiny_glow_tts_checkpoint), "--vocoder", str(waveglow_checkpoint),
            "--text", "Hello world. How are you?", "--out", str(out), "--seed", "3",
            "--save-mel", str(tmp_path / "mel.npy")]
    assert main(args) == 0
    report = capsys.readouterr().out
    assert "vocoder waveglow" in report and "2 sentence(s)" in report
    audio, sr = sf.read(out)
    mel = np.load(tmp_path / "mel.npy")
    pause = int(0.2 * 22050)
    assert sr == 22050 and len(audio) == mel.shape[1] * 256 + pause  # two sentences, one pause
    assert main(args[:-2] + ["--out", str(tmp_path / "bf16.wav"), "--vocoder-precision", "bfloat16"]) == 0
    assert "bfloat16 couplings" in capsys.readouterr().out
    # A vocoder trained on other features is refused.
    other = make_waveglow_checkpoint(tmp_path / "other" / "wg.pt", audio={"fmax": 7600.0})
    assert main(["synthesize", "--acoustic", str(tiny_glow_tts_checkpoint), "--vocoder", str(other),
                 "--text", "Hi.", "--out", str(tmp_path / "x.wav")]) == 1
    assert "other features" in capsys.readouterr().err


def test_cli_precision_choices_are_the_vocoder_precisions():
    from flowspeech.cli.common import PRECISION_CHOICES
    from flowspeech.inference.vocoders import PRECISIONS

    assert PRECISION_CHOICES == tuple(PRECISIONS)
