"""Where streamed synthesis cuts an utterance: a small first piece, for an early start, then
large ones, so that the context each piece recomputes (and its fixed cost) adds little."""

from __future__ import annotations


def chunk_spans(n_frames: int, first: int, largest: int | None = None) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering frames ``0 .. n_frames``: the first span ``first``
    frames long, the others ``largest`` (None: ``first``, i.e. equal spans), the last one
    whatever remains."""
    if first < 1:
        raise ValueError(f"the first chunk must have >= 1 frame, got {first}")
    largest = first if largest is None else max(first, largest)
    spans, start, size = [], 0, first
    while start < n_frames:
        end = min(n_frames, start + size)
        spans.append((start, end))
        start, size = end, largest
    return spans
