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
of the loudest, set against the teacher's recording of the same sentence. The model also
aligns the teacher's recordings (MAS), and the ratio of aligned frames to predicted frames is
the scale that calibrates the predictor (:class:`flowspeech.utils.durations.DurationRounding`);
the table's last row rounds to the nearest frame after that scale. Fit on the validation
split, never on the test split.
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
from flowspeech.utils.durations import DurationRounding

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
    # One pass over the sentences: the continuous predictions, and with --corpus the teacher's
    # speech span and the frames MAS gives each token of the teacher's recording.
    prepared, continuous, aligned, tokens = [], 0.0, 0.0, 0
    for row in rows:
        ids, lengths = tts._tokens([tts.frontend.encode(row[-1])])
        with torch.no_grad():
            mean, log_scale, log_durations, mask = tts.model.encoder(ids, lengths, None)
        w = (torch.exp(log_durations) * mask * tts.length_scale)[0, 0]
        tokens += w.numel()
        continuous += float(w.sum())
        teacher_span = None
        if args.corpus:
            wav, _ = load_wav(args.corpus / "wavs" / f"{row[0]}.wav", tts.sample_rate)
            mel = mel_spectrogram(torch.from_numpy(wav), tts.mel_config)
            teacher_span = speech_frames(mel.numpy())
            d = tts.model.align(ids, lengths, mel[None], torch.tensor([mel.size(1)]))
            aligned += float(d.sum())
        prepared.append((mean, log_scale, log_durations, mask, teacher_span))
    fitted = aligned / continuous if args.corpus else None

    rules = {"ceil (the authors')": DurationRounding("ceil"), "round": DurationRounding("round")}
    if fitted is not None:
        rules[f"round, scale {fitted:.3f} (fitted)"] = DurationRounding("round", round(fitted, 3))
    totals = {label: 0.0 for label in rules}
    spans = {label: [] for label in rules}
    for k, (mean, log_scale, log_durations, mask, teacher_span) in enumerate(prepared):
        for label, rule in rules.items():
            d = rule.frames(log_durations, mask, tts.length_scale, torch)[:, 0]
            totals[label] += float(d.sum())
            if teacher_span is not None:
                n = max(2, int(d.sum()) // 2 * 2)
                noise = torch.randn(1, mean.size(1), n, generator=torch.Generator().manual_seed(k))
                with torch.no_grad():
                    mel = decoder(mean, log_scale, d, torch.tensor([n]), noise, torch.tensor(tts.noise_scale))
                spans[label].append(speech_frames(mel[0].numpy()))
    teacher_spans = [p[-1] for p in prepared]

    name = tts.voice.name if tts.voice is not None else tts.acoustic_path
    print(f"{name}: {len(rows)} texts, {tokens} tokens (length_scale {tts.length_scale:g}, noise_scale "
          f"{tts.noise_scale:g})")
    if fitted is not None:
        print(f"MAS on the teacher's recordings: {aligned:,.0f} frames; the continuous predictions: "
              f"{continuous:,.0f}; fitted scale (aligned / predicted) {fitted:.3f}")
    print("| durations | frames | against the continuous predictions | frames added per token |"
          + (" speech span / teacher's (total; median per sentence) |" if args.corpus else ""))
    print("|---|---:|---:|---:|" + ("---:|" if args.corpus else ""))
    print(f"| continuous exp(log_w) | {continuous:,.0f} | 1.000x | +0.00 |" + (" |" if args.corpus else ""))
    for label in rules:
        frames = totals[label]
        line = f"| {label} | {frames:,.0f} | {frames / continuous:.3f}x | {(frames - continuous) / tokens:+.2f} |"
        if args.corpus:
            line += (f" {sum(spans[label]) / sum(teacher_spans):.3f}; "
                     f"{statistics.median(a / b for a, b in zip(spans[label], teacher_spans)):.3f} |")
        print(line)

if __name__ == "__main__":
    main()
