"""Streaming synthesis: time to the first audio chunk and total time, against synthesize() of
the same text and seed, side by side in one run.

    python benchmarks/bench_streaming.py                        # the shipped voice (Griffin-Lim)
    python benchmarks/bench_streaming.py --compare-griffin-lim random:60   # and its old vocoder
    python benchmarks/bench_streaming.py --vocoder waveglow-small --vocoder flowavenet-small

A 10-sentence paragraph (LJSpeech-like prose, about 40 s of speech). With ``--vocoder PRESET``
the shipped acoustic model is paired with a randomly initialised vocoder of that preset
(speed does not depend on the weights); FloWaveNet reads its own features, so its row times
the vocoder alone on the acoustic model's mels (``vocoder only``). Each figure is the median of
``--repeats`` runs after a warm-up; streamed and whole outputs are compared (max |diff| for
the flow vocoders, log-spectral distance for Griffin-Lim).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _heldout import describe_griffin_lim, griffin_lim_setting

from flowspeech import Synthesizer
from flowspeech.audio import log_spectral_distance
from flowspeech.checkpoints import save_checkpoint
from flowspeech.config import load_config
from flowspeech.evaluation.synthesis import set_griffin_lim
from flowspeech.models.registry import build_model

PARAGRAPH = (
    "The prisoners were taken to the court in the morning. Each of them was given a number and a "
    "seat on the long bench. The judge asked the clerk to read the charges aloud. It took nearly "
    "an hour, and nobody in the room said a word. When the clerk had finished, the judge looked "
    "up from his papers. He asked whether any of the men wished to speak. One of them stood and "
    "said that he had been at home with his family that night. His wife was in the gallery, and "
    "she nodded when he pointed to her. The judge wrote something down and called for a short "
    "recess. Outside, the rain had stopped, and the street was full of people waiting for news."
)


def vocoder_checkpoint(preset: str, folder: Path) -> Path:
    config = load_config(preset)
    torch.manual_seed(0)
    model = build_model(config)
    path = folder / f"{preset}.pt"
    save_checkpoint(path, {"model_type": config["model"], "config": config, "model": model.state_dict(),
                           "step": 0})
    return path


def timed_stream(make_iterator):
    t = time.perf_counter()
    it = make_iterator()
    first = next(it)
    t_first = time.perf_counter() - t
    rest = list(it)
    return t_first, time.perf_counter() - t, [first] + rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocoder", action="append", default=[],
                        help="a vocoder preset to pair with the shipped voice (repeatable)")
    parser.add_argument("--compare-griffin-lim", metavar="INIT:N_ITER[:MEL_ITER[:HARMONIC_ITER]]", action="append", default=[],
                        help="also the shipped voice with this Griffin-Lim (e.g. random:60, its "
                             "setting until 2026-12-07; repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {len(Synthesizer().split(PARAGRAPH))} sentences; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    print("| system | first chunk (s) | stream total (s) | synthesize() (s) | stream / synthesize | audio (s) | streamed vs whole |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        compared = [(setting, *griffin_lim_setting(setting)) for setting in args.compare_griffin_lim]
        rows = ([("shipped voice, Griffin-Lim", None)]
                + [(f"shipped voice, {describe_griffin_lim(*found)}", setting)
                   for setting, *found in compared]
                + [(p, p) for p in args.vocoder])
        for label, preset in rows:
            griffin_lim = preset is None or ":" in preset
            vocoder = "griffin-lim" if griffin_lim else vocoder_checkpoint(preset, Path(tmp))
            vocoder_only = not griffin_lim and load_config(preset)["model"] == "flowavenet"
            tts = Synthesizer(vocoder="griffin-lim" if vocoder_only else vocoder)
            if preset is not None and griffin_lim:
                init, n_iter, mel_iter, harmonic_iter = griffin_lim_setting(preset)
                set_griffin_lim(tts, n_iter, init, mel_iter, harmonic_iter)
            if vocoder_only:
                row = _vocoder_only(tts, vocoder, args.repeats)
                print(f"| {label} (vocoder only, the acoustic model's first sentence) | " + row)
                continue
            tts.synthesize(PARAGRAPH, seed=1)  # warm-up (and the filterbank cache)
            firsts, totals, wholes = [], [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                whole = tts.synthesize(PARAGRAPH, seed=1)[0]
                wholes.append(time.perf_counter() - t)
                t_first, t_total, chunks = timed_stream(lambda: tts.stream(PARAGRAPH, seed=1))
                firsts.append(t_first)
                totals.append(t_total)
            streamed = np.concatenate([c.samples for c in chunks])
            if griffin_lim:
                match = f"{log_spectral_distance(whole, streamed):.2f} dB LSD"
            else:
                match = f"{np.abs(whole - streamed).max():.1e} max"
            med = statistics.median
            print(f"| {label} | {med(firsts):.3f} | {med(totals):.2f} | {med(wholes):.2f} | "
                  f"{med(totals) / med(wholes):.2f} | {len(whole) / tts.sample_rate:.1f} | {match} |")


def _vocoder_only(tts: Synthesizer, checkpoint: Path, repeats: int) -> str:
    from flowspeech.inference.vocoders import load_vocoder
    from flowspeech.utils.noise import utterance_generators

    vocoder = load_vocoder(checkpoint, None)
    sentence = tts.split(PARAGRAPH)[0]
    out = tts.model.infer(*tts._tokens([tts.frontend.encode(sentence)]), generator=utterance_generators(1, 1))
    mel = (out.mels - out.mels.min()) / (out.mels.max() - out.mels.min())  # into FloWaveNet's [0, 1]
    mel = torch.nn.functional.interpolate(mel, scale_factor=1.0)[:, :vocoder.mel_config.n_mels]
    lengths = torch.tensor([mel.size(2)])
    firsts, totals, wholes = [], [], []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        whole = vocoder.vocode(mel, lengths, utterance_generators(2, 1)).waveforms[0].numpy()
        wholes.append(time.perf_counter() - t)
        t_first, t_total, pieces = timed_stream(lambda: vocoder.stream(mel, utterance_generators(2, 1)))
        firsts.append(t_first)
        totals.append(t_total)
    streamed = np.concatenate(pieces)
    med = statistics.median
    return (f"{med(firsts[1:]):.3f} | {med(totals[1:]):.2f} | {med(wholes[1:]):.2f} | "
            f"{med(totals[1:]) / med(wholes[1:]):.2f} | {len(whole) / vocoder.sample_rate:.1f} | "
            f"{np.abs(whole[:len(streamed)] - streamed).max():.1e} max |")


if __name__ == "__main__":
    main()
