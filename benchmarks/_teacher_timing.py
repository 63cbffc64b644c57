"""What the teacher-timing diagnostics share (``pitch_error_sources.py``,
``spectrum_error_sources.py``, ``pauses_between_words.py``, ``token_pitch_probe.py``): their
voice options, the Glow-TTS voice they load, the teacher's timing of a corpus sentence, and
speaking a sentence for given frames per token, from seeded noise, as the 16-bit wav that
``eval_voice.py`` scores."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _heldout import mcd_band_hz

from flowspeech.audio import load_wav, mel_spectrogram, pcm16
from flowspeech.evaluation.inputs import read_transcripts
from flowspeech.evaluation.spectral import WorldFeatures, world_features
from flowspeech.inference.onnx_export import GlowTTSDecoderGraph
from flowspeech.inference.synthesizer import Synthesizer
from flowspeech.models.glow_tts import GlowTTS, GlowTTSOutput


def add_voice_arguments(parser: argparse.ArgumentParser) -> None:
    """The voice, its settings and the corpus split the diagnostics score."""
    parser.add_argument("--voice", default=None)
    parser.add_argument("--acoustic", default=None, help="a Glow-TTS checkpoint instead of a voice")
    parser.add_argument("--noise-scale", type=float, default=None, help="default: the voice's")
    parser.add_argument("--duration-rounding", choices=("ceil", "round"), default=None)
    parser.add_argument("--duration-scale", type=float, default=1.0)
    parser.add_argument("--corpus", type=Path, required=True, help="the teacher's corpus (LJSpeech layout)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--mcd-max-hz", type=float, default=None,
                        help="default: the centre of the voice's highest mel filter, "
                             "as eval_voice.py")
    parser.add_argument("--threads", type=int, default=None)


def load_glow_tts(args: argparse.Namespace) -> tuple[Synthesizer, GlowTTSDecoderGraph]:
    """The voice (or checkpoint) of ``args`` with its settings, and its decoder graph; sets the
    thread count. Exits if it is not a Glow-TTS voice."""
    if args.threads:
        torch.set_num_threads(args.threads)
    rounding = (None if args.duration_rounding is None
                else {"rule": args.duration_rounding, "scale": args.duration_scale})
    kwargs = {"voice": args.voice, "duration_rounding": rounding, "noise_scale": args.noise_scale}
    tts = Synthesizer(args.acoustic, **kwargs) if args.acoustic else Synthesizer(**kwargs)
    if not isinstance(tts.model, GlowTTS):
        raise SystemExit(f"{tts.acoustic_path} is not a Glow-TTS model")
    return tts, GlowTTSDecoderGraph(tts.model).eval()


@torch.no_grad()
def teacher_timing(tts: Synthesizer, corpus: Path, uid: str, text: str):
    """A corpus sentence through the voice: its tokens ``[1, T_text]`` and lengths, the
    recording (samples at the voice's rate), its mel ``[n_mels, F]``, and the voice's forward
    pass over that mel, whose MAS alignment ``out.attn`` is the teacher's timing."""
    ids, lengths = tts._tokens([tts.frontend.encode(text)])
    recording, _ = load_wav(corpus / "wavs" / f"{uid}.wav", tts.sample_rate)
    mel = mel_spectrogram(torch.from_numpy(recording), tts.mel_config)
    out: GlowTTSOutput = tts.model(ids, lengths, mel[None], torch.tensor([mel.size(1)]))
    return ids, lengths, recording, mel, out


def as_16_bit(samples: np.ndarray) -> np.ndarray:
    # As a 16-bit wav (what eval_voice.py scores): quiet frames' cepstra depend on it.
    return np.frombuffer(pcm16(samples), dtype="<i2") / 32768


@torch.no_grad()
def decode(tts: Synthesizer, decoder: GlowTTSDecoderGraph, mean: torch.Tensor, log_scale: torch.Tensor,
           durations: torch.Tensor, seed: int, noise_scale: float | None = None) -> torch.Tensor:
    """The voice's mel ``[1, n_mels, F]`` for ``durations`` ``[1, T_text]`` frames per token from
    the encoder's ``mean`` and ``log_scale``, its noise drawn from ``seed`` and scaled by
    ``noise_scale`` (default: the voice's)."""
    n_sqz = tts.model.n_sqz
    frames = max(n_sqz, int(durations.sum()) // n_sqz * n_sqz)
    noise = torch.randn(1, mean.size(1), frames, generator=torch.Generator().manual_seed(seed))
    scale = tts.noise_scale if noise_scale is None else noise_scale
    return decoder(mean, log_scale, durations, torch.tensor([frames]), noise, torch.tensor(scale))


@torch.no_grad()
def vocode(tts: Synthesizer, mel: torch.Tensor, seed: int) -> np.ndarray:
    """The voice's vocoder on ``mel`` ``[1, n_mels, F]``, Griffin-Lim phases from ``seed``, as
    16-bit samples."""
    audio = tts.vocoder.vocode(mel, torch.tensor([mel.size(-1)]), generator=torch.Generator().manual_seed(seed))
    return as_16_bit(audio.waveforms[0, : int(audio.waveform_lengths[0])].numpy())


def split_sentences(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(utterance id, text) of the first ``--limit`` sentences of the corpus's ``--split``."""
    texts = read_transcripts(args.corpus / "filelists" / f"ljs_audio_text_{args.split}_filelist.txt")
    return list(texts.items())[: args.limit]


def world_analysis(args: argparse.Namespace, tts: Synthesizer):
    """The WORLD analysis ``eval_voice.py`` scores with: dio F0, MCD up to ``--mcd-max-hz``
    (default: the centre of the voice's highest mel filter)."""
    max_hz = mcd_band_hz(args.mcd_max_hz, tts.mel_config)
    rate = tts.sample_rate

    def features(x: np.ndarray) -> WorldFeatures:
        return world_features(x, rate, f0_method="dio", max_hz=max_hz)
    return features
