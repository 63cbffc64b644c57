"""Shared fixtures: tiny datasets written into a temporary folder by the test itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from flowspeech.flows.actnorm import ActNorm
from flowspeech.models.glow_tts import FlowDecoder

SENTENCES = [
    "The cat sat on the mat.",
    "A quick brown fox jumps.",
    "Hello world, this is a test.",
    "Flows are invertible.",
    "Speech synthesis is fun.",
    "One two three four five.",
    "Monotonic alignment search.",
    "The rain in Spain stays mainly.",
]


def _voice_like(rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
    """A few harmonic 'syllables' with changing pitch and gaps: cheap speech-like audio."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    n_syl = max(2, int(seconds * 4))
    edges = np.linspace(0, n, n_syl + 1).astype(int)
    for a, b in zip(edges[:-1], edges[1:]):
        f0 = rng.uniform(100, 250)
        seg = t[a:b]
        env = np.hanning(b - a)
        tone = sum(np.sin(2 * np.pi * f0 * k * seg) / k for k in range(1, 6))
        out[a:b] = env * tone
    out += 0.003 * rng.standard_normal(n)
    return (0.3 * out / np.max(np.abs(out))).astype(np.float32)


def train_glow_tts(config: Path, data: Path, out: Path, *extra: str) -> int:
    """``flowspeech train glow-tts`` on the CPU without a progress bar; its exit code."""
    from flowspeech.cli.main import main

    return main(["train", "glow-tts", "--config", str(config), "--data", str(data), "--out", str(out),
                 "--no-progress", "--device", "cpu", *extra])


def latest_glow_tts_checkpoint(run: Path) -> dict:
    """The newest checkpoint of a Glow-TTS run folder."""
    from flowspeech.checkpoints import load_checkpoint
    from flowspeech.training.checkpoint import CheckpointManager

    return load_checkpoint(CheckpointManager(run).list()[-1][1], "glow-tts")


def make_ljspeech(root: Path, n: int = 8, sample_rate: int = 22050, seed: int = 0,
                  with_filelists: bool = True) -> Path:
    """An LJSpeech-layout folder: ``metadata.csv``, ``wavs/``, and glow-tts filelists
    (all rows in train, the first two also in val)."""
    rng = np.random.default_rng(seed)
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        uid = f"LJ001-{i + 1:04d}"
        text = SENTENCES[i % len(SENTENCES)]
        seconds = 0.4 + 0.06 * len(text.split()) + rng.uniform(0, 0.2)
        sf.write(root / "wavs" / f"{uid}.wav", _voice_like(rng, seconds, sample_rate), sample_rate,
                 subtype="PCM_16")
        rows.append((uid, text))
    (root / "metadata.csv").write_text("".join(f"{u}|{t}|{t}\n" for u, t in rows))
    if with_filelists:
        (root / "filelists").mkdir(exist_ok=True)
        (root / "filelists" / "ljs_audio_text_train_filelist.txt").write_text(
            "".join(f"DUMMY/{u}.wav|{t}\n" for u, t in rows))
        (root / "filelists" / "ljs_audio_text_val_filelist.txt").write_text(
            "".join(f"DUMMY/{u}.wav|{t}\n" for u, t in rows[:2]))
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_ljspeech(tmp_path / "data")


TINY_GLOW_TTS = {
    "base": "glow-tts-small",
    "model_args": {
        "hidden_channels": 32, "filter_channels": 64, "filter_channels_dp": 32, "n_heads": 2,
        "n_layers_enc": 1, "n_blocks_dec": 2, "n_block_layers": 2, "hidden_channels_dec": 32,
        "p_dropout": 0.0, "p_dropout_dec": 0.0,
    },
    "train": {"batch_size": 4, "num_workers": 0, "log_every": 1, "eval_every": 1000,
              "checkpoint_every": 2, "keep_checkpoints": 3, "warmup_steps": 10, "n_buckets": 1},
}


@pytest.fixture
def tiny_glow_tts_config(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "tiny-glow-tts.yaml"
    path.write_text(yaml.safe_dump(TINY_GLOW_TTS))
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    # Tests run on small CPUs next to other work; one intra-op thread is faster and
    # deterministic.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _private_user_voices(tmp_path_factory, monkeypatch):
    # Never read or write the real ~/.local/share/flowspeech/voices from a test.
    monkeypatch.setenv("FLOWSPEECH_VOICES", str(tmp_path_factory.mktemp("user_voices")))
    # Nor the user's cache (one per test session: recomputable files only).
    monkeypatch.setenv("FLOWSPEECH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


class PlainStepContext:
    """The part of the trainer's StepContext a recipe's ``training_step`` uses: lets a test
    run a recipe's steps without the training loop. ``optimizer`` is one optimiser (used for
    every name) or a dict of them by name (GANs)."""

    def __init__(self, model, optimizer, step: int = 0):
        self.model = self.raw_model = model
        self.optimizer = optimizer
        self.step = step
        self.device = torch.device("cpu")

    def autocast(self):
        return torch.autocast("cpu", enabled=False)

    def optimize(self, loss, name="main"):
        opt = self.optimizer[name] if isinstance(self.optimizer, dict) else self.optimizer
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return True


@pytest.fixture
def plain_step_context():
    return PlainStepContext


@pytest.fixture
def trained_looking_flow_decoder():
    """A factory of small Glow-TTS ``FlowDecoder``s (6 mel channels, 3 blocks of 3 WaveNet
    layers, 16 hidden) whose weights look trained: every parameter moved off its
    initialisation, so that no coupling is the identity (their end convolutions start at
    zero), and the ActNorms marked initialised. Keyword arguments go to ``FlowDecoder``."""
    def make(**kwargs):
        torch.manual_seed(0)
        settings = {"in_channels": 6, "hidden_channels": 16, "kernel_size": 5, "dilation_rate": 1,
                    "n_blocks": 3, "n_layers": 3}
        decoder = FlowDecoder(**{**settings, **kwargs}).eval()
        with torch.no_grad():
            for p in decoder.parameters():
                p.add_(0.1 * torch.randn_like(p))
        for layer in decoder.flows:
            if isinstance(layer, ActNorm):
                layer.mark_initialized()
        return decoder

    return make
