"""ONNX export and the runtime without PyTorch.

The exported graphs give the PyTorch model's numbers on the same inputs and noise (mels to
1e-4, audio to 1e-3), at lengths other than the ones traced; the runtime's glue (durations,
noise, vocoders) reproduces the PyTorch path; the runtime never imports torch; a broken voice
folder gets one clear error that names the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_flowavenet import tiny as tiny_flowavenet
from test_vocode import make_waveglow_checkpoint

from flowspeech.audio.griffin_lim import (
    _fast_griffin_lim,
    _magnitude,
    griffin_lim,
    harmonic_iterations,
)
from flowspeech.cli.main import main
from flowspeech.errors import CheckpointError, ConfigError, OutputError
from flowspeech.inference.folding import ChannelAffineFlow
from flowspeech.inference.onnx_export import (
    GlowTTSDecoderGraph,
    GlowTTSEncoderGraph,
    VocoderGraph,
    _trace,
    export_onnx,
)
from flowspeech.inference.synthesizer import Synthesizer
from flowspeech.inference.winograd import WinogradConv1d
from flowspeech.runtime import OnnxVoice
from flowspeech.runtime.griffin_lim import GriffinLim, MelMatch, mel_to_magnitude
from flowspeech.runtime.voice import session_options
from flowspeech.training.checkpoint import CheckpointManager

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

MEL_TOLERANCE, AUDIO_TOLERANCE = 1e-4, 1e-3
SENTENCE = "A sentence of another length than the traced one, with commas, and more words."


@pytest.fixture(scope="module")
def glow_tts_checkpoint(tmp_path_factory) -> Path:
    import yaml
    from conftest import TINY_GLOW_TTS, make_ljspeech

    root = tmp_path_factory.mktemp("onnx-glow")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY_GLOW_TTS))
    data = make_ljspeech(root / "data")
    torch.set_num_threads(1)
    assert main(["train", "glow-tts", "--config", str(root / "tiny.yaml"), "--data", str(data),
                 "--out", str(root / "run"), "--max-steps", "2", "--no-progress", "--device", "cpu"]) == 0
    return CheckpointManager(root / "run").list()[-1][1]


@pytest.fixture(scope="module")
def griffin_lim_voice(glow_tts_checkpoint, tmp_path_factory):
    tts = Synthesizer(glow_tts_checkpoint)
    folder = tmp_path_factory.mktemp("voices") / "gl"
    export_onnx(tts, folder)
    return tts, folder


@pytest.fixture(scope="module")
def waveglow_voice(glow_tts_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("wg")
    tts = Synthesizer(glow_tts_checkpoint, vocoder=make_waveglow_checkpoint(root / "wg.pt"))
    export_onnx(tts, root / "voice")
    return tts, root / "voice"


def _tokens(tts, *texts):
    ids = [tts.frontend.encode(t) for t in texts]
    lengths = torch.tensor([len(x) for x in ids])
    tokens = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for i, x in enumerate(ids):
        tokens[i, :len(x)] = torch.tensor(x)
    return tokens, lengths


def test_the_glow_tts_graphs_give_the_models_numbers_at_new_lengths(griffin_lim_voice):
    tts, folder = griffin_lim_voice
    encoder = ort.InferenceSession(str(folder / "encoder.onnx"))
    decoder = ort.InferenceSession(str(folder / "decoder.onnx"))
    tokens, lengths = _tokens(tts, SENTENCE, "Short one.")  # a batch of two lengths, neither traced
    with torch.no_grad():
        expected = GlowTTSEncoderGraph(tts.model).eval()(tokens, lengths)
    got = encoder.run(None, {"tokens": tokens.numpy(), "token_lengths": lengths.numpy()})
    for e, g in zip(expected, got):
        assert np.abs(e.numpy() - g).max() < MEL_TOLERANCE
    mels, onnx_mels = _decoder_mels(tts, decoder, expected, stretch=1.3, seed=0, noise_scale=0.5)
    assert onnx_mels.shape == mels.shape and np.abs(mels.numpy() - onnx_mels).max() < MEL_TOLERANCE


def _decoder_mels(tts, decoder, encoded, stretch: float, seed: int, noise_scale: float, speakers=None):
    """The PyTorch decoder graph's mels and the ONNX ``decoder``'s, for the encoder outputs
    ``encoded`` with durations stretched by ``stretch`` (lengths other than the traced ones),
    the same seeded noise and, for a multi-speaker voice, the ``speakers``."""
    mean, log_scale, log_durations, mask = encoded
    durations = torch.ceil(torch.exp(log_durations) * mask * stretch).squeeze(1)
    mel_lengths = torch.clamp_min((durations.sum(1).long() // 2) * 2, 2)
    noise = torch.randn(mean.size(0), mean.size(1), int(mel_lengths.max()),
                        generator=torch.Generator().manual_seed(seed))
    extra = () if speakers is None else (speakers,)
    with torch.no_grad():
        mels = GlowTTSDecoderGraph(tts.model).eval()(mean, log_scale, durations, mel_lengths, noise,
                                                     torch.tensor(noise_scale), *extra)
    feed = {"mean": mean.numpy(), "log_scale": log_scale.numpy(), "durations": durations.numpy(),
            "mel_lengths": mel_lengths.numpy(), "noise": noise.numpy(),
            "noise_scale": np.array(noise_scale, np.float32)}
    if speakers is not None:
        feed["speakers"] = speakers.numpy()
    (onnx_mels,) = decoder.run(None, feed)
    return mels, onnx_mels


def test_a_winograd_decoder_graph_gives_the_models_mel(griffin_lim_voice, tmp_path):
    tts, folder = griffin_lim_voice
    graphs = json.loads((folder / "voice.onnx.json").read_text())["graphs"]
    assert graphs["decoder"]["input_convolutions"] == "direct" and graphs["encoder"]["convolutions"] == "direct"
    config = export_onnx(tts, tmp_path / "winograd", winograd=True)
    assert config["graphs"]["decoder"]["input_convolutions"].startswith("winograd F(6, k), phase order: ")
    assert int(config["graphs"]["decoder"]["input_convolutions"].split(": ")[1]) > 0
    assert config["graphs"]["decoder"]["folded"] is True
    # The export folded and replaced on a copy: the Synthesizer's model is as it was.
    assert not any(isinstance(m, (WinogradConv1d, ChannelAffineFlow)) for m in tts.model.modules())
    graph = onnx.load(str(tmp_path / "winograd" / "decoder.onnx")).graph
    assert "MatMul" in {node.op_type for node in graph.node}
    # No shape arithmetic in the flows: every reshape's shape there is a constant.
    flow_ops = [node.op_type for node in graph.node if node.name.startswith("/layers.")]
    assert "Conv" in flow_ops and not {"Shape", "Gather"} & set(flow_ops)
    for name in ("encoder.onnx", "decoder.onnx"):  # every convolution 2-D, for onnxruntime's blocked kernels
        graph = onnx.load(str(folder / name)).graph
        ranks = {t.name: len(t.dims) for t in graph.initializer}
        assert all(ranks[n.input[1]] == 4 for n in graph.node if n.op_type == "Conv"), name
    tokens, lengths = _tokens(tts, SENTENCE, "Short one.")
    with torch.no_grad():
        encoded = GlowTTSEncoderGraph(tts.model).eval()(tokens, lengths)
    decoder = ort.InferenceSession(str(tmp_path / "winograd" / "decoder.onnx"))
    mels, onnx_mels = _decoder_mels(tts, decoder, encoded, stretch=1.1, seed=1, noise_scale=0.667)
    assert onnx_mels.shape == mels.shape and np.abs(mels.numpy() - onnx_mels).max() < MEL_TOLERANCE
    # The text encoder's and duration predictor's convolutions by Winograd too: the same
    # outputs for a batch of two lengths (the padded tokens' zeros are the tiles' padding).
    assert config["graphs"]["encoder"]["convolutions"].startswith("winograd F(4, k): ")
    assert int(config["graphs"]["encoder"]["convolutions"].split(": ")[1]) > 0
    encoder = ort.InferenceSession(str(tmp_path / "winograd" / "encoder.onnx"))
    onnx_encoded = encoder.run(None, {"tokens": tokens.numpy(), "token_lengths": lengths.numpy()})
    for name, ours, theirs in zip(("mean", "log_scale", "log_durations", "text_mask"), encoded, onnx_encoded):
        assert np.abs(ours.numpy() - theirs).max() < MEL_TOLERANCE, name


@pytest.mark.parametrize("winograd", [False, True])
def test_a_multi_speaker_voice_exports_with_speaker_inputs_and_the_models_numbers(glow_tts_checkpoint, tmp_path,
                                                                                  winograd):
    from flowspeech.checkpoints import load_checkpoint, save_checkpoint
    from flowspeech.models.glow_tts import GlowTTS

    # The tiny voice made multi-speaker (3 speakers), every weight nudged so that no flow is
    # the identity and the speaker embedding reaches the encoder, the duration predictor and
    # the decoder's couplings.
    payload = load_checkpoint(glow_tts_checkpoint)
    payload["config"]["model_args"].update(n_speakers=3, gin_channels=8)
    model = GlowTTS.from_config(payload["config"])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    payload["model"] = model.state_dict()
    path = tmp_path / "multi.pt"
    save_checkpoint(path, {k: v for k, v in payload.items() if k not in ("format", "version")})
    tts = Synthesizer(path)
    config = export_onnx(tts, tmp_path / "voice", winograd=winograd)
    assert config["n_speakers"] == 3
    tokens, lengths = _tokens(tts, SENTENCE, "Short one.")
    speakers = torch.tensor([2, 0])
    with torch.no_grad():
        encoded = GlowTTSEncoderGraph(tts.model).eval()(tokens, lengths, speakers)
    encoder = ort.InferenceSession(str(tmp_path / "voice" / "encoder.onnx"))
    got = encoder.run(None, {"tokens": tokens.numpy(), "token_lengths": lengths.numpy(), "speakers": speakers.numpy()})
    for name, ours, theirs in zip(("mean", "log_scale", "log_durations", "text_mask"), encoded, got):
        assert np.abs(ours.numpy() - theirs).max() < MEL_TOLERANCE, name
    decoder = ort.InferenceSession(str(tmp_path / "voice" / "decoder.onnx"))
    mels, onnx_mels = _decoder_mels(tts, decoder, encoded, stretch=1.0, seed=3, noise_scale=0.667, speakers=speakers)
    assert onnx_mels.shape == mels.shape and np.abs(mels.numpy() - onnx_mels).max() < MEL_TOLERANCE
    # Another speaker, another voice: the speaker input is read.
    _, other = _decoder_mels(tts, decoder, encoded, stretch=1.0, seed=3, noise_scale=0.667,
                             speakers=torch.tensor([1, 1]))
    assert np.abs(other - onnx_mels).max() > 1e-3


def test_a_voice_with_absolute_positions_exports_to_the_models_numbers_at_new_lengths(glow_tts_checkpoint,
                                                                                      tmp_path):
    from flowspeech.checkpoints import load_checkpoint, save_checkpoint
    from flowspeech.models.glow_tts import GlowTTS

    payload = load_checkpoint(glow_tts_checkpoint)
    payload["config"]["model_args"]["absolute_positions"] = True
    model = GlowTTS.from_config(payload["config"])
    model.load_state_dict(payload["model"], strict=False)
    with torch.no_grad():
        model.encoder.positions.proj.weight.copy_(0.7 * torch.eye(model.hidden_channels)[..., None])
    payload["model"] = model.state_dict()
    path = tmp_path / "placed.pt"
    save_checkpoint(path, {k: v for k, v in payload.items() if k not in ("format", "version")})
    tts = Synthesizer(path)
    export_onnx(tts, tmp_path / "voice")
    tokens, lengths = _tokens(tts, SENTENCE + " " + SENTENCE, "Short one.")  # longer than traced
    with torch.no_grad():
        expected = GlowTTSEncoderGraph(tts.model).eval()(tokens, lengths)
        without = GlowTTSEncoderGraph(Synthesizer(glow_tts_checkpoint).model).eval()(tokens, lengths)
    got = ort.InferenceSession(str(tmp_path / "voice" / "encoder.onnx")).run(
        None, {"tokens": tokens.numpy(), "token_lengths": lengths.numpy()})
    for e, g in zip(expected, got):
        assert np.abs(e.numpy() - g).max() < MEL_TOLERANCE
    assert np.abs(without[0].numpy() - got[0]).max() > 1e-2  # the positions are in the graph


def test_the_graph_modules_are_glow_tts_infer_with_its_noise(griffin_lim_voice):
    tts, _ = griffin_lim_voice
    tokens, lengths = _tokens(tts, SENTENCE)
    out = tts.model.infer(tokens, lengths, noise_scale=0.667, length_scale=1.0,
                          generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        mean, log_scale, log_durations, mask = GlowTTSEncoderGraph(tts.model).eval()(tokens, lengths)
        durations = torch.ceil(torch.exp(log_durations) * mask).squeeze(1)
        n = max(2, int(durations.sum()) // 2 * 2)
        noise = torch.randn(1, mean.size(1), n, generator=torch.Generator().manual_seed(5))
        mels = GlowTTSDecoderGraph(tts.model).eval()(mean, log_scale, durations, torch.tensor([n]), noise,
                                                     torch.tensor(0.667))
    assert torch.equal(mels, out.mels)


def test_the_runtime_makes_the_pytorch_mel_from_the_same_noise(griffin_lim_voice):
    tts, folder = griffin_lim_voice
    voice = OnnxVoice(folder, threads=1)
    got = voice.mel(SENTENCE, 0.667, 1.2, np.random.default_rng(3))
    tokens, lengths = _tokens(tts, SENTENCE)
    with torch.no_grad():
        mean, log_scale, log_durations, mask = GlowTTSEncoderGraph(tts.model).eval()(tokens, lengths)
        durations = torch.ceil(torch.exp(log_durations) * mask * 1.2).squeeze(1)
        n = max(2, int(durations.sum()) // 2 * 2)
        noise = torch.from_numpy(np.random.default_rng(3).standard_normal((1, mean.size(1), n), dtype=np.float32))
        expected = GlowTTSDecoderGraph(tts.model).eval()(mean, log_scale, durations, torch.tensor([n]), noise,
                                                         torch.tensor(0.667))[0].numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() < MEL_TOLERANCE


def test_the_runtimes_griffin_lim_is_the_pytorch_one(griffin_lim_voice):
    tts, _ = griffin_lim_voice
    mel = torch.randn(1, 80, 40) - 5
    config = tts.mel_config
    magnitude = _magnitude(mel, config, 1.0)
    got = mel_to_magnitude(mel[0].numpy(), np.load(Path(griffin_lim_voice[1]) / "mel_basis.npy"))
    assert np.abs(got - magnitude[0].numpy()).max() < 1e-3 * float(magnitude.max())
    phase = torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(1))
    for workers in (1, 3):
        for n_iter in (0, 8):  # iterations amplify float32 rounding: few keep the comparison tight
            expected = _fast_griffin_lim(magnitude, config, n_iter, 0.99, phase)[0].numpy()
            ours = GriffinLim(config.n_fft, config.hop_length, config.win_length, n_iter=n_iter,
                              workers=workers)(magnitude[0].numpy(), phase[0].numpy())
            assert ours.shape == expected.shape and np.abs(ours - expected).max() < AUDIO_TOLERANCE


def test_the_runtime_starts_griffin_lim_where_the_pytorch_path_does(griffin_lim_voice, tmp_path):
    tts, folder = griffin_lim_voice
    config = json.loads((folder / "voice.onnx.json").read_text())
    assert config["vocoder"]["init"] == tts.vocoder.init == "pghi"
    voice = OnnxVoice(folder, threads=1)
    mel = tts.synthesize_full("The cat sat on the mat.", seed=0).mels[0]
    expected = griffin_lim(mel, tts.mel_config, n_iter=0)  # the PGHI phase alone: no seed
    got = voice.vocode(mel, np.random.default_rng(5))
    assert voice.vocoder["n_iter"] == tts.vocoder.n_iter
    voice.griffin_lim.n_iter = 0
    alone = voice.vocode(mel, np.random.default_rng(6))
    assert alone.shape == expected.shape
    assert np.abs(alone - expected).max() < 1e-3 * np.abs(expected).max()
    assert got.shape == expected.shape and np.isfinite(got).all()
    # The harmonic restoration: the export names its iterations.
    assert config["vocoder"]["harmonic_iter"] == harmonic_iterations(tts.vocoder.mel_iter,
                                                                     tts.vocoder.harmonic_iter)
    # A voice exported before the PGHI start has none in its settings: random phases, as then;
    # nor, before the harmonic restoration, its iterations: it runs none.
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    del config["vocoder"]["init"], config["vocoder"]["harmonic_iter"]
    (old / "voice.onnx.json").write_text(json.dumps(config))
    old_voice = OnnxVoice(old, threads=1)
    first, second = (old_voice.vocode(mel, np.random.default_rng(seed)) for seed in (1, 2))
    assert not np.allclose(first, second)
    assert old_voice.griffin_lim.harmonic_iter == 0
    config["vocoder"]["harmonic_iter"] = 2
    (old / "voice.onnx.json").write_text(json.dumps(config))
    restoring = OnnxVoice(old, threads=1).griffin_lim
    assert (restoring.harmonic_iter, restoring.sample_rate) == (2, tts.sample_rate)
    del config["vocoder"]["harmonic_iter"]
    config["vocoder"]["init"] = "zeros"
    (old / "voice.onnx.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="Griffin-Lim start 'zeros'"):
        OnnxVoice(old, threads=1)


@pytest.mark.parametrize("padding", ["center", "vits"])
@pytest.mark.parametrize("frames", [4, 5, 40])
def test_the_runtimes_griffin_lim_is_the_pytorch_one_for_either_padding_and_short_signals(padding, frames):
    from flowspeech.audio.config import MelConfig

    config = MelConfig.glow_tts() if padding == "center" else MelConfig.vits()
    magnitude = torch.rand(1, config.n_fft // 2 + 1, frames, generator=torch.Generator().manual_seed(frames))
    phase = torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(2))
    for n_iter in (0, 1, 4):
        expected = _fast_griffin_lim(magnitude, config, n_iter, 0.99, phase)[0].numpy()
        ours = GriffinLim(config.n_fft, config.hop_length, config.win_length, padding=padding, pad=config.pad,
                          n_iter=n_iter, workers=2)(magnitude[0].numpy(), phase[0].numpy())
        assert ours.shape == expected.shape and np.abs(ours - expected).max() < AUDIO_TOLERANCE


@pytest.mark.parametrize("preset", ["glow_tts", "vits", "flowavenet"])
def test_the_runtimes_mel_matching_is_the_pytorch_one_for_every_preset(preset):
    from flowspeech.audio import mel_basis, mel_spectrogram
    from flowspeech.audio.config import MelConfig

    config = MelConfig.preset(preset)
    t = np.arange(6000) / config.sample_rate
    rng = np.random.default_rng(0)
    x = (np.sin(2 * np.pi * 180 * t) + 0.3 * np.sin(2 * np.pi * 900 * t)
         + 0.01 * rng.standard_normal(len(t)))
    mel = mel_spectrogram(torch.from_numpy(x.astype(np.float32)), config)[None]
    magnitude = _magnitude(mel, config, 1.0)
    phase = torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(3))
    match = MelMatch(mel_basis(config), config.compression, config.magnitude_eps, config.power,
                     config.log_clamp)
    for mel_iter in (1, 4):
        expected = _fast_griffin_lim(magnitude, config, 2, 0.99, phase, mel, mel_iter)[0].numpy()
        runtime = GriffinLim(config.n_fft, config.hop_length, config.win_length,
                             padding=config.padding, pad=config.pad, n_iter=2, workers=2,
                             mel_iter=mel_iter, mel_match=match)
        ours = runtime(magnitude[0].numpy(), phase[0].numpy(), mel[0].numpy())
        assert ours.shape == expected.shape
        assert np.abs(ours - expected).max() < AUDIO_TOLERANCE * max(1.0, np.abs(expected).max())
    with pytest.raises(ValueError, match="MelMatch"):
        GriffinLim(config.n_fft, config.hop_length, config.win_length, mel_iter=1)


@pytest.mark.parametrize("preset", ["glow_tts", "vits", "flowavenet"])
def test_the_runtimes_harmonic_restoration_is_the_pytorch_one_for_every_preset(preset):
    from flowspeech.audio import mel_basis, mel_spectrogram
    from flowspeech.audio.config import MelConfig

    config = MelConfig.preset(preset)
    t = np.arange(8000) / config.sample_rate  # 30 harmonics of 170 Hz: a comb to restore
    x = sum(0.3 / k * np.sin(2 * np.pi * 170 * k * t + k) for k in range(1, 31))
    mel = mel_spectrogram(torch.from_numpy(x.astype(np.float32)), config)[None]
    magnitude = _magnitude(mel, config, 1.0)
    phase = torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(3))
    match = MelMatch(mel_basis(config), config.compression, config.magnitude_eps, config.power,
                     config.log_clamp)
    without = _fast_griffin_lim(magnitude, config, 2, 0.99, phase, mel, 3)[0].numpy()
    expected = _fast_griffin_lim(magnitude, config, 2, 0.99, phase, mel, 3, 2)[0].numpy()
    assert np.abs(expected - without).max() > 0.05  # the step changed the signal
    runtime = GriffinLim(config.n_fft, config.hop_length, config.win_length,
                         padding=config.padding, pad=config.pad, n_iter=2, workers=2, mel_iter=3,
                         mel_match=match, harmonic_iter=2, sample_rate=config.sample_rate)
    ours = runtime(magnitude[0].numpy(), phase[0].numpy(), mel[0].numpy())
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < AUDIO_TOLERANCE * max(1.0, np.abs(expected).max())
    with pytest.raises(ValueError, match="sample rate"):
        GriffinLim(config.n_fft, config.hop_length, config.win_length, mel_iter=3,
                   mel_match=match, harmonic_iter=2)


@pytest.mark.parametrize("padding, pad", [("center", 0), ("vits", 384)])
def test_the_griffin_lim_signal_is_the_overlap_add_reflect_padded_as_numpy_pads(padding, pad):
    # Two and three frames make signals no longer than the half-frame margin, which the
    # reflection then folds more than once (PyTorch's STFT refuses them).
    gl = GriffinLim(1024, 256, 1024, padding=padding, pad=pad)
    rng = np.random.default_rng(0)
    for n_frames in (2, 3, 4, 5, 9):
        frames = rng.standard_normal((n_frames, 1024)).astype(np.float32)
        length = 256 * (n_frames - 1) if padding == "center" else 256 * n_frames - gl.shift
        envelope = gl._envelope(n_frames)
        expected = np.pad((gl._overlap_add(frames) / envelope)[512:512 + length], 512, mode="reflect")
        buffer = np.full(max((n_frames + 3) * 256, length + 1024), np.nan, np.float32)
        got = gl._signal(frames, length, (1 / envelope[512:512 + length]).astype(np.float32), buffer)
        np.testing.assert_allclose(got[:length + 1024], expected, rtol=1e-6, atol=1e-6)


def test_the_vocoder_graphs_give_the_models_audio_at_new_lengths(tmp_path):
    from flowspeech.inference.loading import load_model

    waveglow, _ = load_model(make_waveglow_checkpoint(tmp_path / "wg.pt"))
    flowavenet = tiny_flowavenet().prepare_for_inference()
    for name, net, make_mel in (("waveglow", waveglow, lambda b, f: torch.randn(b, 80, f) - 4),
                                ("flowavenet", flowavenet, lambda b, f: torch.rand(b, 4, f))):
        graph = VocoderGraph(net).eval()
        noise = net.sample_noise(1, 12)
        _trace(graph, (make_mel(1, 12), noise, torch.tensor(0.6)), tmp_path / f"{name}.onnx", 17,
               ["mels", "noise", "sigma"], ["audio"],
               {"mels": {0: "batch", 2: "frames"}, "noise": {0: "batch", noise.dim() - 1: "positions"},
                "audio": {0: "batch", 1: "samples"}})
        session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"))
        mels, noise = make_mel(2, 29), net.sample_noise(2, 29)
        expected = net.infer(mels, sigma=0.7, noise=noise).waveforms
        (got,) = session.run(None, {"mels": mels.numpy(), "noise": noise.numpy(),
                                    "sigma": np.array(0.7, np.float32)})
        assert got.shape == expected.shape and np.abs(got - expected.numpy()).max() < AUDIO_TOLERANCE, name


def test_a_waveglow_voice_runs_and_a_seed_reproduces_it(waveglow_voice):
    tts, folder = waveglow_voice
    voice = OnnxVoice(folder, threads=1)
    a, sr = voice.synthesize("Hello there. How are you?", seed=4)
    b, _ = voice.synthesize("Hello there. How are you?", seed=4)
    c, _ = voice.synthesize("Hello there. How are you?", seed=5, sigma=0.3)
    assert sr == tts.sample_rate and np.array_equal(a, b) and not np.array_equal(a, c)
    mel = voice.mel("Hello there.", 0.667, 1.0, np.random.default_rng(0))
    rng_state = np.random.default_rng(1)
    noise = torch.from_numpy(np.random.default_rng(1).standard_normal(
        (1, 8, mel.shape[1] * 256 // 8), dtype=np.float32))
    expected = tts.vocoder.model.infer(torch.from_numpy(mel)[None], sigma=0.6, noise=noise).waveforms[0].numpy()
    assert np.abs(voice.vocode(mel, rng_state) - expected).max() < AUDIO_TOLERANCE


def test_the_runtime_gives_the_pytorch_paths_timestamps(griffin_lim_voice):
    tts, folder = griffin_lim_voice
    text = "Dr. Smith paid $5 at 3:30 pm. Then he rested, twice."
    expected = tts.synthesize_full(text, seed=1).timestamps
    chunks = list(OnnxVoice(folder, threads=1).stream(text, seed=1))
    assert [c.timestamps.sentences[0].text for c in chunks] == [s.text for s in expected.sentences]
    words = [w for c in chunks for w in c.timestamps.words]
    assert [w.text for w in words] == [w.text for w in expected.words]
    assert max(abs(a.start - b.start) + abs(a.end - b.end) for a, b in zip(words, expected.words)) < 1e-6
    phonemes = [p for c in chunks for p in c.timestamps.phonemes]
    assert len(phonemes) == len(expected.phonemes)


def test_the_runtime_rounds_durations_as_the_exported_voice_says(glow_tts_checkpoint, tmp_path):
    rounding = {"rule": "round", "scale": 1.3}
    tts = Synthesizer(glow_tts_checkpoint, duration_rounding=rounding)
    export_onnx(tts, tmp_path / "voice")
    config = json.loads((tmp_path / "voice" / "voice.onnx.json").read_text())
    assert config["inference"]["duration_rounding"] == rounding
    text = "Rounded to the nearest frame."
    expected = tts.synthesize_full(text, seed=1).timestamps
    got = [p for c in OnnxVoice(tmp_path / "voice", threads=1).stream(text, seed=1) for p in c.timestamps.phonemes]
    assert [t for p in got for t in (p.start, p.end)] == pytest.approx(
        [t for p in expected.phonemes for t in (p.start, p.end)], abs=1e-6)


def test_sentences_made_side_by_side_are_the_ones_made_in_turn(griffin_lim_voice):
    _, folder = griffin_lim_voice
    voice = OnnxVoice(folder, threads=2)  # two cores: the three sentences are made two at a time
    text = "The first sentence is here. A second one, longer than the first, follows it. A third."
    list(voice.stream("One sentence takes both threads.", seed=3))
    assert voice._one_thread_sessions is None  # loaded by the first text of several sentences
    chunks = list(voice.stream(text, seed=3))
    assert set(voice._one_thread_sessions) == set(voice.sessions)
    assert voice._one_thread_sessions["decoder"] is not voice.sessions["decoder"]
    pause = int(voice.sentence_pause * voice.sample_rate)
    for i, (sentence, chunk) in enumerate(zip(voice.split(text), chunks)):
        rng = np.random.default_rng([3, i])
        alone = voice.vocode(voice.mel(sentence, voice.noise_scale, voice.length_scale, rng), rng, workers=1)
        assert np.array_equal(chunk.samples[pause if i else 0:], np.clip(alone, -1, 1))
    stream = voice.stream(text, seed=3)
    first = next(stream)
    stream.close()  # a reader that stops after the first sentence: nothing hangs
    assert np.array_equal(first.samples, chunks[0].samples)


def test_graph_threads_spin_within_a_run_and_stop_at_its_end():
    options = session_options(2)
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert session_options(2, spinning=False).get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_the_runtime_never_imports_torch(griffin_lim_voice, tmp_path):
    _, folder = griffin_lim_voice
    script = tmp_path / "no_torch.py"
    script.write_text(
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is not available here')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "from flowspeech.runtime import OnnxVoice\n"
        f"voice = OnnxVoice({str(folder)!r}, threads=1)\n"
        "samples, sr = voice.synthesize('Hello without torch.', seed=1)\n"
        "assert samples.size > 0 and 'torch' not in sys.modules\n"
        "print('ok', samples.size, sr)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")


def test_the_command_line_exports_and_speaks_with_onnx(glow_tts_checkpoint, tmp_path, capsys):
    folder = tmp_path / "voice"
    assert main(["export", "--onnx", str(glow_tts_checkpoint), "--out", str(folder), "--winograd"]) == 0
    assert "ONNX voice" in capsys.readouterr().out
    config = json.loads((folder / "voice.onnx.json").read_text())
    assert config["graphs"]["decoder"]["input_convolutions"].startswith("winograd")
    out = tmp_path / "hello.wav"
    assert main(["synthesize", "--backend", "onnx", "--voice", str(folder), "--text", "Hello. Goodbye.",
                 "--out", str(out), "--seed", "1", "--length-scale", "1.1"]) == 0
    assert "onnxruntime" in capsys.readouterr().out
    audio, sr = sf.read(out)
    assert sr == 22050 and len(audio) > 0.2 * sr
    lines = tmp_path / "lines.txt"
    lines.write_text("a|Hello there.\nb|Goodbye, then.\n")
    for target in (tmp_path / "joined.wav", tmp_path / "each"):
        assert main(["synthesize", "--backend", "onnx", "--voice", str(folder), "--text-file", str(lines),
                     "--out", str(target), "--timestamps", str(tmp_path / f"{target.stem}.json")]) == 0
        stamps = json.loads((tmp_path / f"{target.stem}.json").read_text())
        assert [w["text"] for w in stamps["words"]] == ["Hello", "there.", "Goodbye,", "then."]
        starts = [w["start"] for w in stamps["words"]]
        if target.suffix:  # one file: the times run on across the lines
            assert starts == sorted(starts) and starts[2] > stamps["words"][1]["end"]
        else:  # a file per line: each line's times start again
            assert starts[2] < starts[1]
    assert (tmp_path / "each" / "a.wav").is_file() and (tmp_path / "each" / "b.wav").is_file()
    capsys.readouterr()
    # Refused, with the reason: a folder that exists, options an ONNX voice does not take.
    assert main(["export", "--onnx", str(glow_tts_checkpoint), "--out", str(folder)]) == 1
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["synthesize", "--backend", "onnx", "--voice", str(folder), "--text", "Hi.",
                 "--out", str(out), "--save-mel", str(tmp_path / "m.npy")]) == 1
    assert "--save-mel: not with --backend onnx" in capsys.readouterr().err
    assert main(["synthesize", "--backend", "onnx", "--voice", str(tmp_path), "--text", "Hi.",
                 "--out", str(out)]) == 1
    assert "not an ONNX voice" in capsys.readouterr().err


def test_a_broken_voice_folder_gets_one_clear_error(griffin_lim_voice, tmp_path):
    _, folder = griffin_lim_voice
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "decoder.onnx").unlink()
    with pytest.raises(CheckpointError, match=r"decoder.onnx is missing"):
        OnnxVoice(broken)
    shutil.copy(folder / "encoder.onnx", broken / "decoder.onnx")
    with pytest.raises(CheckpointError, match=r"decoder.onnx does not match voice.onnx.json"):
        OnnxVoice(broken)
    config = json.loads((folder / "voice.onnx.json").read_text())
    (broken / "voice.onnx.json").write_text(json.dumps(dict(config, version=99)))
    with pytest.raises(CheckpointError, match="format version 99"):
        OnnxVoice(broken)
    (broken / "voice.onnx.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        OnnxVoice(broken)
    with pytest.raises(CheckpointError, match="is not an ONNX voice"):
        OnnxVoice(tmp_path)


def test_a_graph_of_a_newer_opset_names_the_version_it_needs(griffin_lim_voice, tmp_path):
    import onnx

    _, folder = griffin_lim_voice
    newer = tmp_path / "newer"
    shutil.copytree(folder, newer)
    model = onnx.load(str(newer / "encoder.onnx"))
    model.opset_import[0].version = 99  # an opset no onnxruntime knows
    onnx.save(model, str(newer / "encoder.onnx"))
    config = json.loads((newer / "voice.onnx.json").read_text())
    config["graphs"]["encoder"].pop("sha256")
    (newer / "voice.onnx.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"encoder.onnx: this onnxruntime .* cannot run it"):
        OnnxVoice(newer)


def test_bad_runtime_arguments_are_refused(griffin_lim_voice):
    voice = OnnxVoice(griffin_lim_voice[1], threads=1)
    with pytest.raises(ConfigError, match="sigma applies to neural vocoders"):
        voice.synthesize("Hi.", sigma=0.5)
    with pytest.raises(ConfigError, match="length_scale"):
        voice.synthesize("Hi.", length_scale=0)
    with pytest.raises(ConfigError, match="one speaker"):
        voice.synthesize("Hi.", speaker=2)


def test_export_refuses_what_it_cannot_write(griffin_lim_voice, tmp_path):
    tts, _ = griffin_lim_voice
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(OutputError, match="not an empty folder"):
        export_onnx(tts, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.parametrize("phoneme_pretraining", [False, True])
def test_a_naturalspeech_voice_exports_and_runs_to_the_models_numbers(phoneme_pretraining, tmp_path):
    from test_naturalspeech import tiny_config

    from flowspeech.checkpoints import save_checkpoint
    from flowspeech.inference.onnx_export import NaturalSpeechDecoderGraph
    from flowspeech.models.durator import predicted_frame_lengths
    from flowspeech.models.naturalspeech import NaturalSpeech
    from flowspeech.text import TextFrontend
    from flowspeech.text.sup_phonemes import SupPhonemeTokenizer, word_boundary_ids

    config = tiny_config(phoneme_pretraining=phoneme_pretraining)
    extras = {}
    if phoneme_pretraining:
        frontend = TextFrontend(**config["text"])
        corpus = [frontend.encode(t) for t in ["the cat sat on the mat", "a dog ran far away"] * 4]
        tokenizer = SupPhonemeTokenizer.train(corpus, 60, word_boundary_ids(frontend), n_phonemes=frontend.n_vocab)
        config["model_args"]["n_sup_vocab"] = tokenizer.vocab_size
        extras = {"sup_phoneme_tokenizer": tokenizer.to_json()}
    torch.manual_seed(0)
    model = NaturalSpeech.from_config(config)
    save_checkpoint(tmp_path / "ns.pt", {"model_type": "naturalspeech", "config": config,
                                         "model": model.state_dict(), "step": 0, "inference": extras})
    tts = Synthesizer(tmp_path / "ns.pt")
    assert (tts.model.sup_tokenizer is not None) == phoneme_pretraining
    export_onnx(tts, tmp_path / "voice")
    voice = OnnxVoice(tmp_path / "voice", threads=1)
    text = "the cat ran on the mat"
    audio, durations = voice._waveform(text, 0.667, 1.2, np.random.default_rng(7))
    tokens, lengths = _tokens(tts, text)
    with torch.no_grad():
        sup = (tts.model.sup_tokenizer.sup_ids_padded(tokens, lengths) if phoneme_pretraining else None)
        h, mask = tts.model._encode_text(tokens, lengths, sup)
        d = torch.exp(tts.model.durator.predict_log_durations(h, mask)) * mask.squeeze(1) * 1.2
        n = int(predicted_frame_lengths(d, mask)[0])
        noise = torch.from_numpy(np.random.default_rng(7).standard_normal((1, tts.model.latent_channels, n),
                                                                           dtype=np.float32))
        expected = NaturalSpeechDecoderGraph(tts.model).eval()(h, d, mask, torch.tensor([n]), noise,
                                                               torch.tensor(0.667))[0].numpy()
        # ... which is the model's own synthesis with that noise
        generator = torch.Generator().manual_seed(3)
        own = tts.model.infer(tokens, lengths, noise_scale=0.667, length_scale=1.2, generator=generator).waveforms
        again = NaturalSpeechDecoderGraph(tts.model).eval()(
            h, d, mask, torch.tensor([n]), torch.randn(1, tts.model.latent_channels, n,
                                                       generator=torch.Generator().manual_seed(3)),
            torch.tensor(0.667))
    assert torch.equal(own, again)
    # A random tiny decoder speaks softly: compare relative to its loudest sample.
    assert audio.shape == expected.shape and np.abs(expected).max() > 1e-5
    assert np.abs(audio - expected).max() < 1e-4 * np.abs(expected).max()
    assert np.allclose(durations, d[0].numpy(), atol=1e-5)
    samples, sr = voice.synthesize("The cat sat. The dog ran.", seed=2)
    chunks = list(voice.stream("The cat sat. The dog ran.", seed=2))
    assert sr == 22050 and [c.timestamps.words[0].text for c in chunks] == ["The", "The"]
    with pytest.raises(ConfigError, match="sigma"):
        voice.synthesize("Hi.", sigma=0.5)


def test_a_naturalspeech_duration_scale_lengthens_its_speech_in_pytorch_and_onnx_alike(tmp_path):
    from test_naturalspeech import tiny_config

    from flowspeech.checkpoints import save_checkpoint
    from flowspeech.models.naturalspeech import NaturalSpeech

    config = tiny_config(phoneme_pretraining=False)
    torch.manual_seed(0)
    model = NaturalSpeech.from_config(config)
    for name, scale in (("plain", None), ("scaled", 1.5)):
        extras = {} if scale is None else {"duration_scale": scale}
        save_checkpoint(tmp_path / f"{name}.pt", {"model_type": "naturalspeech", "config": config,
                                                  "model": model.state_dict(), "step": 0, "inference": extras})
    plain, scaled = Synthesizer(tmp_path / "plain.pt"), Synthesizer(tmp_path / "scaled.pt")
    assert plain.model.duration_scale == 1.0 and scaled.model.duration_scale == 1.5
    tokens, lengths = _tokens(plain, "the cat ran on the mat")
    with torch.no_grad():
        d_plain = plain.model.infer(tokens, lengths, noise_scale=0.0).durations
        d_scaled = scaled.model.infer(tokens, lengths, noise_scale=0.0, length_scale=0.5).durations
    assert torch.allclose(d_scaled, d_plain * 0.75, rtol=1e-5)  # the scale and length_scale multiply
    export_onnx(scaled, tmp_path / "voice")
    assert json.loads((tmp_path / "voice" / "voice.onnx.json").read_text())["inference"]["duration_scale"] == 1.5
    voice = OnnxVoice(tmp_path / "voice", threads=1)
    _, durations = voice._waveform("the cat ran on the mat", 0.0, 0.5, np.random.default_rng(0))
    assert np.allclose(durations, d_scaled[0].numpy(), rtol=1e-5)
    voice_config = json.loads((tmp_path / "voice" / "voice.onnx.json").read_text())
    for bad in ("NaN", 10, "fast"):
        voice_config["inference"]["duration_scale"] = float("nan") if bad == "NaN" else bad
        (tmp_path / "voice" / "voice.onnx.json").write_text(json.dumps(voice_config))
        with pytest.raises(CheckpointError, match="duration_scale"):
            OnnxVoice(tmp_path / "voice", threads=1)
    save_checkpoint(tmp_path / "bad.pt", {"model_type": "naturalspeech", "config": config, "model": model.state_dict(),
                                          "step": 0, "inference": {"duration_scale": 10}})
    with pytest.raises(ConfigError, match="duration_scale"):
        Synthesizer(tmp_path / "bad.pt")


def test_a_registered_voice_is_exported_once_into_the_cache(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FLOWSPEECH_CACHE", str(tmp_path))
    speak = ["synthesize", "--backend", "onnx", "--text", "Hi there.", "--out", str(tmp_path / "a.wav")]
    assert main(speak) == 0
    assert "exporting voice 'slt-glow-tts-small' to ONNX, once" in capsys.readouterr().err
    assert main(speak) == 0
    assert "exporting" not in capsys.readouterr().err
    import flowspeech.voices

    monkeypatch.setattr(flowspeech.voices, "ONNX_EXPORT_REVISION", flowspeech.voices.ONNX_EXPORT_REVISION + 1)
    assert main(speak) == 0  # a changed export makes the voice again
    assert "exporting voice 'slt-glow-tts-small' to ONNX, once" in capsys.readouterr().err
    exports = tmp_path / "onnx" / "slt-glow-tts-small"
    (exports / "of-an-earlier-install").mkdir()  # a stale export: replaced by the next one
    assert main(["export", "--onnx", "slt-glow-tts-small"]) == 0
    assert len(list(exports.iterdir())) == 1 and "ONNX voice" in capsys.readouterr().out
