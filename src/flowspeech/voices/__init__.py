"""Voices that ship inside the package (and, later, ones users register).

A shipped voice is a folder ``flowspeech/voices/<name>/`` holding ``acoustic.pt`` (a
flowspeech Glow-TTS checkpoint, weights only), optionally ``vocoder.pt``, and ``voice.json``
(description, training data, licence, measured quality).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from flowspeech.errors import FlowspeechError

DEFAULT_VOICE = "slt-glow-tts-small"


@dataclass
class Voice:
    name: str
    acoustic: Path
    vocoder: Path | None
    info: dict


def _voices_dir() -> Path:
    return Path(str(resources.files("flowspeech") / "voices"))


def list_voices() -> list[Voice]:
    voices = []
    for folder in sorted(p for p in _voices_dir().iterdir() if p.is_dir()):
        acoustic = folder / "acoustic.pt"
        if not acoustic.is_file():
            continue
        info_file = folder / "voice.json"
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        vocoder = folder / "vocoder.pt"
        voices.append(Voice(folder.name, acoustic, vocoder if vocoder.is_file() else None, info))
    return voices


def get_voice(name: str) -> Voice:
    for voice in list_voices():
        if voice.name == name:
            return voice
    known = ", ".join(v.name for v in list_voices()) or "none"
    raise FlowspeechError(f"no voice named {name!r} is installed (installed: {known})")


def default_voice() -> Voice:
    voices = list_voices()
    for voice in voices:
        if voice.name == DEFAULT_VOICE:
            return voice
    if voices:
        return voices[0]
    raise FlowspeechError(
        "no voice ships with this installation; pass --acoustic CKPT (a Glow-TTS checkpoint "
        "from `flowspeech train glow-tts` or `flowspeech import glow-tts`)")
