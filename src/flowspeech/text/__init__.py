"""The text front end: English normalisation, ARPAbet (CMUdict) and IPA (espeak-ng)
phonemes, and the symbol tables of Glow-TTS and VITS/NaturalSpeech.

Importing this package is cheap: the CMU dictionary, ``inflect`` and ``phonemizer`` are
loaded the first time they are needed. See ``docs/text.md``.
"""

from __future__ import annotations

from flowspeech.text.frontend import TextFrontend
from flowspeech.text.normalize import normalize_english
from flowspeech.text.sentences import split_sentences
from flowspeech.text.symbols import (
    ARPABET,
    GLOW_TTS_SYMBOLS,
    IPA_SYMBOLS,
    SYMBOL_SETS,
    intersperse,
)

__all__ = [
    "ARPABET",
    "GLOW_TTS_SYMBOLS",
    "IPA_SYMBOLS",
    "SYMBOL_SETS",
    "TextFrontend",
    "intersperse",
    "normalize_english",
    "split_sentences",
]
