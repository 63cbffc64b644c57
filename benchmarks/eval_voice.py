"""Is this voice good enough, and better than the one we ship? Intelligibility and speed.

Speaks the corpus's held-out test sentences (never seen in training) with a voice, scores
them with PocketSphinx (``flowspeech.evaluation``, the same normalisation as
``shared/corpus/asr_eval.py``), scores the teacher's recordings of the same sentences the
same way, and reports both WERs, their gap, and the end-to-end real-time factor on this
machine. The shipped voice must keep the gap within 10 WER points and the RTF below 1
(``docs/default-voice.md``); a new voice replaces it only if it does better on both counts
(``--compare`` makes the paired test).

    python benchmarks/eval_voice.py --corpus data/slt_hts --limit 100 --out reports/voice
    python benchmarks/eval_voice.py --acoustic runs/x/checkpoints/step_00020000.pt \\
        --corpus data/slt_hts --limit 100 --out reports/x --compare reports/voice

Writes OUT/wavs/ (clips + timings.json), OUT/system/ and OUT/teacher/ (evaluation reports)
and OUT/summary.json; prints a Markdown table row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def read_filelist(path: Path, limit: int | None) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        wav, _, text = line.partition("|")
        rows.append((Path(wav).stem, text.split("|")[-1].strip()))
    return rows[:limit] if limit else rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--voice", help="named voice (default: the shipped default voice)")
    who.add_argument("--acoustic", help="Glow-TTS checkpoint")
    ap.add_argument("--vocoder", default="griffin-lim")
    ap.add_argument("--corpus", required=True, help="LJSpeech-layout corpus with filelists/ and wavs/")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=100, help="first N sentences of the split (0: all)")
    ap.add_argument("--noise-scale", type=float, default=None,
                    help="prior temperature (default: the voice's setting, else 0.667)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--jobs", type=int, default=1, help="ASR worker processes")
    ap.add_argument("--compare", help="an earlier OUT of this script: paired test against it")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch

    from flowspeech.audio import save_wav
    from flowspeech.evaluation import EvalOptions, compare_reports, evaluate
    from flowspeech.evaluation.report import load_report, write_report
    from flowspeech.inference.synthesizer import Synthesizer

    if args.threads:
        torch.set_num_threads(args.threads)
    corpus, out = Path(args.corpus), Path(args.out)
    sentences = read_filelist(corpus / "filelists" / f"ljs_audio_text_{args.split}_filelist.txt",
                              args.limit or None)
    wav_dir = out / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    text_file = out / "text.txt"
    text_file.write_text("".join(f"{uid}|{text}\n" for uid, text in sentences), encoding="utf-8")

    t0 = time.perf_counter()
    tts = Synthesizer(args.acoustic, voice=args.voice, vocoder=args.vocoder,
                      noise_scale=args.noise_scale)
    load_s = time.perf_counter() - t0
    timings = {}
    for uid, text in sentences:
        t = time.perf_counter()
        wave, rate = tts.synthesize(text, seed=args.seed)
        timings[uid] = time.perf_counter() - t
        save_wav(wav_dir / f"{uid}.wav", wave, rate)
    (wav_dir / "timings.json").write_text(json.dumps(timings, indent=1))

    options = EvalOptions(spectral=False)
    system = evaluate(wav_dir, text=text_file, options=options, jobs=args.jobs, progress=False,
                      name=tts.voice.name if tts.voice else Path(tts.acoustic_path).stem)
    teacher = evaluate(corpus / "wavs", text=text_file, options=options, jobs=args.jobs,
                       progress=False, name="teacher")
    if args.compare:
        system.comparison = compare_reports(system, load_report(Path(args.compare) / "system"))
    write_report(system, out / "system")
    write_report(teacher, out / "teacher")

    summary = {
        "voice": system.name,
        "acoustic": tts.acoustic_path,
        "vocoder": tts.vocoder.describe(),
        "noise_scale": tts.noise_scale,
        "length_scale": tts.length_scale,
        "split": args.split,
        "sentences": len(sentences),
        "wer": system.overall["wer"],
        "cer": system.overall["cer"],
        "teacher_wer": teacher.overall["wer"],
        "wer_gap_points": 100 * (system.overall["wer"] - teacher.overall["wer"]),
        "rtf": system.overall["rtf"],
        "load_s": load_s,
        "torch_threads": torch.get_num_threads(),
        "meets_bar": bool(100 * (system.overall["wer"] - teacher.overall["wer"]) <= 10
                          and system.overall["rtf"] < 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("| voice | sentences | WER | teacher WER | gap (points) | RTF | bar |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {summary['voice']} | {len(sentences)} | {100 * summary['wer']:.1f}% | "
          f"{100 * summary['teacher_wer']:.1f}% | {summary['wer_gap_points']:+.1f} | "
          f"{summary['rtf']:.3f} | {'met' if summary['meets_bar'] else 'not met'} |")


if __name__ == "__main__":
    main()
