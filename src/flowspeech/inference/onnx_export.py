"""Export a voice to ONNX: graphs that :mod:`flowspeech.runtime` runs without PyTorch.

An ONNX voice is a folder, like Piper's ``.onnx`` + ``.onnx.json``:

- ``voice.onnx.json``: what the runtime needs besides the graphs: the text front end's
  settings, the sample rate, the default controls, the vocoder's kind, and each graph's file
  name and SHA-256 (a missing or mismatched file is named, not half-run);
- ``encoder.onnx`` (Glow-TTS): ``tokens [B, T] int64, token_lengths [B] int64`` ->
  ``mean, log_scale [B, n_mels, T], log_durations [B, 1, T], text_mask [B, 1, T]``;
- ``decoder.onnx`` (Glow-TTS): ``mean, log_scale, durations [B, T] (whole frames),
  mel_lengths [B] int64, noise [B, n_mels, F], noise_scale []`` -> ``mels [B, n_mels, F]``:
  the expansion by durations, the prior sample and the flow decoder's inverse. The frame
  count ``F`` is the noise's: the durations are rounded between the two graphs, where
  ``length_scale`` applies. Asked to (``winograd=True``, ``export --onnx --winograd``), the
  couplings' WaveNet input convolutions are computed by Winograd's F(6, k)
  (:mod:`flowspeech.inference.winograd`: a third of their multiplications) on frames in phase
  order (:mod:`flowspeech.inference.phase_order`): Glow-TTS base 1.1-1.35x faster on
  onnxruntime, the shipped voice's decoder 12 %, for a file about half as large again. The
  encoder graph's kernel-3 and kernel-5 convolutions (pre-net, feed-forward, duration
  predictor) are then Winograd's F(4, k), in frame order: Glow-TTS base's encoder 10 % faster on a sentence of 100
  tokens;
- ``vocoder.onnx`` (WaveGlow, FloWaveNet): ``mels [B, n_mels, F], noise, sigma []`` ->
  ``audio [B, F * hop]``, the flow's inverse on the latent ``noise * sigma`` (noise in the
  model's :meth:`sample_noise` layout);
- NaturalSpeech: ``encoder.onnx`` (``tokens``, ``token_lengths`` and, with phoneme
  pre-training, ``sup_tokens`` -> ``h, text_mask, log_durations``) and ``decoder.onnx``
  (``h, durations, text_mask, frame_lengths, noise [B, latent, F], noise_scale`` -> ``audio
  [B, F * hop]``: upsampling, prior sample, flow inverse, memory, waveform decoder; one
  utterance per run, as the decoder's biases would carry a batch's padding);
- ``mel_basis.npy`` (Griffin-Lim voices): the mel filter bank, from which the runtime
  recovers the linear magnitude as :func:`~flowspeech.audio.griffin_lim.griffin_lim` does
  (non-negative least squares) before the phase iterations, in numpy.

Every graph's 1-D convolutions are written as 2-D ones after tracing
(:func:`~flowspeech.inference.onnx_graph.convolutions_as_2d`), which onnxruntime runs with its
faster blocked kernels. Noise is always an input, so the same noise gives the PyTorch model's
output (tests: max abs difference under 1e-4 on mels and 1e-3 on audio). The invertible 1x1
convolutions' inverses are computed once, in float64, and stored as constants: ONNX has no
matrix inverse.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flowspeech import __version__
from flowspeech.align.durations import path_from_durations
from flowspeech.audio.features import mel_basis
from flowspeech.audio.griffin_lim import MEL_MOMENTUM, harmonic_iterations
from flowspeech.errors import ConfigError, OutputError
from flowspeech.inference.folding import fold_flow_decoder
from flowspeech.inference.onnx_graph import convolutions_as_2d
from flowspeech.inference.phase_order import (
    PHASES,
    PhaseOrderDecoder,
    PhaseWinogradConv,
    phase_order_applies,
)
from flowspeech.inference.synthesizer import Synthesizer
from flowspeech.inference.vocoders import GriffinLimVocoder, NeuralVocoder
from flowspeech.inference.winograd import (
    WinogradConv1d,
    use_winograd_convolutions,
    use_winograd_input_convolutions,
)
from flowspeech.models.durator import predicted_frame_lengths
from flowspeech.models.glow_tts import GlowTTS
from flowspeech.models.naturalspeech import NaturalSpeech
from flowspeech.runtime.voice import CONFIG_NAME, FORMAT, FORMAT_VERSION
from flowspeech.utils.files import sha256_file
from flowspeech.utils.masks import length_mask
from flowspeech.voices import get_voice, onnx_cache_folder

OPSET = 17


class GlowTTSEncoderGraph(nn.Module):
    """Glow-TTS's text encoder and duration predictor (the first graph)."""

    def __init__(self, model: GlowTTS):
        super().__init__()
        self.model = model

    def forward(self, tokens, token_lengths, speakers=None):
        g = self.model.speaker_embedding(speakers) if speakers is not None else None
        return self.model.encoder(tokens, token_lengths, g)


class GlowTTSDecoderGraph(nn.Module):
    """The prior expanded along the durations, sampled with the given noise, through the flow
    decoder's inverse: :meth:`GlowTTS.infer` after the durations (the second graph)."""

    def __init__(self, model: GlowTTS):
        super().__init__()
        self.model = model

    def forward(self, mean, log_scale, durations, mel_lengths, noise, noise_scale, speakers=None):
        g = self.model.speaker_embedding(speakers) if speakers is not None else None
        z_mask = length_mask(mel_lengths, noise.size(2), mean.dtype)
        attn = path_from_durations(durations, z_mask)  # [B, T_text, F]
        z_mean = torch.matmul(mean, attn)
        z_log_scale = torch.matmul(log_scale, attn)
        z = (z_mean + torch.exp(z_log_scale) * noise * noise_scale) * z_mask
        return self.model.decoder.inverse(z, z_mask, g) * z_mask


class NaturalSpeechEncoderGraph(nn.Module):
    """NaturalSpeech's phoneme encoder and the durator's log-durations (the first graph)."""

    def __init__(self, model: NaturalSpeech):
        super().__init__()
        self.model = model

    def forward(self, tokens, token_lengths, sup_tokens=None):
        h, text_mask = self.model._encode_text(tokens, token_lengths, sup_tokens)
        return h, text_mask, self.model.durator.predict_log_durations(h, text_mask)


class NaturalSpeechDecoderGraph(nn.Module):
    """The frame-level prior (learnable upsampling), its sample with the given noise, the
    flow's inverse, the memory and the waveform decoder: :meth:`NaturalSpeech.infer` after the
    durations (the second graph), for one utterance at a time."""

    def __init__(self, model: NaturalSpeech):
        super().__init__()
        self.model = model

    def forward(self, h, durations, text_mask, frame_lengths, noise, noise_scale):
        m = self.model
        mean, log_scale, mask, _ = m.durator.frame_prior(h, durations, text_mask, frame_lengths, noise.size(2))
        z = m.flow.inverse((mean + torch.exp(log_scale) * noise * noise_scale) * mask, mask) * mask
        return m._decode(z)[:, 0]


class VocoderGraph(nn.Module):
    """A flow vocoder's inverse on the latent ``noise * sigma``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, mels, noise, sigma):
        return self.model.inverse(noise * sigma, mels)


def export_onnx(tts: Synthesizer, out: str | Path, *, opset: int = OPSET, winograd: bool = False) -> dict[str, Any]:
    """Write ``tts``'s acoustic model and vocoder as an ONNX voice folder ``out`` (which must
    not exist, or be empty) and return its config. The folder appears whole or not at all.
    ``winograd``: Glow-TTS's decoder graph computes its WaveNet input convolutions by
    Winograd's F(6, k) (the same mel to float rounding; worth it for wide decoders such as
    Glow-TTS base's, see docs/onnx.md); False keeps plain ``Conv``."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"{out} exists and is not an empty folder: choose a new folder for the ONNX voice")
    if not isinstance(tts.model, (GlowTTS, NaturalSpeech)):
        raise ConfigError(f"ONNX export covers Glow-TTS voices (with Griffin-Lim, WaveGlow or FloWaveNet) "
                          f"and NaturalSpeech; this voice's model is {tts.model_type!r}")
    if isinstance(tts.vocoder, NeuralVocoder) and tts.vocoder.denoise:
        raise ConfigError("the WaveGlow denoiser is not part of the ONNX export: export without --denoise")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        config = _export(tts, tmp, opset, winograd)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return config


def export_voice_to_cache(name: str) -> tuple[Path, dict[str, Any]]:
    """Export the registered voice ``name`` (with its own vocoder) into the cache folder that
    ``flowspeech synthesize --backend onnx --voice NAME`` reads, replacing the voice's earlier
    exports there (of its earlier files: another install, a re-registered voice)."""
    voice = get_voice(name)
    out = onnx_cache_folder(voice)
    if out.parent.is_dir():
        for old in out.parent.iterdir():
            shutil.rmtree(old, ignore_errors=True)
    return out, export_onnx(Synthesizer(voice=name), out)


def _export(tts: Synthesizer, folder: Path, opset: int, winograd: bool) -> dict[str, Any]:
    if isinstance(tts.model, NaturalSpeech):
        return _export_naturalspeech(tts, folder, opset)
    model: GlowTTS = tts.model
    mel = tts.mel_config
    multi = model.n_speakers > 1
    tokens = torch.tensor([tts.frontend.encode("An example sentence, to trace the graphs.")] * 2)
    lengths = torch.tensor([tokens.size(1), tokens.size(1) - 3])
    speakers = torch.zeros(2, dtype=torch.long) if multi else None
    graphs: dict[str, dict[str, str]] = {}
    # Both graphs are traced from the copy the export computes with (folded, and with
    # `winograd` its convolutions by Winograd's).
    export_model, replaced = glow_tts_for_export(model, winograd=winograd)

    encoder = GlowTTSEncoderGraph(export_model).eval()
    enc_inputs = (tokens, lengths) + ((speakers,) if multi else ())
    _trace(encoder, enc_inputs, folder / "encoder.onnx", opset,
           ["tokens", "token_lengths"] + (["speakers"] if multi else []),
           ["mean", "log_scale", "log_durations", "text_mask"],
           {"tokens": {0: "batch", 1: "tokens"}, "token_lengths": {0: "batch"}, "speakers": {0: "batch"},
            "mean": {0: "batch", 2: "tokens"}, "log_scale": {0: "batch", 2: "tokens"},
            "log_durations": {0: "batch", 2: "tokens"}, "text_mask": {0: "batch", 2: "tokens"}})
    encoder_winograd = sum(isinstance(m, WinogradConv1d) for m in export_model.encoder.modules())
    graphs["encoder"] = {"file": "encoder.onnx",
                         "convolutions": f"winograd F(4, k): {encoder_winograd}" if winograd else "direct"}

    with torch.no_grad():
        mean, log_scale, log_durations, text_mask = encoder(*enc_inputs)
    durations = torch.ceil(torch.exp(log_durations) * text_mask).squeeze(1)
    mel_lengths = torch.clamp_min((durations.sum(1).long() // model.n_sqz) * model.n_sqz, model.n_sqz)
    noise = torch.randn(2, model.n_mels, int(mel_lengths.max()))
    phase_order = isinstance(export_model.decoder, PhaseOrderDecoder)
    decoder = GlowTTSDecoderGraph(export_model).eval()
    dec_inputs = (mean, log_scale, durations, mel_lengths, noise, torch.tensor(0.667)) + ((speakers,) if multi else ())
    _trace(decoder, dec_inputs, folder / "decoder.onnx", opset,
           ["mean", "log_scale", "durations", "mel_lengths", "noise", "noise_scale"] + (["speakers"] if multi else []),
           ["mels"],
           {"mean": {0: "batch", 2: "tokens"}, "log_scale": {0: "batch", 2: "tokens"},
            "durations": {0: "batch", 1: "tokens"}, "mel_lengths": {0: "batch"},
            "noise": {0: "batch", 2: "frames"}, "speakers": {0: "batch"}, "mels": {0: "batch", 2: "frames"}})
    graphs["decoder"] = {"file": "decoder.onnx", "folded": True,
                         "input_convolutions": (f"winograd F({PHASES if phase_order else 4}, k)"
                                                f"{', phase order' if phase_order else ''}: {replaced}"
                                                if winograd else "direct")}
    with torch.no_grad():
        mels = decoder(*dec_inputs)

    if isinstance(tts.vocoder, GriffinLimVocoder):
        np.save(folder / "mel_basis.npy", mel_basis(mel))
        graphs["mel_basis"] = {"file": "mel_basis.npy"}
        vocoder = {"type": "griffin-lim", "n_iter": tts.vocoder.n_iter, "momentum": 0.99,
                   "init": tts.vocoder.init, "mel_iter": tts.vocoder.mel_iter,
                   "mel_momentum": MEL_MOMENTUM,
                   "harmonic_iter": harmonic_iterations(tts.vocoder.mel_iter,
                                                        tts.vocoder.harmonic_iter),
                   "n_fft": mel.n_fft, "win_length": mel.win_length, "padding": mel.padding,
                   "pad": (mel.n_fft - mel.hop_length) // 2, "compression": mel.compression,
                   "magnitude_eps": mel.magnitude_eps, "power": mel.power,
                   "log_clamp": mel.log_clamp}
    else:
        net = tts.vocoder.model
        vocoder_mels = mels[:1, :, :24]
        v_noise = net.sample_noise(1, vocoder_mels.size(2))
        sigma = net.default_sigma if tts.vocoder.sigma is None else tts.vocoder.sigma
        noise_axes = {0: "batch", v_noise.dim() - 1: "positions"}
        _trace(VocoderGraph(net).eval(), (vocoder_mels, v_noise, torch.tensor(float(sigma))), folder / "vocoder.onnx",
               opset, ["mels", "noise", "sigma"], ["audio"],
               {"mels": {0: "batch", 2: "frames"}, "noise": noise_axes, "audio": {0: "batch", 1: "samples"}})
        graphs["vocoder"] = {"file": "vocoder.onnx"}
        vocoder = {"type": tts.vocoder.name, "sigma": float(sigma),
                   "noise_channels": int(v_noise.size(1)) if v_noise.dim() == 3 else 0}

    return _config(tts, folder, opset, graphs, vocoder, n_sqz=model.n_sqz, n_speakers=model.n_speakers)


def glow_tts_for_export(model: GlowTTS, *, fold: bool = True, winograd: bool = False,
                        phase_order: bool = True) -> tuple[GlowTTS, int]:
    """A copy of ``model`` computed as its exported graphs compute it (the model itself is
    left as it is): the decoder's flows folded (:func:`fold_flow_decoder`, exact to float
    rounding) and, with ``winograd``, the couplings' input convolutions by Winograd's F(4, k),
    on frames in phase order (:class:`PhaseOrderDecoder`) where it applies (one speaker,
    dilation 1) unless ``phase_order`` is false, and the text encoder's and duration
    predictor's kernel-3 and kernel-5 convolutions by F(4, k) as well (Glow-TTS base's encoder
    graph 10 % faster, the shipped voice's no faster). Returns the copy and how many of the
    decoder's convolutions became Winograd's."""
    model = copy.deepcopy(model).eval()
    if winograd:
        use_winograd_convolutions(model.encoder)
    if winograd and fold and phase_order and phase_order_applies(model.decoder):
        model.decoder = PhaseOrderDecoder(model.decoder)
        return model, sum(isinstance(m, PhaseWinogradConv) for m in model.decoder.modules())
    if fold:
        model.decoder.flows = fold_flow_decoder(model.decoder.flows)
    replaced = use_winograd_input_convolutions(model.decoder) if winograd else 0
    return model, replaced


def _export_naturalspeech(tts: Synthesizer, folder: Path, opset: int) -> dict[str, Any]:
    model: NaturalSpeech = tts.model
    tokenizer = model.sup_tokenizer if model.phoneme_pretraining else None
    ids = [tts.frontend.encode("An example sentence, to trace the graphs.")]
    tokens, lengths = torch.tensor(ids), torch.tensor([len(ids[0])])
    inputs = (tokens, lengths)
    names = ["tokens", "token_lengths"]
    if tokenizer is not None:
        inputs += (torch.tensor([tokenizer.sup_ids(ids[0])]),)
        names.append("sup_tokens")
    encoder = NaturalSpeechEncoderGraph(model).eval()
    _trace(encoder, inputs, folder / "encoder.onnx", opset, names, ["h", "text_mask", "log_durations"],
           {"tokens": {0: "batch", 1: "tokens"}, "token_lengths": {0: "batch"}, "sup_tokens": {0: "batch", 1: "tokens"},
            "h": {0: "batch", 2: "tokens"}, "text_mask": {0: "batch", 2: "tokens"},
            "log_durations": {0: "batch", 1: "tokens"}})
    with torch.no_grad():
        h, text_mask, log_durations = encoder(*inputs)
    durations = torch.exp(log_durations) * text_mask.squeeze(1)
    frame_lengths = predicted_frame_lengths(durations, text_mask)
    noise = torch.randn(1, model.latent_channels, int(frame_lengths.max()))
    _trace(NaturalSpeechDecoderGraph(model).eval(), (h, durations, text_mask, frame_lengths, noise, torch.tensor(0.667)),
           folder / "decoder.onnx", opset, ["h", "durations", "text_mask", "frame_lengths", "noise", "noise_scale"],
           ["audio"], {"h": {0: "batch", 2: "tokens"}, "durations": {0: "batch", 1: "tokens"},
                       "text_mask": {0: "batch", 2: "tokens"}, "frame_lengths": {0: "batch"},
                       "noise": {0: "batch", 2: "frames"}, "audio": {0: "batch", 1: "samples"}})
    graphs = {"encoder": {"file": "encoder.onnx"}, "decoder": {"file": "decoder.onnx"}}
    vocoder = {"type": "end-to-end", "latent_channels": model.latent_channels}
    return _config(tts, folder, opset, graphs, vocoder,
                   sup_phoneme_tokenizer=tokenizer.to_json() if tokenizer is not None else None)


def _config(tts: Synthesizer, folder: Path, opset: int, graphs: dict, vocoder: dict, **extra) -> dict[str, Any]:
    mel = tts.mel_config
    for entry in graphs.values():
        entry["sha256"] = sha256_file(folder / entry["file"])
    info = tts.voice.info if tts.voice is not None else {}
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "opset": opset, "flowspeech": __version__,
        "model_type": tts.model_type, "name": tts.voice.name if tts.voice is not None else Path(tts.acoustic_path).stem,
        "description": info.get("description", tts.config.get("description", "")),
        "sample_rate": mel.sample_rate, "hop_length": mel.hop_length, "n_mels": mel.n_mels,
        "speakers": tts.speakers.names if tts.speakers is not None else None,
        "text": tts.config.get("text", {}),
        "inference": {"noise_scale": tts.noise_scale, "length_scale": tts.length_scale,
                      "sentence_pause": tts.sentence_pause, "max_frames": tts.max_frames,
                      **({"duration_rounding": tts.duration_rounding.to_dict()}
                         if tts.duration_rounding is not None else {}),
                      **({"duration_scale": tts.model.duration_scale}
                         if isinstance(tts.model, NaturalSpeech) else {})},
        "graphs": graphs, "vocoder": vocoder, **extra,
    }


def _trace(module: nn.Module, inputs: tuple, path: Path, opset: int, input_names: list[str],
           output_names: list[str], dynamic_axes: dict[str, dict[int, str]], *, conv_2d: bool = True) -> None:
    """Export ``module`` run on ``inputs`` to ``path``; with ``conv_2d`` (what the export
    does) its 1-D convolutions are then written as 2-D ones, which onnxruntime runs faster
    (:func:`~flowspeech.inference.onnx_graph.convolutions_as_2d`)."""
    axes = {k: v for k, v in dynamic_axes.items() if k in input_names + output_names}
    with torch.no_grad():
        # One run first fills the invertible convolutions' cached inverses, which the trace
        # then holds as constants (ONNX has no matrix inverse).
        module(*inputs)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter: it keeps the models' Python control flow as traced, which
        # these graphs need (their shapes follow the inputs'), and warns that it is the legacy path.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
    module.eval()  # the exporter restores the mode it found; keep inference mode
    if conv_2d:
        convolutions_as_2d(path)


