"""How much the Glow-TTS authors' dequantisation noise (``add_noise``: ``U[0, 1)`` added to
the integer 16-bit samples before the mel) changes the log-mel features.

    python benchmarks/dequantize_effect.py [--wavs ../shared/corpus/data/ljspeech_real_sample/wavs]

Prints the mean absolute change in nats, the share of mel bins that change by more than
0.1 nat and the clean level of those bins (docs/glow-tts.md, "Departures").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from flowspeech.audio import MelConfig, mel_spectrogram

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wavs", type=Path,
                        default=ROOT.parent / "shared" / "corpus" / "data" / "ljspeech_real_sample" / "wavs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = sorted(args.wavs.glob("*.wav"))
    if not paths:
        raise SystemExit(f"no wavs in {args.wavs}")
    config, g = MelConfig.glow_tts(), torch.Generator().manual_seed(args.seed)
    total = changed = 0
    diffs, levels = [], []
    for path in paths:
        pcm, _ = sf.read(path, dtype="int16")
        x = torch.from_numpy(pcm.astype(np.float32))
        clean = mel_spectrogram(x / 32768.0, config)
        noisy = mel_spectrogram((x + torch.rand(x.shape, generator=g)) / 32768.0, config)
        d = (noisy - clean).abs()
        total += d.numel()
        big = d > 0.1
        changed += int(big.sum())
        diffs.append(float(d.mean()))
        levels.append(clean[big])
    levels = torch.cat(levels)
    print(f"{len(paths)} clips: mean |change| {np.mean(diffs):.4f} nat; {100 * changed / total:.3f} % of "
          f"bins change by more than 0.1 nat, at clean log-mel <= {float(levels.max()):.2f} "
          f"(median {float(levels.median()):.2f}); the mel floor is log(1e-5) = {np.log(1e-5):.2f}")


if __name__ == "__main__":
    main()
