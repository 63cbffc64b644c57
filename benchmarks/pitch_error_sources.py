"""Where a Glow-TTS voice's pitch error against its teacher lies: timing, tokens, or contours.

    python benchmarks/pitch_error_sources.py --corpus data/slt_hts --split val
    python benchmarks/pitch_error_sources.py --acoustic runs/x/checkpoints/step_N.pt \
        --duration-rounding round --duration-scale 1.099 --corpus data/slt_hts --split val

Each sentence of the split is spoken twice from the same prior noise and Griffin-Lim seed
(and a third time, below): with the voice's own predicted durations, and with the teacher's
timing (the frames MAS gives each token of the teacher's recording). Both are scored against
the recording as ``eval_voice.py`` scores them (dio F0 along the DTW path on the mel-cepstra
up to the top mel filter). If the teacher's timing brings the error down, the durations carry it.

The clip spoken with the teacher's timing has the recording's frames, so its F0 is also
compared frame by frame (frames voiced in both) and split per token:

* token level: the voice's mean log-F0 over a token's frames against the teacher's (which
  pitch each token gets: the text encoder's prior means);
* within token: the rest, the contour inside a token (the flow decoder's);

the token level is split again, frame-weighted, into each sentence's mean error, each
written word's about it, and each token's about its word's (which pitch a word gets, or how
its syllables and phones share it), and the words' errors are set against the teacher's word
pitch (a voice whose word pitch regresses to the sentence's mean correlates negatively);

and the token-level error and each side's mean log-F0 relative to its sentence's mean are
binned by the token's position in the sentence: a sentence-level intonation (declination)
the voice misses shows as a bias that runs with position.

A perfect text encoder: the recording's own latent (its mel through the flow decoder),
averaged over each token's frames, is the prior mean a mean-only Glow-TTS encoder is trained
towards (the maximum-likelihood mean under the alignment). Spoken from those means with the
teacher's timing at noise 0 (the third clip), it shows what the flow decoder allows once
every token gets the right prior: the part of the error no text encoder can remove. Beside
it, the NLL (nats per dimension) of the recordings under the voice's prior and under those
token means tells how far the encoder is from its own training optimum.

Voicing: the clip with the teacher's timing and Griffin-Lim copy-synthesis of the recording's
own mel (the vocoder's floor) are compared with the recording frame by frame over its speech
span, and their voicing decision errors are split by the distance to the nearest voicing
change in the recording (errors at segment edges are timing; errors far inside are not), and
into voicing the recording has and the clip misses, and the reverse. Choose on the
validation split.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

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

from flowspeech.evaluation.spectral import WorldFeatures, compare_to_reference
from flowspeech.models.glow_tts import GlowTTS

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


@dataclass
class TokenSplit:
    """One clip's log-F0 against the recording's over the frames voiced in both, the clip
    spoken with the teacher's timing."""
    frame: np.ndarray           # [frames] error per frame
    within: np.ndarray          # [frames] the clip's contour within its token, less the teacher's
    teacher_within: np.ndarray  # [frames] the teacher's contour about its token's mean
    token: np.ndarray           # [tokens] error of each token's mean (tokens with such frames)
    count: np.ndarray           # [tokens] their frames
    position: np.ndarray        # [tokens] their place in the sentence, 0 to 1
    centred: np.ndarray         # [tokens, 2] teacher's and clip's token means less the sentence's
    word: np.ndarray            # [tokens] the written word each is in (-1: between words)


def split_by_token(ref: WorldFeatures, syn_f0: np.ndarray, durations: np.ndarray,
                   hop_s: float, words: np.ndarray | None = None) -> TokenSplit | None:
    """``syn_f0`` (spoken with ``durations``, the teacher's frames per token) against the
    recording's F0, split into each token's mean and the contour within it; None when no
    frame is voiced in both. ``words``: the written word of each token (-1 between words)."""
    n = min(len(ref.f0), len(syn_f0))
    seconds = np.arange(n) * ref.frame_period_ms / 1000.0
    token = np.searchsorted(np.cumsum(durations) * hop_s, seconds, side="right")
    both = (ref.f0[:n] > 0) & (syn_f0[:n] > 0) & (token < len(durations))
    if not both.any():
        return None
    r, s, t = np.log(ref.f0[:n][both]), np.log(syn_f0[:n][both]), token[both]
    count = np.bincount(t, minlength=len(durations)).astype(float)
    seen = count > 0
    r_mean = np.bincount(t, r, minlength=len(durations))[seen] / count[seen]
    s_mean = np.bincount(t, s, minlength=len(durations))[seen] / count[seen]
    r_tok, s_tok = np.zeros(len(durations)), np.zeros(len(durations))
    r_tok[seen], s_tok[seen] = r_mean, s_mean
    return TokenSplit(frame=s - r, within=(s - s_tok[t]) - (r - r_tok[t]),
                      teacher_within=r - r_tok[t], token=s_mean - r_mean, count=count[seen],
                      position=np.flatnonzero(seen) / len(durations),
                      centred=np.stack([r_mean - r.mean(), s_mean - s.mean()], 1),
                      word=(np.full(len(durations), -1) if words is None else words)[seen])


def error_levels(split: TokenSplit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sentence's token-level errors, frame-weighted, as three parts whose squares add
    up: the sentence's mean error, each word's about it, each token's about its word (a
    token between words is a word of its own); and each word's mean (teacher about its
    sentence, error) for how the word-level error follows the teacher's word pitch."""
    w, e = split.count, split.token
    units = np.where(split.word >= 0, split.word, -1 - np.arange(len(e)))
    _, unit = np.unique(units, return_inverse=True)
    unit_w = np.bincount(unit, w)
    word_e = np.bincount(unit, w * e) / unit_w
    sentence_e = np.average(e, weights=w)
    parts = np.array([w.sum() * sentence_e ** 2, np.sum(w * (word_e[unit] - sentence_e) ** 2),
                      np.sum(w * (e - word_e[unit]) ** 2)])
    in_words = np.unique(unit[split.word >= 0])
    teacher_word = np.bincount(unit, w * split.centred[:, 0]) / unit_w
    return parts, w.sum(), np.stack([teacher_word[in_words], word_e[in_words] - sentence_e], 1)


def joined(splits: list[TokenSplit]) -> TokenSplit:
    return TokenSplit(*(np.concatenate([getattr(x, f.name) for x in splits])
                        for f in fields(TokenSplit)))


PERFECT = "teacher's, each token's mean latent (a perfect text encoder), noise 0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_voice_arguments(parser)
    args = parser.parse_args()
    tts, decoder = load_glow_tts(args)
    model, rate = tts.model, tts.sample_rate
    hop_s = tts.mel_config.hop_length / rate
    features = world_analysis(args, tts)

    scores = {"predicted": [], "teacher's": [], PERFECT: []}
    voicing = {label: np.zeros(len(EDGE_BINS) + 3)
               for label in ("copy-synthesis", "voice, teacher's timing", "perfect text encoder")}
    splits: dict[str, list[TokenSplit]] = {"voice": [], "perfect text encoder": []}
    levels: dict[str, list] = {"voice": [], "perfect text encoder": []}
    nll: dict[str, list[float]] = {"voice": [], PERFECT: []}
    for k, (uid, text) in enumerate(split_sentences(args)):
        ids, lengths, recording, mel, out = teacher_timing(tts, args.corpus, uid, text)
        words = np.array([-1 if w is None else w for w in tts.frontend.word_tokens(text)[1]])
        with torch.no_grad():
            mean, log_scale, log_durations, text_mask = model.encoder(ids, lengths)
        aligned = out.attn.sum(-1).round().long()                      # [1, T_text]
        token_latent = (out.z @ out.attn.transpose(1, 2)) / aligned.clamp(min=1)[:, None, :]
        nll["voice"].append(float(GlowTTS.nll_per_dim(out)))
        perfect_prior = replace(out, z_mean=token_latent @ out.attn)
        nll[PERFECT].append(float(GlowTTS.nll_per_dim(perfect_prior)))
        predicted = model.duration_rounding.frames(log_durations, text_mask, tts.length_scale, torch)[:, 0]
        ref = features(recording)
        clip_f0 = {}
        for label, prior, durations, noise in (("predicted", mean, predicted, None),
                                               ("teacher's", mean, aligned, None),
                                               (PERFECT, token_latent, aligned, 0.0)):
            mel_out = decode(tts, decoder, prior, log_scale, durations, seed=k, noise_scale=noise)
            clip = vocode(tts, mel_out, seed=k)
            syn = features(clip)
            row = compare_to_reference(ref, syn)
            scores[label].append((row["log_f0_rmse"], row["vde"], row["mcd"]))
            clip_f0[label] = syn.f0
        copy_f0 = features(vocode(tts, mel[None], seed=k)).f0
        span = ref.speech_frames()
        voicing["copy-synthesis"] += voicing_errors(ref.f0, copy_f0, span)
        voicing["voice, teacher's timing"] += voicing_errors(ref.f0, clip_f0["teacher's"], span)
        voicing["perfect text encoder"] += voicing_errors(ref.f0, clip_f0[PERFECT], span)
        # Frame by frame against the recording, tokens placed by the teacher's timing.
        for name, label in (("voice", "teacher's"), ("perfect text encoder", PERFECT)):
            split = split_by_token(ref, clip_f0[label], aligned[0].numpy(), hop_s, words)
            if split is not None:
                splits[name].append(split)
                levels[name].append(error_levels(split))

    print(f"{tts.voice.name if tts.voice is not None else tts.acoustic_path}: {args.split} split, "
          f"{len(scores['predicted'])} sentences, noise scale {tts.noise_scale:g}, "
          f"durations {model.duration_rounding}")
    print(f"\nNLL of the recordings (nats per dimension, MAS alignment): under the voice's "
          f"prior {np.mean(nll['voice']):.3f}, under each token's mean latent "
          f"{np.mean(nll[PERFECT]):.3f}")
    print("\n| timing | log-F0 RMSE | VDE | MCD (dB) |\n|---|---:|---:|---:|")
    for label, rows in scores.items():
        f0, vde, mcd = (np.array(col) for col in zip(*rows))
        print(f"| {label} | {np.sqrt(np.nanmean(f0 ** 2)):.4f} | {100 * vde.mean():.1f} % | {mcd.mean():.2f} |")

    voice, perfect = joined(splits["voice"]), joined(splits["perfect text encoder"])
    weights = voice.count
    bins = np.clip(np.digitize(voice.position, POSITION_BINS[1:-1]), 0, len(POSITION_BINS) - 2)
    bias = np.array([np.average(voice.token[bins == b], weights=weights[bins == b])
                     for b in range(len(POSITION_BINS) - 1)])
    print(f"\nWith the teacher's timing, frame by frame (frames voiced in both: voice "
          f"{int(weights.sum()):,}, perfect text encoder {int(perfect.count.sum()):,}):\n")
    print("| log-F0 error | voice | perfect text encoder |\n|---|---:|---:|")
    print(f"| all | {rms(voice.frame):.4f} | {rms(perfect.frame):.4f} |")
    print(f"| token level (each token's mean) | {rms(voice.token, weights):.4f} | "
          f"{rms(perfect.token, perfect.count):.4f} |")
    print(f"| token level, mean (a flat pitch offset) | "
          f"{np.average(voice.token, weights=weights):+.4f} | "
          f"{np.average(perfect.token, weights=perfect.count):+.4f} |")
    print(f"| token level, less the voice's mean bias at each position below | "
          f"{rms(voice.token - bias[bins], weights):.4f} | |")
    print(f"| within token | {rms(voice.within):.4f} | {rms(perfect.within):.4f} |")
    print(f"| the teacher's own contour within tokens (what flat tokens would miss) | "
          f"{rms(voice.teacher_within):.4f} | |")
    print("\nThe token-level error in three parts, frame-weighted (their squares add up):\n")
    print("| part | voice | share | perfect text encoder |\n|---|---:|---:|---:|")
    totals = {name: sum(p for p, _, _ in rows) / sum(n for _, n, _ in rows)
              for name, rows in levels.items()}
    for k, part in enumerate(("each sentence's mean", "each word's, about its sentence's",
                              "each token's, about its word's")):
        print(f"| {part} | {np.sqrt(totals['voice'][k]):.4f} | "
              f"{100 * totals['voice'][k] / totals['voice'].sum():.0f} % | "
              f"{np.sqrt(totals['perfect text encoder'][k]):.4f} |")
    word_pitch = np.concatenate([pairs for _, _, pairs in levels["voice"]])
    word_corr = np.corrcoef(word_pitch[:, 0], word_pitch[:, 1])[0, 1]
    print(f"\nWords' error about their sentence's, against the teacher's word pitch about its "
          f"sentence's mean: correlation {word_corr:.2f} (below zero: the voice's word pitch is pulled "
          f"towards the sentence's mean)")
    r_c, s_c = voice.centred[:, 0], voice.centred[:, 1]
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
