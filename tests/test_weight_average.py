"""The moving average of the weights: its formula, that training never reads it, exact resume,
validation of the averaged weights, and `flowspeech export --weight-average`."""

from __future__ import annotations

import pytest
import torch
from conftest import latest_glow_tts_checkpoint, train_glow_tts

from flowspeech.checkpoints import load_checkpoint
from flowspeech.cli.main import main
from flowspeech.errors import ConfigError
from flowspeech.training.checkpoint import CheckpointManager
from flowspeech.training.weight_average import WeightAverage

train = train_glow_tts
latest = latest_glow_tts_checkpoint


def test_the_average_follows_its_formula_with_the_early_decay_ramp():
    model = torch.nn.BatchNorm1d(3)  # parameters and buffers
    average = WeightAverage(model, decay=0.9)
    expected = model.weight.detach().clone()
    for t in range(12):
        with torch.no_grad():
            model.weight.add_(torch.randn(3))
            model.running_mean.add_(1.0)
        d = min(0.9, (1 + t) / (10 + t))
        assert average.current_decay() == pytest.approx(d)
        average.update(model)
        expected = d * expected + (1 - d) * model.weight.detach()
    state = average.model_state(model)
    torch.testing.assert_close(state["weight"], expected, rtol=1e-6, atol=1e-6)
    # Buffers are not averaged: they are the model's own.
    assert torch.equal(state["running_mean"], model.running_mean)
    assert average.updates == 12
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        WeightAverage(model, decay=1.0)


def test_a_run_with_the_average_trains_the_same_weights_and_resumes_it_exactly(
        tiny_glow_tts_config, tiny_dataset, tmp_path, capsys):
    plain, straight, resumed = tmp_path / "plain", tmp_path / "straight", tmp_path / "resumed"
    on = ("--set", "train.weight_average_decay=0.5", "--set", "train.checkpoint_every=3",
          "--set", "train.eval_every=3")
    assert train(tiny_glow_tts_config, tiny_dataset, plain, "--max-steps", "6") == 0
    assert train(tiny_glow_tts_config, tiny_dataset, straight, "--max-steps", "6", *on) == 0
    assert train(tiny_glow_tts_config, tiny_dataset, resumed, "--max-steps", "3", *on) == 0
    assert train(tiny_glow_tts_config, tiny_dataset, resumed, "--max-steps", "6", "--resume", *on) == 0
    a, b, c = latest(plain), latest(straight), latest(resumed)
    assert "weight_average" not in a
    for key in a["model"]:  # the average never feeds back into training
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert b["weight_average"]["updates"] == c["weight_average"]["updates"] == 6
    averaged, weights = b["weight_average"]["model"], b["model"]
    assert averaged.keys() == weights.keys()
    for key in averaged:
        assert torch.equal(averaged[key], c["weight_average"]["model"][key]), key
    assert any(not torch.equal(averaged[k], weights[k]) for k in averaged)
    log = (straight / "train.log").read_text()
    assert "step 6 validation (weight average) nll=" in log


def test_switching_the_average_on_mid_run_starts_it_from_the_current_weights(
        tiny_glow_tts_config, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "2") == 0
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "4", "--resume",
                 "--set", "train.weight_average_decay=0.9") == 0
    assert "the weight average (decay 0.9) starts at step 2" in capsys.readouterr().out
    assert latest(run)["weight_average"]["updates"] == 2


def test_export_writes_the_average_and_says_when_a_checkpoint_has_none(
        tiny_glow_tts_config, tiny_dataset, tmp_path, capsys):
    from flowspeech.checkpoints import load_state_dict_checked
    from flowspeech.models.registry import build_model

    run, plain = tmp_path / "run", tmp_path / "plain"
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "4",
                 "--set", "train.weight_average_decay=0.5") == 0
    source = CheckpointManager(run).list()[-1][1]
    out = tmp_path / "average.pt"
    assert main(["export", str(source), "--weight-average", "--out", str(out)]) == 0
    assert "moving average of the weights" in capsys.readouterr().out
    exported = load_checkpoint(out, "glow-tts")
    saved = load_checkpoint(source)["weight_average"]
    for key, value in saved["model"].items():
        assert torch.equal(exported["model"][key], value), key
    assert exported["averaged_weights"] == {"decay": 0.5, "updates": 4}
    load_state_dict_checked(build_model(exported["config"]), exported["model"], str(out))  # loads

    assert train(tiny_glow_tts_config, tiny_dataset, plain, "--max-steps", "2") == 0
    code = main(["export", str(CheckpointManager(plain).list()[-1][1]), "--weight-average",
                 "--out", str(tmp_path / "none.pt")])
    assert code == 1
    assert "holds no moving average of its weights" in capsys.readouterr().err
    assert not (tmp_path / "none.pt").exists()


def test_a_decay_outside_zero_to_one_is_a_config_error():
    from flowspeech.training.recipe import TrainConfig

    with pytest.raises(ConfigError, match="train.weight_average_decay"):
        TrainConfig.from_dict({"weight_average_decay": 1.0})
    assert TrainConfig.from_dict({"weight_average_decay": 0.995}).weight_average_decay == 0.995
    assert TrainConfig.from_dict({}).weight_average_decay is None
