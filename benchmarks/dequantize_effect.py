"""How much the Glow-TTS authors' dequantisation noise (``add_noise``: ``U[0, 1)`` added to
the integer 16-bit samples before the mel) changes the log-mel features.

    python benchmarks/dequantize_effect.py [--wavs ../shared/corpus/data/ljspeech_real_sample/wavs]

Prints the mean and largest absolute change in nats, the share of mel bins that change by
more than 0.1 nat and the clean level of those bins, where they lie (mel band, frames), and
what the noise does to one second of digital silence (docs/glow-tts.md, "Departures").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from flowspeech.audio import MelConfig, mel_spectrogram

ROOT = Path(__file__).resolve().parent.parent


def noisy_and_clean(pcm: torch.Tensor, config: MelConfig, g: torch.Generator):
    """Log-mels of 16-bit samples ``pcm`` (as floats) with and without the authors' noise."""
    clean = mel_spectrogram(pcm / 32768.0, config)
    noisy = mel_spectrogram((pcm + torch.rand(pcm.shape, generator=g)) / 32768.0, config)
    return noisy, clean


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
    diffs, levels, changes, cleans = [], [], [], []
    for path in paths:
        pcm, _ = sf.read(path, dtype="int16")
        noisy, clean = noisy_and_clean(torch.from_numpy(pcm.astype(np.float32)), config, g)
        d = (noisy - clean).abs()
        total += d.numel()
        big = d > 0.1
        changed += int(big.sum())
        diffs.append(float(d.mean()))
        levels.append(clean[big])
        changes.append(d)
        cleans.append(clean)
    levels = torch.cat(levels)
    print(f"{len(paths)} clips: mean |change| {np.mean(diffs):.4f} nat; {100 * changed / total:.3f} % of "
          f"bins change by more than 0.1 nat, at clean log-mel <= {float(levels.max()):.2f} "
          f"(median {float(levels.median()):.2f}); the mel floor is log(1e-5) = {np.log(1e-5):.2f}")
    d, clean = torch.cat(changes, 1), torch.cat(cleans, 1)
    band, frame = divmod(int(d.argmax()), d.size(1))
    by_band = d.mean(1)
    frames_changed = (d > 0.1).any(0)
    loudest = clean.max(0).values  # each frame's loudest band
    print(f"largest |change| {float(d.max()):.3f} nat (band {band}, clean {float(clean[band, frame]):.2f}); "
          f"99th percentile {float(d.quantile(0.99)):.4f}; bins at clean >= -5: largest "
          f"{float(d[clean >= -5].max()):.4f}")
    print(f"by band: band 0 (0 Hz, where the noise's mean of half a step lands) {float(by_band[0]):.4f} "
          f"nat, bands 1-{d.size(0) - 1} {float(by_band[1:].mean()):.4f} (largest "
          f"{float(by_band[1:].max()):.4f})")
    print(f"frames: {100 * float(frames_changed.float().mean()):.1f} % have a bin changing by more than "
          f"0.1 nat; their loudest band median {float(loudest[frames_changed].median()):.2f} against "
          f"{float(loudest.median()):.2f} for all frames")
    noisy, clean = noisy_and_clean(torch.zeros(config.sample_rate), config, g)
    print(f"1 s of digital silence: clean {float(clean.max()):.2f} everywhere; noisy band 0 "
          f"{float(noisy[0].mean()):.2f}, bands 1-{noisy.size(0) - 1} mean {float(noisy[1:].mean()):.4f} "
          f"(largest {float(noisy[1:].max()):.2f})")


if __name__ == "__main__":
    main()
