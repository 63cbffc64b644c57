"""Where a Glow-TTS voice's spectral error against its teacher lies: bands, frames, or vocoder.

    python benchmarks/spectrum_error_sources.py --corpus data/slt_hts --split val --out reports/spec-shipped.json
    python benchmarks/spectrum_error_sources.py --acoustic runs/x/checkpoints/step_N.pt \
        --duration-rounding round --duration-scale 1.086 --corpus data/slt_hts --split val \
        --out reports/spec-N.json --compare reports/spec-shipped.json

``eval_voice.py``'s MCD mixes the timing (its DTW path), the acoustic model's mel and what
Griffin-Lim and the WORLD analysis make of that mel. This script takes the timing out: each
sentence is spoken with the teacher's timing (the frames MAS gives each token of the
recording), so the voice's frames are the recording's and are compared one to one, no DTW:

* likelihood: the model's NLL of the recording's mel (per mel value, as the training loss);
* the prior's spread and what the noise does: the mean standard deviation of the prior, and
  the log-mel RMS difference between the clip at the voice's noise scale and at noise 0;
* mel, before any vocoder: the decoder's log-mel against the recording's, RMS over the 80
  bands in four groups of 20, and the mean offset of each group; at the voice's noise scale
  and at noise 0 (the decoder's image of the prior means alone);
* MCD: the WORLD mel-cepstra (c1-c24 up to ``--mcd-max-hz``, as ``eval_voice.py``) of the
  Griffin-Lim clip against the recording's, frame by frame over the recording's speech span,
  split by the recording's frames (voiced; unvoiced; quiet: 40 dB or more below the loudest
  frame, i.e. pauses inside the span) and by cepstral range (c1-c4: spectral tilt and the
  broadest shape; c5-c12: formants; c13-c24: fine detail), next to the same split for
  Griffin-Lim copy-synthesis of the recording's own mel (the vocoder's floor), and the same
  for the clip at noise 0.

Two checkpoints whose ``eval_voice.py`` MCDs differ: score both, the second with ``--compare``
(the first's ``--out``), and the rows whose paired differences are significant say where the
difference lies. Same noise and Griffin-Lim seeds for every checkpoint (sentence k: seed k).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from _teacher_timing import (
    add_voice_arguments,
    decode,
    load_glow_tts,
    split_sentences,
    teacher_timing,
    vocode,
    world_analysis,
)

from flowspeech.evaluation.spectral import (
    MCD_ORDER,
    TRIM_DB,
    mel_cepstral_distortion,
)
from flowspeech.models.glow_tts import GlowTTS

MEL_GROUPS = 4
CEP_RANGES = ((1, 4, "c1-c4"), (5, 12, "c5-c12"), (13, MCD_ORDER, f"c13-c{MCD_ORDER}"))
FRAME_CLASSES = ("voiced", "unvoiced", "quiet")


def frame_classes(ref) -> np.ndarray:
    """``[F]`` index into ``FRAME_CLASSES`` of each WORLD frame of the recording; -1 outside
    its speech span."""
    cls = np.full(len(ref.f0), -1)
    span = ref.speech_frames(TRIM_DB)
    quiet = ref.energy_db < ref.energy_db.max() - TRIM_DB
    inside = np.zeros(len(cls), bool)
    inside[span] = True
    cls[inside & (ref.f0 > 0)] = 0
    cls[inside & (ref.f0 <= 0)] = 1
    cls[inside & quiet] = 2
    return cls


def mcd_rows(ref_mcep: np.ndarray, syn_mcep: np.ndarray, cls: np.ndarray) -> dict:
    """Sums (not means) of frame MCDs by frame class and cepstral range, and frame counts, so
    that sentences pool by frame."""
    n = min(len(ref_mcep), len(syn_mcep), len(cls))

    def mcd_sum(frames, lo=1, hi=MCD_ORDER):
        # mel_cepstral_distortion leaves out the first column given: pass c(lo-1)..c(hi).
        if not len(frames):
            return 0.0
        path = np.stack([frames, frames], axis=1)
        return len(frames) * mel_cepstral_distortion(ref_mcep[:, lo - 1:hi + 1], syn_mcep[:, lo - 1:hi + 1], path)

    out = {}
    for k, name in enumerate(FRAME_CLASSES):
        frames = np.flatnonzero(cls[:n] == k)
        out[f"frames {name}"] = len(frames)
        out[f"mcd {name}"] = mcd_sum(frames)
    frames = np.flatnonzero(cls[:n] >= 0)
    out["frames all"] = len(frames)
    out["mcd all"] = mcd_sum(frames)
    for lo, hi, name in CEP_RANGES:
        out[f"mcd all {name}"] = mcd_sum(frames, lo, hi)
    return out


def mel_rows(ref_mel: torch.Tensor, syn_mel: torch.Tensor, speech: np.ndarray, label: str) -> dict:
    """Sums of squared and of signed log-mel errors per band group over the recording's
    speech frames (``speech``: ``[F_mel]`` bool), and the frame count."""
    n = min(ref_mel.size(-1), syn_mel.size(-1), len(speech))
    diff = (syn_mel[:, :n] - ref_mel[:, :n]).double().numpy()[:, speech[:n]]  # [80, F]
    groups = np.array_split(diff, MEL_GROUPS, axis=0)
    out = {f"{label} frames": int(diff.shape[1])}
    for g, block in enumerate(groups):
        out[f"{label} sq {g}"] = float(np.square(block).mean(0).sum())
        out[f"{label} sum {g}"] = float(block.mean(0).sum())
    return out


def score(args) -> list[dict]:
    tts, decoder = load_glow_tts(args)
    model, rate = tts.model, tts.sample_rate
    hop_s = tts.mel_config.hop_length / rate
    features = world_analysis(args, tts)

    rows = []
    for k, (uid, text) in enumerate(split_sentences(args)):
        ids, lengths, recording, mel, out = teacher_timing(tts, args.corpus, uid, text)
        with torch.no_grad():
            durations = out.attn.sum(-1).round().long()
            mean, log_scale, _, _ = model.encoder(ids, lengths)
        voice_mel = decode(tts, decoder, mean, log_scale, durations, seed=k)[0]
        prior_mel = decode(tts, decoder, mean, log_scale, durations, seed=k, noise_scale=0.0)[0]
        ref = features(recording)
        cls = frame_classes(ref)
        # The mel frame t (centred at t * hop) takes the class of the nearest WORLD frame.
        world_of_mel = np.minimum(np.round(np.arange(mel.size(1)) * hop_s * 1000 / ref.frame_period_ms).astype(int),
                                  len(cls) - 1)
        speech = cls[world_of_mel] >= 0
        row = {"id": uid, "nll": float(GlowTTS.nll_per_dim(out))}
        row.update(mel_rows(mel, voice_mel, speech, "mel"))
        row.update(mel_rows(mel, prior_mel, speech, "mel0"))
        row.update(mel_rows(prior_mel, voice_mel, speech, "noise"))
        tokens = out.text_mask[0, 0] > 0
        row["sigma sum"] = float(torch.exp(log_scale[0][:, tokens]).mean(0).sum())
        row["sigma tokens"] = int(tokens.sum())
        for label, m in (("voice", voice_mel), ("voice0", prior_mel), ("copy", mel)):
            syn = features(vocode(tts, m[None], seed=k))
            row.update({f"{label} {key}": v for key, v in mcd_rows(ref.mcep, syn.mcep, cls).items()})
        rows.append(row)
        if args.verbose:
            print(f"{k + 1}/{args.limit} {uid}", flush=True)
    return rows


def pooled(rows: list[dict], num: str, den: str) -> float:
    d = sum(r[den] for r in rows)
    return sum(r[num] for r in rows) / d if d else float("nan")


def per_sentence(rows: list[dict], num: str, den: str) -> np.ndarray:
    return np.array([r[num] / r[den] if r[den] else np.nan for r in rows])


def table(rows: list[dict], other: list[dict] | None) -> list[str]:
    """Markdown lines: each figure pooled over frames; with ``other`` (an earlier run on the
    same sentences), its figure and a paired Wilcoxon p over the per-sentence values."""
    lines = []
    if other is not None:
        from scipy.stats import wilcoxon
        if [r["id"] for r in rows] != [r["id"] for r in other]:
            raise SystemExit("--compare was scored on other sentences")

    def line(label, num, den, fmt="{:.3f}", root=False):
        f = (lambda x: np.sqrt(x)) if root else (lambda x: x)
        cells = [label, fmt.format(f(pooled(rows, num, den)))]
        if other is not None:
            a, b = f(per_sentence(rows, num, den)), f(per_sentence(other, num, den))
            ok = ~(np.isnan(a) | np.isnan(b))
            p = wilcoxon(a[ok], b[ok]).pvalue if ok.sum() > 1 and np.any(a[ok] != b[ok]) else 1.0
            cells += [fmt.format(f(pooled(other, num, den))), f"{p:.2g}"]
        lines.append("| " + " | ".join(cells) + " |")

    head = "| | this |" + (" compared | p |" if other is not None else "")
    lines += [head, "|---|---:|" + ("---:|---:|" if other is not None else "")]
    nll = np.mean([r["nll"] for r in rows])
    lines.append(f"| NLL of the recordings (per value, mean of sentences) | {nll:.3f} |"
                 + (f" {np.mean([r['nll'] for r in other]):.3f} | |" if other is not None else ""))
    names = {"voice": "voice, teacher's timing", "voice0": "voice, teacher's timing, noise 0",
             "copy": "Griffin-Lim copy-synthesis"}
    for who, name in names.items():
        line(f"MCD (dB), {name}, all speech frames", f"{who} mcd all", f"{who} frames all", "{:.2f}")
        for cls in FRAME_CLASSES:
            line(f"... {cls} frames", f"{who} mcd {cls}", f"{who} frames {cls}", "{:.2f}")
        for _, _, rng in CEP_RANGES:
            line(f"... {rng} alone, all frames", f"{who} mcd all {rng}", f"{who} frames all", "{:.2f}")
    line("prior standard deviation (mean over tokens and channels; 1 for a mean-only prior)", "sigma sum", "sigma tokens")
    for g in range(MEL_GROUPS):
        line(f"the noise's effect: log-mel RMS of voice minus noise-0 clip, bands {20 * g + 1}-{20 * g + 20}",
             f"noise sq {g}", "noise frames", root=True)
    for label, name in (("mel", "voice's noise scale"), ("mel0", "noise 0")):
        for g in range(MEL_GROUPS):
            line(f"log-mel RMSE, {name}, bands {20 * g + 1}-{20 * g + 20}", f"{label} sq {g}",
                 f"{label} frames", root=True)
        for g in range(MEL_GROUPS):
            line(f"log-mel mean offset, {name}, bands {20 * g + 1}-{20 * g + 20}", f"{label} sum {g}",
                 f"{label} frames", "{:+.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_voice_arguments(parser)
    parser.add_argument("--out", type=Path, help="write the per-sentence figures here (JSON)")
    parser.add_argument("--compare", type=Path, help="an earlier --out on the same sentences")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    rows = score(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=0))
    other = json.loads(args.compare.read_text()) if args.compare else None
    who = args.acoustic or args.voice or "the shipped voice"
    print(f"{who}: {args.split} split, {len(rows)} sentences, the teacher's timing\n")
    print("\n".join(table(rows, other)))


if __name__ == "__main__":
    main()
