"""How much of a voice's log-F0 error lies at the edges of voiced stretches, and how much inside.

    python benchmarks/pitch_error_near_voicing.py --corpus data/slt_hts --run reports/voice-val

Reads an ``eval_voice.py`` output (``RUN/wavs/`` and, where present,
``RUN/copy_synthesis/wavs/``) and scores each clip against the corpus's recording exactly as
``eval_voice.py`` does: WORLD F0 (dio + StoneMask) on 5 ms frames, both clips trimmed to their
speech span and aligned by DTW on the mel-cepstra up to the top mel filter. Every frame voiced
in both is then binned by its distance to the nearest unvoiced frame, in the recording or in
the clip, whichever is nearer.

Near a voicing change a 5 ms frame sits where a mel frame's 46 ms window mixes voiced and
unvoiced sound and where F0 moves fastest, so the pitch tracker errs there even on
copy-synthesis. A voice whose error is the vocoder's and the edges' has it at the edges; a
voice whose text encoder gives words the wrong pitch has it inside the voiced stretches.

Prints, for each row and band: the share of frames, the log-F0 RMSE, the share of gross errors
(more than 20 % off) and the share of the row's squared log-F0 error; then the row's
per-sentence log-F0 RMSE (``eval_voice.py``'s figure) beside the same without the frames
within two of a voicing change.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

# Distance to the nearest unvoiced frame, in 5 ms frames: 1 is the first or last voiced frame.
BANDS = ((1, 1), (2, 2), (3, 4), (5, 8), (9, None))
EDGE_FRAMES = 2  # "at the edge": within this many frames of a voicing change
GROSS = 0.2


def frames_to_unvoiced(f0: np.ndarray) -> np.ndarray:
    """``[F]`` distance of each frame to the nearest unvoiced frame (0 where unvoiced; the
    clip's ends count as unvoiced)."""
    voiced = np.concatenate([[False], f0 > 0, [False]])
    index = np.arange(len(voiced))
    last_unvoiced = np.maximum.accumulate(np.where(~voiced, index, 0))
    next_unvoiced = np.minimum.accumulate(np.where(~voiced, index, len(voiced))[::-1])[::-1]
    return np.minimum(index - last_unvoiced, next_unvoiced - index)[1:-1]


def aligned_errors(uid: str, recordings: Path, clips: Path, max_hz: float | None):
    """``(log-F0 differences, distances to a voicing change)`` over the frames voiced in both,
    along ``eval_voice.py``'s DTW path."""
    import soundfile as sf

    from flowspeech.audio import resample
    from flowspeech.evaluation.spectral import dtw_path, world_features

    reference, rate = sf.read(recordings / f"{uid}.wav", dtype="float32")
    clip, clip_rate = sf.read(clips / f"{uid}.wav", dtype="float32")
    if clip_rate != rate:
        clip = resample(clip, clip_rate, rate)
    ref = world_features(reference, rate, f0_method="dio", max_hz=max_hz)
    syn = world_features(clip, rate, f0_method="dio", max_hz=max_hz)
    rs, ss = ref.speech_frames(), syn.speech_frames()
    path = dtw_path(ref.mcep[rs][:, 1:], syn.mcep[ss][:, 1:])
    ref_f0, syn_f0 = ref.f0[rs][path[:, 0]], syn.f0[ss][path[:, 1]]
    to_edge = np.minimum(frames_to_unvoiced(ref.f0[rs])[path[:, 0]],
                         frames_to_unvoiced(syn.f0[ss])[path[:, 1]])
    both = (ref_f0 > 0) & (syn_f0 > 0)
    return np.log(syn_f0[both]) - np.log(ref_f0[both]), to_edge[both]


def report(name: str, per_clip: list[tuple[np.ndarray, np.ndarray]]) -> None:
    diff = np.concatenate([d for d, _ in per_clip])
    edge = np.concatenate([e for _, e in per_clip])
    gross = np.abs(np.expm1(diff)) > GROSS
    squared = float(np.sum(diff**2))
    print(f"\n{name}: {len(per_clip)} clips, {len(diff):,} frames voiced in both\n")
    print("| frames to a voicing change | share of frames | log-F0 RMSE | gross errors "
          "| share of the squared error |")
    print("|---|---:|---:|---:|---:|")
    for low, high in BANDS:
        band = (edge >= low) if high is None else (edge >= low) & (edge <= high)
        label = f"{low}+" if high is None else (f"{low}" if low == high else f"{low}-{high}")
        print(f"| {label} | {band.mean():.1%} | {np.sqrt(np.mean(diff[band]**2)):.3f} | "
              f"{gross[band].mean():.1%} | {np.sum(diff[band]**2) / squared:.1%} |")
    every = np.mean([np.sqrt(np.mean(d**2)) for d, _ in per_clip])
    inside = np.mean([np.sqrt(np.mean(d[e > EDGE_FRAMES]**2)) for d, e in per_clip])
    print(f"\nlog-F0 RMSE, mean over clips: {every:.4f}; without the frames within "
          f"{EDGE_FRAMES} of a voicing change: {inside:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True, help="an eval_voice.py --out folder")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    from _heldout import mcd_band_hz

    from flowspeech.audio import MelConfig

    run = json.loads((args.run / "wavs" / "run.json").read_text())
    mel_config = MelConfig.from_dict(run["mel_config"]) if run.get("mel_config") else None
    max_hz = mcd_band_hz(None, mel_config)
    ids = [line.split("|", 1)[0] for line in
           (args.run / "text.txt").read_text(encoding="utf-8").splitlines() if line]
    rows = {"Griffin-Lim copy-synthesis": args.run / "copy_synthesis" / "wavs",
            run["voice"] or Path(run["acoustic"]).stem: args.run / "wavs"}
    print(f"# {args.run}: {len(ids)} sentences against {args.corpus / 'wavs'}")
    with ProcessPoolExecutor(args.jobs) as pool:
        for name, clips in rows.items():
            if not (clips / f"{ids[0]}.wav").exists():
                continue
            score = partial(aligned_errors, recordings=args.corpus / "wavs", clips=clips,
                            max_hz=max_hz)
            report(name, list(pool.map(score, ids)))


if __name__ == "__main__":
    main()
