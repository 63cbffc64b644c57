"""Is this voice good enough, and better than the one we ship? One table, three rows.

Speaks the first ``--limit`` sentences of a corpus split (never seen in training) with a
voice, and scores, against the teacher's recordings of the same sentences:

* the recordings themselves (PocketSphinx WER and CER: the floor of the recogniser);
* Griffin-Lim copy-synthesis of the recordings' own mels, with the voice's audio settings and
  iterations (the floor of the vocoder: what no acoustic model can beat with this vocoder);
* the voice.

An end-to-end model (NaturalSpeech) makes its own waveform: it has no separate vocoder to
copy-synthesise with, so its table has no copy-synthesis row (``--teacher`` then reuses only
the recordings' scores).

Each row has WER, CER, the duration ratio over the speech span, log-F0 RMSE, the voicing
decision error (VDE), MCD up to ``--mcd-max-hz`` (the centre of the top mel filter, 7.7 kHz:
where the mel front end's band ends), the same
with each sentence's mean cepstral difference removed (a fixed colouring, such as the one
Griffin-Lim itself adds, does not count; ``flowspeech.evaluation.spectral``) and the
real-time factor, so that the gap owed to the vocoder (copy-synthesis against the recordings)
and the gap owed to the acoustic model (the voice against copy-synthesis) are read off one
table. The voice's WER is tested against the recordings' with a paired Wilcoxon signed-rank
test; ``--compare`` adds paired tests against an earlier run of this script (e.g. the voice
shipped before). The goals of ``docs/default-voice.md`` are checked in the last lines.

    python benchmarks/eval_voice.py --corpus data/slt_hts --split val --out reports/voice-val
    python benchmarks/eval_voice.py --corpus data/slt_hts --split val --out reports/round \
        --duration-rounding round --duration-scale 1.099 --teacher reports/voice-val \
        --compare reports/voice-val

Choose settings on the validation split; report on the test split. ``--teacher DIR`` reuses
the recordings' and copy-synthesis scores of an earlier run on the same sentences (minutes
of ASR and F0 analysis). Writes OUT/wavs/ (clips + timings.json), OUT/copy_synthesis/wavs/,
OUT/system/, OUT/teacher/ and OUT/copy_synthesis/ (evaluation reports) and OUT/summary.json;
prints the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

# The goals of docs/default-voice.md, against the teacher's recordings.
GOALS = {"duration_ratio": (0.97, 1.03), "log_f0_rmse": 0.06, "vde": 0.08}


def main() -> None:
    from _heldout import add_split_arguments

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--voice", help="named voice (default: the shipped default voice)")
    who.add_argument("--acoustic", help="Glow-TTS or NaturalSpeech checkpoint")
    ap.add_argument("--vocoder", default="griffin-lim")
    add_split_arguments(ap, split="test", limit=100)
    ap.add_argument("--noise-scale", type=float, default=None,
                    help="prior temperature (default: the voice's setting, else 0.667)")
    ap.add_argument("--length-scale", type=float, default=None,
                    help="pace (default: the voice's setting, else 1.0)")
    ap.add_argument("--duration-rounding", choices=("ceil", "round"), default=None,
                    help="how a Glow-TTS voice rounds predicted durations (default: the voice's setting)")
    ap.add_argument("--duration-scale", type=float, default=1.0,
                    help="with --duration-rounding: the predictor's calibration scale")
    ap.add_argument("--mcd-max-hz", type=float, default=None,
                    help="MCD over spectral envelopes up to this frequency (0: the full band; "
                         "default: the centre of the voice's highest mel filter, 7,699 Hz for "
                         "80 bands over 0-8 kHz, where a mel vocoder's band ends)")
    ap.add_argument("--f0-method", choices=("dio", "harvest"), default="dio",
                    help="WORLD F0 estimator (default dio: on Griffin-Lim's output harvest finds "
                         "voicing in the phase noise, and its copy-synthesis floor hides the "
                         "acoustic model's errors; see docs/default-voice.md)")
    ap.add_argument("--rescore", action="store_true",
                    help="score the clips an earlier run with the same settings left in OUT again "
                         "(other metrics options), without synthesising them again")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--griffin-lim-iterations", type=int, default=None,
                    help="Griffin-Lim iterations of the voice and of copy-synthesis (default: the "
                         "vocoder's, 12)")
    ap.add_argument("--griffin-lim-init", choices=("pghi", "random"), default=None,
                    help="Griffin-Lim's starting phase for the voice and copy-synthesis (default: "
                         "the vocoder's, pghi; random: as the voice had it until 2026-12-07)")
    ap.add_argument("--griffin-lim-mel-iterations", type=int, default=None,
                    help="Griffin-Lim's mel-matching iterations for the voice and copy-synthesis "
                         "(default: the vocoder's, 30; 0: as the voice had it until 2026-12-07)")
    ap.add_argument("--griffin-lim-harmonic-iterations", type=int, default=None,
                    help="Griffin-Lim's harmonic-restoration iterations for the voice and "
                         "copy-synthesis (default: the vocoder's; 0: none)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--jobs", type=int, default=1, help="evaluation worker processes")
    ap.add_argument("--compare", help="an earlier OUT of this script: paired tests against it")
    ap.add_argument("--teacher", help="an earlier OUT of this script on the same corpus and "
                    "sentences: reuse its scores of the recordings and of their copy-synthesis")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    from _heldout import first_sentences, mcd_band_hz

    from flowspeech.audio import MelConfig
    from flowspeech.evaluation import EvalOptions, compare_reports, evaluate
    from flowspeech.evaluation.report import load_report, write_report
    from flowspeech.evaluation.synthesis import synthesize_test_set

    if args.threads:
        torch.set_num_threads(args.threads)
    corpus, out = Path(args.corpus), Path(args.out)
    sentences, text_file = first_sentences(corpus, args.split, args.limit, out)
    ids = [uid for uid, _ in sentences]
    rounding = (None if args.duration_rounding is None
                else {"rule": args.duration_rounding, "scale": args.duration_scale})
    wav_dir = out / "wavs"
    if args.rescore:
        run = json.loads((wav_dir / "run.json").read_text())
    else:
        run = synthesize_test_set(dict(sentences), wav_dir, acoustic=args.acoustic, voice=args.voice,
                                  vocoder=args.vocoder, noise_scale=args.noise_scale,
                                  length_scale=args.length_scale, duration_rounding=rounding,
                                  seed=args.seed, griffin_lim_iterations=args.griffin_lim_iterations,
                                  griffin_lim_init=args.griffin_lim_init,
                                  griffin_lim_mel_iterations=args.griffin_lim_mel_iterations,
                                  griffin_lim_harmonic_iterations=(
                                      args.griffin_lim_harmonic_iterations),
                                  progress=False)
        (wav_dir / "run.json").write_text(json.dumps(run, indent=1) + "\n")

    mel_config = MelConfig.from_dict(run["mel_config"]) if run.get("mel_config") else None
    options = EvalOptions(mcd_max_hz=mcd_band_hz(args.mcd_max_hz, mel_config),
                          f0_method=args.f0_method)
    kwargs = {"text": text_file, "options": options, "jobs": args.jobs, "progress": False}
    system = evaluate(wav_dir, reference=corpus / "wavs", name=run["voice"] or Path(run["acoustic"]).stem,
                      **kwargs)
    end_to_end = run.get("end_to_end", False)
    floor_settings = (None if end_to_end else
                      {"mel_config": run["mel_config"], "vocoder": run["vocoder"], "seed": args.seed,
                       "mcd_max_hz": options.mcd_max_hz, "f0_method": options.f0_method})
    teacher, floor = earlier_reports(args.teacher, ids, floor_settings)
    if teacher is None:
        teacher = evaluate(corpus / "wavs", name="teacher",
                           **{**kwargs, "options": EvalOptions(spectral=False)})
    if floor is None and not end_to_end:
        floor_dir = out / "copy_synthesis" / "wavs"
        if not (args.rescore and (floor_dir / "timings.json").exists()):
            copy_synthesis_of(corpus, ids, floor_dir, args)
        floor = evaluate(floor_dir, reference=corpus / "wavs", name="griffin-lim copy-synthesis", **kwargs)
    against_teacher = compare_reports(system, teacher)
    if args.compare:
        system.comparison = compare_reports(system, load_report(Path(args.compare) / "system"))
    write_report(system, out / "system")
    write_report(teacher, out / "teacher", plots=False)
    if floor is not None:
        write_report(floor, out / "copy_synthesis", plots=False)

    wer_test = next(t for t in against_teacher["tests"] if t["metric"] == "wer")
    o = system.overall
    goals = {
        "duration_ratio": GOALS["duration_ratio"][0] <= o["duration_ratio"] <= GOALS["duration_ratio"][1],
        "log_f0_rmse": o["log_f0_rmse"] <= GOALS["log_f0_rmse"],
        "vde": o["vde"] <= GOALS["vde"],
        "wer_not_significantly_worse": not (wer_test["significant"] and wer_test["mean_difference"] > 0),
    }
    if system.comparison is not None:
        mcd_test = next((t for t in system.comparison["tests"] if t["metric"] == "mcd"), None)
        if mcd_test is not None:
            goals["mcd_not_significantly_worse_than_compared"] = not (
                mcd_test["significant"] and mcd_test["mean_difference"] > 0)
    summary = {
        "voice": system.name, "acoustic": run["acoustic"], "vocoder": run["vocoder"],
        "noise_scale": run["noise_scale"], "length_scale": run["length_scale"],
        "duration_rounding": run["duration_rounding"], "split": args.split,
        "sentences": len(sentences), "torch_threads": torch.get_num_threads(), "load_s": run["load_s"],
        "floor_settings": floor_settings,
        "rows": {name: row_figures(report) for name, report in
                 (("teacher", teacher), ("copy_synthesis", floor), ("voice", system))
                 if report is not None},
        "wer_against_teacher": wer_test,
        "compared_with": args.compare,
        "comparison": system.comparison,
        "goals": goals,
        # Kept for earlier readers of summary.json.
        "wer": o["wer"], "cer": o["cer"], "teacher_wer": teacher.overall["wer"],
        "wer_gap_points": 100 * (o["wer"] - teacher.overall["wer"]), "rtf": o["rtf"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_table(summary)


def row_figures(report) -> dict:
    keys = ("wer", "cer", "duration_ratio", "log_f0_rmse", "vde", "mcd", "mcd_cmn", "rtf")
    return {k: report.overall.get(k) for k in keys}


def print_table(summary: dict) -> None:
    def fmt(value, spec, scale=1.0):
        return "–" if value is None else format(scale * value, spec)

    rounding = summary["duration_rounding"]
    print(f"{summary['voice']} on {summary['sentences']} {summary['split']} sentences (noise_scale "
          f"{summary['noise_scale']:g}, length_scale {summary['length_scale']:g}"
          + (f", durations {rounding['rule']} x {rounding['scale']:g}" if rounding else "") + ")")
    print("| | WER | CER | duration ratio | log-F0 RMSE | VDE | MCD (dB) | MCD, mean removed | RTF |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {"teacher": "teacher's recordings", "copy_synthesis": "Griffin-Lim copy-synthesis",
             "voice": summary["voice"]}
    for key, row in summary["rows"].items():
        print(f"| {names[key]} | {fmt(row['wer'], '.1f', 100)}% | {fmt(row['cer'], '.1f', 100)}% | "
              f"{fmt(row['duration_ratio'], '.3f')} | {fmt(row['log_f0_rmse'], '.3f')} | "
              f"{fmt(row['vde'], '.1f', 100)}% | {fmt(row['mcd'], '.2f')} | "
              f"{fmt(row.get('mcd_cmn'), '.2f')} | {fmt(row['rtf'], '.3f')} |")
    t = summary["wer_against_teacher"]
    print(f"WER against the recordings, paired Wilcoxon on {t['n']} sentences: mean difference "
          f"{100 * t['mean_difference']:+.1f} points, p = {t['p_value']:.3g}"
          f" ({'significant' if t['significant'] else 'not significant'})")
    for test in (summary.get("comparison") or {}).get("tests", []):
        if test["metric"] in ("mcd", "mcd_cmn", "log_f0_rmse", "vde", "wer"):
            print(f"{test['metric']} against {summary['compared_with']}: mean difference "
                  f"{test['mean_difference']:+.4f}, p = {test['p_value']:.2g}")
    print("goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in summary["goals"].items()))


def copy_synthesis_of(corpus: Path, ids: list[str], out: Path, args) -> Path:
    """Griffin-Lim (the voice's audio settings and iterations) of each recording's own mel."""
    from _heldout import copy_synthesis

    from flowspeech.evaluation.synthesis import set_griffin_lim
    from flowspeech.inference.synthesizer import Synthesizer

    tts = Synthesizer(args.acoustic, voice=args.voice, vocoder=args.vocoder)
    if tts.vocoder is None:
        raise SystemExit("an end-to-end model has no separate vocoder to copy-synthesise with")
    set_griffin_lim(tts, args.griffin_lim_iterations, args.griffin_lim_init,
                    args.griffin_lim_mel_iterations, args.griffin_lim_harmonic_iterations)
    if out.exists():
        shutil.rmtree(out)
    for _ in copy_synthesis(tts.vocoder, corpus, ids, out, args.seed):
        pass
    return out


def earlier_reports(run_dir: str | None, ids: list[str], floor_settings: dict | None):
    """``(teacher, copy_synthesis)``: the recordings' and copy-synthesis reports of an earlier
    run of this script (``--teacher``), checked to cover the same sentences; its copy-synthesis
    only where it used the same settings (else None: made again). Neither changes with the
    voice's settings, and scoring them again takes minutes. ``floor_settings`` None (an
    end-to-end model): the recordings' report only.
    ``(None, None)`` without ``run_dir``."""
    from flowspeech.errors import DatasetError
    from flowspeech.evaluation.report import load_report

    if not run_dir:
        return None, None
    teacher = load_report(Path(run_dir) / "teacher")
    floor = None if floor_settings is None else load_report(Path(run_dir) / "copy_synthesis")
    for report in (teacher, floor):
        if report is not None and sorted(r["id"] for r in report.rows) != sorted(ids):
            raise DatasetError(f"{run_dir} scored other sentences than these {len(ids)}; "
                               "leave out --teacher to score the recordings")
    if floor is None:
        print(f"recordings: the scores of {run_dir}")
        return teacher, None
    earlier = json.loads((Path(run_dir) / "summary.json").read_text()).get("floor_settings")
    if earlier != json.loads(json.dumps(floor_settings)):
        print(f"recordings: the scores of {run_dir}; copy-synthesis again, since that run's "
              f"settings were other ({earlier})")
        return teacher, None
    print(f"recordings and copy-synthesis: the scores of {run_dir}")
    return teacher, floor

if __name__ == "__main__":
    main()
