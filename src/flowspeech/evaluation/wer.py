"""Word and character error rates of recognised speech against the text it should say.

WER = (S + D + I) / N over words (Morris et al., 2004, "From WER and RIL to MER and WIL";
the NIST sclite definition), with S, D, I the substitutions, deletions and insertions of a
minimum edit-distance alignment and N the number of reference words. CER is the same over
characters (spaces included). Corpus rates divide the summed errors by the summed reference
lengths, so long sentences weigh more than short ones (as sclite and the project's shared
scorer ``asr_eval.py`` do). The alignment is ``jiwer``'s.

Reference and hypothesis are normalised the same way (:func:`normalize_for_scoring`), so a
"$5" in the script and "five dollars" from the recogniser count as a match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flowspeech.evaluation.deps import require
from flowspeech.text.normalize import normalize_english

# Spoken forms the recogniser (CMU dictionary, no periods) may write either way. The first
# group is the Tacotron ``english_cleaners`` list without periods, for hypotheses that keep
# the short form; "misess" is the Tacotron spelling of "mrs." and "misses" a homophone the
# recogniser often writes for it.
WORD_MAP = {
    "mrs": "missus", "misess": "missus", "misses": "missus", "mr": "mister", "dr": "doctor",
    "st": "saint", "co": "company", "jr": "junior", "maj": "major", "gen": "general",
    "drs": "doctors", "rev": "reverend", "lt": "lieutenant", "hon": "honorable",
    "sgt": "sergeant", "capt": "captain", "esq": "esquire", "ltd": "limited", "col": "colonel",
    "ft": "fort",
    # British spellings in the LJSpeech texts -> the recogniser's US spelling
    "theatre": "theater", "theatres": "theaters", "cheque": "check", "cheques": "checks",
    "grey": "gray", "rumour": "rumor", "labour": "labor", "honour": "honor", "colour": "color",
    "favour": "favor", "behaviour": "behavior", "neighbour": "neighbor", "centre": "center",
    "defence": "defense", "offence": "offense", "gaol": "jail", "gaols": "jails",
    "gaoler": "jailer",
}  # fmt: skip

_NOT_WORD_RE = re.compile(r"[^a-z' ]+")


def normalize_for_scoring(text: str) -> str:
    """Lower-case words only, as they are spoken: the input to WER/CER.

    ``normalize_english`` (numbers, amounts, ordinals, times and abbreviations read out,
    ASCII, lower case), then hyphens and punctuation become spaces, apostrophes are kept
    inside words only ("commissioner's"), and :data:`WORD_MAP` unifies abbreviations and
    British spellings.

    Numbers are read by the Tacotron rules the models are trained with ("1995" ->
    "nineteen ninety five"), which is what a system is expected to say.

    Args:
        text: any Unicode text, a script line or a recogniser's output.

    Returns:
        Space-separated words (``"Dr. Smith paid $5."`` -> ``"doctor smith paid five
        dollars"``); empty when nothing speakable is left.
    """
    text = normalize_english(text, mode="english").replace("%", " percent ")
    words = []
    for word in _NOT_WORD_RE.sub(" ", text).split():
        word = word.strip("'")
        if word:
            words.append(WORD_MAP.get(word, word))
    return " ".join(words)


@dataclass
class ErrorCounts:
    """Edit operations between normalised reference and hypothesis.

    Attributes:
        hits, substitutions, deletions, insertions: word alignment counts.
        ref_words: reference words (``hits + substitutions + deletions``).
        char_errors: character edit distance (spaces count as characters).
        ref_chars: reference characters.
    """

    hits: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_words: int = 0
    char_errors: int = 0
    ref_chars: int = 0

    @property
    def word_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """(S + D + I) / N; NaN for an empty reference."""
        return self.word_errors / self.ref_words if self.ref_words else float("nan")

    @property
    def cer(self) -> float:
        """Character edits / reference characters; NaN for an empty reference."""
        return self.char_errors / self.ref_chars if self.ref_chars else float("nan")

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[int, ...]:
        return (self.hits, self.substitutions, self.deletions, self.insertions,
                self.ref_words, self.char_errors, self.ref_chars)


def error_counts(reference: str, hypothesis: str, normalize: bool = True) -> ErrorCounts:
    """Word and character edit operations of ``hypothesis`` against ``reference``.

    Args:
        reference: the text that should have been said.
        hypothesis: what the recogniser heard.
        normalize: apply :func:`normalize_for_scoring` to both first.

    Returns:
        :class:`ErrorCounts`; an empty hypothesis is all deletions, an empty reference
        counts every hypothesis word as an insertion (its WER is NaN).
    """
    if normalize:
        reference, hypothesis = normalize_for_scoring(reference), normalize_for_scoring(hypothesis)
    ref_words, hyp_words = reference.split(), hypothesis.split()
    # jiwer refuses empty strings; those cases need no alignment.
    if not ref_words or not hyp_words:
        return ErrorCounts(deletions=len(ref_words), insertions=len(hyp_words),
                           ref_words=len(ref_words), ref_chars=len(reference),
                           char_errors=max(len(reference), len(hypothesis)))
    jiwer = require("jiwer")
    words = jiwer.process_words(reference, hypothesis)
    chars = jiwer.process_characters(reference, hypothesis)
    return ErrorCounts(
        hits=words.hits, substitutions=words.substitutions, deletions=words.deletions,
        insertions=words.insertions, ref_words=len(ref_words),
        char_errors=chars.substitutions + chars.deletions + chars.insertions,
        ref_chars=len(reference),
    )
