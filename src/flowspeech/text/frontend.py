"""``TextFrontend``: text in, token ids out, the same way at training and at inference.

Pipelines (``symbol_set`` / ``phonemizer``):

``"glow-tts"`` / ``"cmudict"`` (Glow-TTS, Kim et al. 2020)
    Reproduces the authors' ``text_to_sequence(text, ["english_cleaners"], cmudict)``
    (github.com/jaywalnut310/glow-tts ``text/__init__.py``) token for token:

    1. Text in curly braces is an inline pronunciation, ``{HH AH0 L OW1}``. The text
       before each brace group is normalised and spelled as *characters* (no dictionary
       lookup); the group's phones follow as ``@`` symbols.
    2. The text after the last group is normalised, split on single spaces, and each
       piece looked up in CMUdict *as is*: a piece carrying punctuation (``"world."``,
       ``"hello,"``) or a hyphen (``"twenty-five"``) is usually not found and is spelled
       as characters. Every piece is followed by a space.
    3. One trailing space is removed (only one: ``"hi "`` ends in a space).

    Characters outside the symbol set are dropped; ``_`` (the pad) is never emitted.
    ``split_punctuation=True`` departs from the authors in one place: a piece that is not
    found is split into words and punctuation, so ``"world."`` becomes
    ``{W ER1 L D}`` and ``.`` (better for new models; it changes the ids).
``"glow-tts"`` / ``"none"``
    The same without the dictionary (the authors' code with ``dictionary=None``): the
    normalised text as characters, brace groups still honoured, no trailing-space rule.
``"ipa"`` / ``"espeak"`` (VITS, Kim et al. 2021; NaturalSpeech, Tan et al. 2022)
    Normalise, phonemize with espeak-ng (stress marks and punctuation kept), collapse
    whitespace, map each character to its id: VITS ``english_cleaners2`` with
    ``cleaned_text_to_sequence``. Characters outside the set are dropped (VITS failed with
    a ``KeyError`` there). ``normalizer="vits"`` gives exactly the VITS text; the default
    also expands numbers before espeak sees them.
``"ipa"`` / ``"none"``
    The normalised text as characters of the IPA set (its letters and punctuation).

``add_blank`` intersperses a blank id (:func:`flowspeech.text.symbols.intersperse`). The
default blank is the convention of the symbol set's model: ``len(symbols)`` (148, a new
id) for ``"glow-tts"`` as in Glow-TTS ``base_blank``, 0 (the pad) for ``"ipa"`` as in
VITS. Either may be chosen with ``blank_id``.
"""

from __future__ import annotations

import difflib
import operator
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowspeech.errors import ConfigError, TextError
from flowspeech.text import normalize as _norm
from flowspeech.text.arpabet import Pronunciations, load_cmudict, parse_arpabet
from flowspeech.text.phonemize import espeak_phonemize
from flowspeech.text.symbols import ARPABET, PAD, SYMBOL_SETS, intersperse, symbol_to_id

PHONEMIZERS = ("cmudict", "espeak", "none")
BLANK_TOKEN = "<blank>"  # how tokens() shows an interspersed blank
DEFAULT_MAX_CHARS = 1000

_BRACE_RE = re.compile(r"\{([^{}]*)\}")
# A word that CMUdict lacks is split into runs of letters/apostrophes and the rest
# (split_punctuation=True only).
_PIECE_RE = re.compile(r"[a-z']+|[^a-z']+")
# Symbols that carry no sound: a text made only of these is "empty".
_SILENT = frozenset(";:,.!?¡¿—…\"«»“”'()- ")
# Written words: a brace pronunciation is one word; otherwise runs of non-space characters.
_WRITTEN_RE = re.compile(r"\{[^{}]*\}|[^\s{}]+")


@dataclass(frozen=True)
class WrittenWord:
    """A word as written in the input (``"$5"``, ``"world!"``) and where it is in it."""

    text: str
    start: int  # character offsets in the text given to TextFrontend.word_tokens
    end: int

_DEFAULT_PHONEMIZER = {"glow-tts": "cmudict", "ipa": "espeak"}


class TextFrontend:
    """Normalisation, phonemization and the symbol table of one model.

    Args:
        symbol_set: ``"glow-tts"`` (148 symbols: characters + ``@``ARPAbet) or ``"ipa"``
            (178 symbols, VITS/NaturalSpeech).
        phonemizer: ``"cmudict"`` (ARPAbet, glow-tts set only), ``"espeak"`` (IPA, ipa set
            only) or ``"none"`` (characters). Default: ``"cmudict"`` for glow-tts,
            ``"espeak"`` for ipa.
        add_blank: intersperse a blank id between all tokens and at both ends.
        blank_id: the blank id; default ``len(symbols)`` for glow-tts, 0 for ipa. Only 0
            (the pad) and ``len(symbols)`` (a new id) are allowed.
        language: espeak-ng voice for ``"espeak"``; CMUdict is English (``"en-*"``) only.
        normalizer: ``"english"``, ``"tacotron"``, ``"vits"`` or ``"basic"``
            (:func:`flowspeech.text.normalize.normalize_english`).
        split_punctuation: with ``"cmudict"``, look words up with their punctuation split
            off (differs from the authors; see the module doc).
        cmudict_path: a CMUdict-format file to use instead of the ``cmudict`` package data,
            e.g. the Glow-TTS repository's ``data/cmu_dictionary`` for its exact ids.
        max_chars: longest accepted input; longer text raises :class:`TextError`.

    Example::

        >>> fe = TextFrontend()                      # Glow-TTS: characters + ARPAbet
        >>> fe.phonemize("Hello world.")
        '{HH AH0 L OW1} world.'
        >>> fe.encode("Hi")                          # {HH AY1}
        [106, 86]
    """

    def __init__(
        self,
        symbol_set: str = "glow-tts",
        phonemizer: str | None = None,
        add_blank: bool = False,
        blank_id: int | None = None,
        language: str = "en-us",
        normalizer: str = "english",
        split_punctuation: bool = False,
        cmudict_path: str | os.PathLike | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        if not isinstance(symbol_set, str) or symbol_set not in SYMBOL_SETS:
            raise ConfigError(f"unknown symbol_set {symbol_set!r}; choose 'glow-tts' or 'ipa'")
        if phonemizer is None:
            phonemizer = _DEFAULT_PHONEMIZER[symbol_set]
        if phonemizer not in PHONEMIZERS:
            raise ConfigError(
                f"unknown phonemizer {phonemizer!r}; choose one of {', '.join(PHONEMIZERS)}"
            )
        if phonemizer == "espeak" and symbol_set != "ipa":
            raise ConfigError("phonemizer='espeak' produces IPA: use symbol_set='ipa'")
        if phonemizer == "cmudict" and symbol_set != "glow-tts":
            raise ConfigError("phonemizer='cmudict' produces ARPAbet: use symbol_set='glow-tts'")
        if normalizer not in _norm.MODES:
            raise ConfigError(
                f"unknown normalizer {normalizer!r}; choose one of {', '.join(_norm.MODES)}"
            )
        if not isinstance(language, str) or not language:
            raise ConfigError(f"language must be an espeak-ng voice name, got {language!r}")
        if phonemizer == "cmudict" and not language.lower().startswith("en"):
            raise ConfigError(f"CMUdict is English only; language {language!r} needs "
                              "symbol_set='ipa', phonemizer='espeak'")
        if not isinstance(add_blank, bool):
            raise ConfigError(f"add_blank must be true or false, got {add_blank!r}")
        if not isinstance(split_punctuation, bool):
            raise ConfigError(
                f"split_punctuation must be true or false, got {split_punctuation!r}"
            )
        if split_punctuation and phonemizer != "cmudict":
            raise ConfigError("split_punctuation applies to phonemizer='cmudict' only")
        if cmudict_path is not None and phonemizer != "cmudict":
            raise ConfigError("cmudict_path applies to phonemizer='cmudict' only")
        if cmudict_path is not None and not isinstance(cmudict_path, (str, os.PathLike)):
            raise ConfigError(f"cmudict_path must be a file path, got {cmudict_path!r}")
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise ConfigError(f"max_chars must be a positive integer, got {max_chars!r}")

        self.symbols: tuple[str, ...] = SYMBOL_SETS[symbol_set]
        if add_blank:
            if blank_id is None:
                blank_id = len(self.symbols) if symbol_set == "glow-tts" else 0
            if type(blank_id) is not int or blank_id not in (0, len(self.symbols)):
                raise ConfigError(
                    f"blank_id must be 0 (the pad, as VITS) or {len(self.symbols)} (a new id, "
                    f"as Glow-TTS), got {blank_id!r}"
                )
        elif blank_id is not None:
            raise ConfigError("blank_id is set but add_blank is false")

        self.symbol_set = symbol_set
        self.phonemizer = phonemizer
        self.add_blank = add_blank
        self.blank_id = blank_id
        self.language = language
        self.normalizer = normalizer
        self.split_punctuation = split_punctuation
        self.cmudict_path = None if cmudict_path is None else os.fspath(cmudict_path)
        self.max_chars = max_chars

        self._ids = symbol_to_id(self.symbols)
        self._chars = frozenset(s for s in self.symbols if len(s) == 1 and s != PAD)
        self._arpabet = {p: "@" + p for p in ARPABET}
        self._dict: Pronunciations | None = None  # loaded on first use

    # ------------------------------------------------------------------ public API

    @property
    def n_vocab(self) -> int:
        """Size of the model's embedding table: the symbols, plus one for a new blank id."""
        return len(self.symbols) + int(self.add_blank and self.blank_id == len(self.symbols))

    def normalize(self, text: str) -> str:
        """Normalised text (brace groups kept verbatim), e.g. ``"Dr. {D AA1 K} 5"`` ->
        ``"doctor {D AA1 K} five"``."""
        self._check(text)
        if self.symbol_set != "glow-tts":
            return self._normalize(text)
        out = []
        for before, phones in self._brace_segments(text):
            out.append(self._normalize(before))
            if phones is not None:
                out.append("{" + " ".join(phones) + "}")
        return "".join(out)

    def phonemize(self, text: str) -> str:
        """What the model reads, human-readable: ARPAbet in braces for glow-tts
        (``"{HH AH0 L OW1} world."``), IPA for ipa. Equals ``decode(encode(text))``."""
        return self._render(self._symbols(text))

    def tokens(self, text: str) -> list[str]:
        """The symbols of ``encode(text)``, one per id (blanks shown as ``<blank>``)."""
        symbols = self._symbols(text)
        return intersperse(symbols, BLANK_TOKEN) if self.add_blank else symbols

    def encode(self, text: str) -> list[int]:
        """Token ids, ready for the model's embedding, e.g. ``[87, 100]`` for ``"Hi"``.

        Raises:
            TextError: the text is not a string, is longer than ``max_chars``, has nothing
                to say after normalisation, holds an invalid brace pronunciation, or
                espeak-ng is missing (``"espeak"``).
        """
        ids = [self._ids[s] for s in self._symbols(text)]
        return intersperse(ids, self.blank_id) if self.add_blank else ids

    def word_tokens(self, text: str) -> tuple[list[WrittenWord], list[int | None]]:
        """The written words of ``text`` and, for every token of :meth:`encode`, the word it
        belongs to (an index into the words; None for spaces and for blanks between words).

        Normalisation changes words (``"$5"`` is said ``"five dollars"``, ``"3:30 pm"``
        ``"three thirty p.m."``), so each written word is put through the front end on its
        own and its symbols are aligned with the sentence's (``difflib``); a symbol the
        alignment leaves unmatched joins the word before it. What a model says for a token
        thus maps back to the word the user wrote: timestamps and highlighting use this.
        """
        symbols = self._symbols(text)
        words = [WrittenWord(m.group(0), m.start(), m.end()) for m in _WRITTEN_RE.finditer(text)]
        pieces: list[str] = []
        labels: list[int | None] = []
        for index, word in enumerate(words):
            try:
                own = self._symbols(word.text)
            except TextError:  # a word with nothing to say on its own ("-", "...")
                own = []
            if pieces and own:
                pieces.append(" ")
                labels.append(None)
            pieces += own
            labels += [index] * len(own)
        per_symbol: list[int | None] = [None] * len(symbols)
        matcher = difflib.SequenceMatcher(None, symbols, pieces, autojunk=False)
        for a, b, size in matcher.get_matching_blocks():
            per_symbol[a:a + size] = labels[b:b + size]
        last = None
        for k, symbol in enumerate(symbols):  # unmatched symbols join the word before them
            if symbol == " ":
                per_symbol[k] = None
            elif per_symbol[k] is None:
                per_symbol[k] = last if last is not None else next(
                    (w for w in per_symbol[k + 1:] if w is not None), None)
            last = per_symbol[k] if per_symbol[k] is not None else last
        if not self.add_blank:
            return words, per_symbol
        tokens: list[int | None] = []
        for k, label in enumerate(per_symbol):  # a blank between two tokens of one word is in it
            before = per_symbol[k - 1] if k else None
            tokens.append(label if before == label else None)
            tokens.append(label)
        tokens.append(None)
        return words, tokens

    def decode(self, ids) -> str:
        """Text for a sequence of ids (a list, or a 1-D tensor/array on any device).

        Blanks and pads are skipped; ARPAbet comes back in braces, as the authors'
        ``sequence_to_text`` writes it.
        """
        if hasattr(ids, "tolist"):  # torch tensors (CPU or CUDA), numpy arrays
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
            raise TextError(f"decode takes a sequence of token ids, got {type(ids).__name__}")
        symbols = []
        n_symbols = len(self.symbols)
        for item in ids:
            try:
                i = operator.index(item)
            except TypeError:
                raise TextError(f"token ids must be integers, got {item!r}") from None
            if not 0 <= i < self.n_vocab:
                raise TextError(
                    f"token id {i} is out of range for this front end (0..{self.n_vocab - 1}); "
                    "was the model trained with another symbol set or add_blank setting?"
                )
            if (self.add_blank and i == self.blank_id) or i >= n_symbols:
                continue
            if self.symbols[i] != PAD:
                symbols.append(self.symbols[i])
        return self._render(symbols)

    def to_dict(self) -> dict[str, Any]:
        """Plain options (JSON/YAML-safe) that rebuild this front end with :meth:`from_dict`."""
        return {
            "symbol_set": self.symbol_set,
            "phonemizer": self.phonemizer,
            "add_blank": self.add_blank,
            "blank_id": self.blank_id,
            "language": self.language,
            "normalizer": self.normalizer,
            "split_punctuation": self.split_punctuation,
            "cmudict_path": self.cmudict_path,
            "max_chars": self.max_chars,
        }

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> TextFrontend:
        """Rebuild a front end from :meth:`to_dict` output (missing keys take defaults).

        Raises:
            ConfigError: ``options`` is not a mapping, has unknown keys or bad values.
        """
        if not isinstance(options, Mapping):
            raise ConfigError(
                f"text front-end options must be a mapping, got {type(options).__name__}"
            )
        known = cls.option_names()
        unknown = sorted(str(k) for k in options if k not in known)
        if unknown:
            raise ConfigError(
                f"unknown text front-end option(s) {', '.join(unknown)}; "
                f"valid options are {', '.join(known)}"
            )
        return cls(**options)

    @staticmethod
    def option_names() -> tuple[str, ...]:
        return ("symbol_set", "phonemizer", "add_blank", "blank_id", "language",
                "normalizer", "split_punctuation", "cmudict_path", "max_chars")

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers and multiprocessing pickle the front end: leave the 23 MB
        # dictionary out, each process loads (and caches) its own on first use.
        state = self.__dict__.copy()
        state["_dict"] = None
        return state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextFrontend) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"TextFrontend({args})"

    # ------------------------------------------------------------------ internals

    def _check(self, text: str) -> None:
        if not isinstance(text, str):
            raise TextError(f"text must be a str, got {type(text).__name__}")
        if len(text) > self.max_chars:
            raise TextError(
                f"text too long: {len(text)} characters, the limit is {self.max_chars}; "
                "split it with flowspeech.text.split_sentences"
            )

    def _normalize(self, text: str) -> str:
        return _norm.normalize_english(text, self.normalizer)

    def _symbols(self, text: str) -> list[str]:
        self._check(text)
        if self.symbol_set == "glow-tts":
            symbols = self._glow_tts_symbols(text)
        else:
            symbols = self._ipa_symbols(text)
        if all(s in _SILENT for s in symbols):
            shown = text if len(text) <= 60 else text[:57] + "..."
            raise TextError(
                f"text is empty after normalisation: {shown!r} has no letters or phonemes "
                "that this front end can represent"
            )
        return symbols

    @staticmethod
    def _brace_segments(text: str) -> list[tuple[str, list[str] | None]]:
        """``[(text before a group, its phones), ..., (text after the last group, None)]``;
        the last pair only when that text is not empty (as the authors' loop)."""
        segments: list[tuple[str, list[str] | None]] = []
        pos = 0
        for m in _BRACE_RE.finditer(text):
            segments.append((text[pos : m.start()], parse_arpabet(m.group(1))))
            pos = m.end()
        if pos < len(text):
            segments.append((text[pos:], None))
        return segments

    def _glow_tts_symbols(self, text: str) -> list[str]:
        use_dict = self.phonemizer == "cmudict"
        chars = self._chars
        out: list[str] = []
        for before, phones in self._brace_segments(text):
            cleaned = self._normalize(before)
            if phones is not None:
                # text before a brace group is spelled, never looked up (authors' rule)
                out += [c for c in cleaned if c in chars]
                out += [self._arpabet[p] for p in phones]
            elif use_dict:
                for word in cleaned.split(" "):
                    out += self._word_symbols(word)
                    out.append(" ")
            else:
                out += [c for c in cleaned if c in chars]
        if use_dict and out and out[-1] == " ":
            out.pop()  # the authors remove one trailing space
        return out

    def _word_symbols(self, word: str) -> list[str]:
        if self._dict is None:
            self._dict = load_cmudict(self.cmudict_path)
        pron = self._dict.get(word)
        if pron is not None:
            return [self._arpabet[p] for p in pron]
        if not self.split_punctuation:
            return [c for c in word if c in self._chars]
        out: list[str] = []
        for piece in _PIECE_RE.findall(word):
            pron = self._dict.get(piece)
            if pron is None and piece[0] in "'abcdefghijklmnopqrstuvwxyz":
                core = piece.strip("'")
                pron = self._dict.get(core) if core else None
                if pron is not None:  # quotes around a known word: 'hello'
                    lead = len(piece) - len(piece.lstrip("'"))
                    trail = len(piece) - len(piece.rstrip("'"))
                    out += ["'"] * lead + [self._arpabet[p] for p in pron] + ["'"] * trail
                    continue
            if pron is not None:
                out += [self._arpabet[p] for p in pron]
            else:
                out += [c for c in piece if c in self._chars]
        return out

    def _ipa_symbols(self, text: str) -> list[str]:
        if _BRACE_RE.search(text):
            raise TextError("ARPAbet pronunciations in braces need symbol_set='glow-tts'; "
                            "remove the braces or switch the symbol set")
        cleaned = self._normalize(text)
        if self.phonemizer == "espeak":
            cleaned = _norm.collapse_whitespace(espeak_phonemize(cleaned, self.language))
        return [c for c in cleaned if c in self._chars]

    def _render(self, symbols: list[str]) -> str:
        if self.symbol_set != "glow-tts":
            return "".join(symbols)
        # ARPAbet in braces, adjacent groups merged: Glow-TTS sequence_to_text
        text = "".join("{" + s[1:] + "}" if s[0] == "@" else s for s in symbols)
        return text.replace("}{", " ")
