"""What an evaluation reads: folders of clips named by utterance id, transcripts, synthesis
timings and per-utterance likelihoods. Everything is keyed by id (the file stem,
``LJ001-0001``); ids present on one side only are collected, not fatal.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from flowspeech.align.durations import read_alignment_file
from flowspeech.errors import DatasetError

AUDIO_SUFFIXES = (".wav", ".flac")
TIMINGS_FILE = "timings.json"
STAGE_TIMINGS_FILE = "stage_timings.json"


def list_audio(folder: str | Path) -> dict[str, Path]:
    """``{id: path}`` of the ``.wav``/``.flac`` files directly in ``folder``.

    Raises:
        DatasetError: the folder is missing, or two files share an id.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder of audio files")
    clips: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if (path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()
                and not path.name.startswith(".")):  # skip hidden temporaries
            if path.stem in clips:
                raise DatasetError(f"{folder}: {clips[path.stem].name} and {path.name} have the "
                                   "same id; keep one")
            clips[path.stem] = path
    return clips


def _id_from_first_column(value: str) -> str:
    """``DUMMY/LJ001-0001.wav`` -> ``LJ001-0001``; a bare id stays as it is."""
    name = value.strip().replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and suffix.lower() in ("wav", "flac", "npy", "mp3", "ogg") else name


def read_transcripts(path: str | Path) -> dict[str, str]:
    """``{id: text}`` from a transcript table.

    Formats (``|``-separated, one utterance a line, blank lines skipped):

    * ``id|text``;
    * glow-tts filelist ``path|text`` (the id is the file stem);
    * VITS filelist ``path|speaker_id|text`` (second column all digits);
    * LJSpeech ``metadata.csv`` ``id|raw text|normalised text``: the normalised column, or the
      raw one where it is empty.

    Raises:
        DatasetError: missing file, a line with one column, or an id given twice.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such transcript file")
    texts: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) < 2:
            raise DatasetError(f"{path}:{lineno}: expected 'id|text', a filelist 'path|text' or "
                               f"LJSpeech 'id|raw|normalised', got {line[:80]!r}")
        if len(cols) == 2:
            text = cols[1]
        elif len(cols) == 3 and cols[1].strip().isdigit():
            text = cols[2]
        else:
            text = cols[-1] if cols[-1].strip() else cols[1]
        utt_id = _id_from_first_column(cols[0])
        if utt_id in texts:
            raise DatasetError(f"{path}:{lineno}: id {utt_id} appears twice")
        texts[utt_id] = text.strip()
    if not texts:
        raise DatasetError(f"{path}: no transcripts in the file")
    return texts


def read_timings(folder: str | Path) -> dict[str, float] | None:
    """``{id: synthesis seconds}`` from ``folder/timings.json``, or None when there is none.

    Raises:
        DatasetError: the file is not a JSON object of non-negative numbers.
    """
    path = Path(folder) / TIMINGS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected an object {{id: seconds}}")
    timings = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise DatasetError(f"{path}: {key}: expected seconds (a number >= 0), got {value!r}")
        timings[str(key)] = float(value)
    return timings


def read_stage_timings(folder: str | Path) -> dict[str, dict[str, float]] | None:
    """``{id: {stage: seconds}}`` from ``folder/stage_timings.json``, or None when there is
    none (written by :func:`flowspeech.evaluation.synthesis.synthesize_test_set`).

    Raises:
        DatasetError: the file is not a JSON object of objects of non-negative numbers.
    """
    path = Path(folder) / STAGE_TIMINGS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    ok = isinstance(data, dict) and all(
        isinstance(v, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0
                                    for x in v.values()) for v in data.values())
    if not ok:
        raise DatasetError(f"{path}: expected an object {{id: {{stage: seconds}}}}")
    return {str(k): {str(s): float(x) for s, x in v.items()} for k, v in data.items()}


def read_nll(path: str | Path) -> dict[str, float]:
    """``{id: nll_per_dim}`` from ``flowspeech align`` output (one JSON object a line with
    ``id`` and ``nll_per_dim``).

    Raises:
        DatasetError: missing file, or a line without those fields.
    """

    out = read_alignment_file(path, "nll_per_dim", float)
    for uid, value in out.items():
        if not math.isfinite(value):
            raise DatasetError(f"{path}: the nll_per_dim of {uid} is {value}")
    return out


@dataclass
class IdMatch:
    """Which ids can be evaluated, and which are missing where.

    Attributes:
        ids: ids evaluated (in the system folder and, when given, in the reference folder
            and the transcripts), in transcript order, else sorted.
        missing_in_system: ids of the transcripts (or, without transcripts, of the reference
            folder) that have no system clip.
        missing_in_reference: ids with a system clip (and a transcript, when given) but no
            reference clip.
        without_text: number of system clips left out because the transcripts do not list
            them (a transcript file selects what is scored, e.g. a validation filelist).
    """

    ids: list[str]
    missing_in_system: list[str] = field(default_factory=list)
    missing_in_reference: list[str] = field(default_factory=list)
    without_text: int = 0

    def to_dict(self) -> dict:
        return {"evaluated": len(self.ids), "missing_in_system": self.missing_in_system,
                "missing_in_reference": self.missing_in_reference,
                "system_clips_without_text": self.without_text}


def match_ids(system: dict, reference: dict | None = None, texts: dict | None = None) -> IdMatch:
    """Intersect the system's ids with the reference folder's and the transcripts'.

    Args:
        system, reference, texts: dicts keyed by id (values are not used).

    Returns:
        :class:`IdMatch`. Transcripts, when given, select the ids: reference clips they do not
        list are not reported as missing.
    """
    wanted = list(texts) if texts is not None else sorted(set(system) | set(reference or {}))
    return IdMatch(
        ids=[i for i in wanted if i in system and (reference is None or i in reference)],
        missing_in_system=[i for i in wanted if i not in system],
        missing_in_reference=[i for i in wanted if i in system and reference is not None
                              and i not in reference],
        without_text=0 if texts is None else sum(1 for i in system if i not in texts),
    )
