"""Restoring the harmonics above the mel's resolution after Griffin-Lim: a measured prototype.

From about 2 kHz up, a band of the 80-band mel is as wide as a voice's harmonic spacing or
wider, so the mel says how much energy a band holds but not that it lies on harmonics. Griffin-Lim's output (its mel matched)
keeps little of that structure: its peak-to-valley contrast above 2 kHz is about two thirds of
the recordings'. This prototype puts it back, as a fourth step after the voices' Griffin-Lim:

1. F0 of the Griffin-Lim output (WORLD DIO + StoneMask, 5 ms), taken at each STFT frame;
2. in each voiced frame, the bins above ``--from-hz`` (faded in over 500 Hz) are weighted by a
   harmonic comb: at each multiple of F0 the Hann window's main lobe, and ``--floor`` (the
   level between harmonics, relative to a harmonic's peak) everywhere;
3. phase retrieval from that magnitude, started from the output's own phase (12 fast
   Griffin-Lim iterations, as the voices use);
4. the mel matched again (30 iterations, as the voices use), which sets each band's level
   back to the target's and keeps the comb's structure within it.

It speaks the first sentences of a split with a voice (its own settings) and inverts the same
mels, and the recordings' own mels (copy-synthesis), with the voices' Griffin-Lim, then with
the harmonics restored; scores every clip against the recordings as ``eval_voice.py`` does
(PocketSphinx WER, WORLD dio F0, MCD over the mel's band) with paired Wilcoxon tests, and
prints each band's peak-to-valley contrast. Needs the ``eval`` extra (pyworld).

    python benchmarks/griffin_lim_harmonics.py --corpus data/slt_hts --split val --jobs 2 \\
        --out reports/gl-harmonics-val

Clips in ``OUT/{voice,copy_synthesis}-{griffin_lim,harmonics}/`` (``--reuse``: folders
already there are not made again, reports already there are read); the table is also
``OUT/summary.json``.
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

FLOOR = 0.1  # the comb between harmonics, relative to a harmonic's peak
FROM_HZ = 1500.0  # below, the mel's bands resolve the harmonics themselves
FADE_HZ = 500.0
RETRIEVAL_ITER = 12
MEL_ITER = 30
F0_PERIOD_MS = 5.0
CONTRAST_BANDS_HZ = (0, 500, 1000, 2000, 3000, 4000, 5500, 8000)
CONTRAST_CLIPS = 40  # the contrast table reads the first clips only


def frame_f0(wav: np.ndarray, config, n_frames: int) -> np.ndarray:
    """F0 (Hz, 0 unvoiced) of ``wav`` at the centres of its ``n_frames`` STFT frames."""
    import pyworld

    x = wav.astype(np.float64)
    f0, times = pyworld.dio(x, config.sample_rate, f0_floor=71.0, f0_ceil=800.0,
                            frame_period=F0_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, times, config.sample_rate)
    centres = np.arange(n_frames) * config.hop_length / config.sample_rate
    index = np.clip(np.round(centres / (F0_PERIOD_MS / 1000)).astype(int), 0, len(f0) - 1)
    return f0[index]


def main_lobe(config) -> tuple[np.ndarray, int]:
    """The analysis window's magnitude response from 0 to 2 bins (its main lobe), sampled 64
    times per bin and scaled to 1 at 0; and the sampling factor."""
    import scipy.signal

    oversample = 64
    window = scipy.signal.get_window("hann", config.win_length)  # periodic, as torch's
    response = np.abs(np.fft.rfft(window, n=config.n_fft * oversample))
    return response[: 2 * oversample] / response[0], oversample


def comb_gain(f0: np.ndarray, config, floor: float = FLOOR,
              from_hz: float = FROM_HZ) -> np.ndarray:
    """``[bins, F]`` factors: in each voiced frame, the window's main lobe at every multiple
    of its F0 plus ``floor``, faded in from ``from_hz``; 1 elsewhere."""
    lobe, oversample = main_lobe(config)
    bin_hz = config.sample_rate / config.n_fft
    freqs = np.arange(config.n_fft // 2 + 1) * bin_hz
    fade = np.clip((freqs - from_hz) / FADE_HZ, 0.0, 1.0)
    gain = np.ones((len(freqs), len(f0)))
    voiced = np.flatnonzero(f0 > 0)
    harmonic = freqs[:, None] / f0[voiced]  # [bins, voiced frames]
    offset = np.abs(harmonic - np.round(harmonic)) * f0[voiced] / bin_hz  # bins to the nearest
    index = np.round(offset * oversample).astype(int)
    comb = np.where(index < len(lobe), lobe[np.minimum(index, len(lobe) - 1)], 0.0) + floor
    gain[:, voiced] = comb ** fade[:, None]
    return gain


def restore_harmonics(mel, wav: np.ndarray, config, floor: float = FLOOR,
                      from_hz: float = FROM_HZ) -> np.ndarray:
    """Steps 1-4 of the module docstring on Griffin-Lim's output ``wav`` of ``mel``
    ``[n_mels, F]`` (``config``'s features, "center" padding)."""
    import torch

    # the library's phase retrieval and mel matching, from a phase of our own
    from flowspeech.audio.griffin_lim import _fast_griffin_lim

    mel = torch.as_tensor(mel, dtype=torch.float32)
    n_frames = mel.shape[-1]
    window = torch.hann_window(config.win_length, periodic=True)
    spectrum = torch.stft(torch.from_numpy(wav.astype(np.float32)), n_fft=config.n_fft,
                          hop_length=config.hop_length, win_length=config.win_length,
                          window=window, center=True, pad_mode="reflect", return_complex=True)
    gain = comb_gain(frame_f0(wav, config, n_frames), config, floor, from_hz)
    magnitude = spectrum.abs() * torch.from_numpy(gain.astype(np.float32))
    phase = torch.angle(spectrum) / (2 * np.pi)  # in turns
    made = _fast_griffin_lim(magnitude[None], config, RETRIEVAL_ITER, 0.99, phase[None],
                             mel[None], MEL_ITER)
    return made[0].numpy()


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
    ap.add_argument("--floor", type=float, default=FLOOR, help="the comb between harmonics")
    ap.add_argument("--from-hz", type=float, default=FROM_HZ,
                    help="the comb starts here (faded in over 500 Hz)")
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
                    made = griffin_lim(mel, config)
                    for step, wav in (("griffin_lim", made),
                                      ("harmonics", restore_harmonics(mel, made, config,
                                                                      args.floor, args.from_hz))):
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
               "floor": args.floor, "from_hz": args.from_hz, "rows": rows,
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
