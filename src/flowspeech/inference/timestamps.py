"""When each sentence, word and phoneme is spoken, from the model's own durations.

Glow-TTS and NaturalSpeech decide how many frames each token lasts; those durations, summed,
place every token in the audio. :meth:`TextFrontend.word_tokens
<flowspeech.text.TextFrontend.word_tokens>` maps tokens back to the words as written (the
token of ``"$5"`` is said "five dollars"), so a word's span runs from its first token's start
to its last token's end. Times are seconds from the start of the whole audio, pauses between
sentences included. Written out as JSON, or as SubRip (``.srt``) and WebVTT (``.vtt``)
subtitles with one cue per sentence.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flowspeech.errors import FlowspeechError
from flowspeech.text import TextFrontend
from flowspeech.utils.files import atomic_write

__all__ = ["Span", "Timestamps", "sentence_timestamps"]


@dataclass(frozen=True)
class Span:
    """A stretch of the audio: what is said (``text``), from ``start`` to ``end`` seconds, in
    sentence number ``sentence``."""

    text: str
    start: float
    end: float
    sentence: int


@dataclass
class Timestamps:
    """Per-sentence, per-word and per-phoneme spans of one synthesis."""

    sentences: list[Span] = field(default_factory=list)
    words: list[Span] = field(default_factory=list)
    phonemes: list[Span] = field(default_factory=list)

    def extend(self, other: "Timestamps") -> None:
        self.sentences += other.sentences
        self.words += other.words
        self.phonemes += other.phonemes

    def to_dict(self) -> dict:
        return {kind: [asdict(s) for s in getattr(self, kind)] for kind in ("sentences", "words", "phonemes")}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    def to_srt(self) -> str:
        cues = [f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n"
                for i, s in enumerate(self.sentences, 1)]
        return "\n".join(cues)

    def to_vtt(self) -> str:
        cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in self.sentences]
        return "WEBVTT\n\n" + "\n".join(cues)

    def save(self, path: str | Path) -> None:
        """Write as ``.json``, ``.srt`` or ``.vtt`` (by the file's suffix), atomically."""
        path = Path(path)
        render = {".json": self.to_json, ".srt": self.to_srt, ".vtt": self.to_vtt}.get(path.suffix.lower())
        if render is None:
            raise FlowspeechError(f"--timestamps {path}: use a .json, .srt or .vtt file name")
        text = render()
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _clock(seconds: float, comma: str) -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{comma}{ms:03d}"


def sentence_timestamps(frontend: TextFrontend, sentence: str, index: int, durations,
                        seconds_per_frame: float, offset: float, duration: float) -> Timestamps:
    """Spans of one synthesised sentence.

    Args:
        frontend: the front end that encoded ``sentence`` (its tokens are what ``durations``
            counts).
        index: the sentence's number in the text.
        durations: frames per token ``[T_text]`` (ints or, for NaturalSpeech, reals).
        seconds_per_frame: ``hop_length / sample_rate``.
        offset: where the sentence starts in the whole audio (seconds).
        duration: the sentence audio's length in seconds; token times are clipped to it (a
            model may trim its last frames, e.g. Glow-TTS to a multiple of ``n_sqz``).
    """
    d = np.asarray(durations, dtype=np.float64).reshape(-1)
    symbols = frontend.tokens(sentence)
    words, labels = frontend.word_tokens(sentence)
    if len(symbols) != len(labels) or len(d) < len(symbols):
        raise ValueError(f"{len(d)} durations for {len(symbols)} tokens of {sentence!r}")
    ends = np.minimum(np.cumsum(d[:len(symbols)]) * seconds_per_frame, duration).tolist()
    starts = [0.0] + ends[:-1]
    out = Timestamps(sentences=[Span(sentence, offset, offset + duration, index)])
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for symbol, label, start, end in zip(symbols, labels, starts, ends):
        if label is not None:
            first.setdefault(label, start)
            last[label] = end
        if _spoken(symbol) and end > start:
            out.phonemes.append(Span(symbol.lstrip("@"), offset + start, offset + end, index))
    for label in sorted(first):
        if last[label] > first[label]:
            out.words.append(Span(words[label].text, offset + first[label], offset + last[label], index))
    return out


def _spoken(symbol: str) -> bool:
    """ARPAbet (``@AH0``), a letter or an IPA symbol: not a space, blank or punctuation."""
    return symbol.startswith("@") and len(symbol) > 1 or (len(symbol) == 1 and symbol.isalpha())
