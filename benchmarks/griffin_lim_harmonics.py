"""What Griffin-Lim's harmonic restoration does to intelligibility, pitch and the spectrum.

From about 2 kHz up, a band of the 80-band mel is as wide as a voice's harmonic spacing or
wider, so the mel says how much energy a band holds but not that it lies on harmonics.
Griffin-Lim's output (its mel matched) keeps little of that structure: its peak-to-valley
contrast above 2 kHz is about two thirds of the recordings'. The harmonic restoration of
:func:`flowspeech.audio.griffin_lim.griffin_lim` (``harmonic_iter``) puts it back: F0 of the
phase retrieval's output at each STFT frame (Praat's tracker), a harmonic comb on the bins
above 1.5 kHz in the voiced frames, phase retrieval again from that magnitude started from
the output's own phase, then the mel matching.

This script speaks the first sentences of a split with a voice (its own settings) and inverts
the same mels, and the recordings' own mels (copy-synthesis), with the voices' Griffin-Lim
without the step and with it (``--harmonic-iter`` iterations); scores every clip against the
recordings as ``eval_voice.py`` does (PocketSphinx WER, WORLD dio F0, MCD over the mel's band)
with paired Wilcoxon tests, and prints each band's peak-to-valley contrast.

    python benchmarks/griffin_lim_harmonics.py --corpus data/slt_hts --split val --jobs 2 \\
        --out reports/gl-harmonics-val

Clips in ``OUT/{voice,copy_synthesis}-{griffin_lim,harmonics}/`` (``--reuse``: folders
already there are not made again, reports already there are read); the table is also
``OUT/summary.json``. (The comb's floor and start were chosen on held-out training sentences
with an earlier form of this script that took them as options: docs/default-voice.md.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

HARMONIC_ITER = 12  # as many as the phase retrieval before it
CONTRAST_BANDS_HZ = (0, 500, 1000, 2000, 3000, 4000, 5500, 8000)
CONTRAST_CLIPS = 40  # the contrast table reads the first clips only


def band_contrast(wav: np.ndarray, recording: np.ndarray, config) -> np.ndarray:
    """Each band's mean log peak-to-valley contrast (over 5 bins) of ``wav``, in the frames
    within 30 dB of the recording's loudest."""
    import librosa
    import scipy.ndimage

    def spectrum(x):
        return np.abs(librosa.stft(x, n_fft=config.n_fft, hop_length=config.hop_length,
                                   win_length=config.win_length))

    level = 20 * np.log10(spectrum(recording).sum(axis=0) + 1e-9)
    log = np.log(spectrum(wav) + 1e-5)
    n = min(log.shape[1], len(level))
    log = log[:, :n][:, level[:n] > level.max() - 30]
    contrast = (scipy.ndimage.maximum_filter1d(log, 5, axis=0)
                - scipy.ndimage.minimum_filter1d(log, 5, axis=0))
    freqs = np.arange(log.shape[0]) * config.sample_rate / config.n_fft
    return np.array([contrast[(freqs >= lo) & (freqs < hi)].mean()
                     for lo, hi in itertools.pairwise(CONTRAST_BANDS_HZ)])


def main() -> None:
    from _heldout import add_split_arguments

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_split_arguments(ap, split="val", limit=100)
    ap.add_argument("--no-voice", action="store_true",
                    help="copy-synthesis only (any split: Griffin-Lim learns nothing)")
    ap.add_argument("--harmonic-iter", type=int, default=HARMONIC_ITER,
                    help="the step's phase-retrieval iterations")
    ap.add_argument("--no-asr", action="store_true", help="pitch, voicing and MCD only")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the clips and reports an earlier run left in OUT")
    ap.add_argument("--jobs", type=int, default=1, help="evaluation worker processes")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    from _heldout import first_sentences

    from flowspeech.audio import MelConfig, load_wav, mel_spectrogram, save_wav
    from flowspeech.audio.griffin_lim import griffin_lim
    from flowspeech.evaluation import EvalOptions, compare_reports, evaluate
    from flowspeech.evaluation.report import load_report, write_report
    from flowspeech.inference.synthesizer import Synthesizer

    corpus, out = Path(args.corpus), Path(args.out)
    sentences, text_file = first_sentences(corpus, args.split, args.limit, out)
    kinds = ("copy_synthesis",) if args.no_voice else ("voice", "copy_synthesis")
    tts = None if args.no_voice else Synthesizer()
    config = tts.mel_config if tts else MelConfig.glow_tts()
    pause = np.zeros(int(tts.sentence_pause * tts.sample_rate) if tts else 0, np.float32)
    folders = {(kind, step): out / f"{kind}-{step}"
               for kind in kinds for step in ("griffin_lim", "harmonics")}
    contrast = {key: [] for key in folders} | {"recordings": []}
    for n, (uid, text) in enumerate(sentences):
        todo = [key for key, folder in folders.items()
                if not (args.reuse and (folder / f"{uid}.wav").exists())]
        if not todo and n >= CONTRAST_CLIPS:
            continue
        recording, _ = load_wav(corpus / "wavs" / f"{uid}.wav", sample_rate=config.sample_rate)
        own = mel_spectrogram(torch.from_numpy(recording), config).numpy()
        for kind in kinds:
            if (kind, "griffin_lim") not in todo and (kind, "harmonics") not in todo:
                wavs = {step: load_wav(folders[kind, step] / f"{uid}.wav")[0]
                        for step in ("griffin_lim", "harmonics")}
            else:
                mels = tts.synthesize_full(text, seed=0).mels if kind == "voice" else [own]
                pieces = {"griffin_lim": [], "harmonics": []}
                for i, mel in enumerate(mels):
                    for step, harmonic_iter in (("griffin_lim", 0),
                                                ("harmonics", args.harmonic_iter)):
                        wav = griffin_lim(mel, config, harmonic_iter=harmonic_iter)
                        pieces[step] += [pause, wav] if i else [wav]
                wavs = {step: np.clip(np.concatenate(p), -1, 1) for step, p in pieces.items()}
                for step, wav in wavs.items():
                    folders[kind, step].mkdir(parents=True, exist_ok=True)
                    save_wav(folders[kind, step] / f"{uid}.wav", wav, config.sample_rate)
            if n < CONTRAST_CLIPS:
                for step, wav in wavs.items():
                    contrast[kind, step].append(band_contrast(wav, recording, config))
        if n < CONTRAST_CLIPS:
            contrast["recordings"].append(band_contrast(recording, recording, config))

    spectral = EvalOptions(mcd_max_hz=config.top_filter_hz, f0_method="dio",
                           asr=not args.no_asr)
    kwargs = {"text": None if args.no_asr else text_file, "jobs": args.jobs, "progress": False}

    def scored(folder: Path, **options):
        if args.reuse and (folder / "report.json").exists():
            return load_report(folder)
        report = evaluate(folder, **options, **kwargs)
        write_report(report, folder, plots=False)
        return report

    reports = {key: scored(folder, reference=corpus / "wavs", options=spectral)
               for key, folder in folders.items()}
    rows = {f"{kind}-{step}": {k: report.overall.get(k) for k in ("wer", "log_f0_rmse", "vde", "mcd")}
            for (kind, step), report in reports.items()}
    tests = {}
    metrics = ("log_f0_rmse", "vde", "mcd") + (() if args.no_asr else ("wer",))
    for kind in kinds:
        found = compare_reports(reports[kind, "harmonics"], reports[kind, "griffin_lim"])
        tests[f"{kind}: harmonics against griffin_lim"] = {
            t["metric"]: t for t in found["tests"] if t["metric"] in metrics}
    if not args.no_asr:
        recordings_dir = out / "recordings"
        if args.reuse and (recordings_dir / "report.json").exists():
            recordings = load_report(recordings_dir)
        else:
            recordings = evaluate(corpus / "wavs", name="recordings",
                                  options=EvalOptions(spectral=False), **kwargs)
            write_report(recordings, recordings_dir, plots=False)
        rows["recordings"] = {"wer": recordings.overall["wer"]}
        for (kind, step), report in reports.items():
            found = compare_reports(report, recordings)
            tests[f"{kind}-{step} against the recordings"] = {
                t["metric"]: t for t in found["tests"] if t["metric"] == "wer"}
    bands = [f"{lo}-{hi}" for lo, hi in itertools.pairwise(CONTRAST_BANDS_HZ)]
    table = {("-".join(key) if isinstance(key, tuple) else key): np.mean(v, axis=0).tolist()
             for key, v in contrast.items() if v}
    summary = {"corpus": str(corpus), "split": args.split, "sentences": len(sentences),
               "harmonic_iter": args.harmonic_iter, "rows": rows,
               "tests": tests, "contrast_bands_hz": bands, "contrast": table}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"\n{args.split} split, first {len(sentences)} sentences")
    print("| | WER | log-F0 RMSE | VDE | MCD (dB) |")
    print("|---|---:|---:|---:|---:|")
    if "recordings" in rows:
        print(f"| recordings | {100 * rows['recordings']['wer']:.1f} % | | | |")
    for name, r in rows.items():
        if name != "recordings":
            wer = "" if args.no_asr else f"{100 * r['wer']:.1f} %"
            print(f"| {name} | {wer} | {r['log_f0_rmse']:.4f} | {100 * r['vde']:.2f} % | "
                  f"{r['mcd']:.3f} |")
    for name, found in tests.items():
        print(name + ": " + ", ".join(f"{m} {t['mean_difference']:+.4f} (p = {t['p_value']:.2g})"
                                      for m, t in found.items()))
    print(f"\npeak-to-valley contrast (log, over 5 bins), first {CONTRAST_CLIPS} clips")
    print("| Hz | " + " | ".join(table) + " |")
    print("|---|" + "---:|" * len(table))
    for i, band in enumerate(bands):
        print(f"| {band} | " + " | ".join(f"{v[i]:.2f}" for v in table.values()) + " |")


if __name__ == "__main__":
    main()
