"""Dataset readers: LJSpeech folders and Glow-TTS / VITS filelists, behind one entry point.

Supported layouts (detected by :func:`load_manifest`):

* **LJSpeech** (Ito & Johnson, 2017): a folder with ``metadata.csv`` rows
  ``id|raw text|normalised text`` (or ``id|text``) and the audio in ``wavs/<id>.wav``.
  The normalised column is used when it is present and non-empty.
* **Glow-TTS filelist** (Kim et al., 2020, github jaywalnut310/glow-tts ``filelists/``):
  ``path|text`` rows.
* **VITS multi-speaker filelist** (Kim et al., 2021, github jaywalnut310/vits):
  ``path|speaker|text`` rows.

Filelist paths are absolute, or relative to ``audio_root`` when given, else to the filelist's
folder (and, for a filelist inside a ``filelists/`` folder, to the dataset folder above it).
The ``DUMMY/`` prefix of the authors' filelists (a symlink to the LJSpeech ``wavs/`` folder
in their setup; ``DUMMY1/``, ``DUMMY2/``... in VITS) resolves to the dataset's ``wavs/``
folder, so no link is needed.

Rows that cannot be used (wrong number of fields, empty text, missing or unreadable audio,
duplicate ids) are skipped and reported: a ``logging`` warning and an entry in
:attr:`Manifest.skipped` naming the file, line and reason. Readability is checked with
``soundfile.info`` (reads the header only), which also gives each clip's length without
decoding it (about 0.1 ms per file).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import soundfile

from flowspeech.errors import DatasetError

logger = logging.getLogger("flowspeech.data")

#: How many skipped rows are logged one by one before only a summary is logged.
MAX_LOGGED_ROWS = 20

_DUMMY_PREFIX = re.compile(r"^DUMMY\d*/")
_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".sph")


@dataclass(frozen=True)
class Utterance:
    """One usable row of a dataset.

    Attributes:
        id: utterance id (the LJSpeech id, or the audio file's stem); unique in a manifest.
        audio_path: absolute path of the audio file.
        text: the transcript, as written in the source (not normalised here).
        speaker: speaker label as written in the source (VITS filelists: the integer id as a
            string), or ``None`` for single-speaker data.
        num_samples: clip length in samples at ``sample_rate`` (from the file header), or
            ``None`` when audio was not checked.
        sample_rate: the file's sample rate, or ``None`` when audio was not checked.
        origin: ``"file:line"`` of the row, for error messages.
    """

    id: str
    audio_path: Path
    text: str
    speaker: str | None = None
    num_samples: int | None = None
    sample_rate: int | None = None
    origin: str = ""


@dataclass(frozen=True)
class SkippedRow:
    """A row that was left out, and why."""

    source: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass
class Manifest:
    """The usable utterances of a dataset, and the rows left out.

    Attributes:
        utterances: usable rows, in file order.
        skipped: rows left out, each with file, line and reason.
        root: the dataset folder (the folder holding ``wavs/``); the default feature cache
            lives under it.
        source: the file that was read (``metadata.csv`` or a filelist).
        format: ``"ljspeech"``, ``"filelist"`` or ``"filelist-speaker"``.
    """

    utterances: list[Utterance]
    skipped: list[SkippedRow] = field(default_factory=list)
    root: Path = Path(".")
    source: Path = Path(".")
    format: str = "ljspeech"

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    def __getitem__(self, index: int) -> Utterance:
        return self.utterances[index]

    @property
    def speakers(self) -> list[str]:
        """Distinct speaker labels, in order of first appearance (empty if single-speaker)."""
        return list(dict.fromkeys(u.speaker for u in self.utterances if u.speaker is not None))


def load_manifest(
    path: str | Path,
    split: str | None = None,
    audio_root: str | Path | None = None,
    check_audio: bool = True,
) -> Manifest:
    """Read a dataset, detecting its format.

    Args:
        path: a dataset folder (with ``metadata.csv`` and ``wavs/``, optionally
            ``filelists/``), a ``metadata.csv`` file, or a ``path|text`` /
            ``path|speaker|text`` filelist.
        split: with a folder, read ``filelists/ljs_audio_text_<split>_filelist.txt`` (or
            ``ljs_audio_sid_text_<split>_filelist.txt``, or the one ``*<split>*filelist*.txt``,
            or ``<split>.txt``) instead of ``metadata.csv``.
        audio_root: folder that relative audio paths, ``DUMMY/`` and LJSpeech ids resolve
            against (its ``wavs/`` subfolder when it has one).
        check_audio: check every audio file with ``soundfile.info`` (header only) and record
            its length; rows whose audio is missing or unreadable are skipped.

    Returns:
        A :class:`Manifest`; skipped rows are logged as warnings and listed in ``skipped``.

    Raises:
        DatasetError: the path does not exist, the split has no filelist, the file cannot be
            read, or no usable row is left.
    """
    path = Path(path).expanduser()
    audio_root = Path(audio_root).expanduser() if audio_root is not None else None
    if audio_root is not None and not audio_root.is_dir():
        raise DatasetError(f"audio_root {audio_root} is not a folder")
    if path.is_dir():
        source = _find_split_file(path, split) if split is not None else path / "metadata.csv"
        if split is None and not source.is_file():
            raise DatasetError(
                f"{path} has no metadata.csv; give a split (e.g. split='train' for "
                f"filelists/ljs_audio_text_train_filelist.txt) or the path of a filelist"
            )
    elif path.is_file():
        if split is not None:
            raise DatasetError(f"split={split!r} needs a dataset folder, but {path} is a file")
        source = path
    else:
        raise DatasetError(f"dataset path {path} does not exist")

    rows = _read_rows(source)
    fmt = _detect_format(source, rows)
    data_dir = source.parent.parent if source.parent.name == "filelists" else source.parent
    wav_dir = _wav_dir(audio_root if audio_root is not None else data_dir)
    root = wav_dir.parent if wav_dir.name == "wavs" else wav_dir

    skipped: list[SkippedRow] = []
    utterances: list[Utterance] = []
    seen: dict[str, tuple[Path, int]] = {}
    n_fields = None
    for line_no, fields in rows:
        if isinstance(fields, str):  # undecodable line
            skipped.append(SkippedRow(source, line_no, fields))
            continue
        if fmt == "ljspeech":
            utt, error = _ljspeech_row(fields, wav_dir)
        else:
            if n_fields is None:
                n_fields = len(fields) if len(fields) in (2, 3) else None
            utt, error = _filelist_row(fields, n_fields, source, data_dir, wav_dir, audio_root)
        if error is None and check_audio:
            utt, error = _check_audio(utt)
        if error is None:
            first = seen.get(utt.id)
            if first is not None:  # one clip, one transcript (and one cache entry)
                what = "the same audio" if first[0] == utt.audio_path else f"{first[0]}"
                error = f"duplicate id {utt.id!r}: line {first[1]} already has it, for {what}"
        if error is not None:
            skipped.append(SkippedRow(source, line_no, error))
            continue
        seen.setdefault(utt.id, (utt.audio_path, line_no))
        utterances.append(replace(utt, origin=f"{source}:{line_no}"))

    if fmt != "ljspeech":
        fmt = "filelist-speaker" if n_fields == 3 else "filelist"
    report_skipped(skipped, source)
    if not utterances:
        reasons = "; ".join(str(s) for s in skipped[:3]) or "the file has no rows"
        raise DatasetError(
            f"no usable utterance in {source} ({len(skipped)} rows skipped: {reasons})"
        )
    return Manifest(utterances, skipped, root, source, fmt)


def report_skipped(skipped: Sequence[SkippedRow], source: Path | str, what: str = "rows") -> None:
    """Log skipped rows: each of the first :data:`MAX_LOGGED_ROWS`, then a count."""
    for row in skipped[:MAX_LOGGED_ROWS]:
        logger.warning("skipped %s", row)
    if len(skipped) > MAX_LOGGED_ROWS:
        logger.warning(
            "skipped %d %s of %s in all (the first %d are shown above; the full list is in "
            "the `skipped` attribute)",
            len(skipped), what, source, MAX_LOGGED_ROWS,
        )


def _find_split_file(folder: Path, split: str) -> Path:
    lists = folder / "filelists"
    candidates = [
        lists / f"ljs_audio_text_{split}_filelist.txt",
        lists / f"ljs_audio_sid_text_{split}_filelist.txt",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    globbed = sorted(lists.glob(f"*{split}*filelist*.txt")) + sorted(folder.glob(f"{split}.txt"))
    globbed += sorted(lists.glob(f"{split}.txt"))
    if len(globbed) == 1:
        return globbed[0]
    found = sorted(p.name for p in lists.glob("*.txt")) if lists.is_dir() else []
    if len(globbed) > 1:
        raise DatasetError(
            f"split {split!r} of {folder} is ambiguous: {', '.join(p.name for p in globbed)}; "
            f"pass the filelist's path instead"
        )
    raise DatasetError(
        f"no filelist for split {split!r} in {lists} (expected {candidates[0].name}); "
        f"found: {', '.join(found) or 'nothing'}"
    )


def _read_rows(source: Path) -> list[tuple[int, list[str] | str]]:
    """Non-blank rows as ``(line number, fields)``; an undecodable row gives a reason string."""
    try:
        data = source.read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read {source}: {err.strerror or err}") from err
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
        data = data[3:]
    rows: list[tuple[int, list[str] | str]] = []
    for line_no, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            rows.append((line_no, f"not valid UTF-8 ({err.reason} at byte {err.start})"))
            continue
        line = line.strip()
        if line:
            rows.append((line_no, line.split("|")))
    return rows


def _detect_format(source: Path, rows: list[tuple[int, list[str] | str]]) -> str:
    if source.name == "metadata.csv":
        return "ljspeech"
    for _, fields in rows:
        if isinstance(fields, list):
            first = fields[0]
            is_path = "/" in first or "\\" in first or first.lower().endswith(_AUDIO_SUFFIXES)
            return "filelist" if is_path else "ljspeech"
    return "filelist"


def _wav_dir(root: Path) -> Path:
    """The folder LJSpeech ids and ``DUMMY/`` resolve to: ``root/wavs`` if it exists, else root."""
    wavs = root / "wavs"
    return wavs if wavs.is_dir() else root


def _ljspeech_row(fields: list[str], wav_dir: Path) -> tuple[Utterance | None, str | None]:
    if len(fields) not in (2, 3):
        expected = "'id|text' or 'id|raw text|normalised text'"
        return None, f"expected {expected}, got {len(fields)} fields"
    utt_id = fields[0].strip()
    text = fields[2] if len(fields) == 3 and fields[2].strip() else fields[1]
    if not utt_id:
        return None, "empty id"
    if not text.strip():
        return None, "empty text"
    return Utterance(utt_id, (wav_dir / f"{utt_id}.wav").absolute(), text), None


def _filelist_row(
    fields: list[str],
    n_fields: int | None,
    source: Path,
    data_dir: Path,
    wav_dir: Path,
    audio_root: Path | None,
) -> tuple[Utterance | None, str | None]:
    if n_fields is None or len(fields) != n_fields:
        expected = {2: "'path|text'", 3: "'path|speaker|text'"}.get(n_fields or 0, "2 or 3")
        return None, f"expected {expected} fields, got {len(fields)}"
    audio, text = fields[0].strip(), fields[-1]
    speaker = fields[1].strip() if n_fields == 3 else None
    if not audio:
        return None, "empty audio path"
    if not text.strip():
        return None, "empty text"
    if speaker == "":
        return None, "empty speaker"
    path = _resolve_audio(audio, source, data_dir, wav_dir, audio_root)
    return Utterance(Path(audio).stem, path, text, speaker), None


def _resolve_audio(
    audio: str, source: Path, data_dir: Path, wav_dir: Path, audio_root: Path | None
) -> Path:
    dummy = _DUMMY_PREFIX.match(audio)
    if dummy:
        return (wav_dir / audio[dummy.end():]).absolute()
    path = Path(audio).expanduser()
    if path.is_absolute():
        return path
    if audio_root is not None:
        bases = [audio_root]
    else:
        bases = list(dict.fromkeys([source.parent, data_dir]))
    candidates = [(base / path).absolute() for base in bases]
    return next((c for c in candidates if c.exists()), candidates[0])


def _check_audio(utt: Utterance) -> tuple[Utterance | None, str | None]:
    path = utt.audio_path
    if not path.is_file():
        return None, f"audio file {path} does not exist"
    try:
        frames, rate = audio_header(path)
    except (RuntimeError, OSError, ValueError, EOFError) as err:  # LibsndfileError: RuntimeError
        return None, f"audio file {path} is unreadable ({err})"
    if frames <= 0:
        return None, f"audio file {path} is empty (0 samples)"
    return replace(utt, num_samples=frames, sample_rate=rate), None


def audio_header(path: Path) -> tuple[int, int]:
    """``(samples, sample rate)`` from an audio file's header, without decoding.

    Opening a ``soundfile.SoundFile`` is about 3x cheaper than ``soundfile.info`` (which
    also formats descriptions of the file), and reads the same fields.
    """
    with soundfile.SoundFile(str(path)) as f:
        return int(f.frames), int(f.samplerate)
