"""Speak a test set with a model, for evaluation: one ``<id>.wav`` per sentence plus the
timings that the real-time-factor metrics read.

``timings.json`` holds ``{id: seconds}`` (whole synthesis of that sentence) and
``stage_timings.json`` ``{id: {"text": s, "acoustic": s, "vocoder": s}}``; the model is
loaded once, before the clock starts for the first sentence.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from flowspeech.audio import save_wav
from flowspeech.inference.synthesizer import Synthesizer
from flowspeech.inference.vocoders import GriffinLimVocoder


def synthesize_test_set(texts: dict[str, str], out_dir: str | Path, *, acoustic: str | None = None,
                        voice: str | None = None, vocoder: str = "griffin-lim",
                        noise_scale: float | None = None, length_scale: float | None = None,
                        duration_rounding: dict | None = None, seed: int = 0,
                        griffin_lim_iterations: int | None = None,
                        griffin_lim_init: str | None = None,
                        griffin_lim_mel_iterations: int | None = None,
                        griffin_lim_harmonic_iterations: int | None = None,
                        device: str = "cpu", progress: bool = True) -> dict:
    """Synthesise every ``id -> text`` of ``texts`` into ``out_dir``. The settings left None
    are the voice's (:class:`~flowspeech.inference.synthesizer.Synthesizer`);
    ``griffin_lim_iterations``, ``griffin_lim_init``, ``griffin_lim_mel_iterations`` and
    ``griffin_lim_harmonic_iterations`` replace Griffin-Lim's iterations, starting phase,
    mel-matching and harmonic-restoration iterations (ignored with a neural vocoder).

    Returns:
        ``{"voice", "noise_scale", "length_scale", "duration_rounding", "acoustic", "vocoder",
        "end_to_end", "mel_config", "load_s", "sentences"}`` describing the run.
    """

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tts = Synthesizer(acoustic, voice=voice, vocoder=vocoder, device=device,
                      noise_scale=noise_scale, length_scale=length_scale,
                      duration_rounding=duration_rounding)
    load_s = time.perf_counter() - t0
    set_griffin_lim(tts, griffin_lim_iterations, griffin_lim_init, griffin_lim_mel_iterations,
                    griffin_lim_harmonic_iterations)
    totals, stages = {}, {}
    items = sorted(texts.items())
    if progress:

        items = tqdm(items, desc="synthesising", unit="utt")
    for uid, text in items:
        t = time.perf_counter()
        result = tts.synthesize_full(text, seed=seed, with_mels=False)
        totals[uid] = time.perf_counter() - t
        stages[uid] = result.timings
        save_wav(out / f"{uid}.wav", result.waveform, result.sample_rate)
    (out / "timings.json").write_text(json.dumps(totals, indent=1) + "\n")
    (out / "stage_timings.json").write_text(json.dumps(stages, indent=1) + "\n")
    return {"voice": tts.voice.name if tts.voice is not None else None,
            "noise_scale": tts.noise_scale, "length_scale": tts.length_scale,
            "duration_rounding": (tts.duration_rounding.to_dict()
                                  if tts.duration_rounding is not None else None),
            "mel_config": dataclasses.asdict(tts.mel_config),
            "acoustic": tts.acoustic_path, "vocoder": tts.describe_vocoder(), "end_to_end": tts.end_to_end,
            "load_s": load_s, "sentences": len(totals)}


def set_griffin_lim(tts: Synthesizer, n_iter: int | None = None, init: str | None = None,
                    mel_iter: int | None = None, harmonic_iter: int | None = None) -> None:
    """Give ``tts``'s Griffin-Lim ``n_iter`` iterations from the ``init`` phase (``"pghi"`` or
    ``"random"``), then ``mel_iter`` mel-matching ones and ``harmonic_iter`` restoring the
    harmonics; None, or a neural vocoder: unchanged."""
    if not isinstance(tts.vocoder, GriffinLimVocoder):
        return
    if n_iter is not None:
        tts.vocoder.n_iter = n_iter
    if init is not None:
        tts.vocoder.init = init
    if mel_iter is not None:
        tts.vocoder.mel_iter = mel_iter
    if harmonic_iter is not None:
        tts.vocoder.harmonic_iter = harmonic_iter
