"""English text normalisation: what the reader would say, in lower-case ASCII.

Four pipelines (``mode``), all ending with whitespace collapsed to single spaces:

``"tacotron"``
    Tacotron/Glow-TTS ``english_cleaners`` (keithito/tacotron ``text/cleaners.py``):
    transliterate to ASCII, lower-case, numbers (:mod:`flowspeech.text.numbers`), the 18
    Tacotron abbreviations. Same output as the authors' code on ASCII text.
``"english"`` (default)
    ``"tacotron"`` plus: clock times, percentages, pound and euro amounts, ``&`` -> "and",
    a few more unambiguous abbreviations (vs., etc., prof., mt., approx., dept., e.g.,
    i.e.), and control characters removed. Text without those gets the Tacotron output.
``"vits"``
    The text half of VITS ``english_cleaners2``: ASCII, lower-case, the 18 abbreviations;
    numbers are left to espeak-ng, which reads them itself.
``"basic"``
    ASCII, lower-case (Tacotron ``transliteration_cleaners``).

Transliteration uses ``anyascii`` where the authors used ``unidecode``; the two agree on
accented Latin letters and common punctuation but differ on some symbols (``£`` is
``GBP`` in anyascii, ``PS`` in unidecode, so the Tacotron pound rule never fired there).
The ``"english"`` pipeline reads ``£`` and ``€`` amounts before transliterating.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from anyascii import anyascii

from flowspeech.errors import ConfigError
from flowspeech.text.numbers import expand_numbers

MODES = ("english", "tacotron", "vits", "basic")

# (abbreviation without its period, expansion), Tacotron english_cleaners. "misess" is
# the authors' spelling of "Mrs." and is kept so that token ids match.
TACOTRON_ABBREVIATIONS = (
    ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"),
    ("co", "company"), ("jr", "junior"), ("maj", "major"), ("gen", "general"),
    ("drs", "doctors"), ("rev", "reverend"), ("lt", "lieutenant"), ("hon", "honorable"),
    ("sgt", "sergeant"), ("capt", "captain"), ("esq", "esquire"), ("ltd", "limited"),
    ("col", "colonel"), ("ft", "fort"),
)  # fmt: skip
EXTRA_ABBREVIATIONS = (
    ("vs", "versus"), ("prof", "professor"), ("mt", "mount"), ("approx", "approximately"),
    ("dept", "department"), ("etc", "et cetera"), ("e.g", "for example"), ("i.e", "that is"),
)  # fmt: skip


# One pattern per abbreviation, applied in this order, as the authors do. (A single
# alternation would differ: "mrs.mr." becomes "misessmr." in sequence, because after the
# first expansion "mr." no longer starts at a word boundary.)
def _patterns(pairs) -> list[tuple[str, re.Pattern, str]]:
    return [(a + ".", re.compile(rf"\b{re.escape(a)}\."), e) for a, e in pairs]


_TACOTRON_RES = _patterns(TACOTRON_ABBREVIATIONS)
_EXTRA_RES = _patterns(EXTRA_ABBREVIATIONS)
_ETC_AT_END_RE = re.compile(r"\betc\.(\s*)$")

_WHITESPACE_RE = re.compile(r"\s+")
# Terminal escape sequences (CSI such as "\x1b[31m", OSC up to BEL or ST) and every other
# control character but whitespace: removed whole before anything else, so that "\x1b[31m"
# is not read as "thirty-one m".
_CONTROL_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]?"
                         r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# After transliteration: anything but printable ASCII and whitespace (control characters,
# NUL, DEL) can never be spoken.
_UNPRINTABLE_RE = re.compile(r"[^\x20-\x7e\s£€]+")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")


@lru_cache(maxsize=8192)
def _transliterate(char: str) -> str:
    out = anyascii(char)
    # anyascii names emoji (":grinning:"); unidecode, which the authors used, drops them,
    # and a name read aloud is not what the writer meant.
    if len(out) > 2 and out[0] == ":" and out[-1] == ":":
        return ""
    return out


def _transliterate_keep_currency(m: re.Match) -> str:
    char = m.group(0)
    return char if char in "£€" else _transliterate(char)


def to_ascii(text: str, keep_currency: bool = False) -> str:
    """Transliterate to ASCII with anyascii (``"Café — ½"`` -> ``"Cafe - 1/2"``); emoji are
    dropped.

    Args:
        text: any Unicode text.
        keep_currency: leave ``£`` and ``€`` as they are, for the amount rules.
    """
    if text.isascii():
        return text
    if keep_currency:
        return _NON_ASCII_RE.sub(_transliterate_keep_currency, text)
    return _NON_ASCII_RE.sub(lambda m: _transliterate(m.group(0)), text)


def strip_control(text: str) -> str:
    """``text`` without terminal escape sequences and control characters (whitespace kept)."""
    return _CONTROL_RE.sub("", text)


def describe_changes(text: str, limit: int = 5) -> list[str]:
    """What normalisation will do to ``text`` that its writer may not expect, one sentence
    each: control characters and escape sequences removed, letters of non-Latin scripts read
    through their Latin transliteration (``"中文"`` as ``"ZhongWen"``), characters dropped
    because nothing in them can be spoken (emoji). Empty for ordinary English text."""
    notes = []
    removed = _CONTROL_RE.findall(text)
    if removed:
        shown = ", ".join(repr(r) for r in removed[:limit])
        notes.append(f"removed {len(removed)} control character(s) or escape sequence(s): {shown}")
    text = strip_control(text)
    if text.isascii():
        return notes
    foreign, dropped = {}, []
    for char in dict.fromkeys(c for c in text if not c.isascii()):
        out = _transliterate(char)
        if not out.strip():
            if not char.isspace():
                dropped.append(char)
        elif unicodedata.category(char).startswith("L") and \
                not unicodedata.name(char, "").startswith("LATIN"):
            foreign[char] = out
    if foreign:
        shown = ", ".join(f"{c!r} as {t!r}" for c, t in list(foreign.items())[:limit])
        notes.append(f"read {len(foreign)} letter(s) of other scripts through their Latin "
                     f"transliteration, which is not their pronunciation: {shown}")
    if dropped:
        shown = ", ".join(repr(c) for c in dropped[:limit])
        notes.append(f"dropped {len(dropped)} character(s) that cannot be spoken: {shown}")
    return notes


def expand_abbreviations(text: str, extended: bool = False) -> str:
    """Expand ``mr.`` -> ``mister`` etc. in lower-case text (``extended`` adds vs., etc., ...)."""
    for needle, pattern, expansion in _TACOTRON_RES:
        if needle in text:  # a substring test is much cheaper than the regex
            text = pattern.sub(expansion, text)
    if extended:
        text = _ETC_AT_END_RE.sub(r"et cetera.\1", text)  # keep a sentence-final period
        for needle, pattern, expansion in _EXTRA_RES:
            if needle in text:
                text = pattern.sub(expansion, text)
    return text


def collapse_whitespace(text: str) -> str:
    """Replace each run of whitespace by one space (leading/trailing space is kept, as the
    authors' cleaner keeps it)."""
    return _WHITESPACE_RE.sub(" ", text)


def normalize_english(text: str, mode: str = "english") -> str:
    """Normalise English text for a speech model.

    Args:
        text: any Unicode text.
        mode: ``"english"``, ``"tacotron"``, ``"vits"`` or ``"basic"`` (see the module doc).

    Returns:
        Lower-case ASCII text (``"Dr. Smith paid $5."`` -> ``"doctor smith paid five
        dollars."``). It may be empty.
    """
    text = strip_control(text)
    if mode == "english":
        text = to_ascii(text, keep_currency=True)
        text = _UNPRINTABLE_RE.sub("", text).lower().replace("&", " and ")
        text = expand_numbers(text, extended=True)
        if "£" in text or "€" in text:  # a currency sign with no amount after it
            text = text.replace("£", " pounds ").replace("€", " euros ")
        text = expand_abbreviations(text, extended=True)
    elif mode == "tacotron":
        text = expand_numbers(to_ascii(text).lower(), extended=False)
        text = expand_abbreviations(text)
    elif mode == "vits":
        text = expand_abbreviations(to_ascii(text).lower())
    elif mode == "basic":
        text = to_ascii(text).lower()
    else:
        raise ConfigError(f"unknown normalizer {mode!r}; choose one of {', '.join(MODES)}")
    return collapse_whitespace(text)
