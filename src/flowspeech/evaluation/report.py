"""Writing an evaluation down: ``report.json`` (everything, per utterance), ``report.md`` (a
table to read at a glance), ``utterances.csv``, and plots (matplotlib, no display needed):
``metrics.png`` (per-utterance distributions), ``comparison.png`` (two systems side by side)
and ``mel_<id>.png`` (reference vs synthesis mel spectrograms).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from flowspeech.audio import MelConfig, load_wav, mel_spectrogram
from flowspeech.errors import DatasetError
from flowspeech.evaluation.evaluate import METRICS, PERCENT_METRICS, EvaluationReport
from flowspeech.evaluation.inputs import list_audio
from flowspeech.utils.files import atomic_write

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
# Metrics in tables and plots, in this order (those a report has).
SHOWN = ("wer", "cer", "mcd", "mcd_cmn", "cepstral_offset", "f0_rmse_cents", "log_f0_rmse", "vde",
         "vde_missed", "vde_spurious", "ffe", "duration_ratio", "pesq", "stoi", "mrstft", "rtf",
         "rtf_acoustic", "rtf_vocoder", "nll_per_dim", "duration_s", "speech_s")
PLOTTED = ("wer", "cer", "mcd", "f0_rmse_cents", "vde", "duration_ratio", "pesq", "stoi",
           "mrstft", "rtf", "nll_per_dim", "duration_s")


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
def write_report(report: EvaluationReport, out_dir: str | Path, plots: bool = True,
                 mel_ids: list[str] | None = None, other: EvaluationReport | None = None
                 ) -> list[Path]:
    """Write ``report.json``, ``report.md``, ``utterances.csv`` and the plots into ``out_dir``.

    Args:
        report: the evaluation.
        out_dir: created if missing; existing report files are replaced (atomically).
        plots: draw ``metrics.png`` (and ``comparison.png`` for a comparison).
        mel_ids: draw ``mel_<id>.png`` for these ids.
        other: the system ``report.comparison`` compares with, for ``comparison.png``.

    Returns:
        The files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def text_file(name: str, content: str) -> None:
        def write(tmp: str) -> None:
            Path(tmp).write_text(content, encoding="utf-8")
            os.chmod(tmp, 0o644)  # the temporary file is private; a report is not

        atomic_write(out / name, write)
        written.append(out / name)

    text_file(REPORT_JSON, json.dumps(_finite(report.to_dict()), indent=1) + "\n")
    with_other = plots and other is not None and bool(other.rows)
    text_file(REPORT_MD, render_markdown(report, plots=plots, mel_ids=mel_ids or [],
                                         comparison_plot=with_other))
    text_file("utterances.csv", rows_to_csv(report.rows))
    if plots and report.rows:
        written.append(plot_distributions({report.name: report.rows}, out / "metrics.png"))
    if with_other:
        written.append(plot_distributions({report.name: report.rows, other.name: other.rows},
                                          out / "comparison.png"))
    for utt_id in mel_ids or []:
        written.append(plot_mel_pair(report, utt_id, out / f"mel_{utt_id}.png"))
    return written


def load_report(path: str | Path) -> EvaluationReport:
    """Read a report written by :func:`write_report` (its folder or its ``report.json``).

    Raises:
        DatasetError: no report there, or not one of ours.
    """
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_JSON
    if not path.is_file():
        raise DatasetError(f"{path}: no evaluation report (write one with `flowspeech evaluate`)")
    try:
        data = json.loads(path.read_text())
        return EvaluationReport.from_dict(data)
    except (json.JSONDecodeError, TypeError) as err:
        raise DatasetError(f"{path}: not a flowspeech evaluation report ({err})") from None


def _finite(value):
    """NaN/inf -> None, so the JSON is standard (``json`` would write bare ``NaN``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def rows_to_csv(rows: list[dict]) -> str:
    """Per-utterance rows as CSV (columns: the union of the rows' keys, first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or ["id"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt_csv(v) for k, v in row.items()})
    return buffer.getvalue()


def _fmt_csv(value):
    return f"{value:.6g}" if isinstance(value, float) else value


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------
def format_value(metric: str, value) -> str:
    """``0.16`` -> ``16.00 %`` for rates, 3 significant decimals otherwise, ``-`` for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if metric in PERCENT_METRICS:
        return f"{100 * value:.2f} %"
    unit = METRICS[metric].unit if metric in METRICS else ""
    unit = f" {unit}" if unit and unit not in ("%",) else ""
    return f"{value:.3f}{unit}" if abs(value) < 100 else f"{value:.1f}{unit}"


def _list_ids(ids: list[str], limit: int = 20) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def render_markdown(report: EvaluationReport, plots: bool = True, mel_ids: list[str] = (),
                    comparison_plot: bool = False) -> str:
    """The Markdown report: overall table, missing ids, comparison, worst sentences, settings."""
    lines = [f"# Evaluation: {report.name}", ""]
    what = [f"system `{report.system}`"]
    if report.reference:
        what.append(f"reference `{report.reference}`")
    if report.text:
        what.append(f"transcripts `{report.text}`")
    overall = report.overall
    lines += [", ".join(what) + f". {overall.get('utterances', 0)} utterances, "
              f"{overall.get('audio_s', 0.0):.1f} s of audio; {report.created}.", ""]

    lines += ["| metric | overall | median | best | n | definition |",
              "|---|---:|---:|---|---:|---|"]
    for key in SHOWN:
        if key not in report.metrics and key not in overall:
            continue
        spec, dist = METRICS[key], report.metrics.get(key, {})
        lines.append(f"| {spec.label} | {format_value(key, overall.get(key, dist.get('mean')))} | "
                     f"{format_value(key, dist.get('median'))} | {spec.better} | "
                     f"{dist.get('n', '-')} | {spec.definition} |")
    if "wer" in overall:
        lines += ["", f"WER counts: {overall['substitutions']} substitutions, "
                  f"{overall['deletions']} deletions, {overall['insertions']} insertions over "
                  f"{overall['ref_words']} reference words; sentences with an error: "
                  f"{100 * overall['sentence_error_rate']:.0f} %. "
                  "Part of every WER is the recogniser's own: compare with the WER of the "
                  "recordings of the same sentences."]
    lines.append("")

    ids = report.ids
    lines += ["## Utterances", "", f"- evaluated: {ids.get('evaluated', len(report.rows))}"]
    for key, label in (("missing_in_system", "no system clip"),
                       ("missing_in_reference", "no reference clip")):
        if ids.get(key):
            lines.append(f"- {label} ({len(ids[key])}): {_list_ids(ids[key])}")
    if ids.get("system_clips_without_text"):
        lines.append(f"- system clips not in the transcripts (not scored): "
                     f"{ids['system_clips_without_text']}")
    if report.failed:
        lines.append(f"- failed ({len(report.failed)}):")
        lines += [f"  - {k}: {v}" for k, v in list(report.failed.items())[:20]]
    lines.append("")

    if report.comparison:
        lines += render_comparison(report)
    lines += _worst_sentences(report.rows)
    if plots and report.rows:
        lines += ["## Plots", "", "![per-utterance distributions](metrics.png)", ""]
        if comparison_plot:
            lines += ["![comparison](comparison.png)", ""]
    for utt_id in mel_ids:
        lines += [f"![mel spectrograms of {utt_id}](mel_{utt_id}.png)", ""]
    lines += ["## Settings", "", "```json", json.dumps(report.settings, indent=1), "```", ""]
    return "\n".join(lines)


def render_comparison(report: EvaluationReport) -> list[str]:
    """The paired Wilcoxon table of ``report.comparison``."""
    comp = report.comparison
    alpha = comp.get("alpha", 0.05)
    lines = [f"## Paired comparison: {report.name} vs {comp['other']}", "",
             f"Wilcoxon signed-rank test on the {comp['paired_utterances']} utterances both "
             f"systems have; difference = {report.name} - {comp['other']}; significant when "
             f"p < {alpha}.", "",
             f"| metric | median {report.name} | median {comp['other']} | median difference | "
             "p-value | significant | n |", "|---|---:|---:|---:|---:|---|---:|"]
    for test in comp["tests"]:
        key = test["metric"]
        p = test["p_value"]
        lines.append(f"| {METRICS[key].label if key in METRICS else key} | "
                     f"{format_value(key, test['median_a'])} | "
                     f"{format_value(key, test['median_b'])} | "
                     f"{format_value(key, test['median_difference'])} | "
                     f"{'-' if p is None or not math.isfinite(p) else f'{p:.3g}'} | "
                     f"{'yes' if test['significant'] else 'no'} | {test['n']} |")
    lines.append("")
    return lines


def _worst_sentences(rows: list[dict], k: int = 5) -> list[str]:
    asr = [r for r in rows if isinstance(r.get("wer"), float) and math.isfinite(r["wer"])]
    if not asr:
        return []
    worst = sorted(asr, key=lambda r: (-r["wer"], r["id"]))[:k]
    lines = ["## Highest WER", "", "| id | WER | reference | recognised |", "|---|---:|---|---|"]
    for r in worst:
        lines.append(f"| {r['id']} | {100 * r['wer']:.1f} % | {r['reference_text']} | "
                     f"{r['hypothesis'] or '(nothing)'} |")
    return lines + [""]


# --------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------
def plot_distributions(rows_by_system: dict[str, list[dict]], path: str | Path) -> Path:
    """Box plots (with the individual utterances as dots) of every per-utterance metric,
    one panel per metric, one box per system.

    Args:
        rows_by_system: system name -> rows.
        path: the PNG to write.
    """

    names = list(rows_by_system)
    panels = []
    for key in PLOTTED:
        series = [[r[key] for r in rows_by_system[n] if _finite_number(r.get(key))] for n in names]
        if any(series):
            panels.append((key, series))
    cols = min(4, max(1, len(panels)))
    nrows = max(1, math.ceil(len(panels) / cols))
    fig = Figure(figsize=(3.2 * cols, 2.8 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    rng = np.random.default_rng(0)
    for ax, (key, series) in zip(axes, panels):
        scale = 100.0 if key in PERCENT_METRICS else 1.0
        data = [np.asarray(s, dtype=float) * scale for s in series]
        positions = [i + 1 for i, s in enumerate(data) if len(s)]
        ax.boxplot([s for s in data if len(s)], positions=positions, widths=0.5,
                   showfliers=False)
        for pos, s in zip(positions, [s for s in data if len(s)]):
            ax.scatter(pos + rng.uniform(-0.15, 0.15, len(s)), s, s=6, alpha=0.5)
        spec = METRICS[key]
        unit = "%" if key in PERCENT_METRICS else spec.unit
        ax.set_title(f"{spec.label}" + (f" ({unit})" if unit else ""), fontsize=10)
        ax.set_xticks(range(1, len(names) + 1), names if len(names) > 1 else [""], fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.suptitle("per-utterance distributions" + ("" if len(names) > 1 else f": {names[0]}"))
    fig.savefig(path, dpi=90)
    return Path(path)


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plot_mel_pair(report: EvaluationReport, utt_id: str, path: str | Path) -> Path:
    """Log-mel spectrograms (Glow-TTS settings: 22.05 kHz, 80 bands, hop 256) of the
    reference (when there is one) above the synthesis of ``utt_id``.

    Raises:
        DatasetError: ``utt_id`` has no clip in the system folder.
    """

    config = MelConfig.glow_tts()
    clips = [("synthesis", list_audio(report.system).get(utt_id))]
    if report.reference:
        clips.insert(0, ("reference", list_audio(report.reference).get(utt_id)))
    if clips[-1][1] is None:
        raise DatasetError(f"--mels: {utt_id} has no clip in {report.system}")
    clips = [(label, p) for label, p in clips if p is not None]
    mels = [mel_spectrogram(load_wav(p, sample_rate=config.sample_rate)[0], config).numpy()
            for _, p in clips]
    width = max(m.shape[1] for m in mels)
    fig = Figure(figsize=(max(6.0, width / 80), 2.2 * len(mels)), layout="constrained")
    axes = fig.subplots(len(mels), 1, squeeze=False)[:, 0]
    vmin, vmax = min(m.min() for m in mels), max(m.max() for m in mels)
    seconds = config.hop_length / config.sample_rate
    for ax, (label, _), mel in zip(axes, clips, mels):
        ax.imshow(mel, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma",
                  extent=(0, mel.shape[1] * seconds, 0, mel.shape[0]))
        ax.set_xlim(0, width * seconds)
        ax.set_ylabel(f"{label}\nmel band")
    axes[-1].set_xlabel("seconds")
    fig.suptitle(f"{utt_id}: {report.name}")
    fig.savefig(path, dpi=90)
    return Path(path)
