"""Evaluate a folder of synthesised clips: every metric that the inputs allow, per utterance,
in parallel processes, then corpus-level figures.

=====================  ==============================================================
inputs                 metrics
=====================  ==============================================================
system clips           duration, speech duration; real-time factor with ``timings.json``
+ transcripts          ASR word and character error rates (:mod:`.asr`, :mod:`.wer`)
+ reference clips      MCD, log-F0 RMSE, VDE, FFE, duration ratio (:mod:`.spectral`)
+ ``copy_synthesis``   PESQ, STOI, multi-resolution STFT distance (:mod:`.intrusive`)
+ ``nll``              the flow model's negative log-likelihood per dimension
=====================  ==============================================================
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from flowspeech.audio import load_wav, resample
from flowspeech.errors import ConfigError, DatasetError
from flowspeech.evaluation import spectral
from flowspeech.evaluation.asr import PocketSphinxRecognizer, resolve_resampler
from flowspeech.evaluation.deps import require
from flowspeech.evaluation.inputs import (
    list_audio,
    match_ids,
    read_nll,
    read_stage_timings,
    read_timings,
    read_transcripts,
)
from flowspeech.evaluation.intrusive import pesq_wb, stoi
from flowspeech.evaluation.spectral import F0_METHODS
from flowspeech.evaluation.stats import compare_rows
from flowspeech.evaluation.wer import error_counts, normalize_for_scoring


@dataclass(frozen=True)
class Metric:
    """How a metric is named, which way is better, and where it is defined."""

    label: str
    unit: str
    better: str  # "lower" or "higher"
    definition: str


METRICS: dict[str, Metric] = {
    "wer": Metric("WER", "%", "lower", "ASR word error rate, (S+D+I)/N over the corpus "
                  "(PocketSphinx 5, bundled en-us model)"),
    "cer": Metric("CER", "%", "lower", "ASR character error rate over the corpus"),
    "mcd": Metric("MCD", "dB", "lower", "mel-cepstral distortion c1..c24, WORLD + SPTK sp2mc, "
                  "DTW-aligned (Kubichek 1993)"),
    "mcd_cmn": Metric("MCD, mean removed", "dB", "lower", "MCD after removing the sentence's mean "
                      "c1..c24 difference along the path: a fixed colouring does not count"),
    "cepstral_offset": Metric("cepstral offset", "dB", "lower", "size of the mean c1..c24 "
                              "difference along the path (a fixed colouring), on MCD's scale"),
    "log_f0_rmse": Metric("log-F0 RMSE", "", "lower", "RMSE of ln F0 over frames voiced in "
                          "both, DTW-aligned (WORLD Harvest)"),
    "f0_rmse_cents": Metric("F0 RMSE", "cents", "lower", "log-F0 RMSE x 1200/ln 2"),
    "vde": Metric("VDE", "%", "lower", "voicing decision error (Nakatani et al. 2008)"),
    "vde_missed": Metric("VDE, missed", "%", "lower", "frames voiced in the reference and "
                         "unvoiced in the synthesis (part of VDE)"),
    "vde_spurious": Metric("VDE, spurious", "%", "lower", "frames unvoiced in the reference and "
                           "voiced in the synthesis (the rest of VDE)"),
    "ffe": Metric("FFE", "%", "lower", "F0 frame error (Chu & Alwan 2009)"),
    "duration_ratio": Metric("duration ratio", "", "closer to 1",
                             "speech span of the synthesis / that of the reference"),
    "pesq": Metric("PESQ", "MOS", "higher", "wide-band PESQ, ITU-T P.862.2, 16 kHz"),
    "stoi": Metric("STOI", "", "higher", "short-time objective intelligibility (Taal et al. 2011)"),
    "mrstft": Metric("MR-STFT", "", "lower", "spectral convergence + log magnitude distance, "
                     "3 resolutions (Parallel WaveGAN, Yamamoto et al. 2020)"),
    "rtf": Metric("RTF", "", "lower", "synthesis seconds / audio seconds (timings.json)"),
    "rtf_acoustic": Metric("RTF acoustic", "", "lower", "text front end + acoustic model seconds "
                           "/ audio seconds (stage_timings.json)"),
    "rtf_vocoder": Metric("RTF vocoder", "", "lower", "vocoder seconds / audio seconds "
                          "(stage_timings.json)"),
    "nll_per_dim": Metric("NLL", "nats/dim", "lower", "negative log-likelihood per dimension "
                          "(flowspeech align)"),
    "duration_s": Metric("duration", "s", "", "clip length"),
    "speech_s": Metric("speech", "s", "", "clip length without leading/trailing silence "
                       "(frames 40 dB below the loudest)"),
}
# Shown as percentages in the Markdown report: the fractions whose unit above is "%".
PERCENT_METRICS = tuple(key for key, metric in METRICS.items() if metric.unit == "%")
# Tested in a paired comparison (per-utterance values; WER and CER per sentence).
COMPARED_METRICS = ("wer", "cer", "mcd", "mcd_cmn", "cepstral_offset", "log_f0_rmse", "vde",
                    "vde_missed", "vde_spurious", "ffe", "duration_ratio", "pesq", "stoi", "mrstft",
                    "rtf", "nll_per_dim")


@dataclass
class EvalOptions:
    """What to compute and how.

    Attributes:
        asr: run speech recognition when transcripts are given.
        spectral: MCD / F0 / duration ratio when a reference is given.
        copy_synthesis: also PESQ, STOI and MR-STFT (the system re-synthesises the
            reference clips, sample-aligned).
        f0_method: ``"harvest"`` or ``"dio"`` (see :func:`.spectral.world_features`).
        mcd_order: mel-cepstral order (MCD over c1..c_order).
        mcd_max_hz: compare spectral envelopes up to this frequency only (for mel-based
            systems the centre of the front end's top mel filter,
            ``MelConfig.top_filter_hz``; see :func:`.spectral.world_features`); ``None``:
            the full band.
        asr_pad_seconds: silence added around each clip before recognition.
        asr_resampler: ``"auto"``, ``"sox"`` or ``"soxr"`` (see :func:`.asr.to_pcm16k`).
        hmm, lm, dict: PocketSphinx model overrides (default: the bundled en-us model).
    """

    asr: bool = True
    spectral: bool = True
    copy_synthesis: bool = False
    f0_method: str = "harvest"
    mcd_order: int = 24
    mcd_max_hz: float | None = None
    asr_pad_seconds: float = 0.3
    asr_resampler: str = "auto"
    hmm: str | None = None
    lm: str | None = None
    dict: str | None = None


@dataclass
class EvaluationReport:
    """Everything one evaluation found.

    Attributes:
        name: the system's name.
        system, reference, text: the inputs (paths as given).
        rows: one dict per evaluated utterance (``id`` and metric values), in id order.
        ids: which ids were evaluated and which were missing (:class:`.inputs.IdMatch`).
        failed: id -> error message, for clips that could not be evaluated.
        overall: corpus-level figures (``wer``, ``cer``, ``mcd``, ...).
        metrics: per-metric distribution summaries (mean, median, std, min, max, n).
        settings: tools, versions and parameters used.
        comparison: paired comparison with another system, when one was made.
    """

    name: str
    system: str
    reference: str | None
    text: str | None
    rows: list[dict]
    ids: dict
    failed: dict[str, str]
    overall: dict
    metrics: dict
    settings: dict
    comparison: dict | None = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvaluationReport:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------------------
# One utterance (runs in a worker process)
# --------------------------------------------------------------------------------------
_RECOGNIZER = None


def _recognizer(options: EvalOptions):
    global _RECOGNIZER
    if _RECOGNIZER is None:

        _RECOGNIZER = PocketSphinxRecognizer(options.hmm, options.lm, options.dict,
                                             options.asr_pad_seconds, options.asr_resampler)
    return _RECOGNIZER


def _init_worker(options: EvalOptions) -> None:
    # One core per worker: the parallelism is across utterances.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    torch.set_num_threads(1)
    if options.asr:
        _recognizer(options)


def evaluate_utterance(utt_id: str, system_path: str, reference_path: str | None = None,
                       text: str | None = None, options: EvalOptions | None = None) -> dict:
    """All metrics of one synthesised clip.

    Args:
        utt_id: the utterance id (stored in the row).
        system_path: the synthesised clip.
        reference_path: the recording of the same sentence, or None.
        text: what the clip should say, or None (no ASR).
        options: :class:`EvalOptions`.

    Returns:
        A row: ``id``, ``duration_s``, ``speech_s``; with text ``wer``, ``cer``, their counts,
        ``reference_text`` and ``hypothesis`` (both normalised); with a reference
        ``ref_duration_s``, ``mcd``, ``log_f0_rmse``, ``f0_rmse_cents``, ``vde`` (and its
        ``vde_missed`` and ``vde_spurious`` parts), ``ffe``,
        ``duration_ratio``, ``ref_speech_s``, ``syn_speech_s``; with ``copy_synthesis``
        ``pesq``, ``stoi``, ``mrstft_sc``, ``mrstft_mag``, ``mrstft``.
    """

    options = options or EvalOptions()
    samples, rate = load_wav(system_path)
    row: dict = {"id": utt_id, "duration_s": len(samples) / rate,
                 "speech_s": spectral.speech_seconds(samples, rate)}
    if text is not None and options.asr:

        hypothesis = _recognizer(options).transcribe(samples, rate)
        counts = error_counts(text, hypothesis)
        row.update(wer=counts.wer, cer=counts.cer, ref_words=counts.ref_words,
                   word_errors=counts.word_errors, substitutions=counts.substitutions,
                   deletions=counts.deletions, insertions=counts.insertions,
                   ref_chars=counts.ref_chars, char_errors=counts.char_errors,
                   reference_text=normalize_for_scoring(text),
                   hypothesis=normalize_for_scoring(hypothesis))
    if reference_path is not None and (options.spectral or options.copy_synthesis):
        ref, ref_rate = load_wav(reference_path)
        row["ref_duration_s"] = len(ref) / ref_rate
        syn = resample(samples, rate, ref_rate) if rate != ref_rate else samples
        if options.spectral:
            ref_feats, syn_feats = (spectral.world_features(x, ref_rate, options.mcd_order,
                                                            options.f0_method,
                                                            max_hz=options.mcd_max_hz)
                                    for x in (ref, syn))
            row.update(spectral.compare_to_reference(ref_feats, syn_feats))
        if options.copy_synthesis:

            row["pesq"] = pesq_wb(ref, syn, ref_rate)
            row["stoi"] = stoi(ref, syn, ref_rate)
            row.update(spectral.multi_resolution_stft_distance(ref, syn))
    return row


def _job(args: tuple) -> tuple[str, dict | None, str | None]:
    utt_id = args[0]
    try:
        return utt_id, evaluate_utterance(*args), None
    except Exception as err:  # one bad clip must not stop the run; it is reported
        return utt_id, None, f"{type(err).__name__}: {err}"


# --------------------------------------------------------------------------------------
# A folder
# --------------------------------------------------------------------------------------
def check_dependencies(options: EvalOptions, texts: bool, reference: bool) -> None:
    """Import every metric library the run needs and check the options, so that a missing
    package or a bad setting fails before any work."""

    if options.f0_method not in F0_METHODS:
        raise ConfigError(f"unknown F0 method {options.f0_method!r}; choose one of "
                          f"{', '.join(F0_METHODS)}")
    if texts and options.asr:
        resolve_resampler(options.asr_resampler)

    needed = []
    if texts and options.asr:
        needed += ["pocketsphinx", "jiwer"]
    if reference and options.spectral:
        needed += ["pyworld", "pysptk"]
    if reference and options.copy_synthesis:
        needed += ["pesq", "pystoi"]
    for module in needed:
        require(module)


def system_name(folder: str | Path) -> str:
    """``runs/x/wavs`` -> ``x``; any other folder -> its own name."""
    path = Path(folder).resolve()
    return path.parent.name if path.name == "wavs" else path.name


def evaluate(system: str | Path, reference: str | Path | None = None,
             text: str | Path | None = None, options: EvalOptions | None = None,
             nll: str | Path | None = None, jobs: int = 1, name: str | None = None,
             progress: bool = True) -> EvaluationReport:
    """Evaluate every clip of ``system`` (matched by id with ``reference`` and ``text``).

    Args:
        system: folder of ``<id>.wav`` clips; a ``timings.json`` there ({id: seconds of
            synthesis}) adds the real-time factor.
        reference: folder of recordings with the same ids, or None (reference-free metrics).
        text: transcripts (``id|text``, a glow-tts filelist or LJSpeech ``metadata.csv``);
            they select the ids scored. None skips ASR.
        options: :class:`EvalOptions`.
        nll: ``flowspeech align`` output (JSON lines with ``id`` and ``nll_per_dim``).
        jobs: worker processes (1: in this process).
        name: the system's name in reports (default: from the folder).
        progress: show a progress bar on stderr.

    Returns:
        :class:`EvaluationReport`.

    Raises:
        DatasetError: unreadable inputs, or no id to evaluate.
        MissingDependencyError: a metric library is not installed.
    """

    options = options or EvalOptions()
    system_clips = list_audio(system)
    reference_clips = list_audio(reference) if reference is not None else None
    texts = read_transcripts(text) if text is not None else None
    match = match_ids(system_clips, reference_clips, texts)
    if not match.ids:
        raise DatasetError(f"no clip of {system} matches an id of "
                           f"{' and '.join(str(p) for p in (reference, text) if p) or 'anything'}")
    check_dependencies(options, texts is not None, reference_clips is not None)
    tasks = [(i, str(system_clips[i]), str(reference_clips[i]) if reference_clips else None,
              texts[i] if texts else None, options) for i in match.ids]

    start = time.perf_counter()
    results = _run_jobs(tasks, jobs, options, progress)
    wall = time.perf_counter() - start
    rows = [results[i][0] for i in match.ids if results[i][0] is not None]
    failed = {i: results[i][1] for i in match.ids if results[i][1] is not None}

    timings = read_timings(system)
    if timings:
        for row in rows:
            if row["id"] in timings:
                row["synthesis_s"] = timings[row["id"]]
                row["rtf"] = timings[row["id"]] / row["duration_s"]
    stages = read_stage_timings(system)
    if stages:
        for row in rows:
            stage = stages.get(row["id"])
            if stage:
                row["acoustic_s"] = stage.get("text", 0.0) + stage.get("acoustic", 0.0)
                row["vocoder_s"] = stage.get("vocoder", 0.0)
                row["rtf_acoustic"] = row["acoustic_s"] / row["duration_s"]
                row["rtf_vocoder"] = row["vocoder_s"] / row["duration_s"]
    if nll is not None:
        values = read_nll(nll)
        for row in rows:
            if row["id"] in values:
                row["nll_per_dim"] = values[row["id"]]

    return EvaluationReport(
        name=name or system_name(system), system=str(system),
        reference=str(reference) if reference is not None else None,
        text=str(text) if text is not None else None, rows=rows, ids=match.to_dict(),
        failed=failed, overall=summarize(rows), metrics=distributions(rows),
        settings=_settings(options, texts is not None, reference_clips is not None, jobs, wall),
    )


def _run_jobs(tasks: list[tuple], jobs: int, options: EvalOptions, progress: bool) -> dict:
    """``{id: (row or None, error or None)}``; a progress bar counts finished clips."""

    results = {}
    bar = tqdm(total=len(tasks), desc="evaluate", unit="clip", disable=not progress,
               file=sys.stderr)
    if jobs <= 1:
        for task in tasks:
            utt_id, row, err = _job(task)
            results[utt_id] = (row, err)
            bar.update()
    else:

        # spawn, not fork: the parent may hold torch/OpenMP threads, which fork breaks.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                 initializer=_init_worker, initargs=(options,)) as pool:
            futures = [pool.submit(_job, task) for task in tasks]
            for future in as_completed(futures):
                utt_id, row, err = future.result()
                results[utt_id] = (row, err)
                bar.update()
    bar.close()
    return results


# --------------------------------------------------------------------------------------
# Corpus-level figures
# --------------------------------------------------------------------------------------
def _values(rows: list[dict], key: str) -> np.ndarray:
    vals = [r[key] for r in rows
            if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    arr = np.asarray(vals, dtype=np.float64)
    return arr[np.isfinite(arr)]


def _sum(rows: list[dict], key: str) -> float:
    return float(sum(r[key] for r in rows if key in r))


def summarize(rows: list[dict]) -> dict:
    """Corpus-level figures of per-utterance rows.

    ``wer``/``cer``: summed errors over summed reference words/characters (long sentences
    weigh more, as in sclite); ``sentence_error_rate``: share of sentences with a word error;
    ``duration_ratio``: total synthesised speech over total reference speech; ``rtf``: total
    synthesis time over total audio; every other metric: the mean over utterances.
    """
    out: dict = {"utterances": len(rows), "audio_s": _sum(rows, "duration_s")}
    asr_rows = [r for r in rows if "ref_words" in r]
    if asr_rows:
        words, chars = _sum(asr_rows, "ref_words"), _sum(asr_rows, "ref_chars")
        out["wer"] = _sum(asr_rows, "word_errors") / words if words else math.nan
        out["cer"] = _sum(asr_rows, "char_errors") / chars if chars else math.nan
        out["sentence_error_rate"] = sum(r["word_errors"] > 0 for r in asr_rows) / len(asr_rows)
        out["ref_words"] = int(words)
        for key in ("substitutions", "deletions", "insertions"):
            out[key] = int(_sum(asr_rows, key))
    for key in ("mcd", "mcd_cmn", "cepstral_offset", "log_f0_rmse", "f0_rmse_cents", "vde",
                "vde_missed", "vde_spurious", "ffe",
                "pesq", "stoi", "mrstft_sc", "mrstft_mag", "mrstft", "nll_per_dim"):
        values = _values(rows, key)
        if len(values):
            out[key] = float(values.mean())
    ratio_rows = [r for r in rows if "duration_ratio" in r]
    if ratio_rows:
        out["duration_ratio"] = _sum(ratio_rows, "syn_speech_s") / _sum(ratio_rows, "ref_speech_s")
    rtf_rows = [r for r in rows if "rtf" in r]
    if rtf_rows:
        out["rtf"] = _sum(rtf_rows, "synthesis_s") / _sum(rtf_rows, "duration_s")
    for stage in ("acoustic", "vocoder"):
        stage_rows = [r for r in rows if f"{stage}_s" in r]
        if stage_rows:
            out[f"rtf_{stage}"] = _sum(stage_rows, f"{stage}_s") / _sum(stage_rows, "duration_s")
    return out


def distributions(rows: list[dict]) -> dict:
    """``{metric: {mean, median, std, min, max, n}}`` of the per-utterance values."""
    out = {}
    for key in METRICS:
        values = _values(rows, key)
        if len(values):
            out[key] = {"mean": float(values.mean()), "median": float(np.median(values)),
                        "std": float(values.std()), "min": float(values.min()),
                        "max": float(values.max()), "n": int(len(values))}
    return out


def _settings(options: EvalOptions, texts: bool, reference: bool, jobs: int, wall: float) -> dict:
    def ver(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    settings: dict = {"options": asdict(options), "jobs": jobs, "wall_seconds": round(wall, 2),
                      "flowspeech": ver("flowspeech")}
    if texts and options.asr:

        resampler = resolve_resampler(options.asr_resampler)
        settings["asr"] = {
            "recognizer": f"pocketsphinx {ver('pocketsphinx')}",
            "error_rates": f"jiwer {ver('jiwer')}",
            "model": {k: v for k, v in (("hmm", options.hmm), ("lm", options.lm),
                                        ("dict", options.dict)) if v} or "bundled en-us",
            "input": f"16 kHz 16-bit PCM ({'sox rate -h' if resampler == 'sox' else 'soxr HQ'}"
                     f", no dither), {options.asr_pad_seconds} s silence at both ends, front end "
                     "reset for every clip",
            "normalisation": "flowspeech normalize_english (numbers, abbreviations), hyphens "
                             "and punctuation removed, lower case, a few British spellings "
                             "mapped to US",
        }
    if reference and options.spectral:
        settings["spectral"] = {
            "features": f"WORLD (pyworld {ver('pyworld')}) {options.f0_method} F0 + CheapTrick "
                        f"envelope, pysptk {ver('pysptk')} sp2mc order {options.mcd_order}, "
                        "alpha = mcepalpha(reference rate), 5 ms frames",
            "band": ("full" if options.mcd_max_hz is None else
                     f"envelopes held flat above {options.mcd_max_hz:g} Hz"),
            "mcd": f"10/ln10 * sqrt(2 * sum_(d=1..{options.mcd_order}) (c_d - c'_d)^2), mean "
                   "over the DTW path (Euclidean on c1..c24; steps (1,1),(1,0),(0,1))",
            "mcd_cmn": "the same with the mean c1..c24 difference over the path subtracted; "
                       "cepstral_offset: 10/ln10 * sqrt(2 * sum_d mean(c_d - c'_d)^2)",
            "trimming": "leading/trailing frames 40 dB below the loudest removed",
            "analysis_rate": "the reference's (synthesis resampled to it)",
        }
    if reference and options.copy_synthesis:
        settings["copy_synthesis"] = {"pesq": f"pesq {ver('pesq')}, wide-band, 16 kHz",
                                      "stoi": f"pystoi {ver('pystoi')}",
                                      "mrstft": "Parallel WaveGAN resolutions (1024,120,600), "
                                                "(2048,240,1200), (512,50,240)"}
    return settings


def compare_reports(report: EvaluationReport, other: EvaluationReport, alpha: float = 0.05) -> dict:
    """Paired Wilcoxon tests of ``report`` against ``other`` on their common utterances.

    Returns:
        ``{"other", "other_system", "alpha", "paired_utterances", "tests"}``, ``tests`` a
        list of :class:`.stats.PairedComparison` dicts (difference = report - other), one per
        metric of :data:`COMPARED_METRICS` that both have.
    """

    tests = compare_rows(report.rows, other.rows, list(COMPARED_METRICS), alpha)
    common = {r["id"] for r in report.rows} & {r["id"] for r in other.rows}
    return {"other": other.name, "other_system": other.system, "alpha": alpha,
            "paired_utterances": len(common), "tests": [t.to_dict() for t in tests]}
