"""Where a Glow-TTS voice pauses between words, against where its teacher does.

    python benchmarks/pauses_between_words.py --corpus data/slt_hts --split val

For every boundary between two written words of each sentence, the frames of the tokens
between them (the space and its blanks, and punctuation that ends the first word) are counted
twice: in the teacher's recording, as
MAS aligns it to the voice's prior (the teacher's timing), and in the voice's own predicted
durations. A boundary with at least ``--pause-frames`` of them is a pause. Boundaries are
split by whether punctuation marks them: a teacher whose phrasing reads more than
punctuation (Festival's slt voice breaks phrases by a part-of-speech model) pauses where the
text shows nothing, and a voice that learnt only punctuation misses those pauses, and the
phrase-final intonation that comes with them. Choose on the validation split.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _teacher_timing import add_voice_arguments, load_glow_tts, split_sentences, teacher_timing

from flowspeech.text.frontend import BLANK_TOKEN

PUNCTUATION = frozenset(",.;:?!()")


def boundaries(tokens: list[str], words: list[int | None]) -> list[tuple[int, int, bool]]:
    """``(start, stop, punctuated)`` of each run of tokens between two words: the tokens
    ``start:stop`` that belong to no word (the space and its blanks), with the punctuation
    that ends the word before them and the blank after it (MAS gives a pause to either)."""
    in_word = [k for k, w in enumerate(words) if w is not None]
    out, k = [], in_word[0] if in_word else len(words)
    while in_word and k <= in_word[-1]:
        if words[k] is None:
            stop = k
            while words[stop] is None:
                stop += 1
            start = k
            while start > 0 and (tokens[start - 1] in PUNCTUATION or (
                    tokens[start - 1] == BLANK_TOKEN and start > 1
                    and tokens[start - 2] in PUNCTUATION)):
                start -= 1
            # an opening bracket starts the next word, and marks the boundary too
            out.append((start, stop, any(t in PUNCTUATION for t in tokens[start:stop + 1])))
            k = stop
        k += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_voice_arguments(parser)
    parser.add_argument("--pause-frames", type=int, nargs="+", default=[12, 16],
                        help="frames between two words that make a pause (12: 139 ms at hop 256)")
    args = parser.parse_args()
    tts, _ = load_glow_tts(args)
    model = tts.model
    sentences = split_sentences(args)
    rows = []  # (punctuated, teacher's frames, voice's frames)
    for uid, text in sentences:
        ids, lengths, _, _, out = teacher_timing(tts, args.corpus, uid, text)
        with torch.no_grad():
            _, _, log_durations, text_mask = model.encoder(ids, lengths)
        teacher = out.attn.sum(-1)[0].numpy()
        voice = model.duration_rounding.frames(log_durations, text_mask, tts.length_scale,
                                               torch)[0, 0].numpy()
        for start, stop, punctuated in boundaries(tts.frontend.tokens(text),
                                                  tts.frontend.word_tokens(text)[1]):
            rows.append((punctuated, teacher[start:stop].sum(), voice[start:stop].sum()))

    table = np.array(rows, dtype=float)
    print(f"{tts.voice.name if tts.voice is not None else tts.acoustic_path}: {args.split} split, "
          f"{len(sentences)} sentences, durations {model.duration_rounding}\n")
    print("| boundary | pause at | boundaries | mean frames, teacher / voice | teacher pauses | "
          "voice pauses | both | recall | precision |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, sel in (("punctuated", table[:, 0] == 1), ("unpunctuated", table[:, 0] == 0)):
        for frames in args.pause_frames:
            teacher, voice = table[sel, 1] >= frames, table[sel, 2] >= frames
            both = int((teacher & voice).sum())
            print(f"| {name} | {frames} | {int(sel.sum())} | {table[sel, 1].mean():.1f} / "
                  f"{table[sel, 2].mean():.1f} | {int(teacher.sum())} | {int(voice.sum())} | "
                  f"{both} | "
                  f"{100 * both / max(int(teacher.sum()), 1):.0f} % | "
                  f"{100 * both / max(int(voice.sum()), 1):.0f} % |")


if __name__ == "__main__":
    main()
