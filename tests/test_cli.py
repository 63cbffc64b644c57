"""The `flowspeech` command end to end on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from flowspeech.audio.griffin_lim import HARMONIC_ITER
from flowspeech.cli.main import main
from flowspeech.training.checkpoint import CheckpointManager


def test_help_imports_nothing_heavy():
    # `--help` stays instant because no command module imports torch & co. at import time.
    code = ("import sys; from flowspeech.cli.main import build_parser; build_parser().format_help(); "
            "print([m for m in ('torch', 'librosa', 'numba', 'numpy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    result = subprocess.run([sys.executable, "-m", "flowspeech.cli.main", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("synthesize", "text", "mel", "griffin-lim", "presets", "train", "import", "preprocess"):
        assert command in result.stdout


def test_text_command(capsys):
    assert main(["text", "Dr. Smith paid $5 on May 3rd."]) == 0
    out = capsys.readouterr().out
    assert "doctor smith paid five dollars" in out and "{D AA1 K T ER0}" in out and "ids (" in out
    assert main(["text", "Hello", "--json", "--phonemizer", "none"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["normalized"] == "hello" and len(data["ids"]) == 5


def test_text_command_reports_bad_input(capsys):
    assert main(["text", "   "]) == 1
    assert "empty" in capsys.readouterr().err


def test_presets_lists_exact_counts(capsys):
    assert main(["presets"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert rows["glow-tts-base"] == ["glow-tts", "28623889"]
    assert rows["glow-tts-base-blank"][0] == "glow-tts"


def test_mel_and_griffin_lim(tmp_path, tiny_dataset, capsys):
    wav = tiny_dataset / "wavs" / "LJ001-0001.wav"
    mel_path = tmp_path / "mel.npy"
    assert main(["mel", str(wav), str(mel_path)]) == 0
    mel = np.load(mel_path)
    n = sf.info(wav).frames
    assert mel.dtype == np.float32 and mel.shape == (80, n // 256 + 1)
    out_wav, out_npy = tmp_path / "gl.wav", tmp_path / "gl.npy"
    assert main(["griffin-lim", str(mel_path), str(out_wav), "--seed", "1", "--n-iter", "8"]) == 0
    assert main(["griffin-lim", str(mel_path), "--out", str(out_npy), "--seed", "1", "--n-iter", "8"]) == 0
    assert (f"8 iterations from the PGHI phase, then the harmonics restored ({HARMONIC_ITER} "
            "iterations), then 30 matching the mel") in capsys.readouterr().out
    assert main(["griffin-lim", str(mel_path), str(tmp_path / "plain.wav"), "--mel-iter", "0"]) == 0
    assert "then" not in capsys.readouterr().out
    assert main(["griffin-lim", str(mel_path), str(tmp_path / "comb.wav"), "--n-iter", "2",
                 "--mel-iter", "2", "--harmonic-iter", "2"]) == 0
    assert "then the harmonics restored (2 iterations), then 2 matching the mel" in (
        capsys.readouterr().out)
    audio, sr = sf.read(out_wav)
    samples = np.load(out_npy)
    assert sr == 22050 and samples.dtype == np.float32
    assert abs(len(samples) - 256 * (mel.shape[1] - 1)) <= 256
    assert np.max(np.abs(audio - samples)) < 1.5 / 32768  # same seed, same audio (16-bit rounding)


def test_audio_commands_report_bad_files(tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt garbage")
    assert main(["mel", str(broken), str(tmp_path / "m.npy")]) == 1
    assert "broken.wav" in capsys.readouterr().err
    np.save(tmp_path / "t.npy", np.zeros((40, 80), np.float32))
    assert main(["griffin-lim", str(tmp_path / "t.npy"), str(tmp_path / "x.wav")]) == 1
    assert "transposed" in capsys.readouterr().err
    assert main(["griffin-lim", str(tmp_path / "t.npy"), str(tmp_path / "x.mp3")]) == 1


@pytest.fixture
def tiny_checkpoint(tiny_glow_tts_config, tiny_dataset, tmp_path) -> Path:
    run = tmp_path / "run"
    assert main(["train", "glow-tts", "--config", str(tiny_glow_tts_config), "--data", str(tiny_dataset),
                 "--out", str(run), "--max-steps", "2", "--no-progress", "--device", "cpu"]) == 0
    return CheckpointManager(run).list()[-1][1]


def test_synthesize_end_to_end(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "hello.wav"
    args = ["synthesize", "--acoustic", str(tiny_checkpoint), "--text", "Hello world. How are you?",
            "--out", str(out), "--seed", "3", "--save-mel", str(tmp_path / "mel.npy")]
    assert main(args) == 0
    report = capsys.readouterr().out
    assert "2 sentence(s)" in report and "griffin-lim" in report
    audio, sr = sf.read(out)
    assert sr == 22050 and len(audio) > 0
    assert np.load(tmp_path / "mel.npy").shape[0] == 80
    again = tmp_path / "again.wav"
    assert main(args[:-4] + ["--out", str(again), "--seed", "3"]) == 0
    assert np.array_equal(sf.read(again)[0], audio)  # same seed, same waveform
    slow = tmp_path / "slow.npy"
    assert main(["synthesize", "--acoustic", str(tiny_checkpoint), "--text", "Hello world.",
                 "--out", str(slow), "--length-scale", "2", "--seed", "3"]) == 0
    assert np.load(slow).dtype == np.float32


def test_synthesize_text_file_to_folder(tiny_checkpoint, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("LJ050-0001|First line.\nLJ050-0002|Second line, a bit longer.\n\n")
    folder = tmp_path / "wavs"
    assert main(["synthesize", "--acoustic", str(tiny_checkpoint), "--text-file", str(lines),
                 "--out", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["LJ050-0001.wav", "LJ050-0002.wav"]


def test_synthesize_errors(tiny_checkpoint, tmp_path, capsys):
    assert main(["synthesize", "--acoustic", str(tiny_checkpoint), "--text", "...", "--out",
                 str(tmp_path / "x.wav")]) == 1
    assert "empty" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    assert main(["synthesize", "--acoustic", str(corrupt), "--text", "Hi.", "--out", str(tmp_path / "y.wav")]) == 1
    assert "corrupt" in capsys.readouterr().err
    assert main(["synthesize", "--acoustic", str(tiny_checkpoint), "--vocoder", str(tiny_checkpoint),
                 "--text", "Hi.", "--out", str(tmp_path / "z.wav")]) == 1
    assert "not a vocoder" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in ("x.wav", "y.wav", "z.wav"))


def test_python_api(tiny_checkpoint):
    from flowspeech import Synthesizer

    tts = Synthesizer(tiny_checkpoint)
    waveform, rate = tts.synthesize("A short test.", seed=1)
    assert rate == 22050 and waveform.dtype == np.float32 and waveform.ndim == 1
    long_text = " ".join(["This sentence repeats to make a long text."] * 12)
    result = tts.synthesize_full(long_text, seed=1)
    assert len(result.sentences) == 12 and len(result.mels) == 12


def test_align_writes_durations_that_cover_the_audio(tiny_checkpoint, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "align.jsonl"
    assert main(["align", "--acoustic", str(tiny_checkpoint), "--data", str(tiny_dataset),
                 "--split", "val", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert len(row["tokens"]) == len(row["durations"]) == len(row["start"])
        assert sum(row["durations"]) == row["frames"] and min(row["durations"]) >= 1
        assert row["end"][-1] == pytest.approx(row["frames"] * 256 / 22050, abs=1e-3)
        assert np.isfinite(row["nll_per_dim"])
    assert "nats per dimension" in capsys.readouterr().out


def test_durations_from_a_glow_tts_with_blanks(tiny_checkpoint, tiny_dataset, tmp_path):
    # `flowspeech align --merge-blanks` on a Glow-TTS that intersperses blanks gives a file a
    # NaturalSpeech config with the same symbols and no blanks trains from.
    from test_naturalspeech import tiny_config

    from flowspeech.config import load_config
    from flowspeech.training.recipes.naturalspeech import NaturalSpeechRecipe

    out = tmp_path / "align.jsonl"
    assert main(["align", "--acoustic", str(tiny_checkpoint), "--data", str(tiny_dataset),
                 "--split", "train", "--out", str(out), "--merge-blanks"]) == 0
    config = tiny_config()
    config["text"] = {**load_config("glow-tts-small")["text"], "add_blank": False}
    config["train"]["durations"] = str(out)
    recipe = NaturalSpeechRecipe(config)
    train, _ = recipe.build_datasets(str(tiny_dataset), None, None)
    items = [train[i] for i in range(len(train))]
    batch = recipe.collate(items)
    lengths = batch["token_lengths"]
    assert (batch["durations"].sum(1) == batch["spec_lengths"]).all()
    assert all((batch["durations"][i, :n] >= 1).all() for i, n in enumerate(lengths.tolist()))


def test_export_half_precision_loads_and_speaks(tiny_checkpoint, tmp_path):
    from flowspeech import Synthesizer
    from flowspeech.checkpoints import load_checkpoint

    out = tmp_path / "voice.pt"
    assert main(["export", str(tiny_checkpoint), "--out", str(out), "--half"]) == 0
    payload = load_checkpoint(out, "glow-tts")
    assert "optimizers" not in payload
    assert all(v.dtype in (torch.float16, torch.bool) for v in payload["model"].values())
    assert out.stat().st_size < tiny_checkpoint.stat().st_size / 2
    full = Synthesizer(tiny_checkpoint).synthesize("Hello.", seed=0, noise_scale=0.0)[0]
    half = Synthesizer(out).synthesize("Hello.", seed=0, noise_scale=0.0)[0]
    assert len(full) == len(half)


@pytest.fixture
def two_checkpoints(tiny_glow_tts_config, tiny_dataset, tmp_path) -> list[Path]:
    run = tmp_path / "run4"
    assert main(["train", "glow-tts", "--config", str(tiny_glow_tts_config), "--data", str(tiny_dataset),
                 "--out", str(run), "--max-steps", "4", "--no-progress", "--device", "cpu"]) == 0
    return [path for _, path in CheckpointManager(run).list()[-2:]]


def test_export_of_several_checkpoints_writes_the_mean_of_their_weights(two_checkpoints, tmp_path, capsys):
    from flowspeech import Synthesizer
    from flowspeech.checkpoints import load_checkpoint
    from flowspeech.inference.loading import load_model

    out = tmp_path / "mean.pt"
    assert main(["export", *map(str, two_checkpoints), "--out", str(out)]) == 0
    assert "the mean of 2 checkpoints, the last from step 4" in capsys.readouterr().out
    a, b = (load_checkpoint(p)["model"] for p in two_checkpoints)
    mean = load_checkpoint(out, "glow-tts")
    assert mean["step"] == 4 and "optimizers" not in mean
    assert [entry["step"] for entry in mean["averaged_from"]] == [2, 4]
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])]
    assert moved  # two steps apart, the weights differ
    for key, value in mean["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (a[key].double() + b[key].double()).div(2).float())
        else:
            assert torch.equal(value, b[key])
    # The averaged decoder is still a flow: it inverts to float tolerance, and the model speaks.
    model, _ = load_model(out, "glow-tts")
    y = torch.randn(1, 80, 12)
    mask = torch.ones(1, 1, 12)
    z, _ = model.decoder(y, mask)
    torch.testing.assert_close(model.decoder.inverse(z, mask), y, atol=1e-4, rtol=1e-4)
    audio = Synthesizer(out).synthesize("Hello.", seed=0)[0]
    assert len(audio) > 0 and np.isfinite(audio).all()


def test_averaging_refuses_checkpoints_of_different_models_or_states(two_checkpoints, tmp_path, capsys):
    from flowspeech.checkpoints import load_checkpoint, save_checkpoint

    older, newer = map(str, two_checkpoints)
    payload = load_checkpoint(older)
    payload["config"]["model_args"]["hidden_channels_dec"] = 48
    other_model = tmp_path / "other_model.pt"
    save_checkpoint(other_model, payload)
    payload = load_checkpoint(older)
    payload["model"]["decoder.flows.0.initialized"] = torch.tensor(False)
    other_state = tmp_path / "other_state.pt"
    save_checkpoint(other_state, payload)
    out = tmp_path / "mean.pt"
    for sources, message in [([older, older], "named twice"),
                             ([newer, str(other_model)], "different models (their configs' 'model_args'"),
                             ([newer, str(other_state)], "differ in decoder.flows.0.initialized, which is not trained")]:
        assert main(["export", *sources, "--out", str(out)]) == 1
        assert message in capsys.readouterr().err
        assert not out.exists()
    assert main(["export", "--onnx", older, newer, "--out", str(tmp_path / "onnx")]) == 1
    assert "--onnx exports one voice or checkpoint" in capsys.readouterr().err


def test_voices_command(capsys):
    assert main(["voices"]) == 0
    assert capsys.readouterr().out.strip()


def test_user_voice_add_list_speak_remove(tiny_checkpoint, tmp_path, capsys):
    import os

    assert main(["voices", "add", "my-voice", "--acoustic", str(tiny_checkpoint), "--half",
                 "--description", "a test voice", "--noise-scale", "0.333",
                 "--duration-rounding", "round", "--duration-scale", "1.1"]) == 0
    folder = Path(os.environ["FLOWSPEECH_VOICES"]) / "my-voice"
    assert {p.name for p in folder.iterdir()} == {"acoustic.pt", "voice.json"}
    capsys.readouterr()
    assert main(["voices"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "my-voice" in x)
    assert "user" in line and "a test voice" in line
    out = tmp_path / "v.wav"
    assert main(["synthesize", "--voice", "my-voice", "--text", "Hello.", "--out", str(out), "--seed", "0"]) == 0
    assert "voice 'my-voice'" in capsys.readouterr().out and out.stat().st_size > 44
    # The voice's own settings are the defaults; explicit arguments win.
    from flowspeech import Synthesizer

    assert Synthesizer(voice="my-voice").noise_scale == 0.333
    assert Synthesizer(voice="my-voice").model.duration_rounding.to_dict() == {"rule": "round", "scale": 1.1}
    assert Synthesizer(voice="my-voice", noise_scale=0.5).noise_scale == 0.5
    assert Synthesizer(tiny_checkpoint).noise_scale == 0.667
    # Names are unique, checked, and a vocoder slot takes only a vocoder.
    for argv, message in [(["my-voice"], "already exists"), (["../escape"], "voice name"),
                          (["other", "--vocoder", str(tiny_checkpoint)], "not a vocoder")]:
        assert main(["voices", "add", *argv, "--acoustic", str(tiny_checkpoint)]) != 0
        assert message in capsys.readouterr().err
    assert not (folder.parent / "other").exists() and not list(folder.parent.glob(".other*"))
    assert main(["voices", "show", "my-voice"]) == 0
    assert main(["voices", "remove", "my-voice"]) == 0
    assert not folder.exists()
    assert main(["synthesize", "--voice", "my-voice", "--text", "Hi.", "--out", str(out)]) != 0
    assert "no voice named 'my-voice'" in capsys.readouterr().err


def test_train_init_from_exported_weights(tiny_checkpoint, tiny_glow_tts_config, tiny_dataset, tmp_path, capsys):
    from flowspeech.checkpoints import load_checkpoint

    voice = tmp_path / "voice.pt"
    assert main(["export", str(tiny_checkpoint), "--out", str(voice), "--half"]) == 0
    run = tmp_path / "warm"
    assert main(["train", "glow-tts", "--config", str(tiny_glow_tts_config), "--data", str(tiny_dataset),
                 "--out", str(run), "--max-steps", "1", "--no-progress", "--init-from", str(voice),
                 "--set", "train.learning_rate=1.0e-12"]) == 0
    assert "initialised the weights from" in capsys.readouterr().out
    start = load_checkpoint(voice)["model"]
    after = load_checkpoint(sorted((run / "checkpoints").glob("step_*.pt"))[-1])["model"]
    assert after["encoder.emb.weight"].dtype == torch.float32
    for key, value in start.items():
        torch.testing.assert_close(after[key].float(), value.float(), atol=1e-3, rtol=0)


def test_train_threads_sets_torchs_threads_and_refuses_zero(tiny_glow_tts_config, tiny_dataset, tmp_path, capsys):
    argv = ["train", "glow-tts", "--config", str(tiny_glow_tts_config), "--data", str(tiny_dataset),
            "--max-steps", "1", "--no-progress", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "zero"), "--threads", "0"]) == 1
    assert "--threads 0: use 1 or more" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "two"), "--threads", "2"]) == 0
    assert torch.get_num_threads() == 2  # the autouse fixture puts it back to what it was


def test_train_init_partial_across_symbol_sets(tiny_checkpoint, tiny_glow_tts_config, tiny_dataset,
                                               tmp_path, capsys):
    # Without blanks the vocabulary is one symbol shorter: the token embedding cannot be
    # reused. Strict warm start says so; --init-partial takes everything else.
    from flowspeech.checkpoints import load_checkpoint

    argv = ["train", "glow-tts", "--config", str(tiny_glow_tts_config), "--data", str(tiny_dataset),
            "--max-steps", "1", "--no-progress", "--init-from", str(tiny_checkpoint),
            "--set", "text.add_blank=false", "--set", "train.learning_rate=1.0e-12"]
    assert main([*argv, "--out", str(tmp_path / "strict")]) != 0
    assert "shape mismatch: encoder.emb.weight" in capsys.readouterr().err
    run = tmp_path / "partial"
    assert main([*argv, "--out", str(run), "--init-partial"]) == 0
    printed = capsys.readouterr().out
    assert "--init-partial: kept fresh: encoder.emb.weight" in printed
    assert "ignored from the checkpoint: encoder.emb.weight" in printed
    start = load_checkpoint(tiny_checkpoint)["model"]
    after = load_checkpoint(sorted((run / "checkpoints").glob("step_*.pt"))[-1])["model"]
    assert after["encoder.emb.weight"].shape[0] == start["encoder.emb.weight"].shape[0] - 1
    for key, value in start.items():
        if key != "encoder.emb.weight":
            torch.testing.assert_close(after[key], value, atol=1e-3, rtol=0)
    assert main(["train", "glow-tts", "--data", str(tiny_dataset), "--out", str(tmp_path / "x"),
                 "--init-partial"]) != 0
    assert "--init-partial needs --init-from" in capsys.readouterr().err


def test_the_shipped_voice_speaks(tmp_path, capsys):
    # The README's first command: no model arguments, the voice inside the package.
    from flowspeech.voices import DEFAULT_VOICE, default_voice

    voice = default_voice()
    assert voice.name == DEFAULT_VOICE and voice.source == "shipped"
    assert {"description", "training_data", "licence", "quality"} <= set(voice.info)
    assert voice.acoustic.stat().st_size < 30e6
    out = tmp_path / "hello.wav"
    assert main(["synthesize", "--text", "Hello world.", "--out", str(out), "--seed", "0"]) == 0
    assert f"voice '{DEFAULT_VOICE}'" in capsys.readouterr().out
    audio, sr = sf.read(out)
    assert sr == 22050 and 0.3 < len(audio) / sr < 5 and np.abs(audio).max() > 0.01
