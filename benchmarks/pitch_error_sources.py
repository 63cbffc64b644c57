"""Where a Glow-TTS voice's pitch error against its teacher lies: timing, tokens, or contours.

    python benchmarks/pitch_error_sources.py --corpus data/slt_hts --split val
    python benchmarks/pitch_error_sources.py --acoustic runs/x/checkpoints/step_N.pt \
        --duration-rounding round --duration-scale 1.099 --corpus data/slt_hts --split val

Each sentence of the split is spoken twice from the same prior noise and Griffin-Lim seed:
with the voice's own predicted durations, and with the teacher's timing (the frames MAS gives
each token of the teacher's recording). Both are scored against the recording as
``eval_voice.py`` scores them (dio F0 along the DTW path on the mel-cepstra up to the top mel
filter). If the teacher's timing brings the error down, the durations carry it.

The clip spoken with the teacher's timing has the recording's frames, so its F0 is also
compared frame by frame (frames voiced in both) and split per token:

* token level: the voice's mean log-F0 over a token's frames against the teacher's (which
  pitch each token gets: the text encoder's prior means);
* within token: the rest, the contour inside a token (the flow decoder's);

and the token-level error and each side's mean log-F0 relative to its sentence's mean are
binned by the token's position in the sentence: a sentence-level intonation (declination)
the voice misses shows as a bias that runs with position.

Voicing: the clip with the teacher's timing and Griffin-Lim copy-synthesis of the recording's
own mel (the vocoder's floor) are compared with the recording frame by frame over its speech
span, and their voicing decision errors are split by the distance to the nearest voicing
change in the recording (errors at segment edges are timing; errors far inside are not), and
into voicing the recording has and the clip misses, and the reverse. Choose on the
validation split.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _teacher_timing import (
    add_voice_arguments,
    decode,
    load_glow_tts,
    split_sentences,
    vocode,
    world_analysis,
)

from flowspeech.audio import load_wav, mel_spectrogram
from flowspeech.evaluation.spectral import compare_to_reference

POSITION_BINS = (0.0, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 1.0)
# Distance to the recording's nearest voicing change, in 5 ms F0 frames (inclusive ranges).
EDGE_BINS = ((0, 2, "within 10 ms"), (3, 6, "15-30 ms"), (7, 20, "35-100 ms"), (21, 10**9, "farther"))


def voicing_errors(ref_f0: np.ndarray, syn_f0: np.ndarray, span: slice) -> np.ndarray:
    """Counts over the recording's speech span: voicing decision errors by distance to the
    recording's nearest voicing change (one per ``EDGE_BINS``), then voicing missed, voicing
    added, and the number of frames."""
    voiced = ref_f0 > 0
    changes = np.flatnonzero(np.diff(voiced.astype(np.int8)))
    frames = np.arange(len(voiced))
    distance = (np.abs(frames[:, None] - changes[None, :]).min(1) if len(changes)
                else np.full(len(voiced), 10**9))
    n = min(len(ref_f0), len(syn_f0), span.stop)
    sel = slice(span.start, n)
    wrong = voiced[sel] != (syn_f0[sel] > 0)
    d = distance[sel]
    by_edge = [int((wrong & (d >= lo) & (d <= hi)).sum()) for lo, hi, _ in EDGE_BINS]
    return np.array(by_edge + [int((wrong & voiced[sel]).sum()), int((wrong & ~voiced[sel]).sum()), wrong.size])


def rms(x: np.ndarray, weights: np.ndarray | None = None) -> float:
    return float(np.sqrt(np.average(np.square(x), weights=weights)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_voice_arguments(parser)
    args = parser.parse_args()
    tts, decoder = load_glow_tts(args)
    model, rate = tts.model, tts.sample_rate
    hop_s = tts.mel_config.hop_length / rate
    features = world_analysis(args, tts)

    scores = {"predicted": [], "teacher's": []}
    voicing = {"copy-synthesis": np.zeros(len(EDGE_BINS) + 3), "voice, teacher's timing": np.zeros(len(EDGE_BINS) + 3)}
    frame_err, token_err, within_err, teacher_within, weights, positions, centred = [], [], [], [], [], [], []
    for k, (uid, text) in enumerate(split_sentences(args)):
        ids, lengths = tts._tokens([tts.frontend.encode(text)])
        recording, _ = load_wav(args.corpus / "wavs" / f"{uid}.wav", rate)
        mel = mel_spectrogram(torch.from_numpy(recording), tts.mel_config)
        aligned = model.align(ids, lengths, mel[None], torch.tensor([mel.size(1)]))
        with torch.no_grad():
            mean, log_scale, log_durations, text_mask = model.encoder(ids, lengths)
        predicted = model.duration_rounding.frames(log_durations, text_mask, tts.length_scale, torch)[:, 0]
        ref = features(recording)
        for label, durations in (("predicted", predicted), ("teacher's", aligned)):
            clip = vocode(tts, decode(tts, decoder, mean, log_scale, durations, seed=k), seed=k)
            syn = features(clip)
            row = compare_to_reference(ref, syn)
            scores[label].append((row["log_f0_rmse"], row["vde"], row["mcd"]))
        copy_f0 = features(vocode(tts, mel[None], seed=k)).f0
        span = ref.speech_frames()
        voicing["copy-synthesis"] += voicing_errors(ref.f0, copy_f0, span)
        voicing["voice, teacher's timing"] += voicing_errors(ref.f0, syn.f0, span)
        # Frame by frame against the recording, tokens placed by the teacher's timing.
        n = min(len(ref.f0), len(syn.f0))
        seconds = np.arange(n) * ref.frame_period_ms / 1000.0
        token = np.searchsorted(np.cumsum(aligned[0].numpy()) * hop_s, seconds, side="right")
        both = (ref.f0[:n] > 0) & (syn.f0[:n] > 0) & (token < aligned.size(1))
        if not both.any():
            continue
        r, s, t = np.log(ref.f0[:n][both]), np.log(syn.f0[:n][both]), token[both]
        count = np.bincount(t, minlength=aligned.size(1)).astype(float)
        seen = count > 0
        r_mean = np.bincount(t, r, minlength=aligned.size(1))[seen] / count[seen]
        s_mean = np.bincount(t, s, minlength=aligned.size(1))[seen] / count[seen]
        r_tok, s_tok = np.zeros(aligned.size(1)), np.zeros(aligned.size(1))
        r_tok[seen], s_tok[seen] = r_mean, s_mean
        frame_err.append(s - r)
        within_err.append((s - s_tok[t]) - (r - r_tok[t]))
        teacher_within.append(r - r_tok[t])
        token_err.append(s_mean - r_mean)
        weights.append(count[seen])
        positions.append(np.flatnonzero(seen) / aligned.size(1))
        centred.append(np.stack([r_mean - r.mean(), s_mean - s.mean()], 1))

    print(f"{tts.voice.name if tts.voice is not None else tts.acoustic_path}: {args.split} split, "
          f"{len(scores['predicted'])} sentences, noise scale {tts.noise_scale:g}, "
          f"durations {model.duration_rounding}")
    print("\n| timing | log-F0 RMSE | VDE | MCD (dB) |\n|---|---:|---:|---:|")
    for label, rows in scores.items():
        f0, vde, mcd = (np.array(col) for col in zip(*rows))
        print(f"| {label} | {np.sqrt(np.nanmean(f0 ** 2)):.4f} | {100 * vde.mean():.1f} % | {mcd.mean():.2f} |")

    token_err, weights, positions = (np.concatenate(x) for x in (token_err, weights, positions))
    frame_err, within_err, teacher_within, centred = (
        np.concatenate(x) for x in (frame_err, within_err, teacher_within, centred))
    bins = np.clip(np.digitize(positions, POSITION_BINS[1:-1]), 0, len(POSITION_BINS) - 2)
    bias = np.array([np.average(token_err[bins == b], weights=weights[bins == b]) for b in range(len(POSITION_BINS) - 1)])
    print(f"\nWith the teacher's timing, frame by frame ({int(weights.sum()):,} frames voiced in both):\n")
    print("| log-F0 error | RMSE |\n|---|---:|")
    print(f"| all | {rms(frame_err):.4f} |")
    print(f"| token level (each token's mean) | {rms(token_err, weights):.4f} |")
    print(f"| token level, less the mean bias at each position below | {rms(token_err - bias[bins], weights):.4f} |")
    print(f"| within token | {rms(within_err):.4f} |")
    print(f"| the teacher's own contour within tokens (what flat tokens would miss) | {rms(teacher_within):.4f} |")
    r_c, s_c = centred[:, 0], centred[:, 1]
    slope = float(np.sum(weights * r_c * s_c) / np.sum(weights * r_c * r_c))
    corr = float(np.corrcoef(r_c, s_c)[0, 1])
    print(f"\nTokens' log-F0 about their sentence's mean: spread teacher {rms(r_c, weights):.3f}, voice "
          f"{rms(s_c, weights):.3f}; correlation {corr:.2f}, slope voice on teacher {slope:.2f}\n")
    print("| position in the sentence | frames | teacher about its mean | voice about its mean | voice - teacher |")
    print("|---|---:|---:|---:|---:|")
    for b in range(len(POSITION_BINS) - 1):
        sel = bins == b
        print(f"| {POSITION_BINS[b]:.2f}-{POSITION_BINS[b + 1]:.2f} | {int(weights[sel].sum()):,} | "
              f"{np.average(r_c[sel], weights=weights[sel]):+.3f} | {np.average(s_c[sel], weights=weights[sel]):+.3f} | "
              f"{bias[b]:+.3f} |")

    print("\nVoicing decision errors, frame by frame over the recording's speech span (% of frames):\n")
    print("| | VDE | " + " | ".join(f"{label} of a voicing change" if i == 0 else label
                                   for i, (_, _, label) in enumerate(EDGE_BINS))
          + " | voicing missed | voicing added |")
    print("|---|" + "---:|" * (len(EDGE_BINS) + 3))
    for label, counts in voicing.items():
        share = 100 * counts[:-1] / counts[-1]
        print(f"| {label} | {share[:len(EDGE_BINS)].sum():.1f} | " + " | ".join(f"{v:.1f}" for v in share) + " |")


if __name__ == "__main__":
    main()
