"""How close does a vocoder bring a recording back from its mel? Copy-synthesis, scored.

For the first ``--limit`` clips of a corpus split (held out from training), computes each
clip's mel with the vocoder's own front end, synthesises it with every ``--vocoder`` given
(WaveGlow or FloWaveNet checkpoints, and ``griffin-lim`` as the floor), and scores the
results against the recordings with ``flowspeech.evaluation``: PESQ (wide band), STOI,
multi-resolution STFT distance, MCD (up to the centre of the front end's highest mel
filter unless ``--mcd-full-band``), log-F0 RMSE, the log-spectral distance, and the
real-time factor of the vocoder alone on this machine.

    python benchmarks/eval_vocoder.py --corpus data/slt_hts --split val --limit 20 \\
        --vocoder runs/waveglow/checkpoints/step_00004000.pt --vocoder griffin-lim \\
        --out reports/vocoders

Writes ``OUT/<name>/wavs/`` (listen-ready clips with timings.json), ``OUT/<name>/report``
(the evaluation report) and ``OUT/summary.json``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def vocoder_name(spec: str) -> str:
    if spec == "griffin-lim":
        return "griffin-lim"
    path = Path(spec)
    return f"{path.parent.parent.name}-{path.stem}" if path.parent.name == "checkpoints" else path.stem


def main() -> None:
    from _heldout import add_split_arguments

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_split_arguments(ap, split="val", limit=20)
    ap.add_argument("--vocoder", action="append", required=True,
                    help="a vocoder checkpoint or griffin-lim; repeat to compare several")
    ap.add_argument("--sigma", type=float, default=None, help="sampling temperature (default: the model's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--jobs", type=int, default=1, help="evaluation worker processes")
    ap.add_argument("--precision", action="append", choices=("float32", "bfloat16", "float16"),
                    help="coupling-network precision of the neural vocoders; repeat to compare "
                         "several (default float32)")
    ap.add_argument("--mcd-full-band", action="store_true",
                    help="MCD over the whole band (default: up to the centre of the highest mel "
                         "filter, the band a mel vocoder can reproduce)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import numpy as np
    import torch
    from _heldout import copy_synthesis, first_sentences

    from flowspeech.audio import log_spectral_distance
    from flowspeech.evaluation import EvalOptions, evaluate
    from flowspeech.evaluation.report import write_report
    from flowspeech.inference.vocoders import load_vocoder

    if args.threads:
        torch.set_num_threads(args.threads)
    corpus, out = Path(args.corpus), Path(args.out)
    sentences, text_file = first_sentences(corpus, args.split, args.limit, out)
    ids = [uid for uid, _ in sentences]

    from flowspeech.audio import MelConfig

    precisions = args.precision or ["float32"]
    runs = [(spec, p) for spec in args.vocoder
            for p in (["float32"] if spec == "griffin-lim" else precisions)]
    rows = []
    for spec, precision in runs:
        name = vocoder_name(spec) + ("" if precision == "float32" else f"-{precision}")
        if spec == "griffin-lim":
            vocoder = load_vocoder(spec, MelConfig.glow_tts())
        else:
            vocoder = load_vocoder(spec, None, "cpu", args.sigma, precision=precision)
        config = vocoder.mel_config
        mcd_max_hz = None if args.mcd_full_band else config.top_filter_hz
        wav_dir = out / name / "wavs"
        lsd, audio_seconds = [], 0.0
        for _, audio, wave in copy_synthesis(vocoder, corpus, ids, wav_dir, args.seed):
            lsd.append(log_spectral_distance(torch.as_tensor(audio), torch.as_tensor(wave)))
            audio_seconds += len(wave) / config.sample_rate
        compute_seconds = sum(json.loads((wav_dir / "timings.json").read_text()).values())
        report = evaluate(wav_dir, reference=corpus / "wavs", text=text_file,
                          options=EvalOptions(copy_synthesis=True, mcd_max_hz=mcd_max_hz), jobs=args.jobs, progress=False,
                          name=name)
        write_report(report, out / name / "report", plots=False)
        o = report.overall
        rows.append({"vocoder": name, "checkpoint": spec, "clips": len(ids),
                     "pesq": o.get("pesq"), "stoi": o.get("stoi"), "mr_stft": o.get("mrstft"),
                     "mcd": o.get("mcd"), "f0_rmse": o.get("log_f0_rmse"), "wer": o.get("wer"),
                     "lsd_db": float(np.mean(lsd)), "rtf": compute_seconds / audio_seconds})
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")

    def fmt(value, spec):
        return "–" if value is None else format(value, spec)

    print(f"Copy-synthesis of the first {len(ids)} {args.split} clips of {corpus}")
    print("| vocoder | PESQ-WB | STOI | MR-STFT | MCD (dB) | log-F0 RMSE | LSD (dB) | WER | RTF |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['vocoder']} | {fmt(r['pesq'], '.2f')} | {fmt(r['stoi'], '.3f')} | "
              f"{fmt(r['mr_stft'], '.3f')} | {fmt(r['mcd'], '.2f')} | {fmt(r['f0_rmse'], '.3f')} | "
              f"{r['lsd_db']:.2f} | {fmt(r['wer'] and 100 * r['wer'], '.1f')}% | {r['rtf']:.2f} |")


if __name__ == "__main__":
    main()
