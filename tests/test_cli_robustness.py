"""Every mistake a user can make on the command line: exit status 1, exactly one line on
standard error that names the file or argument, and no file outside the output folder
touched. Each case runs ``flowspeech`` in its own process, as a user would."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from flowspeech.utils.files import FolderLock


def snapshot(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Path -> content hash of every file under ``root`` except under ``skip``."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not (skip is not None and skip in path.parents):
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def flowspeech(cwd: Path, *argv: str, fsize: int | None = None) -> subprocess.CompletedProcess:
    def limit():  # a "full disk": writes past fsize bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = dict(os.environ, FLOWSPEECH_VOICES=str(cwd / "voices"), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "flowspeech.cli.main", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=limit if fsize is not None else None)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Inputs a user has lying around: a wav, a mel, text files, a checkpoint."""
    root = tmp_path_factory.mktemp("user")
    rng = np.random.default_rng(0)
    sf.write(root / "in.wav", (0.1 * rng.standard_normal(22050)).astype(np.float32), 22050)
    np.save(root / "mel.npy", (rng.standard_normal((80, 20)) - 4).astype(np.float32))
    np.save(root / "empty-mel.npy", np.zeros((80, 0), np.float32))
    np.save(root / "samples.npy", (0.1 * rng.standard_normal(22050)).astype(np.float32))
    (root / "escape.txt").write_text("a|Hello.\n../../outside|Escape.\n")
    (root / "absolute.txt").write_text(f"{root}/abs|Absolute.\n")
    (root / "dupes.txt").write_text("x|One.\ny|Two.\nx|Three.\n")
    (root / "zero.pt").write_bytes(b"")
    (root / "out").mkdir()
    from flowspeech.voices import default_voice

    (root / "voice.pt").write_bytes(default_voice().acoustic.read_bytes())
    return root


SAY = ["synthesize", "--text", "Hi."]
CASES = {
    # name: (argv, what the one line must contain)
    "text-file ID climbing out of the folder": (
        ["synthesize", "--text-file", "escape.txt", "--out", "out/wavs"], r"escape.txt:2: the ID '../../outside'"),
    "text-file ID that is an absolute path": (
        ["synthesize", "--text-file", "absolute.txt", "--out", "out/wavs"], r"absolute.txt:1: the ID"),
    "text-file with a repeated ID": (
        ["synthesize", "--text-file", "dupes.txt", "--out", "out/wavs"], r"dupes.txt:3: the ID 'x' is already used on line 1"),
    "--save-mel onto --out": (SAY + ["--out", "out/a.npy", "--save-mel", "out/a.npy"], r"name the same file"),
    "--out that is not audio": (SAY + ["--out", "out/a.txt"], r"use a .wav or .npy"),
    "vocode onto its own input": (["vocode", "--vocoder", "griffin-lim", "--wav", "in.wav", "--out", "in.wav"],
                                  r"--out in.wav is also the input"),
    "griffin-lim onto its own input": (["griffin-lim", "mel.npy", "--out", "mel.npy"], r"is also the input"),
    "export onto its own input": (["export", "voice.pt", "--out", "voice.pt"], r"--out voice.pt is also the input"),
    "mel onto its own input": (["mel", "samples.npy", "samples.npy"], r"samples.npy is also the input"),
    "--length-scale 0": (SAY + ["--out", "out/a.wav", "--length-scale", "0"], r"length_scale must lie in"),
    "--length-scale -1": (SAY + ["--out", "out/a.wav", "--length-scale", "-1"], r"length_scale must lie in"),
    "--length-scale 1000": (SAY + ["--out", "out/a.wav", "--length-scale", "1000"], r"length_scale must lie in"),
    "--noise-scale nan": (SAY + ["--out", "out/a.wav", "--noise-scale", "nan"], r"noise_scale must lie in"),
    "--device cuda on a CPU build": (SAY + ["--out", "out/a.wav", "--device", "cuda"], r"--device cuda"),
    "--device that does not exist": (SAY + ["--out", "out/a.wav", "--device", "tpu9"], r"--device tpu9"),
    "an empty mel to vocode": (["vocode", "--vocoder", "griffin-lim", "--mel", "empty-mel.npy", "--out", "out/a.wav"],
                               r"empty-mel.npy has no frames"),
    "an empty checkpoint": (SAY + ["--acoustic", "zero.pt", "--out", "out/a.wav"], r"zero.pt is empty \(0 bytes\)"),
    "a missing checkpoint": (SAY + ["--acoustic", "nope.pt", "--out", "out/a.wav"], r"nope.pt does not exist"),
    "an output folder that cannot be made": (SAY + ["--out", "/proc/flowspeech/a.wav"], r"/proc/flowspeech/a.wav"),
    "empty text": (["synthesize", "--text", " ", "--out", "out/a.wav"], r"empty"),
    "--resume into an empty folder": (["train", "glow-tts", "--resume", "--data", "data", "--out", "out/run"],
                                      r"--resume: out/run holds no run to continue"),
    "a bad --set value": (["train", "glow-tts", "--config", "glow-tts-small", "--data", "data", "--out", "out/run",
                           "--set", "train.batch_size=abc"], r"--set train.batch_size=abc: .*must be an integer"),
    "a misspelt --set key": (["train", "glow-tts", "--config", "glow-tts-small", "--data", "data", "--out", "out/run",
                              "--set", "train.lerning_rate=1e-4"], r"unknown key\(s\) train.lerning_rate"),
}

@pytest.mark.parametrize("case", CASES)
def test_a_mistake_gets_one_line_and_touches_nothing(case, workspace):
    import re

    argv, message = CASES[case]
    if "cuda" in argv and _cuda_available():
        pytest.skip("this machine has CUDA")
    before = snapshot(workspace, skip=workspace / "out")
    done = flowspeech(workspace, *argv)
    lines = done.stderr.splitlines()
    assert done.returncode == 1, (case, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("flowspeech "), done.stderr[-2000:]
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in done.stderr and not done.stdout.strip()
    assert snapshot(workspace, skip=workspace / "out") == before
    assert not (workspace.parent / "outside.wav").exists()


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_debug_shows_the_traceback_of_the_same_mistake(workspace):
    done = flowspeech(workspace, *SAY, "--out", "out/a.wav", "--length-scale", "0", "--debug")
    assert done.returncode != 0 and "Traceback" in done.stderr and "length_scale must lie in" in done.stderr


def test_a_full_disk_is_named_not_a_traceback(workspace, tmp_path):
    """RLIMIT_FSIZE makes every write past 4 kB fail, as a full disk does (EFBIG/ENOSPC)."""
    for argv in ([*SAY, "--out", str(tmp_path / "a.wav")],
                 ["export", "voice.pt", "--out", str(tmp_path / "v.pt")]):
        done = flowspeech(workspace, *argv, fsize=4096)
        lines = done.stderr.splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr[-2000:]
        assert "cannot write" in lines[0] and str(tmp_path) in lines[0]
    assert not [p for p in tmp_path.iterdir()]  # no temp files left behind


def test_a_read_only_output_folder_is_named(workspace, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:  # root writes through permissions: use a read-only file system
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("running as root without permission to mount a read-only file system")
    else:
        folder.chmod(0o555)
    try:
        done = flowspeech(workspace, *SAY, "--out", str(folder / "a.wav"))
        lines = done.stderr.splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr[-2000:]
        assert str(folder) in lines[0] and "not writable" in lines[0]
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
        folder.chmod(0o755)


def test_a_second_voices_add_fails_naming_the_first(workspace):
    with FolderLock(workspace / "voices", "voices add first"):
        done = flowspeech(workspace, "voices", "add", "second", "--acoustic", "voice.pt")
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert f"in use by process {os.getpid()}" in lines[0] and "voices add first" in lines[0]
    assert not (workspace / "voices" / "second").exists()
    # The lock of a process that died is taken over.
    subprocess.run([sys.executable, "-c", "import sys; from flowspeech.utils.files import FolderLock; "
                    f"FolderLock({str(workspace / 'voices')!r}, 'killed').__enter__(); sys.exit(0)"], check=True)
    assert flowspeech(workspace, "voices", "add", "second", "--acoustic", "voice.pt").returncode == 0
    assert (workspace / "voices" / "second" / "acoustic.pt").is_file()


def test_a_second_train_into_one_folder_fails_naming_the_first(workspace, tmp_path):
    from conftest import make_ljspeech

    data = make_ljspeech(tmp_path / "data", n=2)
    run = tmp_path / "run"
    with FolderLock(run, "flowspeech train glow-tts"):
        done = flowspeech(workspace, "train", "glow-tts", "--config", "glow-tts-small", "--data", str(data),
                          "--out", str(run), "--max-steps", "1", "--no-progress")
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr[-2000:]
    assert f"{run} is in use by process {os.getpid()}" in lines[0] and "flowspeech train glow-tts" in lines[0]
    assert not (run / "checkpoints").exists()


def test_control_characters_are_removed_and_said(workspace):
    done = flowspeech(workspace, "synthesize", "--text", "\x1b[31mRed\x1b[0m alert, 中文.", "--out", "out/c.wav")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if ": warning: " in line]
    assert any("removed 2 control character(s)" in w and "\\x1b[31m" in w for w in warnings), warnings
    assert any("other scripts" in w and "'中' as 'Zhong'" in w for w in warnings), warnings
    text = flowspeech(workspace, "text", "\x1b[31mRed\x1b[0m")
    assert "thirty" not in text.stdout and "red" in text.stdout.lower()


def test_audio_that_was_converted_is_said(workspace, tmp_path):
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.zeros((44100, 2), np.float32), 44100)
    done = flowspeech(workspace, "mel", str(stereo), str(tmp_path / "m.npy"))
    assert done.returncode == 0, done.stderr
    assert "2 channels mixed down to mono and resampled from 44100 Hz to 22050 Hz" in done.stderr
