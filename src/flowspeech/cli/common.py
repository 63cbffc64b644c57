"""Argument helpers shared by the commands (no heavy imports here)."""

from __future__ import annotations

from pathlib import Path

from flowspeech.errors import FlowspeechError

AUDIO_SUFFIXES = (".wav", ".npy")
# Waveform-generator precisions (inference.vocoders.PRECISIONS, without importing torch).
PRECISION_CHOICES = ("float32", "bfloat16", "float16")


def add_audio_config_args(parser) -> None:
    parser.add_argument(
        "--config",
        help="take the audio settings from this preset or YAML file (default: the "
        "Glow-TTS/WaveGlow mel: 22050 Hz, 1024/256/1024, 80 bands, 0-8000 Hz)",
    )


def add_audio_output_arg(parser, positional: bool = False) -> None:
    """``--out PATH`` (and, where the usage reads better, an optional positional too)."""
    help_text = "output audio: .wav (16-bit PCM) or .npy (float32 samples)"
    if positional:
        parser.add_argument("out_path", nargs="?", metavar="OUT", help=help_text)
        parser.add_argument("--out", dest="out_flag", metavar="PATH", help="same as OUT")
    else:
        parser.add_argument("--out", required=True, metavar="PATH", help=help_text)


def audio_output_path(args) -> str:
    """The output path given positionally or with --out (exactly one of them)."""
    positional = getattr(args, "out_path", None)
    flag = getattr(args, "out_flag", None) or getattr(args, "out", None)
    if positional and flag and positional != flag:
        raise FlowspeechError("give the output path once: either OUT or --out")
    path = positional or flag
    if not path:
        raise FlowspeechError("no output path: give OUT or --out out.wav")
    return path


def add_seed_arg(parser) -> None:
    parser.add_argument("--seed", type=int, default=None, help="random seed, for exact reproduction")


def check_audio_output(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() not in AUDIO_SUFFIXES:
        raise FlowspeechError(f"output {path}: use a .wav or .npy file name")
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    return out


def mel_config_from_args(args):
    """The MelConfig named by --config (a preset's `audio` section), else the Glow-TTS one."""
    from flowspeech.audio import MelConfig

    if getattr(args, "config", None):
        from flowspeech.config import load_config, mel_config

        return mel_config(load_config(args.config))
    return MelConfig.glow_tts()


def seed_everything(seed: int | None) -> None:
    if seed is None:
        return
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
