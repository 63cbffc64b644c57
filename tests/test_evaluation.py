"""Objective metrics: hand-made cases with known answers, and `flowspeech evaluate` end to end
on two tiny folders made here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from flowspeech.cli.main import main
from flowspeech.errors import DatasetError
from flowspeech.evaluation import deps
from flowspeech.evaluation.inputs import match_ids, read_nll, read_timings, read_transcripts
from flowspeech.evaluation.stats import compare_rows, paired_wilcoxon
from flowspeech.evaluation.wer import error_counts, normalize_for_scoring

needs = {m: pytest.mark.skipif(not deps.available(m), reason=f"{m} not installed")
         for m in deps.PACKAGES}
REAL_CLIP = Path("/work/shared/corpus/data/ljspeech_real_sample/wavs/LJ001-0001.wav")
REAL_TEXT = ("Printing, in the only sense with which we are at present concerned, differs from "
             "most if not from all the arts and crafts represented in the Exhibition")
# The project's shared scorer (asr_eval.py) wrote its hypotheses for that clip here.
SHARED_HYPOTHESES = Path("/work/shared/corpus/results/asr_generic_lj001_ljspeech-real.hyp.txt")


def voice(seconds: float, sample_rate: int, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """Harmonic 'syllables' with a vibrato and a -60 dB noise floor: speech-like enough for
    WORLD, PESQ and STOI."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t)) * (np.sin(np.pi * t / t[-1]) ** 0.5)
    x = 0.3 * x * envelope / np.abs(x).max() + 1e-3 * rng.standard_normal(len(t))
    return x.astype(np.float32)


# ---------------------------------------------------------------------------------------
# Text normalisation and error rates
# ---------------------------------------------------------------------------------------
def test_normalize_for_scoring():
    assert normalize_for_scoring("Dr. Smith paid $5 in 1995!") == \
        "doctor smith paid five dollars in nineteen ninety five"
    assert normalize_for_scoring("Mrs. Brown's well-known theatre—“quoted”, 50% & more") == \
        "missus brown's well known theater quoted fifty percent and more"
    # a recogniser's spellings of the same words map to the same tokens
    assert normalize_for_scoring("misses brown's well known theater") == \
        "missus brown's well known theater"
    assert normalize_for_scoring("'Tis the 22nd.") == "tis the twenty second"
    assert normalize_for_scoring(" -- ... ") == ""


def test_error_counts_known_cases():
    same = error_counts("The cat sat on the mat.", "the cat sat on the mat")
    assert (same.wer, same.cer, same.hits) == (0.0, 0.0, 6)
    # "oh" inserted, "sat" -> "sit" substituted, "mat" deleted: 3 errors / 6 words
    c = error_counts("the cat sat on the mat", "oh the cat sit on the")
    assert (c.substitutions, c.deletions, c.insertions, c.ref_words) == (1, 1, 1, 6)
    assert c.wer == pytest.approx(0.5)
    # characters: "cat" -> "bat" is one edit over 7 characters (the space counts)
    assert error_counts("the cat", "the bat").cer == pytest.approx(1 / 7)
    # normalisation applies to both sides
    assert error_counts("Dr. Smith paid $5.", "doctor smith paid five dollars").wer == 0.0
    nothing = error_counts("one two three", "")
    assert (nothing.deletions, nothing.wer, nothing.cer) == (3, 1.0, 1.0)
    total = c + same
    assert total.ref_words == 12 and total.wer == pytest.approx(3 / 12)


@needs["pocketsphinx"]
@pytest.mark.skipif(not REAL_CLIP.exists(), reason="real LJSpeech sample not available")
def test_pocketsphinx_on_a_real_clip_agrees_with_the_shared_scorer():
    from flowspeech.audio import load_wav
    from flowspeech.evaluation.asr import PocketSphinxRecognizer

    samples, rate = load_wav(REAL_CLIP)
    hypothesis = PocketSphinxRecognizer().transcribe(samples, rate)
    assert error_counts(REAL_TEXT, hypothesis).wer < 0.5
    if SHARED_HYPOTHESES.exists():
        shared = dict(line.split("|", 1) for line in SHARED_HYPOTHESES.read_text().splitlines())
        assert hypothesis == shared["LJ001-0001"]


# ---------------------------------------------------------------------------------------
# Spectral metrics
# ---------------------------------------------------------------------------------------
@needs["pyworld"]
@needs["pysptk"]
def test_mcd_is_zero_against_itself_and_grows_with_noise():
    from flowspeech.evaluation.spectral import compare_to_reference, world_features

    sr = 16000
    clean = voice(0.6, sr)
    noise = np.random.default_rng(1).standard_normal(len(clean)).astype(np.float32)
    ref = world_features(clean, sr, f0_method="dio")
    mcds = [compare_to_reference(ref, world_features(clean + level * noise, sr, f0_method="dio"))
            ["mcd"] for level in (0.0, 0.003, 0.03)]
    assert mcds[0] == 0.0
    assert 0.0 < mcds[1] < mcds[2]


@needs["pyworld"]
@needs["pysptk"]
def test_mcd_band_limit_ignores_what_a_low_pass_removed():
    import scipy.signal

    from flowspeech.evaluation.spectral import compare_to_reference, world_features

    sr = 22050
    clean = voice(0.6, sr) + 0.01 * np.random.default_rng(2).standard_normal(int(0.6 * sr))
    low_pass = scipy.signal.butter(12, 5000, fs=sr, output="sos")
    band_limited = scipy.signal.sosfiltfilt(low_pass, clean)

    def mcd(max_hz):
        ref = world_features(clean, sr, f0_method="dio", max_hz=max_hz)
        return compare_to_reference(ref, world_features(band_limited, sr, f0_method="dio",
                                                        max_hz=max_hz))["mcd"]

    full, limited = mcd(None), mcd(4500.0)
    assert full > 3 * limited, (full, limited)
    assert mcd(sr / 2) == full  # a limit at Nyquist is the full band
    with pytest.raises(ValueError, match="positive"):
        world_features(clean, sr, f0_method="dio", max_hz=0.0)


@needs["pyworld"]
@needs["pysptk"]
def test_f0_rmse_of_200_vs_220_hz_sines():
    from flowspeech.evaluation.spectral import compare_to_reference, world_features

    sr = 16000
    t = np.arange(sr // 2) / sr
    rng = np.random.default_rng(0)
    # A -54 dB noise floor, as in any recording: Harvest finds no voicing in a pure digital sine.
    a, b = (0.5 * np.sin(2 * np.pi * f * t) + 1e-3 * rng.standard_normal(len(t))
            for f in (200, 220))
    out = compare_to_reference(world_features(a, sr), world_features(b, sr))
    assert out["log_f0_rmse"] == pytest.approx(math.log(1.1), rel=0.02)
    assert out["f0_rmse_cents"] == pytest.approx(1200 * math.log2(1.1), rel=0.02)  # 165 cents
    assert out["vde"] == 0.0 and out["ffe"] == 0.0  # 10 % off is not a gross error
    assert out["duration_ratio"] == pytest.approx(1.0)


def test_f0_errors_hand_case():
    from flowspeech.evaluation.spectral import f0_errors

    ref = np.array([0.0, 100.0, 100.0, 200.0, 100.0])
    syn = np.array([100.0, 100.0, 0.0, 220.0, 150.0])
    out = f0_errors(ref, syn)
    # voicing differs in frames 0 and 2; frame 4 is 50 % off (a gross error)
    assert out["vde"] == pytest.approx(2 / 5) and out["ffe"] == pytest.approx(3 / 5)
    # frame 2 is voiced only in the reference (missed), frame 0 only in the synthesis
    assert out["vde_missed"] == pytest.approx(1 / 5) and out["vde_spurious"] == pytest.approx(1 / 5)
    assert f0_errors(syn, ref)["vde_missed"] == pytest.approx(1 / 5)
    assert f0_errors(ref, np.zeros(5))["vde_missed"] == pytest.approx(4 / 5)
    expected = math.sqrt((math.log(1.1) ** 2 + math.log(1.5) ** 2) / 3)
    assert out["log_f0_rmse"] == pytest.approx(expected) and out["voiced_frames"] == 3
    # a path pairs frames explicitly
    path = np.array([[1, 1], [3, 3]])
    assert f0_errors(ref, syn, path)["log_f0_rmse"] == pytest.approx(math.log(1.1) / math.sqrt(2))


def test_dtw_path_aligns_a_stretched_sequence():
    from flowspeech.evaluation.spectral import dtw_path, mel_cepstral_distortion

    a = np.random.default_rng(0).standard_normal((20, 25))
    b = np.repeat(a, 2, axis=0)  # every frame twice: a perfect alignment costs nothing
    path = dtw_path(a[:, 1:], b[:, 1:])
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (19, 39)
    assert np.all(np.diff(path, axis=0) >= 0)
    assert mel_cepstral_distortion(a, b) == pytest.approx(0.0, abs=1e-9)
    # MCD of a constant offset d in each of c1..c24: 10/ln10 * sqrt(2 * 24 d^2)
    shifted = a + 0.1
    assert mel_cepstral_distortion(a, shifted, np.stack([np.arange(20)] * 2, 1)) == \
        pytest.approx(10 / math.log(10) * math.sqrt(2 * 24 * 0.01))


def test_mcd_with_the_mean_removed_ignores_a_constant_cepstral_offset():
    from flowspeech.evaluation.spectral import cepstral_offset, mel_cepstral_distortion

    rng = np.random.default_rng(3)
    a = rng.standard_normal((30, 25))
    wobble = 0.05 * rng.standard_normal((30, 25))
    wobble -= wobble.mean(axis=0)  # a difference with no constant part
    offset = np.r_[0.0, np.linspace(0.4, -0.1, 24)]  # c0 is not scored
    path = np.stack([np.arange(30)] * 2, 1)
    scale = 10 / math.log(10) * math.sqrt(2)
    coloured = a + wobble + offset
    assert mel_cepstral_distortion(a, coloured, path, remove_mean=True) == \
        pytest.approx(mel_cepstral_distortion(a, a + wobble, path))
    assert mel_cepstral_distortion(a, a + offset, path, remove_mean=True) == pytest.approx(0.0, abs=1e-9)
    assert cepstral_offset(a, coloured, path) == pytest.approx(scale * np.linalg.norm(offset[1:]))
    assert mel_cepstral_distortion(a, coloured, path) > mel_cepstral_distortion(a, a + wobble, path)


@needs["pyworld"]
@needs["pysptk"]
def test_a_fixed_tilt_filter_costs_mcd_but_little_mcd_with_the_mean_removed():
    import scipy.signal

    from flowspeech.evaluation.spectral import compare_to_reference, world_features

    sr = 16000
    clean = voice(0.6, sr) + 0.003 * np.random.default_rng(4).standard_normal(int(0.6 * sr))
    tilted = scipy.signal.lfilter([1.0, -0.7], [1.0], clean)  # pre-emphasis: one colouring
    out = compare_to_reference(world_features(clean, sr, f0_method="dio"),
                               world_features(tilted, sr, f0_method="dio"))
    assert out["mcd"] > 2 * out["mcd_cmn"], out
    assert out["cepstral_offset"] > 0.8 * out["mcd"], out


def test_multi_resolution_stft_distance():
    import torch

    from flowspeech.evaluation.spectral import multi_resolution_stft_distance

    x = voice(0.5, 22050)
    zero = {"mrstft_sc": 0.0, "mrstft_mag": 0.0, "mrstft": 0.0}
    assert multi_resolution_stft_distance(x, x) == zero
    noisy = x + 0.01 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    louder = multi_resolution_stft_distance(x, noisy)
    assert louder["mrstft"] > 0
    # torch input (any device) and a one-sample length difference give the same numbers
    again = multi_resolution_stft_distance(torch.from_numpy(x), torch.from_numpy(noisy[:-1]))
    assert again["mrstft"] == pytest.approx(louder["mrstft"], rel=1e-3)


@needs["pesq"]
@needs["pystoi"]
def test_pesq_and_stoi_are_at_their_maximum_for_identical_signals():
    from flowspeech.evaluation.intrusive import PESQ_MAX, pesq_wb, stoi

    sr = 16000
    x = voice(1.5, sr)
    noisy = x + 0.05 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    assert pesq_wb(x, x, sr) == pytest.approx(PESQ_MAX, abs=1e-3)
    assert stoi(x, x, sr) == pytest.approx(1.0, abs=1e-6)
    assert pesq_wb(x, noisy, sr) < PESQ_MAX - 0.5
    assert stoi(x, noisy, sr) < 0.99
    assert math.isnan(pesq_wb(np.zeros(sr), np.zeros(sr), sr))  # no speech to score


# ---------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------
def test_wilcoxon_hand_case():
    a = {f"u{i}": float(i) for i in range(1, 7)}
    b = {f"u{i}": 0.0 for i in range(1, 7)}
    result = paired_wilcoxon(a, b, "mcd")
    # all six differences positive: exact two-sided p = 2 / 2^6
    assert result.p_value == pytest.approx(2 / 64) and result.significant
    assert result.statistic == 0.0 and result.median_difference == pytest.approx(3.5)
    assert result.n == 6 and result.median_a == pytest.approx(3.5)
    # signs +1 -2 +3 -4 +5 -6: W = min(9, 12) = 9, far from significant
    mixed = paired_wilcoxon({k: v * (-1) ** (i + 1) for i, (k, v) in enumerate(a.items())}, b)
    assert mixed.statistic == 9.0 and mixed.p_value > 0.5 and not mixed.significant
    same = paired_wilcoxon(a, dict(a))
    assert (same.p_value, same.significant, same.median_difference) == (1.0, False, 0.0)


def test_compare_rows_pairs_by_id_and_ignores_missing_values():
    rows_a = [{"id": "x", "wer": 0.5, "mcd": 5.0}, {"id": "y", "wer": 0.2}, {"id": "z", "wer": 0.1}]
    rows_b = [{"id": "y", "wer": 0.1}, {"id": "x", "wer": 0.4, "mcd": float("nan")}]
    tests = {t.metric: t for t in compare_rows(rows_a, rows_b, ["wer", "mcd", "pesq"])}
    assert tests["wer"].n == 2 and tests["wer"].median_difference == pytest.approx(0.1)
    assert "mcd" not in tests and "pesq" not in tests


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
def test_read_transcripts_formats(tmp_path):
    (tmp_path / "metadata.csv").write_text("LJ1|Raw 5 text.|Raw five text.\nLJ2|Only raw.|\n")
    assert read_transcripts(tmp_path / "metadata.csv") == \
        {"LJ1": "Raw five text.", "LJ2": "Only raw."}
    (tmp_path / "list.txt").write_text("DUMMY/LJ1.wav|Hello there.\n\nwavs/LJ2.wav|Bye.\n")
    assert read_transcripts(tmp_path / "list.txt") == {"LJ1": "Hello there.", "LJ2": "Bye."}
    (tmp_path / "sid.txt").write_text("DUMMY/a_LJ1.wav|3|Hello.\n")
    assert read_transcripts(tmp_path / "sid.txt") == {"a_LJ1": "Hello."}
    (tmp_path / "bad.txt").write_text("LJ1|ok\nno separator here\n")
    with pytest.raises(DatasetError, match="bad.txt:2"):
        read_transcripts(tmp_path / "bad.txt")
    (tmp_path / "twice.txt").write_text("LJ1|a\nLJ1|b\n")
    with pytest.raises(DatasetError, match="appears twice"):
        read_transcripts(tmp_path / "twice.txt")


def test_match_ids_reports_missing_ids():
    system, reference = {"a": 1, "b": 1, "c": 1}, {"a": 1, "c": 1, "d": 1}
    m = match_ids(system, reference)
    assert m.ids == ["a", "c"] and m.missing_in_system == ["d"] and m.missing_in_reference == ["b"]
    texts = {"c": "", "a": "", "e": ""}
    m = match_ids({**system, "x": 1}, reference, texts)
    assert m.ids == ["c", "a"] and m.missing_in_system == ["e"] and m.missing_in_reference == []
    assert m.without_text == 2  # b and x are not in the transcripts


def test_timings_and_nll_files(tmp_path):
    assert read_timings(tmp_path) is None
    (tmp_path / "timings.json").write_text('{"a": 0.5, "b": -1}')
    with pytest.raises(DatasetError, match="b: expected seconds"):
        read_timings(tmp_path)
    (tmp_path / "align.jsonl").write_text('{"id": "a", "nll_per_dim": 1.25}\n{"id": "b"}\n')
    with pytest.raises(DatasetError, match="align.jsonl:2"):
        read_nll(tmp_path / "align.jsonl")


def test_missing_dependency_names_the_package(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *args):
        if name == "pesq":
            raise ImportError("No module named 'pesq'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(deps.MissingDependencyError, match=r"pip install 'flowspeech\[eval\]'"):
        deps.require("pesq")
    assert not deps.available("pesq")


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------
def _folders(root: Path) -> tuple[Path, Path, Path]:
    """system/{a,b,c}.wav (c only there), reference/{a,b,d}.wav (b re-synthesised with
    noise in the system), transcripts for a, b, c, d."""
    system, reference = root / "system", root / "reference"
    system.mkdir()
    reference.mkdir()
    rng = np.random.default_rng(0)
    for i, utt in enumerate("abcd"):
        x = voice(0.8, 22050, f0=120 + 20 * i, seed=i)
        if utt != "c":
            sf.write(reference / f"{utt}.wav", x, 22050, subtype="PCM_16")
        if utt != "d":
            y = x + (0.01 * rng.standard_normal(len(x)) if utt == "b" else 0)
            sf.write(system / f"{utt}.wav", y, 22050, subtype="PCM_16")
    (system / "timings.json").write_text(json.dumps({"a": 0.4, "b": 0.2}))
    text = root / "text.txt"
    text.write_text("a|One two three.\nb|Four five.\nc|Six.\nd|Seven.\n")
    return system, reference, text


@needs["pocketsphinx"]
@needs["jiwer"]
@needs["pyworld"]
@needs["pysptk"]
@needs["pesq"]
@needs["pystoi"]
def test_evaluate_command_end_to_end(tmp_path, capsys):
    system, reference, text = _folders(tmp_path)
    (tmp_path / "align.jsonl").write_text('{"id": "a", "nll_per_dim": 1.5}\n')
    out = tmp_path / "report"
    args = ["evaluate", "--system", str(system), "--reference", str(reference), "--text", str(text),
            "--out", str(out), "--jobs", "1", "--copy-synthesis", "--f0-method", "dio", "--quiet",
            "--nll", str(tmp_path / "align.jsonl"), "--mels", "b"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["id"]: r for r in report["rows"]}
    assert sorted(rows) == ["a", "b"]
    assert report["ids"]["missing_in_system"] == ["d"]
    assert report["ids"]["missing_in_reference"] == ["c"]
    a, b = rows["a"], rows["b"]
    assert a["mcd"] == 0.0 and a["mrstft"] == 0.0 and a["stoi"] == pytest.approx(1.0)
    assert a["pesq"] == pytest.approx(4.644, abs=1e-3) and a["duration_ratio"] == 1.0
    assert b["mcd"] > 0 and b["mrstft"] > 0 and b["pesq"] < a["pesq"]
    assert 0 <= a["wer"] and a["ref_words"] == 3 and a["reference_text"] == "one two three"
    assert a["rtf"] == pytest.approx(0.4 / 0.8, rel=1e-3) and a["nll_per_dim"] == 1.5
    overall = report["overall"]
    assert overall["utterances"] == 2 and overall["rtf"] == pytest.approx(0.6 / 1.6, rel=1e-3)
    assert overall["mcd"] == pytest.approx(b["mcd"] / 2)
    assert set(overall) >= {"wer", "cer", "mcd", "log_f0_rmse", "vde", "pesq", "stoi", "mrstft"}
    md = (out / "report.md").read_text()
    assert "| MCD |" in md and "no system clip (1): d" in md and "no reference clip (1): c" in md
    for name in ("metrics.png", "mel_b.png", "utterances.csv"):
        assert (out / name).stat().st_size > 0
    assert "2 utterances" in capsys.readouterr().out

    # A paired comparison with the report just written: identical values, nothing significant.
    again = tmp_path / "again"
    assert main(["evaluate", "--system", str(system), "--reference", str(reference), "--out",
                 str(again), "--jobs", "1", "--f0-method", "dio", "--quiet", "--no-plots",
                 "--compare", str(out)]) == 0
    comparison = json.loads((again / "report.json").read_text())["comparison"]
    tests = {t["metric"]: t for t in comparison["tests"]}
    assert comparison["paired_utterances"] == 2 and "wer" not in tests  # no --text this time
    assert tests["mcd"]["p_value"] == 1.0 and not tests["mcd"]["significant"]
    assert "Paired comparison" in (again / "report.md").read_text()

    # Two systems at once: the second one's report goes to OUT/compared.
    both = tmp_path / "both"
    assert main(["evaluate", "--system", str(system), "--system", str(reference), "--reference",
                 str(reference), "--out", str(both), "--jobs", "1", "--f0-method", "dio",
                 "--quiet", "--name", "sys", "--name", "rec"]) == 0
    comparison = json.loads((both / "report.json").read_text())["comparison"]
    assert comparison["other"] == "rec" and comparison["paired_utterances"] == 2
    assert (both / "compared" / "report.json").exists() and (both / "comparison.png").exists()


def test_evaluate_command_errors(tmp_path, capsys):
    system, reference, _ = _folders(tmp_path)
    assert main(["evaluate", "--system", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 1
    assert "not a folder" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    sf.write(other / "zzz.wav", voice(0.3, 16000), 16000)
    assert main(["evaluate", "--system", str(other), "--reference", str(reference),
                 "--out", str(tmp_path / "r")]) == 1
    assert "no clip" in capsys.readouterr().err
    assert main(["evaluate", "--system", str(system), "--system", str(system), "--compare",
                 str(tmp_path), "--out", str(tmp_path / "r")]) == 1
    assert "not both" in capsys.readouterr().err


def test_evaluate_a_model_speaks_the_text_and_times_each_stage(tiny_glow_tts_config, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "glow-tts", "--config", str(tiny_glow_tts_config), "--data", str(tiny_dataset),
                 "--out", str(run), "--max-steps", "1", "--no-progress"]) == 0
    checkpoint = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    text = tmp_path / "text.txt"
    text.write_text("x1|Hello world.\nx2|A second sentence, a little longer.\n")
    out = tmp_path / "report"
    assert main(["evaluate", "--acoustic", str(checkpoint), "--text", str(text), "--out", str(out),
                 "--no-asr", "--quiet", "--no-plots", "--jobs", "1"]) == 0
    assert sorted(p.name for p in (out / "wavs").glob("*.wav")) == ["x1.wav", "x2.wav"]
    report = json.loads((out / "report.json").read_text())
    overall = report["overall"]
    assert overall["utterances"] == 2
    assert overall["rtf"] > 0 and overall["rtf_acoustic"] > 0 and overall["rtf_vocoder"] > 0
    assert overall["rtf_acoustic"] + overall["rtf_vocoder"] <= overall["rtf"] * 1.01
    assert "RTF vocoder" in capsys.readouterr().out
    # A model needs sentences; with neither a model nor a folder there is nothing to score.
    assert main(["evaluate", "--acoustic", str(checkpoint), "--out", str(out)]) == 1
    assert "need --text" in capsys.readouterr().err
    assert main(["evaluate", "--out", str(out)]) == 1
    assert "give --system" in capsys.readouterr().err
