"""Figures of a training run for the docs: loss curves from train.log, and the MAS alignment
and mels of a validation utterance under the newest checkpoint.

    python benchmarks/plot_run.py RUN_DIR --data DATA --out docs/figures/glow-tts-small

Loss panels follow the run's model type (Glow-TTS, WaveGlow, FloWaveNet, NaturalSpeech); the
alignment figure (``--data``) is for Glow-TTS runs.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

LINE = re.compile(r"step (\d+) epoch \d+ (.*?) lr=")
VAL = re.compile(r"step (\d+) validation (.*)$")


def parse(log: Path):
    train, val = {}, {}
    for line in log.read_text().splitlines():
        for pattern, store in ((LINE, train), (VAL, val)):
            m = pattern.search(line)
            if m:
                step = int(m.group(1))
                for kv in m.group(2).split():
                    k, _, v = kv.partition("=")
                    try:
                        store.setdefault(k, []).append((step, float(v)))
                    except ValueError:
                        pass
    return train, val


# Panels per model type: (log key, title).
PANELS = {
    "glow-tts": [("nll", "NLL (nats per dimension)"), ("duration", "duration loss (MSE of log durations)")],
    "waveglow": [("nll", "NLL (nats per audio sample)"), ("lsd_db", "copy-synthesis log-spectral distance (dB)")],
    "flowavenet": [("nll", "NLL (nats per audio sample)"), ("lsd_db", "copy-synthesis log-spectral distance (dB)")],
    "naturalspeech": [("mel_l1", "mel L1 (posterior path)"), ("kl_bwd", "backward KL (nats per frame)"),
                      ("kl_fwd", "forward KL, soft-DTW (nats per frame)"), ("duration", "duration MSE (log)"),
                      ("loss_d", "discriminator loss"), ("adv_e2e", "end-to-end adversarial loss")],
}


def plot_curves(run: Path, out: Path) -> None:
    import yaml

    model = yaml.safe_load((run / "config.yaml").read_text()).get("model", "glow-tts")
    panels = PANELS.get(model, PANELS["glow-tts"])
    train, val = parse(run / "train.log")
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        if key in train:
            s, v = zip(*sorted(dict(train[key]).items()))  # a resumed run logs some steps twice
            ax.plot(s, v, lw=1, label="train")
        if key in val:
            s, v = zip(*sorted(dict(val[key]).items()))
            ax.plot(s, v, "o-", ms=3, label="validation")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if key in train or key in val:
            ax.legend()
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=110)
    plt.close(fig)


def plot_alignment(run: Path, data: str, out: Path, index: int) -> None:
    from flowspeech.config import mel_config
    from flowspeech.data import TextMelDataset, collate_text_mel, load_manifest
    from flowspeech.inference.loading import load_model
    from flowspeech.text import TextFrontend
    from flowspeech.training.checkpoint import CheckpointManager

    step, path = CheckpointManager(run).list()[-1]
    model, payload = load_model(path, "glow-tts")
    config = payload["config"]
    ds = TextMelDataset(load_manifest(data, split="val"), TextFrontend(**config["text"]), mel_config(config))
    batch = collate_text_mel([ds[index]])
    with torch.inference_mode():
        o = model(batch["tokens"], batch["token_lengths"], batch["mels"], batch["mel_lengths"])
        gen, gen_len, _ = model.infer(batch["tokens"], batch["token_lengths"], noise_scale=0.667,
                                      generator=torch.Generator().manual_seed(0))
    fig, axes = plt.subplots(3, 1, figsize=(10, 8))
    axes[0].imshow(o.attn[0].numpy(), aspect="auto", origin="lower", interpolation="none")
    axes[0].set_title(f"MAS alignment, {ds[index]['id']} (step {step})", fontsize=10)
    axes[0].set_ylabel("token")
    target = batch["mels"][0].numpy()
    synth = gen[0, :, : int(gen_len[0])].numpy()
    vmin, vmax = target.min(), target.max()
    axes[1].imshow(target, aspect="auto", origin="lower", vmin=vmin, vmax=vmax)
    axes[1].set_title("recorded mel", fontsize=10)
    axes[2].imshow(synth, aspect="auto", origin="lower", vmin=vmin, vmax=vmax)
    axes[2].set_title("synthesised mel (noise scale 0.667, predicted durations)", fontsize=10)
    axes[2].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(out / "alignment_and_mels.png", dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--data", help="dataset folder with a val split (for the alignment figure)")
    p.add_argument("--index", type=int, default=0, help="which validation utterance")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(run, out)
    if args.data:
        plot_alignment(run, args.data, out, args.index)
    print(f"figures in {out}")


if __name__ == "__main__":
    main()
