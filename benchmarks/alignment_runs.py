"""Compare alignment curves of several training runs, grouped (e.g. three seeds of one
configuration): a markdown table of the mean and the seed range of each validation metric at
every logged step, a figure of the curves, and a figure of the alignment paths of one
validation clip over the steps.

    python benchmarks/alignment_runs.py \\
        --group "VITS=runs/vits/seed0,runs/vits/seed1,runs/vits/seed2" \\
        --group "NaturalSpeech, ideas off=runs/ns/off-s0,runs/ns/off-s1,runs/ns/off-s2" \\
        --out docs/figures/ns-alignment [--clip 0] [--steps 0,50,250] [--corpus C]

Each run folder holds what ``ns_alignment_curve.py`` writes (``curve.json``: rows of
``step``, ``mas_one_frame``, ``mas_diagonal``, ...; ``paths.json``: every row's durations of
each validation clip); any trainer that writes the same two files can be compared.

With ``--corpus`` (the runs' corpus; their tokens are ``--config``'s front end's), the
one-frame share is also taken over phonemes alone: word spaces, punctuation and the stress
and length marks (ˈ ˌ ː) are tokens of their own in the IPA front end, and a frame is all
most of them need.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

MARKS = {"ˈ", "ˌ", "ː"}

METRICS = (("mas_one_frame", "one-frame share", "{:.1%}"),
           ("mas_diagonal", "diagonal deviation", "{:.3f}"),
           ("kl_bwd", "backward KL", "{:.2f}"),
           ("duration", "duration loss", "{:.3f}"))


def load_group(spec: str) -> tuple[str, list[dict]]:
    label, _, dirs = spec.partition("=")
    if not dirs:
        raise SystemExit(f"--group {spec!r}: expected LABEL=DIR[,DIR...]")
    runs = []
    for d in dirs.split(","):
        folder = Path(d)
        curve = json.loads((folder / "curve.json").read_text())
        paths_file = folder / "paths.json"
        paths = json.loads(paths_file.read_text()) if paths_file.exists() else {}
        runs.append({"dir": folder, "rows": {r["step"]: r for r in curve["rows"]}, "paths": paths})
    return label, runs


def summary(runs: list[dict], step: int, key: str) -> tuple[float, float, float, int] | None:
    values = [r["rows"][step][key] for r in runs if step in r["rows"]
              and r["rows"][step].get(key) is not None and not np.isnan(r["rows"][step][key])]
    if not values:
        return None
    return statistics.fmean(values), min(values), max(values), len(values)


def phoneme_one_frame(groups, corpus: str, config_name: str) -> None:
    """Adds ``phoneme_one_frame`` to every row that has paths: the one-frame share over the
    validation clips' phoneme tokens only."""
    import unicodedata

    from flowspeech.config import load_config
    from flowspeech.training.recipes import recipe_for

    recipe = recipe_for(load_config(config_name))
    _, val_set = recipe.build_datasets(corpus, None, None)

    def is_phoneme(symbol: str) -> bool:
        return not (symbol.isspace() or symbol in MARKS or unicodedata.category(symbol[0]).startswith("P"))

    n_clips = max(len(p) for _, runs in groups for r in runs for p in r["paths"].values())
    phonemes = [[is_phoneme(recipe.frontend.symbols[t]) for t in val_set[i]["tokens"].tolist()]
                for i in range(n_clips)]
    for _, runs in groups:
        for run in runs:
            for step, clips in run["paths"].items():
                ones = total = 0
                for durations, keep in zip(clips, phonemes):
                    pairs = [(d, k) for d, k in zip(durations, keep) if k]
                    ones += sum(d == 1 for d, _ in pairs)
                    total += len(pairs)
                if int(step) in run["rows"] and total:
                    run["rows"][int(step)]["phoneme_one_frame"] = ones / total


def table(groups: list[tuple[str, list[dict]]]) -> str:
    steps = sorted({s for _, runs in groups for r in runs for s in r["rows"]})
    lines = []
    metrics = METRICS
    if any("phoneme_one_frame" in row for _, runs in groups for r in runs for row in r["rows"].values()):
        metrics = METRICS[:1] + (("phoneme_one_frame", "one-frame share of phonemes", "{:.1%}"),) + METRICS[1:]
    for key, title, fmt in metrics:
        lines += [f"**{title}** (mean over runs, [min, max])", "",
                  "| step | " + " | ".join(label for label, _ in groups) + " |",
                  "|---:|" + "---|" * len(groups)]
        for step in steps:
            cells = []
            for _, runs in groups:
                s = summary(runs, step, key)
                if s is None:
                    cells.append("")
                elif s[3] == 1:
                    cells.append(fmt.format(s[0]))
                else:
                    cells.append(f"{fmt.format(s[0])} [{fmt.format(s[1])}, {fmt.format(s[2])}]")
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_curves(groups, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for (label, runs), color in zip(groups, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for ax, (key, title, _) in zip(axes, METRICS[:2]):
            for i, run in enumerate(runs):
                steps = sorted(run["rows"])
                ax.plot(steps, [run["rows"][s][key] for s in steps], color=color, alpha=0.8,
                        marker="o", markersize=3, label=label if i == 0 else None)
            ax.set_title(title)
            ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_paths(groups, clip: int, steps: list[int], out: Path) -> None:
    """One row per group (its first run that kept paths), one column per step: the path of
    validation clip ``clip`` as a token-by-frame image."""
    fig, axes = plt.subplots(len(groups), len(steps), figsize=(2.6 * len(steps), 2.2 * len(groups)),
                             squeeze=False)
    for row, (label, runs) in enumerate(groups):
        run = next((r for r in runs if r["paths"]), runs[0])
        for col, step in enumerate(steps):
            ax = axes[row][col]
            durations = run["paths"].get(str(step), [])
            if clip < len(durations):
                d = np.asarray(durations[clip], dtype=int)
                image = np.zeros((len(d), max(int(d.sum()), 1)))
                ends = np.cumsum(d)
                for i, (a, b) in enumerate(zip(ends - d, ends)):
                    image[i, a:b] = 1
                ax.imshow(image, aspect="auto", origin="lower", cmap="Greys", interpolation="nearest")
                ax.set_title(f"{label}\nstep {step}: {np.mean(d == 1):.0%} one-frame", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel("token", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--group", action="append", required=True, metavar="LABEL=DIR[,DIR...]")
    ap.add_argument("--out", required=True, help="prefix of the figures (OUT-curves.png, OUT-paths.png)")
    ap.add_argument("--clip", type=int, default=0, help="validation clip whose paths are drawn")
    ap.add_argument("--steps", default=None, help="steps drawn in the path figure (default: first, 50, last)")
    ap.add_argument("--corpus", default=None, help="the runs' corpus: adds the one-frame share of phonemes alone")
    ap.add_argument("--config", default="naturalspeech-small", help="whose front end made the runs' tokens")
    args = ap.parse_args()
    groups = [load_group(spec) for spec in args.group]
    if args.corpus:
        phoneme_one_frame(groups, args.corpus, args.config)
    print(table(groups))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_curves(groups, out.with_name(out.name + "-curves.png"))
    all_steps = sorted({s for _, runs in groups for r in runs for s in r["rows"]})
    steps = ([int(s) for s in args.steps.split(",")] if args.steps
             else sorted({all_steps[0], min(50, all_steps[-1]), all_steps[-1]}))
    plot_paths(groups, args.clip, steps, out.with_name(out.name + "-paths.png"))
    print(f"wrote {out.name}-curves.png and {out.name}-paths.png in {out.parent}")


if __name__ == "__main__":
    main()
