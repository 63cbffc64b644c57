"""Sup-phonemes: byte-pair-encoding units merged from phoneme sequences.

NaturalSpeech (Tan et al., 2022, Sec. 3.1) pre-trains its phoneme encoder with Mixed-Phoneme
BERT (Zhang et al., Interspeech 2022): the input of each position is the phoneme plus the
*sup-phoneme* it belongs to, where sup-phonemes are units learnt by byte-pair encoding
(Sennrich et al., 2016) over phoneme sequences, never across a word boundary. The papers use
a vocabulary of 30k units; a small corpus has fewer frequent pairs, so the learnt vocabulary
may come out smaller than asked for (``vocab_size`` reports what was learnt).

The merges are learnt by the HuggingFace ``tokenizers`` BPE trainer. Each phoneme id ``i``
is written as the private-use character ``U+E000 + i``, so a symbol that is several
characters long (``"@AA1"`` in the glow-tts set) is still one "letter" to BPE. Words are the
runs of phonemes between *word-boundary* ids (spaces and punctuation, see
:func:`word_boundary_ids`); each boundary is a unit of its own. A front end with
``add_blank`` puts a blank between all phonemes: blanks are left out for BPE and each one
joins the unit of the phoneme before it (a leading blank joins the first unit), so units
still cover the sequence end to end.

Sup-phoneme ids: 0 is ``[PAD]``, 1 is ``[UNK]`` (a phoneme BPE never saw), then the single
phonemes and the merged units. A model that needs a ``[MASK]`` id adds it after the last
one (see :class:`flowspeech.models.phoneme_encoder.MixedPhonemeLM`).

Example::

    >>> fe = TextFrontend(symbol_set="ipa", phonemizer="espeak")
    >>> corpus = [fe.encode(line) for line in lines]
    >>> sup = SupPhonemeTokenizer.train(corpus, 30000, word_boundary_ids(fe), n_phonemes=fe.n_vocab)
    >>> ids = fe.encode("Hello world.")
    >>> sup.sup_ids(ids)          # one sup-phoneme id per phoneme, len(ids) long
    >>> sup.spans(ids)            # [(start, end), ...] of each unit, covering 0..len(ids)
"""

from __future__ import annotations

import json
import operator
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import Tokenizer, models, trainers

from flowspeech.errors import CheckpointError, ConfigError, DatasetError, TextError
from flowspeech.text.symbols import symbol_to_id

PAD_ID = 0
UNK_ID = 1
#: The first id that stands for phonemes (ids below it are [PAD] and [UNK]).
FIRST_UNIT_ID = 2
SPECIAL_TOKENS = ("[PAD]", "[UNK]")
DEFAULT_VOCAB_SIZE = 30000

_FORMAT = "flowspeech-sup-phonemes"
_VERSION = 1
_PUA_START = 0xE000
_PUA_SIZE = 0x1900  # U+E000..U+F8FF: ids 0..6399
_MAX_CACHED_WORDS = 1_000_000  # words whose units are remembered between calls


def word_boundary_ids(frontend) -> list[int]:
    """Ids of the symbols that separate words in ``frontend``'s symbol set: the space, the
    punctuation and the pad (Unicode categories P* and Z*), but not the apostrophe, which is
    part of words (``"it's"``) and an IPA letter in the ``"ipa"`` set.

    Args:
        frontend: a :class:`flowspeech.text.TextFrontend`.

    Returns:
        Sorted ids; an interspersed blank is *not* among them (pass it as ``blank_id``).
    """

    ids = set()
    for symbol, i in symbol_to_id(frontend.symbols).items():
        if len(symbol) == 1 and symbol != "'" and unicodedata.category(symbol)[0] in "PZ":
            ids.add(i)
    return sorted(ids)


def frontend_blank_id(frontend) -> int | None:
    """The blank id ``frontend`` intersperses, or None without ``add_blank``."""
    return frontend.blank_id if frontend.add_blank else None


def _check_ids(seq: Any, where: str) -> list[int]:
    if hasattr(seq, "tolist"):  # tensors, arrays
        seq = seq.tolist()
    if isinstance(seq, (str, bytes)) or not hasattr(seq, "__iter__"):
        raise TextError(f"{where}: expected a sequence of phoneme ids, got {type(seq).__name__}")
    out = []
    for item in seq:
        try:
            i = operator.index(item)
        except TypeError:
            raise TextError(f"{where}: phoneme ids must be integers, got {item!r}") from None
        if not 0 <= i < _PUA_SIZE:
            raise TextError(f"{where}: phoneme id {i} is outside 0..{_PUA_SIZE - 1}")
        out.append(i)
    return out


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _char(i: int) -> str:
    return chr(_PUA_START + i)


class SupPhonemeTokenizer:
    """Splits phoneme-id sequences into sup-phoneme units (BPE within words).

    Build one with :meth:`train` or :meth:`from_json`; the constructor takes an already
    trained ``tokenizers.Tokenizer``.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` with a BPE model over private-use characters.
        word_boundary_ids: phoneme ids that end a word (each is a unit of its own).
        blank_id: the interspersed blank id, or None.
        n_phonemes: size of the phoneme vocabulary the tokenizer was trained for, or None.
        target_vocab_size: the vocabulary size that was asked for in :meth:`train`.
    """

    def __init__(self, tokenizer, word_boundary_ids: Iterable[int] = (),
                 blank_id: int | None = None, n_phonemes: int | None = None,
                 target_vocab_size: int | None = None):
        self._tok = tokenizer
        self.word_boundary_ids = tuple(sorted(set(int(i) for i in word_boundary_ids)))
        self._boundaries = frozenset(self.word_boundary_ids)
        self.blank_id = None if blank_id is None else int(blank_id)
        self.n_phonemes = None if n_phonemes is None else int(n_phonemes)
        self.target_vocab_size = None if target_vocab_size is None else int(target_vocab_size)
        self._cache: dict[str, list[tuple[int, int]]] = {}

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, phoneme_id_sequences: Iterable[Sequence[int]],
              vocab_size: int = DEFAULT_VOCAB_SIZE, word_boundary_ids: Iterable[int] = (), *,
              n_phonemes: int | None = None, blank_id: int | None = None,
              min_frequency: int = 2) -> SupPhonemeTokenizer:
        """Learn BPE merges over the words of ``phoneme_id_sequences``.

        Args:
            phoneme_id_sequences: token-id lists as :meth:`TextFrontend.encode` returns them.
            vocab_size: the most units to learn, counting ``[PAD]``, ``[UNK]`` and the single
                phonemes (30000 in NaturalSpeech/Mixed-Phoneme BERT). A small corpus yields
                fewer: merging stops when no pair occurs ``min_frequency`` times.
            word_boundary_ids: ids that separate words (:func:`word_boundary_ids`); no unit
                spans one.
            n_phonemes: when given, every id ``0..n_phonemes-1`` gets a unit of its own even
                if the corpus lacks it, so no phoneme of the front end maps to ``[UNK]``.
            blank_id: an interspersed blank id to look through (``add_blank`` front ends).
            min_frequency: the fewest occurrences of a pair worth a merge.

        Raises:
            ConfigError: ``vocab_size``, ``n_phonemes`` or ``min_frequency`` is invalid.
            DatasetError: the corpus holds no phonemes.
            TextError: a sequence holds something other than ids in ``0..6399``.
        """
        if not _positive_int(vocab_size):
            raise ConfigError(f"the sup-phoneme vocabulary size must be a positive integer, "
                              f"got {vocab_size!r}")
        if n_phonemes is not None and not (_positive_int(n_phonemes) and n_phonemes <= _PUA_SIZE):
            raise ConfigError(f"n_phonemes must be an integer in 1..{_PUA_SIZE}, "
                              f"got {n_phonemes!r}")
        if not _positive_int(min_frequency):
            raise ConfigError(f"min_frequency must be a positive integer, got {min_frequency!r}")
        boundaries = frozenset(int(i) for i in word_boundary_ids)
        splitter = cls(None, boundaries, blank_id)
        words: list[str] = []
        alphabet: set[int] = set(range(n_phonemes)) if n_phonemes is not None else set()
        for n, seq in enumerate(phoneme_id_sequences):
            ids = _check_ids(seq, f"sequence {n}")
            for piece in splitter._pieces(ids):
                word = "".join(_char(ids[p]) for p in piece)
                words.append(word)
                alphabet.update(ids[p] for p in piece)
        if not words:
            raise DatasetError("cannot learn sup-phonemes from an empty corpus: no sequence "
                               "holds a phoneme (check the text file and the front end)")
        tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[UNK_ID]))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
            special_tokens=list(SPECIAL_TOKENS), limit_alphabet=len(alphabet),
            initial_alphabet=[_char(i) for i in sorted(alphabet)])
        # No pre-tokenizer: each word is its own training sequence, so no merge can cross a
        # word boundary.
        tokenizer.train_from_iterator(words, trainer=trainer, length=len(words))
        return cls(tokenizer, boundaries, blank_id, n_phonemes, vocab_size)

    # ------------------------------------------------------------------ encoding

    @property
    def vocab_size(self) -> int:
        """Number of sup-phoneme ids (``[PAD]``, ``[UNK]``, single phonemes and merged
        units); valid ids are ``0..vocab_size-1``."""
        return self._tok.get_vocab_size()

    def units(self, phoneme_ids: Sequence[int]) -> list[tuple[int, int, int]]:
        """``[(start, end, sup_id), ...]``: the units of one sequence, in order, covering
        positions ``0..len(phoneme_ids)`` without gaps (``end`` is exclusive)."""
        return self.units_batch([phoneme_ids])[0]

    def units_batch(self, sequences: Iterable[Sequence[int]]) -> list[list[tuple[int, int, int]]]:
        """:meth:`units` of many sequences at once (one call into the BPE encoder)."""
        checked = [_check_ids(seq, f"sequence {n}") for n, seq in enumerate(sequences)]
        pieces = [self._pieces(ids) for ids in checked]
        todo = sorted({self._word(ids, piece) for ids, ps in zip(checked, pieces) for piece in ps}
                      - self._cache.keys())
        if todo:
            if len(self._cache) > _MAX_CACHED_WORDS:
                self._cache.clear()
            for word, enc in zip(todo, self._tok.encode_batch(todo, add_special_tokens=False)):
                self._cache[word] = [(end - start, tid)
                                     for tid, (start, end) in zip(enc.ids, enc.offsets)]
        out = []
        for ids, ps in zip(checked, pieces):
            starts: list[int] = []
            sup: list[int] = []
            for piece in ps:
                k = 0
                for size, tid in self._cache[self._word(ids, piece)]:
                    starts.append(piece[k])
                    sup.append(tid)
                    k += size
            if not starts:  # empty, or blanks only
                out.append([(0, len(ids), UNK_ID)] if ids else [])
                continue
            starts[0] = 0  # leading blanks join the first unit
            ends = starts[1:] + [len(ids)]  # each blank joins the unit before it
            out.append(list(zip(starts, ends, sup)))
        return out

    def sup_ids(self, phoneme_ids: Sequence[int]) -> list[int]:
        """One sup-phoneme id per phoneme (the id of the unit containing it): a list as long
        as ``phoneme_ids``."""
        out: list[int] = []
        for start, end, sup in self.units(phoneme_ids):
            out.extend([sup] * (end - start))
        return out

    def sup_ids_padded(self, tokens, lengths):
        """:meth:`sup_ids` of every row of a padded batch: ``tokens`` ``[B, L]`` and
        ``lengths`` ``[B]`` (torch) give ``[B, L]`` long, 0 (``[PAD]``) past each length."""

        sup = tokens.new_zeros(tokens.shape)  # (no torch import here: the ONNX runtime reads this module)
        for i, n in enumerate(lengths.tolist()):
            sup[i, :n] = tokens.new_tensor(self.sup_ids(tokens[i, :n].tolist()))
        return sup

    def spans(self, phoneme_ids: Sequence[int]) -> list[tuple[int, int]]:
        """``[(start, end), ...]`` of each unit (the structure masking works on)."""
        return [(start, end) for start, end, _ in self.units(phoneme_ids)]

    def unit_phonemes(self, sup_id: int) -> tuple[int, ...]:
        """The phoneme ids a sup-phoneme id stands for (empty for ``[PAD]``/``[UNK]``)."""
        token = self._tok.id_to_token(int(sup_id))
        if token is None:
            raise TextError(f"sup-phoneme id {sup_id} is out of range (0..{self.vocab_size - 1})")
        if sup_id < FIRST_UNIT_ID:
            return ()
        return tuple(ord(c) - _PUA_START for c in token)

    def unit_id(self, phoneme_ids: Sequence[int]) -> int | None:
        """The sup-phoneme id of exactly this phoneme run, or None if it is not a unit."""
        ids = _check_ids(phoneme_ids, "unit_id")
        return self._tok.token_to_id("".join(_char(i) for i in ids)) if ids else None

    # ------------------------------------------------------------------ storage

    def to_json(self) -> str:
        """Everything needed to rebuild this tokenizer, as one JSON string (stored inside
        checkpoints under ``inference.sup_phoneme_tokenizer``)."""
        return json.dumps({
            "format": _FORMAT, "version": _VERSION,
            "word_boundary_ids": list(self.word_boundary_ids), "blank_id": self.blank_id,
            "n_phonemes": self.n_phonemes, "target_vocab_size": self.target_vocab_size,
            "tokenizer": self._tok.to_str(),
        }, ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str) -> SupPhonemeTokenizer:
        """Rebuild a tokenizer from :meth:`to_json` output.

        Raises:
            CheckpointError: the string is not a sup-phoneme tokenizer written by
                :meth:`to_json` (corrupt, or from a newer flowspeech).
        """
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"the sup-phoneme tokenizer is not valid JSON ({err}); the "
                                  "checkpoint or file holding it is corrupt") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise CheckpointError("this JSON is not a flowspeech sup-phoneme tokenizer (it was not "
                                  "written by SupPhonemeTokenizer.to_json)")
        if data.get("version", 0) > _VERSION:
            raise CheckpointError(f"the sup-phoneme tokenizer has format version "
                                  f"{data['version']}; this flowspeech reads up to {_VERSION}: "
                                  "upgrade flowspeech")
        try:
            tokenizer = Tokenizer.from_str(data["tokenizer"])
            return cls(tokenizer, data["word_boundary_ids"], data.get("blank_id"),
                       data.get("n_phonemes"), data.get("target_vocab_size"))
        except Exception as err:  # tokenizers raises its own Exception type
            raise CheckpointError(f"the sup-phoneme tokenizer cannot be rebuilt: {err}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SupPhonemeTokenizer) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return (f"SupPhonemeTokenizer(vocab_size={self.vocab_size}, "
                f"word_boundary_ids={list(self.word_boundary_ids)}, blank_id={self.blank_id})")

    # ------------------------------------------------------------------ internals

    def _pieces(self, ids: list[int]) -> list[list[int]]:
        """Positions of each word (a run of non-boundary phonemes) and of each boundary, in
        order; blank positions are left out."""
        pieces: list[list[int]] = []
        word: list[int] = []
        for p, i in enumerate(ids):
            if i == self.blank_id:
                continue
            if i in self._boundaries:
                if word:
                    pieces.append(word)
                    word = []
                pieces.append([p])
            else:
                word.append(p)
        if word:
            pieces.append(word)
        return pieces

    @staticmethod
    def _word(ids: list[int], piece: list[int]) -> str:
        return "".join(_char(ids[p]) for p in piece)
