"""Choose Griffin-Lim's starting phase and iterations by measurement on the validation split.

Speaks the first sentences of a split once with a voice (its own settings), then inverts the
same mels, and the recordings' own mels (copy-synthesis), with each Griffin-Lim setting, and
scores every clip against the recordings as ``eval_voice.py`` does (WORLD dio F0, MCD over
the mel's band), without speech recognition: the vocoder changes pitch, voicing and spectrum,
and a minute per setting makes a grid affordable. Confirm the chosen setting with
``eval_voice.py`` (WER included). Never run it on the test split.

    python benchmarks/griffin_lim_settings.py --corpus data/slt_hts --out reports/gl-settings \\
        --setting random:60 --setting pghi:16 --setting pghi:32 --setting pghi:60

A setting is ``INIT:N_ITER[:MEL_ITER[:HARMONIC_ITER]]``: the starting phase, the iterations,
the mel-matching iterations after them and the harmonic restoration's (between the two; none
if left out). Each setting's clips are in
``OUT/<voice|copy_synthesis>-<init><n_iter>[m<mel_iter>][h<harmonic_iter>]/``; the table is
also ``OUT/settings.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    from _heldout import add_split_arguments

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_split_arguments(ap, split="val", limit=100)
    source = ap.add_mutually_exclusive_group()
    source.add_argument("--voice", help="named voice (default: the shipped default voice)")
    source.add_argument("--acoustic", help="a Glow-TTS checkpoint, at its own settings")
    ap.add_argument("--setting", action="append", required=True,
                    help="INIT:N_ITER[:MEL_ITER], INIT pghi or random (e.g. pghi:16, pghi:12:30); "
                         "repeat")
    ap.add_argument("--jobs", type=int, default=1, help="evaluation worker processes")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.split == "test":
        raise SystemExit("choose settings on the validation split; the test split reports them")

    import torch
    from _heldout import first_sentences, griffin_lim_setting

    from flowspeech.audio import load_wav, mel_spectrogram, save_wav
    from flowspeech.audio.griffin_lim import griffin_lim
    from flowspeech.evaluation.evaluate import EvalOptions, evaluate
    from flowspeech.inference.synthesizer import Synthesizer

    settings = [griffin_lim_setting(setting) for setting in args.setting]
    corpus, out = Path(args.corpus), Path(args.out)
    sentences, _ = first_sentences(corpus, args.split, args.limit, out)
    tts = Synthesizer(args.acoustic, voice=args.voice)
    config = tts.mel_config
    # the pause synthesize() puts between sentences
    pause = np.zeros(int(tts.sentence_pause * tts.sample_rate), np.float32)
    mels = {}
    for uid, text in sentences:
        recording, _ = load_wav(corpus / "wavs" / f"{uid}.wav", sample_rate=config.sample_rate)
        own = mel_spectrogram(torch.from_numpy(recording), config).numpy()
        mels[uid] = {"voice": tts.synthesize_full(text, seed=0).mels, "copy_synthesis": [own]}

    options = EvalOptions(asr=False, f0_method="dio", mcd_max_hz=config.top_filter_hz)
    rows = []
    for init, n_iter, mel_iter, harmonic_iter in settings:
        for kind in ("voice", "copy_synthesis"):
            folder = out / (f"{kind}-{init}{n_iter}" + (f"m{mel_iter}" if mel_iter else "")
                            + (f"h{harmonic_iter}" if harmonic_iter else ""))
            folder.mkdir(parents=True, exist_ok=True)
            seconds = 0.0
            for uid, _ in sentences:
                pieces = []
                for i, mel in enumerate(mels[uid][kind]):
                    t = time.perf_counter()
                    wav = griffin_lim(mel, config, n_iter=n_iter, init=init, mel_iter=mel_iter,
                                      harmonic_iter=harmonic_iter)
                    pieces += [pause, wav] if i else [wav]
                    seconds += time.perf_counter() - t
                save_wav(folder / f"{uid}.wav", np.concatenate(pieces), config.sample_rate)
            report = evaluate(folder, reference=corpus / "wavs", options=options, jobs=args.jobs,
                              progress=False)
            samples = sum(len(load_wav(folder / f"{uid}.wav")[0]) for uid, _ in sentences)
            audio = samples / config.sample_rate
            row = {"kind": kind, "init": init, "n_iter": n_iter, "mel_iter": mel_iter,
                   "harmonic_iter": harmonic_iter,
                   **{k: float(np.mean([r[k] for r in report.rows]))
                      for k in ("log_f0_rmse", "vde", "mcd")},
                   "rtf_griffin_lim": seconds / audio}
            rows.append(row)
            print(f"{kind:15s} {init:6s} {n_iter:4d} {mel_iter:4d}: "
                  f"log-F0 RMSE {row['log_f0_rmse']:.4f}  "
                  f"VDE {100 * row['vde']:.2f} %  MCD {row['mcd']:.3f} dB  "
                  f"RTF {row['rtf_griffin_lim']:.3f}", flush=True)
    (out / "settings.json").write_text(json.dumps({"split": args.split, "sentences": len(sentences),
                                                   "rows": rows}, indent=2) + "\n")
    print(f"\n{args.split} split, first {len(sentences)} sentences, "
          f"{torch.get_num_threads()} threads")
    print("| start | iterations | mel matching | voice: log-F0 RMSE | VDE | MCD (dB) "
          "| copy-synthesis: log-F0 RMSE | VDE | MCD (dB) | Griffin-Lim RTF |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for setting in settings:
        voice, floor = (next(r for r in rows
                             if (r["kind"], r["init"], r["n_iter"], r["mel_iter"]) == (k, *setting))
                        for k in ("voice", "copy_synthesis"))
        init, n_iter, mel_iter = setting
        print(f"| {init} | {n_iter} | {mel_iter} | {voice['log_f0_rmse']:.4f} | "
              f"{100 * voice['vde']:.2f} % | "
              f"{voice['mcd']:.3f} | {floor['log_f0_rmse']:.4f} | {100 * floor['vde']:.2f} % | "
              f"{floor['mcd']:.3f} | {voice['rtf_griffin_lim']:.3f} |")


if __name__ == "__main__":
    main()
