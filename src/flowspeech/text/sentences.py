"""Split long text into sentence-sized chunks for synthesis.

Attention-based text encoders degrade (and use quadratic memory) on very long inputs, so
long text is synthesised a chunk at a time. A sentence ends at ``.``, ``!``, ``?`` or
``…`` (with any closing quotes or brackets) followed by white space, and at every line
break. A period does not end a sentence after a title or common abbreviation (``Mr.``,
``Dr.``, ``e.g.``), after a single-letter initial (``J. Smith``), or when the next word
starts in lower case; a period between digits (``3.5``) is never followed by white space
and so never splits.

A sentence longer than ``max_chars`` is cut at commas, semicolons and colons, then at
spaces, then (a single word longer than ``max_chars``) anywhere, packing as many pieces
as fit into each chunk.
"""

from __future__ import annotations

import re

from flowspeech.errors import ConfigError, TextError

# Abbreviations usually followed by more of the same sentence (lower case, no period).
NO_SPLIT_AFTER = frozenset(
    "mr mrs ms dr drs prof rev hon st mt ft gen col capt lt maj sgt cpl gov sen rep pres "
    "jr sr vs e.g i.e cf approx dept fig figs vol ch pp inc corp co ltd bros jan "
    "feb mar apr jun jul aug sep sept oct nov dec".split()
)

# End of a sentence: terminators, closing quotes/brackets, then white space.
_END_RE = re.compile(r"[.!?…]+[\"'”’»)\]]*\s+")
_WORD_BEFORE_RE = re.compile(r"(\S+?)[.!?…]+[\"'”’»)\]]*$")
_CLAUSE_RE = re.compile(r"(?<=[,;:])\s+")


def _ends_sentence(text: str, m: re.Match) -> bool:
    after = text[m.end() : m.end() + 1]
    if after and after.islower():
        return False  # "e.g. this", "3 p.m. today"
    if "." not in m.group(0) or any(c in m.group(0) for c in "!?…"):
        return True
    before = _WORD_BEFORE_RE.search(text, 0, m.start() + len(m.group(0).rstrip()))
    if before is None:
        return True
    word = before.group(1).lstrip("\"'“‘«([").lower()
    if word in NO_SPLIT_AFTER:
        return False
    return not (len(word) == 1 and word.isalpha())  # an initial: "J. Smith"


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    """Join consecutive pieces with spaces into chunks of at most ``max_chars``."""
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if not current:
            current = piece
        elif len(current) + 1 + len(piece) <= max_chars:
            current += " " + piece
        else:
            chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return chunks


def _split_long(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    chunks: list[str] = []
    for clause in _pack(_CLAUSE_RE.split(sentence), max_chars):
        if len(clause) <= max_chars:
            chunks.append(clause)
            continue
        for part in _pack(clause.split(), max_chars):
            # a single word longer than max_chars: cut it
            chunks.extend(part[i : i + max_chars] for i in range(0, len(part), max_chars))
    return chunks


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """Split ``text`` into sentences of at most ``max_chars`` characters each.

    Args:
        text: any text, possibly many paragraphs.
        max_chars: the longest chunk returned.

    Returns:
        Non-empty, stripped chunks in reading order (``[]`` for blank text). Joining them
        with spaces gives back the text up to white space.

    Example::

        >>> split_sentences("Mr. Smith paid $3.50. Then he left!\\nBye")
        ['Mr. Smith paid $3.50.', 'Then he left!', 'Bye']
    """
    if not isinstance(text, str):
        raise TextError(f"text must be a str, got {type(text).__name__}")
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ConfigError(f"max_chars must be a positive integer, got {max_chars!r}")
    chunks: list[str] = []
    for line in text.splitlines():
        start = 0
        for m in _END_RE.finditer(line):
            if _ends_sentence(line, m):
                chunks.extend(_split_long(line[start : m.end()].strip(), max_chars))
                start = m.end()
        chunks.extend(_split_long(line[start:].strip(), max_chars))
    return [c for c in chunks if c]
