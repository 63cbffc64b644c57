"""Named voices: the ones that ship inside the package and the ones users register.

A voice is a folder ``<name>/`` holding ``acoustic.pt`` (a flowspeech Glow-TTS checkpoint,
weights only), optionally ``vocoder.pt`` (WaveGlow or FloWaveNet), and ``voice.json``
(description, training data, licence, measured quality).

* shipped voices live in ``flowspeech/voices/`` inside the installed package;
* user voices live in ``$FLOWSPEECH_VOICES`` if set, else
  ``$XDG_DATA_HOME/flowspeech/voices`` (``~/.local/share/flowspeech/voices``), and are added
  with ``flowspeech voices add NAME --acoustic CKPT`` (see :func:`register_voice`).

A user voice may not take a shipped voice's name, so a name always means one voice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from flowspeech.errors import FlowspeechError
from flowspeech.models.registry import Role, get_spec, inference_state, model_specs
from flowspeech.utils.files import FolderLock, cache_dir

DEFAULT_VOICE = "slt-glow-tts-small"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Voice:
    name: str
    acoustic: Path
    vocoder: Path | None
    info: dict
    source: str = "shipped"  # "shipped" or "user"

    @property
    def folder(self) -> Path:
        return self.acoustic.parent


def shipped_voices_dir() -> Path:
    return Path(str(resources.files("flowspeech") / "voices"))


def user_voices_dir() -> Path:
    if os.environ.get("FLOWSPEECH_VOICES"):
        return Path(os.environ["FLOWSPEECH_VOICES"]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "flowspeech" / "voices"


def _scan(root: Path, source: str) -> list[Voice]:
    if not root.is_dir():
        return []
    voices = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        acoustic = folder / "acoustic.pt"
        if not acoustic.is_file():
            continue
        info_file = folder / "voice.json"
        try:
            info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        except (OSError, ValueError):
            info = {"description": f"(unreadable {info_file.name})"}
        vocoder = folder / "vocoder.pt"
        voices.append(Voice(folder.name, acoustic, vocoder if vocoder.is_file() else None, info, source))
    return voices


def list_voices() -> list[Voice]:
    """Shipped voices first, then user voices (a user voice never shadows a shipped one)."""
    shipped = _scan(shipped_voices_dir(), "shipped")
    taken = {v.name for v in shipped}
    return shipped + [v for v in _scan(user_voices_dir(), "user") if v.name not in taken]


def get_voice(name: str) -> Voice:
    for voice in list_voices():
        if voice.name == name:
            return voice
    known = ", ".join(v.name for v in list_voices()) or "none"
    raise FlowspeechError(f"no voice named {name!r} is installed (installed: {known}); "
                          f"`flowspeech voices` lists them")


def voice_names() -> list[str]:
    return [v.name for v in list_voices()]


# Raised when the ONNX export writes different graphs for the same voice (2: convolutions
# written as 2-D ones), so that a voice exported into the cache earlier is exported again.
ONNX_EXPORT_REVISION = 2


def onnx_cache_folder(voice: Voice) -> Path:
    """Where ``flowspeech export --onnx NAME`` writes the voice's ONNX form and ``flowspeech
    synthesize --backend onnx --voice NAME`` reads it: under the cache, named by the voice, the
    size and time of its files (its settings in ``voice.json`` too) and the export's revision,
    so that a changed voice, or a changed export, gets a new export."""
    files = (voice.acoustic, voice.vocoder, voice.folder / "voice.json")
    stamp = "-".join(f"{p.stat().st_size:x}{p.stat().st_mtime_ns:x}" for p in files if p and p.exists())
    return cache_dir() / "onnx" / voice.name / f"{stamp}-e{ONNX_EXPORT_REVISION}"


def default_voice() -> Voice:
    voices = list_voices()
    for voice in voices:
        if voice.name == DEFAULT_VOICE:
            return voice
    if voices:
        return voices[0]
    raise FlowspeechError(
        "no voice ships with this installation; pass --acoustic CKPT (a Glow-TTS checkpoint "
        "from `flowspeech train glow-tts` or `flowspeech import glow-tts`) or register one with "
        "`flowspeech voices add NAME --acoustic CKPT`")


def register_voice(name: str, acoustic: str | Path, vocoder: str | Path | None = None,
                   description: str = "", half: bool = False, overwrite: bool = False,
                   inference: dict | None = None) -> Voice:
    """Copy a trained acoustic model (and vocoder) into the user voice folder as ``name``.

    The checkpoints are checked (glow-tts or end-to-end naturalspeech, and a vocoder) and stripped
    to their weights, optionally in float16; the folder is written under a temporary name
    and renamed, so a failed registration leaves nothing behind. ``inference`` (e.g.
    ``{"noise_scale": 0.333, "duration_rounding": {"rule": "round", "scale": 1.1}}``) becomes the
    voice's default synthesis settings.
    """
    # Only registering needs torch; listing voices (the ONNX path's) stays without it.
    from flowspeech.checkpoints import export_checkpoint, load_checkpoint  # lazy: torch, see above

    if not _NAME.match(name):
        raise FlowspeechError(f"voice name {name!r}: use letters, digits, '.', '_' or '-' "
                              f"(at most 64 characters)")
    if any(v.name == name for v in _scan(shipped_voices_dir(), "shipped")):
        raise FlowspeechError(f"{name!r} is a shipped voice; choose another name")
    if (user_voices_dir() / name).exists() and not overwrite:  # fail before reading checkpoints
        raise FlowspeechError(f"voice {name!r} already exists ({user_voices_dir() / name}); pass "
                              f"--overwrite to replace it")
    payload = load_checkpoint(acoustic)
    acoustic_spec = get_spec(payload["model_type"])
    if acoustic_spec.role not in (Role.TEXT_TO_MEL, Role.TEXT_TO_WAVEFORM):
        text_models = ", ".join(s.name for s in model_specs()
                                if s.role in (Role.TEXT_TO_MEL, Role.TEXT_TO_WAVEFORM))
        raise FlowspeechError(f"{acoustic} holds a {acoustic_spec.name!r} model; a voice needs a "
                              f"text-input model ({text_models})")
    if acoustic_spec.role == Role.TEXT_TO_WAVEFORM and vocoder is not None:
        raise FlowspeechError(f"{acoustic} is an end-to-end {acoustic_spec.name} model: it needs no vocoder")
    vocoder_spec = None
    if vocoder is not None:
        vocoder_spec = get_spec(load_checkpoint(vocoder)["model_type"])
        if vocoder_spec.role != Role.MEL_TO_WAVEFORM:
            raise FlowspeechError(f"{vocoder} holds a {vocoder_spec.name!r} model, not a vocoder")
    root = user_voices_dir()
    target = root / name
    # One registration or removal at a time: a second `voices add NAME` fails naming the first.
    with FolderLock(root, f"voices add {name}"):
        for stale in root.glob(".*.tmp*"):  # left by killed registrations (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists() and not overwrite:
            raise FlowspeechError(f"voice {name!r} already exists ({target}); pass --overwrite to "
                                  f"replace it")
        tmp = root / f".{name}.tmp{os.getpid()}"
        tmp.mkdir()
        try:
            export_checkpoint(acoustic, tmp / "acoustic.pt", half, inference_state)
            if vocoder_spec is not None:
                export_checkpoint(vocoder, tmp / "vocoder.pt", half, inference_state)
            info = {
                "name": name,
                "description": description or payload["config"].get("description", acoustic_spec.name),
                "acoustic_from": str(Path(acoustic).resolve()),
                "acoustic_step": payload.get("step"),
                "vocoder_from": str(Path(vocoder).resolve()) if vocoder is not None else None,
                "float16": half,
            }
            if inference:
                info["inference"] = {k: (v if isinstance(v, dict) else float(v))
                                     for k, v in inference.items() if v is not None}
            (tmp / "voice.json").write_text(json.dumps(info, indent=2) + "\n")
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return get_voice(name)


def remove_voice(name: str) -> Path:
    """Delete a user voice (shipped voices cannot be removed)."""
    voice = get_voice(name)
    if voice.source != "user":
        raise FlowspeechError(f"{name!r} ships with the package and cannot be removed")
    with FolderLock(user_voices_dir(), f"voices remove {name}"):
        shutil.rmtree(voice.folder)
    return voice.folder
