"""What Griffin-Lim loses in each of its two steps: the mel-to-linear magnitude, or the phase.

Re-synthesises the recordings of the first sentences of a corpus split three ways (four with
``--magnitude-probe``), with the voices' Griffin-Lim (12 iterations from the PGHI phase
unless told otherwise):

* from their mel (:func:`~flowspeech.audio.griffin_lim.griffin_lim` with ``mel_iter=0``: the
  magnitude by non-negative least squares against the mel basis, then phase retrieval): the
  copy-synthesis floor that ``eval_voice.py`` reported before the mel matching;
* the same, then the voices' mel-matching iterations (``griffin_lim``'s default): the
  copy-synthesis floor that ``eval_voice.py`` reports;
* from their own linear STFT magnitude (:func:`~flowspeech.audio.griffin_lim.phase_retrieval`:
  phase retrieval alone);
* with ``--magnitude-probe``, from the linear magnitude a network predicts from their mel
  (``mel_to_linear_probe.py``);

and scores them against the recordings as ``eval_voice.py`` does (PocketSphinx WER, WORLD dio
F0, MCD over the mel's band), with paired Wilcoxon tests. What the second loses is the phase
retrieval's; what the first loses beyond it, the mel-to-linear step's. Griffin-Lim learns
nothing, so any split is fair (the training split has the most sentences):

    python benchmarks/griffin_lim_ceiling.py --corpus data/slt_hts --split train --limit 500 \\
        --jobs 2 --out reports/gl-ceiling

Clips in ``OUT/{mel,matched,linear,probe}/``; reports in
``OUT/{recordings,mel,matched,linear,probe}/``
(``--reuse``: those already there are read, not made again); the table is also
``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    from _heldout import add_split_arguments

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_split_arguments(ap, split="train", limit=500)
    ap.add_argument("--griffin-lim", default=None,
                    metavar="INIT:N_ITER[:MEL_ITER[:HARMONIC_ITER]]",
                    help="Griffin-Lim's start and iterations, and the mel-matching iterations "
                         "of the matched row (default: the voices', pghi:12:30)")
    ap.add_argument("--magnitude-probe", metavar="PT",
                    help="also from the magnitude this mel_to_linear_probe.py network predicts")
    ap.add_argument("--reuse", action="store_true",
                    help="read the reports an earlier run left in OUT instead of scoring again")
    ap.add_argument("--jobs", type=int, default=1, help="evaluation worker processes")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import numpy as np
    import torch
    from _heldout import first_sentences, griffin_lim_setting

    from flowspeech.audio import MelConfig, load_wav, mel_spectrogram, save_wav
    from flowspeech.audio.features import LinearSpectrogram
    from flowspeech.audio.griffin_lim import INIT, MEL_ITER, N_ITER, griffin_lim, phase_retrieval
    from flowspeech.evaluation import EvalOptions, compare_reports, evaluate
    from flowspeech.evaluation.report import load_report, write_report

    init, n_iter, mel_iter, harmonic_iter = (griffin_lim_setting(args.griffin_lim)
                                             if args.griffin_lim else (INIT, N_ITER, MEL_ITER, 0))
    mel_iter = mel_iter or MEL_ITER  # the matched row's iterations
    corpus, out = Path(args.corpus), Path(args.out)
    sentences, text_file = first_sentences(corpus, args.split, args.limit, out)
    config = MelConfig.glow_tts()
    names = {"mel": "Griffin-Lim from the mel",
             "matched": "Griffin-Lim from the mel, then matching the mel",
             "linear": "Griffin-Lim from the linear magnitude"}
    if args.magnitude_probe:
        from mel_to_linear_probe import load_probe

        probe = load_probe(args.magnitude_probe)
        names["probe"] = "Griffin-Lim from the probe's magnitude"
    todo = [kind for kind in ("recordings", *names)
            if not (args.reuse and (out / kind / "report.json").exists())]
    linear = LinearSpectrogram(config)
    for uid, _ in sentences if set(todo) - {"recordings"} else []:
        recording, _ = load_wav(corpus / "wavs" / f"{uid}.wav", sample_rate=config.sample_rate)
        wav = torch.from_numpy(recording)
        mel = mel_spectrogram(wav, config)
        for kind in set(todo) & set(names):
            if kind in ("mel", "matched"):
                made = griffin_lim(mel, config, n_iter=n_iter, init=init,
                                   mel_iter=mel_iter if kind == "matched" else 0,
                                   harmonic_iter=harmonic_iter if kind == "matched" else 0)
            else:
                magnitude = linear(wav) if kind == "linear" else probe.magnitude(mel[None])[0]
                made = phase_retrieval(magnitude, config, n_iter=n_iter, init=init)
            (out / kind).mkdir(parents=True, exist_ok=True)
            save_wav(out / kind / f"{uid}.wav", np.clip(made, -1, 1), config.sample_rate)

    options = EvalOptions(mcd_max_hz=config.top_filter_hz, f0_method="dio")
    kwargs = {"text": text_file, "jobs": args.jobs, "progress": False}
    reports = {}
    for kind in ("recordings", *names):
        if kind not in todo:
            reports[kind] = load_report(out / kind)
            continue
        if kind == "recordings":
            reports[kind] = evaluate(corpus / "wavs", name="recordings",
                                     **{**kwargs, "options": EvalOptions(spectral=False)})
        else:
            reports[kind] = evaluate(out / kind, reference=corpus / "wavs", name=names[kind],
                                     options=options, **kwargs)
        write_report(reports[kind], out / kind, plots=False)
    recordings = reports.pop("recordings")

    def wer_test(a, b) -> dict:
        return next(t for t in compare_reports(a, b)["tests"] if t["metric"] == "wer")

    tests = {f"{kind}_vs_recordings": wer_test(report, recordings)
             for kind, report in reports.items()}
    tests["mel_vs_linear"] = wer_test(reports["mel"], reports["linear"])
    tests["matched_vs_mel"] = wer_test(reports["matched"], reports["mel"])
    tests["matched_vs_linear"] = wer_test(reports["matched"], reports["linear"])
    if "probe" in reports:
        tests["probe_vs_mel"] = wer_test(reports["probe"], reports["mel"])
    rows = {"recordings": {"wer": recordings.overall["wer"]}}
    for kind, report in reports.items():
        rows[kind] = {k: report.overall[k] for k in ("wer", "log_f0_rmse", "vde", "mcd")}
    summary = {"corpus": str(corpus), "split": args.split, "sentences": len(sentences),
               "griffin_lim": {"init": init, "n_iter": n_iter, "mel_iter": mel_iter},
               "rows": rows, "wer_tests": tests}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"\n{args.split} split, first {len(sentences)} sentences; Griffin-Lim {n_iter} "
          f"iterations from {init}")
    print("| | WER | log-F0 RMSE | VDE | MCD (dB) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| recordings | {100 * rows['recordings']['wer']:.1f} % | | | |")
    for kind, name in (("mel", "from the mel (NNLS magnitude)"),
                       ("matched", f"the same, then {mel_iter} iterations matching the mel"),
                       ("linear", "from the recordings' linear magnitude"),
                       ("probe", "from the probe's magnitude")):
        if kind not in rows:
            continue
        r = rows[kind]
        print(f"| {name} | {100 * r['wer']:.1f} % | {r['log_f0_rmse']:.3f} | "
              f"{100 * r['vde']:.1f} % | {r['mcd']:.2f} |")
    for name, t in tests.items():
        print(f"WER {name.replace('_', ' ')}: {100 * t['mean_difference']:+.1f} points, "
              f"p = {t['p_value']:.2g}")


if __name__ == "__main__":
    main()
