"""Can a small network recover the linear magnitude Griffin-Lim needs from the mel?

``griffin_lim_ceiling.py`` shows that Griffin-Lim's loss of intelligibility is in its first
step, the linear magnitude that non-negative least squares recovers from the mel, not in the
phase. Tacotron (Wang et al., 2017, Sec. 3.3) learned that step instead: a post-processing
network predicting the linear spectrogram. This probe trains one such network on the
recordings of a corpus's training split, by L1 on the log-magnitude (``--loss l1``) or that
plus the spectral convergence of Parallel WaveGAN's STFT loss (Yamamoto et al., 2020;
``--loss l1+sc``), and saves it for ``griffin_lim_ceiling.py --magnitude-probe``:

    python benchmarks/mel_to_linear_probe.py --corpus data/slt_hts --train-limit 2000 \\
        --steps 4000 --out runs/mel-to-linear-probe.pt
    python benchmarks/griffin_lim_ceiling.py --corpus data/slt_hts_heldout --split val \\
        --magnitude-probe runs/mel-to-linear-probe.pt --jobs 2 --out reports/gl-ceiling-probe

The network: a 1x1 projection of the log-mel to the 513 log-magnitude bins, plus a residual
stack (6 blocks of a kernel-5 convolution over frames, dilations 1, 2, 4, 1, 2, 4, and a 1x1
mix, 256 channels; 2.6 M parameters) whose output layer starts at zero. Random 128-frame
segments, batch 16, AdamW with a one-cycle schedule peaking at 1e-3. A probe, not a shipped
model: it is trained here, on CPU, in minutes.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Quieter bins are floored here before the log (the recordings' 1st percentile is ~2e-4).
LOG_FLOOR = 1e-4


class MelToLinearProbe(nn.Module):
    """Log-mel ``[B, n_mels, F]`` -> log linear magnitude ``[B, n_fft // 2 + 1, F]``."""

    def __init__(self, n_mels: int = 80, n_bins: int = 513, channels: int = 256,
                 kernel_size: int = 5, dilations: tuple[int, ...] = (1, 2, 4, 1, 2, 4)):
        super().__init__()
        self.skip = nn.Conv1d(n_mels, n_bins, 1)
        self.pre = nn.Conv1d(n_mels, channels, 1)
        self.norms = nn.ModuleList(nn.GroupNorm(1, channels) for _ in dilations)
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, dilation=d,
                                             padding=d * (kernel_size // 2)) for d in dilations)
        self.mixes = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in dilations)
        self.post = nn.Conv1d(channels, n_bins, 1)
        nn.init.zeros_(self.post.weight)
        nn.init.zeros_(self.post.bias)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        h = self.pre(log_mel)
        for norm, conv, mix in zip(self.norms, self.convs, self.mixes):
            h = h + mix(F.gelu(conv(norm(h))))
        return self.skip(log_mel) + self.post(F.gelu(h))

    def magnitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self(log_mel).exp()


def load_probe(path: str | Path) -> MelToLinearProbe:
    probe = MelToLinearProbe()
    probe.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return probe.eval()


def features(path: Path, config) -> tuple[torch.Tensor, torch.Tensor]:
    """A recording's log-mel and log linear magnitude, ``[n_mels, F]`` and ``[bins, F]``."""
    from flowspeech.audio import LinearSpectrogram, load_wav, mel_spectrogram

    wav, _ = load_wav(path, config.sample_rate)
    x = torch.from_numpy(np.asarray(wav, dtype=np.float32))
    return mel_spectrogram(x, config), LinearSpectrogram(config)(x).clamp(min=LOG_FLOOR).log()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True,
                    help="LJSpeech-layout corpus with filelists/ and wavs/")
    ap.add_argument("--train-limit", type=int, default=2000, help="first N training sentences")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--loss", choices=("l1", "l1+sc"), default="l1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="the probe's weights (.pt)")
    args = ap.parse_args()

    from flowspeech.audio import MelConfig
    from flowspeech.evaluation.inputs import read_transcripts

    config = MelConfig.glow_tts()
    corpus = Path(args.corpus)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    def split(name: str, limit: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        ids = list(read_transcripts(corpus / "filelists" / f"ljs_audio_text_{name}_filelist.txt"))
        return [features(corpus / "wavs" / f"{uid}.wav", config) for uid in ids[: limit or None]]

    train, val = split("train", args.train_limit), split("val", 30)
    probe = MelToLinearProbe(config.n_mels, config.n_fft // 2 + 1)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=args.steps,
                                                   pct_start=0.05)
    segment, batch_size, t0 = 128, 16, time.perf_counter()
    print(f"{len(train)} training clips, {sum(p.numel() for p in probe.parameters()):,} parameters")
    for step in range(1, args.steps + 1):
        mels, targets = [], []
        for _ in range(batch_size):
            mel, target = rng.choice(train)
            start = rng.randint(0, max(0, mel.shape[1] - segment))
            mels.append(mel[:, start:start + segment])
            targets.append(target[:, start:start + segment])
        n = min(m.shape[1] for m in mels)
        mel = torch.stack([m[:, :n] for m in mels])
        target = torch.stack([t[:, :n] for t in targets])
        predicted = probe(mel)
        loss = (predicted - target).abs().mean()
        if args.loss == "l1+sc":
            a, b = predicted.exp(), target.exp()
            loss = loss + ((a - b).norm(dim=(1, 2)) / b.norm(dim=(1, 2))).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 500 == 0 or step == args.steps:
            with torch.no_grad():
                val_l1 = np.mean([(probe(m[None])[0] - t).abs().mean().item() for m, t in val])
            print(f"step {step}: loss {loss.item():.4f}, validation log-magnitude L1 "
                  f"{val_l1:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
            torch.save(probe.state_dict(), args.out)


if __name__ == "__main__":
    main()
