"""How much the rounding of predicted durations lengthens a Glow-TTS voice's speech.

    python benchmarks/duration_rounding.py [--voice NAME | --acoustic CKPT] [--sentences metadata.csv]
    python benchmarks/duration_rounding.py --corpus ../shared/corpus/data/slt_hts --split val

Glow-TTS (like the authors' code) speaks ``ceil(exp(log_w) * length_scale)`` frames per
token. The duration predictor is trained by mean squared error on log-durations, so
``exp(log_w)`` estimates a geometric mean, below the arithmetic one; the ceiling then adds
about half a frame to every token, which is a large share of a blank token's one or two
frames. This prints, over the sentences, the frames the continuous predictions give and the
frames after ``ceil`` and after ``round``, and the frames per token that each adds.

With ``--corpus`` (a corpus from ``../shared/corpus/make_corpus.py``, whose recordings are
the voice's teacher), the sentences are the split's, and each rounding is also spoken (the mel,
from the same prior noise) and its speech span, from the first to the last frame within 40 dB
of the loudest, set against the teacher's recording of the same sentence.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import numpy as np
import torch

from flowspeech.audio import load_wav, mel_spectrogram

from flowspeech.inference.onnx_export import GlowTTSDecoderGraph
from flowspeech.inference.synthesizer import Synthesizer
from flowspeech.models.glow_tts import GlowTTS

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "corpus" / "data" / "ljspeech_real_sample" / "metadata.csv"


def speech_frames(mel: np.ndarray) -> int:
    """Frames from the first to the last one within 40 dB of the loudest (log-mel input)."""
    energy_db = 10 * np.log10(np.exp(2 * mel).sum(axis=0) + 1e-12)
    active = np.flatnonzero(energy_db > energy_db.max() - 40)
    return int(active[-1] - active[0] + 1) if active.size else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", default=None)
    parser.add_argument("--acoustic", default=None, help="a Glow-TTS checkpoint instead of a voice")
    parser.add_argument("--sentences", type=Path, default=SAMPLE, help="an LJSpeech-layout metadata.csv")
    parser.add_argument("--corpus", type=Path, default=None, help="the teacher's corpus (LJSpeech layout)")
    parser.add_argument("--split", default="val", help="with --corpus: its filelist split")
    args = parser.parse_args()
    torch.manual_seed(0)
    tts = Synthesizer(args.acoustic, voice=args.voice) if args.acoustic else Synthesizer(voice=args.voice)
    if not isinstance(tts.model, GlowTTS):
        raise SystemExit(f"{tts.acoustic_path} is not a Glow-TTS model")
    rows = list(csv.reader((args.corpus / "metadata.csv" if args.corpus else args.sentences).open(encoding="utf-8"),
                           delimiter="|", quoting=csv.QUOTE_NONE))
    if args.corpus:
        listed = (args.corpus / "filelists" / f"ljs_audio_text_{args.split}_filelist.txt").read_text().splitlines()
        wanted = {Path(line.split("|")[0]).stem for line in listed if line.strip()}
        rows = [row for row in rows if row[0] in wanted]
    decoder = GlowTTSDecoderGraph(tts.model).eval()
    totals = {"continuous": 0.0, "ceil": 0.0, "round": 0.0}
    spans = {"ceil": [], "round": []}
    teacher_spans = []
    tokens = 0
    for row in rows:
        ids, lengths = tts._tokens([tts.frontend.encode(row[-1])])
        with torch.no_grad():
            mean, log_scale, log_durations, mask = tts.model.encoder(ids, lengths, None)
        w = (torch.exp(log_durations) * mask * tts.length_scale)[0, 0]
        tokens += w.numel()
        totals["continuous"] += float(w.sum())
        if args.corpus:
            wav, _ = load_wav(args.corpus / "wavs" / f"{row[0]}.wav", tts.sample_rate)
            teacher_spans.append(speech_frames(mel_spectrogram(torch.from_numpy(wav), tts.mel_config).numpy()))
        for name, rounding in (("ceil", torch.ceil), ("round", torch.round)):
            d = rounding(w)[None]
            totals[name] += float(d.sum())
            if args.corpus:
                n = max(2, int(d.sum()) // 2 * 2)
                noise = torch.randn(1, mean.size(1), n, generator=torch.Generator().manual_seed(len(spans[name])))
                with torch.no_grad():
                    mel = decoder(mean, log_scale, d, torch.tensor([n]), noise, torch.tensor(tts.noise_scale))
                spans[name].append(speech_frames(mel[0].numpy()))
    name = tts.voice.name if tts.voice is not None else tts.acoustic_path
    print(f"{name}: {len(rows)} texts, {tokens} tokens (length_scale {tts.length_scale:g}, noise_scale "
          f"{tts.noise_scale:g})")
    print("| durations | frames | against the continuous predictions | frames added per token |"
          + (" speech span / teacher's (total; median per sentence) |" if args.corpus else ""))
    print("|---|---:|---:|---:|" + ("---:|" if args.corpus else ""))
    for label, key in (("continuous exp(log_w)", "continuous"), ("ceil (what synthesis uses)", "ceil"),
                       ("round", "round")):
        frames = totals[key]
        line = f"| {label} | {frames:,.0f} | {frames / totals['continuous']:.3f}x | {(frames - totals['continuous']) / tokens:+.2f} |"
        if args.corpus:
            line += (f" {sum(spans[key]) / sum(teacher_spans):.3f}; "
                     f"{statistics.median(a / b for a, b in zip(spans[key], teacher_spans)):.3f} |"
                     if key in spans else " |")
        print(line)


if __name__ == "__main__":
    main()
