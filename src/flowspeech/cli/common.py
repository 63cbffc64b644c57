"""Argument helpers shared by the commands (no heavy imports here)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from flowspeech.errors import ConfigError, FlowspeechError, OutputError

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


def check_audio_output(path: str, inputs=(), what: str = "output") -> Path:
    """An audio output path (``.wav`` / ``.npy``) checked by :func:`check_output`."""
    out = Path(path)
    if out.suffix.lower() not in AUDIO_SUFFIXES:
        raise FlowspeechError(f"{what} {path}: use a .wav or .npy file name")
    return check_output(out, inputs, what)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output(path: str | Path, inputs=(), what: str = "output") -> Path:
    """Refuse, before any work, an output that would replace one of ``inputs`` or that cannot
    be written (a folder that cannot be made or written to); make missing folders."""
    out = Path(path)
    for source in inputs:
        if source is not None and _same_file(out, Path(source)):
            raise OutputError(f"{what} {path} is also the input {source}: choose another name, "
                              f"so that the input is kept")
    if out.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{what} {path}: cannot make the folder {folder} ({err.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: the folder {folder} is not writable; choose a folder "
                          f"you can write to")
    return out


def check_distinct(**paths) -> None:
    """Refuse two options that name the same output file (``--out`` and ``--save-mel``)."""
    given = [(name, Path(p)) for name, p in paths.items() if p is not None]
    for i, (a, pa) in enumerate(given):
        for b, pb in given[i + 1:]:
            if _same_file(pa, pb):
                raise OutputError(f"--{a.replace('_', '-')} and --{b.replace('_', '-')} name the same "
                                  f"file {pa}: give each its own")


# A file stem: letters, digits and . _ - (no separators, no leading dot, no "..").
_SAFE_STEM = re.compile(r"^(?!\.)(?!.*\.\.)[\w.-]{1,200}$")


def check_file_stem(stem: str, where: str) -> str:
    """``stem`` if it is safe as a file name inside an output folder, else a FlowspeechError
    naming ``where`` (e.g. ``lines.txt:7``): IDs of a text file must not reach outside it."""
    if not _SAFE_STEM.match(stem):
        raise FlowspeechError(f"{where}: the ID {stem!r} cannot be a file name; use letters, "
                              f"digits, '.', '_' and '-' (no '/', no leading '.', no '..')")
    return stem


def add_threads_arg(parser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads for PyTorch's operations (default: PyTorch's, one per core). Runs "
        "that share a machine should split its cores between them: two trainings of two "
        "threads each on two cores ran 4-5x slower than with one each (docs/benchmarks.md)")


def set_torch_threads(threads: int | None) -> None:
    """``--threads``: PyTorch's intra-op threads (None: leave PyTorch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads {threads}: use 1 or more")
    import torch  # lazy: the CLI starts without torch

    torch.set_num_threads(threads)


def resolve_device(name: str | None):
    """``torch.device(name)``, checked: an unknown name or a device this PyTorch build or
    machine lacks is a ConfigError that says what to use instead. None: the CPU."""
    import torch

    if name is None:
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no usable GPU here"
            raise ConfigError(f"--device {name}: CUDA is not available (PyTorch {torch.__version__}, "
                              f"{build}); use --device cpu, or install a CUDA build of PyTorch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {name}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name}: flowspeech runs on cpu, cuda or mps")
    return device


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
