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
        --corpus data/slt_hts --limit 100 --out reports/x --compare reports/voice \\
        --teacher reports/voice          # its scores of the recordings: no second ASR pass

Writes OUT/wavs/ (clips + timings.json), OUT/system/ and OUT/teacher/ (evaluation reports)
and OUT/summary.json; prints a Markdown table row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--voice", help="named voice (default: the shipped default voice)")
    who.add_argument("--acoustic", help="Glow-TTS or NaturalSpeech checkpoint")
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
    ap.add_argument("--teacher", help="an earlier OUT of this script on the same corpus and "
                    "sentences: reuse its scores of the recordings instead of scoring them again")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    from _heldout import first_sentences

    from flowspeech.evaluation import EvalOptions, compare_reports, evaluate
    from flowspeech.evaluation.report import load_report, write_report
    from flowspeech.evaluation.synthesis import synthesize_test_set

    if args.threads:
        torch.set_num_threads(args.threads)
    corpus, out = Path(args.corpus), Path(args.out)
    sentences, text_file = first_sentences(corpus, args.split, args.limit, out)
    wav_dir = out / "wavs"
    run = synthesize_test_set(dict(sentences), wav_dir, acoustic=args.acoustic, voice=args.voice,
                              vocoder=args.vocoder, noise_scale=args.noise_scale, seed=args.seed,
                              progress=False)

    options = EvalOptions(spectral=False)
    system = evaluate(wav_dir, text=text_file, options=options, jobs=args.jobs, progress=False,
                      name=run["voice"] or Path(run["acoustic"]).stem)
    teacher = earlier_teacher(args.teacher, [uid for uid, _ in sentences])
    if teacher is None:
        teacher = evaluate(corpus / "wavs", text=text_file, options=options, jobs=args.jobs,
                           progress=False, name="teacher")
    if args.compare:
        system.comparison = compare_reports(system, load_report(Path(args.compare) / "system"))
    write_report(system, out / "system")
    write_report(teacher, out / "teacher")

    summary = {
        "voice": system.name,
        "acoustic": run["acoustic"],
        "vocoder": run["vocoder"],
        "noise_scale": run["noise_scale"],
        "length_scale": run["length_scale"],
        "split": args.split,
        "sentences": len(sentences),
        "wer": system.overall["wer"],
        "cer": system.overall["cer"],
        "teacher_wer": teacher.overall["wer"],
        "wer_gap_points": 100 * (system.overall["wer"] - teacher.overall["wer"]),
        "rtf": system.overall["rtf"],
        "load_s": run["load_s"],
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


def earlier_teacher(run_dir: str | None, ids: list[str]):
    """The teacher's report of an earlier run of this script (``--teacher``), checked to
    cover the same sentences: the recordings do not change, so scoring them again (minutes
    of ASR) would give the same numbers."""
    from flowspeech.errors import DatasetError
    from flowspeech.evaluation.report import load_report

    if not run_dir:
        return None
    report = load_report(Path(run_dir) / "teacher")
    if sorted(r["id"] for r in report.rows) != sorted(ids):
        raise DatasetError(f"{run_dir}/teacher scored other sentences than these {len(ids)}; "
                           "leave out --teacher to score the recordings")
    print(f"teacher: the scores of {run_dir}/teacher")
    return report


if __name__ == "__main__":
    main()
