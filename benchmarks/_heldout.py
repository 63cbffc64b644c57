"""The held-out sentences the evaluation scripts score (``eval_voice.py``, ``eval_vocoder.py``),
and the copy-synthesis both make of their recordings."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path


def add_split_arguments(parser, split: str, limit: int) -> None:
    """``--corpus``, ``--split`` and ``--limit``: the sentences :func:`first_sentences` reads,
    with these defaults."""
    parser.add_argument("--corpus", required=True,
                        help="LJSpeech-layout corpus with filelists/ and wavs/")
    parser.add_argument("--split", default=split)
    parser.add_argument("--limit", type=int, default=limit,
                        help="first N sentences of the split (0: all)")


def first_sentences(corpus: Path, split: str, limit: int, out: Path) -> tuple[list[tuple[str, str]], Path]:
    """The first ``limit`` (0: all) ``(id, text)`` pairs of the corpus's ``split`` filelist, in
    the file's order, also written to ``out/text.txt`` (``id|text`` lines) for
    ``flowspeech.evaluation``. Returns the pairs and that file."""
    from flowspeech.evaluation.inputs import read_transcripts

    texts = read_transcripts(Path(corpus) / "filelists" / f"ljs_audio_text_{split}_filelist.txt")
    sentences = list(texts.items())[: limit or None]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text_file = out / "text.txt"
    text_file.write_text("".join(f"{uid}|{text}\n" for uid, text in sentences), encoding="utf-8")
    return sentences, text_file


def copy_synthesis(vocoder, corpus: Path, ids: list[str], wav_dir: Path,
                   seed: int = 0) -> Iterator[tuple[str, object, object]]:
    """Vocode each recording's own mel (the vocoder's features) into ``wav_dir/ID.wav``
    (clipped to [-1, 1]); yields ``(id, recording, vocoded)`` float32 numpy arrays as each is
    written, and writes the seconds each took in ``wav_dir/timings.json`` at the end."""
    import numpy as np
    import torch

    from flowspeech.audio import load_wav, mel_spectrogram, save_wav

    config = vocoder.mel_config
    wav_dir = Path(wav_dir)
    wav_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    generator = torch.Generator().manual_seed(seed)
    for uid in ids:
        audio, _ = load_wav(Path(corpus) / "wavs" / f"{uid}.wav", config.sample_rate)
        mel = mel_spectrogram(torch.as_tensor(audio), config)[None]
        t = time.perf_counter()
        with torch.inference_mode():
            result = vocoder.vocode(mel, torch.tensor([mel.shape[-1]]), generator)
            wave = result.waveforms[0, :int(result.waveform_lengths[0])].float().numpy()
        timings[uid] = time.perf_counter() - t
        wave = np.clip(wave, -1, 1).astype(np.float32)
        save_wav(wav_dir / f"{uid}.wav", wave, config.sample_rate)
        yield uid, np.asarray(audio, dtype=np.float32), wave
    (wav_dir / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")


def mcd_band_hz(max_hz: float | None, mel_config) -> float | None:
    """The band MCD is taken over, from a ``--mcd-max-hz`` option: 0 for the full band (None),
    a frequency as given, and by default (None) the centre of the highest mel filter of
    ``mel_config`` (``MelConfig.top_filter_hz``; the full band when there is no mel config).
    Holding envelopes at ``fmax`` itself (8 kHz) copies the mel filter bank's falling top
    edge, 25 dB down even in copy-synthesis, across 8-11 kHz: a fixed colouring that
    dominated MCD (docs/default-voice.md)."""
    if max_hz is not None:
        return max_hz or None
    return None if mel_config is None else mel_config.top_filter_hz



def griffin_lim_setting(text: str) -> tuple[str, int, int, int]:
    """``(init, n_iter, mel_iter, harmonic_iter)`` of a Griffin-Lim setting written
    ``INIT:N_ITER[:MEL_ITER[:HARMONIC_ITER]]`` (``pghi:12:30:12``; a step left out does not
    run: ``random:60`` is Griffin-Lim as it was before the mel matching); exits with a message
    on anything else."""
    from flowspeech.audio.phase import STARTS

    init, *counts = text.split(":")
    counts += ["0"] * (3 - len(counts))
    if init not in STARTS or len(counts) != 3 or not all(c.isdigit() for c in counts):
        raise SystemExit(f"{text}: expected INIT:N_ITER[:MEL_ITER[:HARMONIC_ITER]] with INIT "
                         f"one of {', '.join(STARTS)}")
    n_iter, mel_iter, harmonic_iter = map(int, counts)
    if harmonic_iter and not mel_iter:
        raise SystemExit(f"{text}: the harmonic restoration needs the mel matching")
    return init, n_iter, mel_iter, harmonic_iter


def describe_griffin_lim(init: str, n_iter: int, mel_iter: int, harmonic_iter: int = 0) -> str:
    """A setting of :func:`griffin_lim_setting` in words, as the vocoder describes itself:
    ``Griffin-Lim (12 iterations from the PGHI phase, then 30 matching the mel)``."""
    from flowspeech.audio.griffin_lim import describe

    return f"Griffin-Lim ({describe(n_iter, init, mel_iter, harmonic_iter)})"
