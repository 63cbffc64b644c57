"""FloWaveNet training: `flowspeech train flowavenet` end to end, the authors' settings in the
presets, their step decay, a loss that decreases, and clear config errors. (Resume, DDP and
the NaN guard are the shared loop's, tested with Glow-TTS and WaveGlow.)"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from flowspeech.cli.main import main
from flowspeech.config import load_config
from flowspeech.errors import ConfigError
from flowspeech.models.flowavenet import FloWaveNet
from flowspeech.training.checkpoint import CheckpointManager
from flowspeech.checkpoints import load_checkpoint
from flowspeech.training.recipes import recipe_for

# 2 context blocks of 2 flows, 2 WaveNet layers of 16 channels, a split after block 1.
TINY_FLOWAVENET = {
    "base": "flowavenet-small",
    "model_args": {"n_blocks": 2, "n_flows": 2, "n_layers": 2, "channels": 16, "block_per_split": 1},
    "train": {"batch_size": 4, "num_workers": 0, "log_every": 1, "eval_every": 1000,
              "checkpoint_every": 2, "keep_checkpoints": 3, "segment_length": 2048},
}


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-flowavenet.yaml"
    path.write_text(yaml.safe_dump(TINY_FLOWAVENET))
    return path


def test_presets_carry_the_authors_training_settings():
    # ksw0306/FloWaveNet train.py: Adam 1e-3, StepLR(200000, 0.5), clip_grad_norm_ 1.
    recipe = recipe_for(load_config("flowavenet-base"))
    t = recipe.train
    assert (t.learning_rate, t.grad_clip_norm, t.n_buckets, t.batch_size) == (1e-3, 1.0, 1, 8)
    assert (recipe.train.segment_length, recipe.train.lr_decay_every, recipe.train.lr_decay_factor) == (15872, 200000, 0.5)
    assert recipe.train.val_sigma == 0.8
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = recipe.build_schedulers({"main": opt})["main"]
    factor = schedule.lr_lambdas[0]
    assert (factor(0), factor(199_999), factor(200_000), factor(400_000)) == (1.0, 1.0, 0.5, 0.25)


def test_train_end_to_end_then_vocode(tiny_config, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "flowavenet", "--config", str(tiny_config), "--data", str(tiny_dataset),
                 "--out", str(run), "--no-progress", "--device", "cpu", "--max-steps", "4",
                 "--set", "train.eval_every=4"]) == 0
    assert [s for s, _ in CheckpointManager(run).list()] == [2, 4]
    payload = load_checkpoint(CheckpointManager(run).list()[-1][1], "flowavenet")
    assert payload["step"] == 4
    log = (run / "train.log").read_text()
    nll, bits = map(float, re.search(r"step 4 epoch \d+ nll=(\S+) bits=(\S+)", log).groups())
    assert bits == pytest.approx(nll / math.log(2), rel=1e-3) and math.isfinite(nll)
    val = re.search(r"step 4 validation nll=(\S+) lsd_db=(\S+) lsd_griffin_lim_db=(\S+)", log)
    assert val is not None and all(math.isfinite(float(v)) for v in val.groups())
    out = tmp_path / "copy.wav"
    wav = tiny_dataset / "wavs" / "LJ001-0002.wav"
    assert main(["vocode", "--vocoder", str(CheckpointManager(run).list()[-1][1]), "--wav", str(wav),
                 "--out", str(out), "--seed", "1"]) == 0
    assert out.is_file() and "log-spectral distance" in capsys.readouterr().out


def test_loss_decreases_on_a_fixed_batch(tiny_config, tiny_dataset, plain_step_context):
    torch.manual_seed(0)
    recipe = recipe_for(load_config(tiny_config))
    train_set, _ = recipe.build_datasets(str(tiny_dataset), None, None)
    batch = recipe.collate([train_set[i] for i in range(4)])
    model = recipe.build_model()
    model.train()
    recipe.initialize(model, batch)
    ctx = plain_step_context(model, recipe.build_optimizers(model)["main"])
    assert ctx.optimizer.defaults["lr"] == 1e-3
    history = [float(recipe.training_step(ctx, batch)["nll"]) for _ in range(25)]
    assert history[-1] < history[0] - 0.05 and history[-1] < min(history[:5]), history
    with torch.no_grad():
        assert recipe.validation_nll(model, batch) == pytest.approx(
            float(FloWaveNet.loss(model(batch["audio"], batch["mels"]))), abs=1e-6)


@pytest.mark.parametrize("override, message", [
    ({"train": {"segment_lenght": 2048}}, "segment_lenght"),
    ({"train": {"segment_length": 2000}}, "multiple of the hop"),
    ({"train": {"lr_decay_factor": 2}}, "lr_decay_factor"),
])
def test_config_errors_are_clear(tiny_config, override, message):
    with pytest.raises(ConfigError, match=message):
        recipe_for(load_config(tiny_config, override)).build_model()
