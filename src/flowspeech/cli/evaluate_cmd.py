"""``flowspeech evaluate``: objective metrics of a folder of synthesised clips, written as
``report.json``, ``report.md`` and plots; optionally a paired comparison with a second
system."""

from __future__ import annotations

import os


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="objective metrics (WER, MCD, F0, PESQ, STOI, ...) of synthesised clips",
        description="Score every <id>.wav of SYSTEM: ASR word/character error rates against "
        "--text; MCD, log-F0 RMSE, voicing errors and duration ratio against --reference clips "
        "of the same ids; PESQ, STOI and MR-STFT with --copy-synthesis; real-time factor from "
        "SYSTEM/timings.json; NLL from --nll. Writes OUT/report.json, report.md, "
        "utterances.csv and plots. A second --system (or --compare REPORT_DIR) adds a paired "
        "Wilcoxon signed-rank test per metric. Instead of a folder, a model (--voice or "
        "--acoustic, with --vocoder) speaks the --text sentences into OUT/wavs first, timing "
        "each stage. Needs pip install 'flowspeech[eval]'.",
    )
    p.add_argument("--system", action="append", default=[], metavar="DIR",
                   help="folder of synthesised <id>.wav clips; give it twice to compare two "
                   "systems on the same sentences")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--voice", help="evaluate this named voice (see `flowspeech voices`)")
    model.add_argument("--acoustic", metavar="CKPT", help="evaluate this Glow-TTS checkpoint")
    p.add_argument("--vocoder", default="griffin-lim",
                   help="with --voice/--acoustic: griffin-lim or a vocoder checkpoint")
    p.add_argument("--noise-scale", type=float, default=None,
                   help="with --voice/--acoustic (default: the voice's setting, else 0.667)")
    p.add_argument("--seed", type=int, default=0, help="with --voice/--acoustic")
    p.add_argument("--reference", metavar="DIR", help="folder of recordings with the same ids")
    p.add_argument("--text", metavar="FILE", help="transcripts: id|text, a glow-tts filelist "
                   "(path|text) or LJSpeech metadata.csv; selects the ids scored")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder")
    p.add_argument("--compare", metavar="REPORT_DIR",
                   help="paired comparison with a report written earlier by this command")
    p.add_argument("--nll", action="append", metavar="JSONL",
                   help="`flowspeech align` output for the system (once per --system)")
    p.add_argument("--copy-synthesis", action="store_true",
                   help="the system re-synthesises the reference clips (vocoder): add PESQ, "
                   "STOI and the multi-resolution STFT distance")
    p.add_argument("--no-asr", action="store_true", help="skip speech recognition")
    p.add_argument("--f0-method", choices=("harvest", "dio"), default="harvest",
                   help="WORLD F0 estimator (dio is ~15x faster, less accurate)")
    p.add_argument("--mcd-max-hz", type=float, default=None, metavar="HZ",
                   help="compare spectral envelopes up to HZ only, e.g. the centre of the mel "
                        "front end's top filter (7699 for the Glow-TTS/WaveGlow mel, 80 bands to "
                        "8 kHz): the band above it fades out in any mel-based synthesis and would "
                        "dominate the MCD (default: full band)")
    p.add_argument("--mels", nargs="+", metavar="ID",
                   help="plot reference vs synthesis mel spectrograms of these ids ('worst': "
                   "the 3 with the highest MCD, or WER without a reference)")
    p.add_argument("--no-plots", action="store_true", help="no metrics.png / comparison.png")
    p.add_argument("--name", action="append", help="system name in the reports (once per "
                   "--system; default: the folder's name)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: one per CPU)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the test")
    p.add_argument("--lm", help="PocketSphinx language model (default: the bundled en-us one)")
    p.add_argument("--hmm", help="PocketSphinx acoustic model folder")
    p.add_argument("--dict", help="PocketSphinx pronunciation dictionary")
    p.add_argument("--asr-resampler", choices=("auto", "sox", "soxr"), default="auto",
                   help="16 kHz resampling before recognition: the sox program (as the "
                   "corpus's asr_eval.py does) or the soxr library; auto: sox when installed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _check_args(args) -> None:
    from flowspeech.errors import FlowspeechError

    model = args.voice is not None or args.acoustic is not None
    if model and not args.text:
        raise FlowspeechError("--voice/--acoustic need --text: the sentences to speak")
    if not args.system and not model:
        raise FlowspeechError("give --system DIR (synthesised clips) or a model (--voice or --acoustic)")
    if len(args.system) + model > 2:
        raise FlowspeechError("give one system (a --system folder or a model), or two to compare")
    if len(args.system) == 2 and args.compare:
        raise FlowspeechError("compare with a second --system or with --compare, not both")
    for option in ("nll", "name"):
        values = getattr(args, option) or []
        if len(values) > len(args.system):
            raise FlowspeechError(f"--{option} is given {len(values)} times for "
                                  f"{len(args.system)} --system folder(s)")
    if args.copy_synthesis and not args.reference:
        raise FlowspeechError("--copy-synthesis compares with the original clips: give --reference")
    if args.jobs < 1:
        raise FlowspeechError("--jobs must be at least 1")
    if not 0 < args.alpha < 1:
        raise FlowspeechError("--alpha must be between 0 and 1")


def _nth(values, i):
    return values[i] if values and i < len(values) else None


def _worst_ids(report, k: int = 3) -> list[str]:
    import math

    def badness(row: dict) -> tuple[float, float]:
        return tuple(v if isinstance(v, float) and math.isfinite(v) else -math.inf
                     for v in (row.get("mcd"), row.get("wer")))

    return [r["id"] for r in sorted(report.rows, key=badness, reverse=True)[:k]]


def run(args) -> int:
    from pathlib import Path

    from flowspeech.evaluation import EvalOptions, compare_reports, evaluate
    from flowspeech.evaluation.report import load_report, write_report

    _check_args(args)
    options = EvalOptions(asr=not args.no_asr, copy_synthesis=args.copy_synthesis,
                          f0_method=args.f0_method, hmm=args.hmm, lm=args.lm, dict=args.dict,
                          asr_resampler=args.asr_resampler, mcd_max_hz=args.mcd_max_hz)
    if args.voice is not None or args.acoustic is not None:
        from flowspeech.evaluation.inputs import read_transcripts
        from flowspeech.evaluation.synthesis import synthesize_test_set

        wavs = Path(args.out) / "wavs"
        run = synthesize_test_set(read_transcripts(args.text), wavs, acoustic=args.acoustic,
                                  voice=args.voice, vocoder=args.vocoder,
                                  noise_scale=args.noise_scale, seed=args.seed,
                                  progress=not args.quiet)
        print(f"spoke {run['sentences']} sentences into {wavs} with {run['acoustic']} + "
              f"{run['vocoder']} (model loaded in {run['load_s']:.2f} s)")
        args.system = [str(wavs), *args.system]
        if run["voice"] and not args.name:
            args.name = [run["voice"]]
    reports = []
    for i, system in enumerate(args.system):
        reports.append(evaluate(system, args.reference, args.text, options,
                                nll=_nth(args.nll, i), jobs=args.jobs, name=_nth(args.name, i),
                                progress=not args.quiet))
    report, other = reports[0], None
    if len(reports) == 2:
        other = reports[1]
        if other.name == report.name:
            other.name += " (2)"
        write_report(other, Path(args.out) / "compared", plots=not args.no_plots)
    elif args.compare:
        other = load_report(args.compare)
    if other is not None:
        report.comparison = compare_reports(report, other, args.alpha)

    mel_ids = args.mels or []
    if mel_ids == ["worst"]:
        mel_ids = _worst_ids(report)
    written = write_report(report, args.out, plots=not args.no_plots, mel_ids=mel_ids, other=other)

    print(_summary_line(report))
    if report.ids["missing_in_system"] or report.ids["missing_in_reference"] or report.failed:
        print(f"  not evaluated: {len(report.ids['missing_in_system'])} without a system clip, "
              f"{len(report.ids['missing_in_reference'])} without a reference clip, "
              f"{len(report.failed)} failed (listed in report.md)")
    if report.comparison:
        significant = [t["metric"] for t in report.comparison["tests"] if t["significant"]]
        print(f"  vs {other.name}: {len(report.comparison['tests'])} metrics tested on "
              f"{report.comparison['paired_utterances']} utterances; significant at "
              f"{args.alpha}: {', '.join(significant) or 'none'}")
    print(f"wrote {', '.join(str(p) for p in written[:3])} and {len(written) - 3} more"
          if len(written) > 3 else f"wrote {', '.join(str(p) for p in written)}")
    return 0 if report.rows else 1


def _summary_line(report) -> str:
    from flowspeech.evaluation.report import format_value

    overall = report.overall
    parts = [f"{report.name}: {overall['utterances']} utterances"]
    for key, label in (("wer", "WER"), ("cer", "CER"), ("mcd", "MCD"), ("f0_rmse_cents", "F0 RMSE"),
                       ("vde", "VDE"), ("duration_ratio", "duration ratio"), ("pesq", "PESQ"),
                       ("stoi", "STOI"), ("mrstft", "MR-STFT"), ("rtf", "RTF"),
                       ("rtf_acoustic", "RTF acoustic"), ("rtf_vocoder", "RTF vocoder"),
                       ("nll_per_dim", "NLL")):
        if key in overall:
            parts.append(f"{label} {format_value(key, overall[key])}")
    return ", ".join(parts)
