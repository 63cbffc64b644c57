"""How much the rounding of predicted durations lengthens a Glow-TTS voice's speech.

    python benchmarks/duration_rounding.py [--voice NAME | --acoustic CKPT] [--sentences metadata.csv]

Glow-TTS (like the authors' code) speaks ``ceil(exp(log_w) * length_scale)`` frames per
token. The duration predictor is trained by mean squared error on log-durations, so
``exp(log_w)`` estimates a geometric mean, below the arithmetic one; the ceiling then adds
about half a frame to every token, which is a large share of a blank token's one or two
frames. This prints, over the sentences, the frames the continuous predictions give and the
frames after ``ceil`` and after ``round``, and the frames per token that each adds.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from flowspeech.inference.synthesizer import Synthesizer
from flowspeech.models.glow_tts import GlowTTS

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "corpus" / "data" / "ljspeech_real_sample" / "metadata.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", default=None)
    parser.add_argument("--acoustic", default=None, help="a Glow-TTS checkpoint instead of a voice")
    parser.add_argument("--sentences", type=Path, default=SAMPLE, help="an LJSpeech-layout metadata.csv")
    args = parser.parse_args()
    tts = Synthesizer(args.acoustic, voice=args.voice) if args.acoustic else Synthesizer(voice=args.voice)
    if not isinstance(tts.model, GlowTTS):
        raise SystemExit(f"{tts.acoustic_path} is not a Glow-TTS model")
    texts = [row[-1] for row in csv.reader(args.sentences.open(encoding="utf-8"), delimiter="|",
                                           quoting=csv.QUOTE_NONE)]
    continuous = ceiled = rounded = 0.0
    tokens = 0
    for text in texts:
        for sentence in tts.split(text):
            ids, lengths = tts._tokens([tts.frontend.encode(sentence)])
            with torch.no_grad():
                _, _, log_durations, mask = tts.model.encoder(ids, lengths, None)
            w = (torch.exp(log_durations) * mask * tts.length_scale)[0, 0]
            continuous += float(w.sum())
            ceiled += float(torch.ceil(w).sum())
            rounded += float(torch.round(w).sum())
            tokens += w.numel()
    name = tts.voice.name if tts.voice is not None else tts.acoustic_path
    print(f"{name}: {len(texts)} texts, {tokens} tokens (length_scale {tts.length_scale:g})")
    print("| durations | frames | against the continuous predictions | frames added per token |")
    print("|---|---:|---:|---:|")
    for label, frames in (("continuous exp(log_w)", continuous), ("ceil (what synthesis uses)", ceiled),
                          ("round", rounded)):
        print(f"| {label} | {frames:,.0f} | {frames / continuous:.3f}x | {(frames - continuous) / tokens:+.2f} |")


if __name__ == "__main__":
    main()
