"""The held-out sentences the evaluation scripts score (``eval_voice.py``, ``eval_vocoder.py``)."""

from __future__ import annotations

from pathlib import Path


def first_sentences(corpus: Path, split: str, limit: int, out: Path) -> tuple[list[tuple[str, str]], Path]:
    """The first ``limit`` (0: all) ``(id, text)`` pairs of the corpus's ``split`` filelist, in
    the file's order, also written to ``out/text.txt`` (``id|text`` lines) for
    ``flowspeech.evaluation``. Returns the pairs and that file."""
    from flowspeech.evaluation.inputs import read_transcripts

    texts = read_transcripts(Path(corpus) / "filelists" / f"ljs_audio_text_{split}_filelist.txt")
    sentences = list(texts.items())[: limit or None]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text_file = out / "text.txt"
    text_file.write_text("".join(f"{uid}|{text}\n" for uid, text in sentences), encoding="utf-8")
    return sentences, text_file
