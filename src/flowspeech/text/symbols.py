"""Symbol tables: the token inventories of the published models, id for id.

Two sets are defined, each exactly as the authors' ``text/symbols.py`` builds it, so that
an embedding table imported from their checkpoints lines up row for row:

* ``"glow-tts"`` (Kim et al. 2020, github.com/jaywalnut310/glow-tts; inherited from
  keithito/tacotron): pad ``_``, special ``-``, punctuation ``!'(),.:;?`` and space, the
  letters ``A-Z a-z``, then the 84 ARPAbet phones of CMUdict, each prefixed with ``@`` so
  that ``@AA`` cannot collide with the letters ``A``. 148 symbols.
* ``"ipa"`` (Kim et al. 2021, VITS, github.com/jaywalnut310/vits; NaturalSpeech uses the
  same inventory): pad ``_``, punctuation ``;:,.!?¡¿—…"«»“”`` and space, ``A-Z a-z``, then
  IPA letters and diacritics as produced by espeak-ng. 178 symbols.

The VITS IPA string contains the apostrophe twice (``'̩'``: apostrophe, combining
vertical line below, apostrophe). The authors map symbols to ids with
``{s: i for i, s in enumerate(symbols)}``, so the later position wins;
:func:`symbol_to_id` keeps that rule. Both ids decode back to ``'``.

"Add blank" (Glow-TTS ``base_blank``, VITS ``add_blank``) puts a blank id between all
tokens and at both ends (:func:`intersperse`). The two papers' code choose different
blank ids: Glow-TTS uses ``len(symbols)`` = 148, a new id (so ``n_vocab`` = 149), VITS
uses 0, the pad (``n_vocab`` stays 178).
"""

from __future__ import annotations

from collections.abc import Sequence

PAD = "_"

# CMUdict's phone set with lexical stress (keithito/tacotron text/cmudict.py order; the
# Glow-TTS embedding rows 64..147 follow this order).
ARPABET: tuple[str, ...] = (
    "AA", "AA0", "AA1", "AA2", "AE", "AE0", "AE1", "AE2", "AH", "AH0", "AH1", "AH2",
    "AO", "AO0", "AO1", "AO2", "AW", "AW0", "AW1", "AW2", "AY", "AY0", "AY1", "AY2",
    "B", "CH", "D", "DH", "EH", "EH0", "EH1", "EH2", "ER", "ER0", "ER1", "ER2", "EY",
    "EY0", "EY1", "EY2", "F", "G", "HH", "IH", "IH0", "IH1", "IH2", "IY", "IY0", "IY1",
    "IY2", "JH", "K", "L", "M", "N", "NG", "OW", "OW0", "OW1", "OW2", "OY", "OY0",
    "OY1", "OY2", "P", "R", "S", "SH", "T", "TH", "UH", "UH0", "UH1", "UH2", "UW",
    "UW0", "UW1", "UW2", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
ARPABET_SET = frozenset(ARPABET)

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

GLOW_TTS_SYMBOLS: tuple[str, ...] = (
    (PAD, "-") + tuple("!'(),.:;? ") + tuple(_LETTERS) + tuple("@" + p for p in ARPABET)
)

_IPA_PUNCTUATION = ';:,.!?¡¿—…"«»“” '
# VITS text/symbols.py `_letters_ipa`; the combining mark U+0329 is written as an escape
# so that it is visible, it sits between two apostrophes exactly as in the original.
_IPA_LETTERS = (
    "ɑɐɒæɓʙβɔɕçɗɖðʤəɘɚɛɜɝɞɟʄɡɠɢʛɦɧħɥʜɨɪʝɭɬɫɮʟɱɯɰŋɳɲɴøɵɸθœɶʘɹɺɾɻʀʁɽʂʃʈʧʉʊʋⱱʌɣɤʍχʎʏʑʐʒ"
    "ʔʡʕʢǀǁǂǃˈˌːˑʼʴʰʱʲʷˠˤ˞↓↑→↗↘'\u0329'ᵻ"
)
IPA_SYMBOLS: tuple[str, ...] = (
    (PAD,) + tuple(_IPA_PUNCTUATION) + tuple(_LETTERS) + tuple(_IPA_LETTERS)
)

SYMBOL_SETS: dict[str, tuple[str, ...]] = {"glow-tts": GLOW_TTS_SYMBOLS, "ipa": IPA_SYMBOLS}


def symbol_to_id(symbols: Sequence[str]) -> dict[str, int]:
    """Map each symbol to its id; a symbol listed twice gets its last position (as the
    authors' dict comprehension does)."""
    return {s: i for i, s in enumerate(symbols)}


def intersperse(ids: Sequence[int], blank: int) -> list[int]:
    """Put ``blank`` before, between and after the ids (Glow-TTS/VITS ``commons.intersperse``).

    ``[a, b, c]`` becomes ``[blank, a, blank, b, blank, c, blank]``: length ``2 * n + 1``.
    """
    out = [blank] * (2 * len(ids) + 1)
    out[1::2] = ids
    return out
