"""WaveGlow training: the recipe through `flowspeech train waveglow`, the authors' settings
in the presets, a loss that decreases, exact resume, config errors, and DDP."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from flowspeech.cli.main import main
from flowspeech.config import load_config
from flowspeech.errors import ConfigError
from flowspeech.training.checkpoint import CheckpointManager
from flowspeech.checkpoints import load_checkpoint
from flowspeech.training.recipes import recipe_for

# 2 flows (the second after an early output), 2 WaveNet layers of 16 channels; an upsampler
# kernel of one hop keeps the 80-band upsampler (and the checkpoints) small.
TINY_WAVEGLOW = {
    "base": "waveglow-small",
    "model_args": {"n_flows": 2, "n_early_every": 1, "n_layers": 2, "n_channels": 16,
                   "upsample_kernel_size": 256},
    "train": {"batch_size": 4, "num_workers": 0, "log_every": 1, "eval_every": 1000,
              "checkpoint_every": 2, "keep_checkpoints": 3, "segment_length": 2048},
}


@pytest.fixture
def tiny_waveglow_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-waveglow.yaml"
    path.write_text(yaml.safe_dump(TINY_WAVEGLOW))
    return path


def train(config: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["train", "waveglow", "--config", str(config), "--data", str(data), "--out", str(out),
                 "--no-progress", "--device", "cpu", *extra])


def latest_state(run: Path) -> dict:
    return load_checkpoint(CheckpointManager(run).list()[-1][1], "waveglow")


def test_presets_carry_the_authors_training_settings():
    # NVIDIA/waveglow config.json: Adam 1e-4 constant, sigma 1, 16000-sample segments,
    # batch 12, fp16; train.py: no scheduler, no clipping.
    recipe = recipe_for(load_config("waveglow-base"))
    t = recipe.train
    assert (recipe.segment_length, recipe.sigma) == (16000, 1.0)
    assert (t.learning_rate, t.batch_size, t.precision, t.scheduler) == (1e-4, 12, "fp16", "none")
    assert t.grad_clip_norm is None and t.grad_clip_value is None and t.n_buckets == 1
    assert recipe_for(load_config("waveglow-small")).segment_length == 8000


def test_train_end_to_end_then_vocode(tiny_waveglow_config, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(tiny_waveglow_config, tiny_dataset, run, "--max-steps", "4",
                 "--set", "train.eval_every=4") == 0
    assert [s for s, _ in CheckpointManager(run).list()] == [2, 4]
    payload = latest_state(run)
    assert payload["step"] == 4 and payload["config"]["train"]["segment_length"] == 2048
    log = (run / "train.log").read_text()
    # nats per sample: nll = loss + 0.5 log(2 pi) with sigma = 1, near 0.92 for quiet audio
    # while the couplings are still near the identity.
    loss, nll = map(float, re.search(r"step 4 epoch \d+ loss=(\S+) nll=(\S+)", log).groups())
    assert nll == pytest.approx(loss + 0.5 * math.log(2 * math.pi), abs=2e-4)
    assert 0.8 < nll < 1.0
    val = re.search(r"step 4 validation nll=(\S+) lsd_db=(\S+) lsd_griffin_lim_db=(\S+)", log)
    assert val is not None and all(math.isfinite(float(v)) for v in val.groups())
    events = list((run / "tensorboard").glob("events.*"))
    assert sum(p.stat().st_size for p in events) > 50_000  # two clips of audio and a figure
    # The checkpoint is a vocoder straight away.
    out = tmp_path / "copy.wav"
    wav = tiny_dataset / "wavs" / "LJ001-0002.wav"
    assert main(["vocode", "--vocoder", str(CheckpointManager(run).list()[-1][1]), "--wav", str(wav),
                 "--out", str(out), "--seed", "1"]) == 0
    assert "log-spectral distance" in capsys.readouterr().out and out.is_file()


def test_loss_decreases_on_a_fixed_batch(tiny_waveglow_config, tiny_dataset, plain_step_context):
    torch.manual_seed(0)
    recipe = recipe_for(load_config(tiny_waveglow_config, {"train": {"sigma": 0.5}}))
    train_set, _ = recipe.build_datasets(str(tiny_dataset), None, None)
    batch = recipe.collate([train_set[i] for i in range(4)])
    model = recipe.build_model()
    ctx = plain_step_context(model, recipe.build_optimizers(model)["main"])
    assert isinstance(ctx.optimizer, torch.optim.Adam) and ctx.optimizer.defaults["lr"] == 1e-4
    for group in ctx.optimizer.param_groups:
        group["lr"] = 1e-3  # ten times the authors' rate: a visible decrease in 30 steps
    history = [recipe.training_step(ctx, batch) for _ in range(30)]
    first, last = history[0], history[-1]
    for h in (first, last):
        assert float(h["nll"]) == pytest.approx(float(h["loss"]) + 0.5 * math.log(2 * math.pi * 0.25))
    assert float(last["loss"]) < float(first["loss"]) - 0.5, (float(first["loss"]), float(last["loss"]))
    # The logged NLL is the model's own per-utterance NLL, averaged.
    from flowspeech.models.waveglow import WaveGlow

    with torch.no_grad():
        nll = WaveGlow.nll(model(batch["audio"], batch["mels"]), 0.5).mean()
        loss = WaveGlow.loss(model(batch["audio"], batch["mels"]), 0.5)
    assert float(nll) == pytest.approx(float(loss) + recipe.nll_offset(), abs=1e-5)


def test_resume_is_exact(tiny_waveglow_config, tiny_dataset, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(tiny_waveglow_config, tiny_dataset, straight, "--max-steps", "6") == 0
    # Stop at step 3 (mid-epoch: 2 batches per epoch), then continue to 6.
    assert train(tiny_waveglow_config, tiny_dataset, resumed, "--max-steps", "3",
                 "--set", "train.checkpoint_every=3") == 0
    assert train(tiny_waveglow_config, tiny_dataset, resumed, "--max-steps", "6", "--resume",
                 "--set", "train.checkpoint_every=3") == 0
    a, b = latest_state(straight), latest_state(resumed)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    opt_a, opt_b = a["optimizers"]["main"]["state"], b["optimizers"]["main"]["state"]
    for k in opt_a:
        assert torch.equal(opt_a[k]["exp_avg"], opt_b[k]["exp_avg"])
        assert torch.equal(opt_a[k]["exp_avg_sq"], opt_b[k]["exp_avg_sq"])


@pytest.mark.parametrize("override, message", [
    ({"train": {"segment_lenght": 2048}}, "segment_lenght"),
    ({"train": {"sigma": 0}}, "train.sigma must be > 0"),
    ({"train": {"segment_length": 2044}}, "multiple of n_group"),
    ({"train": {"segment_length": 2000}}, "not covered by its 7 mel frames"),
])
def test_config_errors_are_clear(tiny_waveglow_config, override, message):
    with pytest.raises(ConfigError, match=message):
        recipe_for(load_config(tiny_waveglow_config, override)).build_model()


@pytest.mark.slow
def test_ddp_two_cpu_processes(tiny_waveglow_config, tiny_dataset, tmp_path):
    """torchrun with the gloo backend: two ranks train in lockstep and rank 0 checkpoints."""
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "flowspeech.cli.main", "train", "waveglow", "--config", str(tiny_waveglow_config),
           "--data", str(tiny_dataset), "--out", str(run), "--max-steps", "2", "--no-progress",
           "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload = latest_state(run)
    assert payload["step"] == 2 and payload["trainer"]["world_size"] == 2
