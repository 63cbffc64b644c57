"""Choose a Glow-TTS voice's synthesis settings by measurement on the validation split.

Runs ``eval_voice.py`` once per setting of a grid (duration rounding x noise scale) on the
same sentences, the recordings and their Griffin-Lim copy-synthesis scored once, and prints
one table of the goals of ``docs/default-voice.md``: duration ratio, log-F0 RMSE, voicing
decision error, WER (paired Wilcoxon against the recordings) and MCD. The chosen setting
meets the most goals, then is the most intelligible (lowest WER). Never run it on the test
split: the test split is for reporting the chosen setting.

    python benchmarks/voice_settings_search.py --corpus data/slt_hts --out reports/search \\
        --rounding ceil:1 --rounding round:1.099 --noise-scale 0 --noise-scale 0.333

Each setting's full report is in ``OUT/<setting>/``; the table is also ``OUT/search.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--voice", default=None, help="named voice (default: the shipped default voice)")
    ap.add_argument("--rounding", action="append", required=True,
                    help="RULE:SCALE, e.g. ceil:1 or round:1.099; repeat")
    ap.add_argument("--noise-scale", type=float, action="append", required=True, help="repeat")
    ap.add_argument("--jobs", type=int, default=2, help="evaluation worker processes")
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the synthesis (0: as is)")
    ap.add_argument("--teacher", help="an eval_voice.py OUT on the same sentences whose scores of the "
                    "recordings and their copy-synthesis to reuse")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.split == "test":
        raise SystemExit("choose settings on the validation split; the test split reports them")

    out = Path(args.out)
    results, teacher = [], (Path(args.teacher) if args.teacher else None)
    for rounding in args.rounding:
        rule, scale = rounding.split(":")
        for noise in args.noise_scale:
            name = f"{rule}{float(scale):g}-noise{noise:g}"
            cmd = [sys.executable, str(HERE / "eval_voice.py"), "--corpus", args.corpus, "--split",
                   args.split, "--limit", str(args.limit), "--noise-scale", str(noise),
                   "--duration-rounding", rule, "--duration-scale", scale, "--jobs", str(args.jobs),
                   "--threads", str(args.threads),
                   "--out", str(out / name)]
            if args.voice:
                cmd += ["--voice", args.voice]
            if teacher is not None:
                cmd += ["--teacher", str(teacher)]
            if not (out / name / "summary.json").exists():
                subprocess.run(cmd, check=True)
            teacher = teacher or out / name
            summary = json.loads((out / name / "summary.json").read_text())
            voice = summary["rows"]["voice"]
            results.append({"setting": name, "rule": rule, "scale": float(scale), "noise_scale": noise,
                            **voice, "wer_p": summary["wer_against_teacher"]["p_value"],
                            "goals_met": sum(summary["goals"].values()), "goals": summary["goals"]})
    floor = json.loads((teacher / "summary.json").read_text())["rows"]
    chosen = min(results, key=lambda r: (-r["goals_met"], r["wer"]))
    (out / "search.json").write_text(json.dumps({"results": results, "floor": floor,
                                                 "chosen": chosen["setting"]}, indent=2) + "\n")
    print(f"{args.split} split, first {args.limit} sentences")
    print("| durations | noise scale | duration ratio | log-F0 RMSE | VDE | WER (p against recordings) | MCD (dB) | goals met |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, label in (("teacher", "recordings"), ("copy_synthesis", "Griffin-Lim copy-synthesis")):
        f = floor[key]
        ratio = "–" if f["duration_ratio"] is None else f"{f['duration_ratio']:.3f}"
        f0 = "–" if f["log_f0_rmse"] is None else f"{f['log_f0_rmse']:.3f}"
        vde = "–" if f["vde"] is None else f"{100 * f['vde']:.1f} %"
        mcd = "–" if f["mcd"] is None else f"{f['mcd']:.2f}"
        print(f"| {label} | | {ratio} | {f0} | {vde} | {100 * f['wer']:.1f} % | {mcd} | |")
    for r in results:
        mark = " **(chosen)**" if r is chosen else ""
        print(f"| {r['rule']} x {r['scale']:g}{mark} | {r['noise_scale']:g} | {r['duration_ratio']:.3f} | "
              f"{r['log_f0_rmse']:.3f} | {100 * r['vde']:.1f} % | {100 * r['wer']:.1f} % ({r['wer_p']:.2g}) | "
              f"{r['mcd']:.2f} | {r['goals_met']} of {len(r['goals'])} |")


if __name__ == "__main__":
    main()
