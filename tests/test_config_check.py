"""A training config is checked whole before any work: every unknown key or bad value names
the key and the file or ``--set`` it came from."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowspeech.cli.main import main
from flowspeech.cli.train_cmd import parse_overrides
from flowspeech.config import load_config
from flowspeech.errors import ConfigError
from flowspeech.training.config_check import check_config
from flowspeech.training.recipe import TrainConfig


@pytest.mark.parametrize("preset", ["glow-tts-base", "glow-tts-small", "waveglow-base", "flowavenet-base",
                                    "naturalspeech-base", "naturalspeech-small"])
def test_every_preset_passes_the_check(preset):
    check_config(load_config(preset), preset)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(lerning_rate=1), "config.lerning_rate"),
    (lambda c: c["audio"].update(n_melz=80), "audio.n_melz"),
    (lambda c: c.setdefault("text", {}).update(symbolset="ipa"), "text.symbolset"),
    (lambda c: c["model_args"].update(hidden_chanels=8), "model_args.hidden_chanels"),
    (lambda c: c["train"].update(lerning_rate=1), "train.lerning_rate"),
    (lambda c: c["train"].update(batch_size="8"), "train.batch_size must be an integer"),
    (lambda c: c["train"].update(precision="fp8"), "train.precision must be one of"),
    (lambda c: c["train"].update(extra={"dequantize": True}),
     r"train.extra is gone: its keys now live directly under train: \(delete dequantize"),
])
def test_a_bad_key_in_a_file_names_the_key_and_the_file(edit, message, tmp_path):
    config = load_config("glow-tts-small")
    edit(config)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=rf"^config {str(path)}: .*{message}"):
        check_config(load_config(path), str(path))


def test_nested_model_arguments_are_checked_too(tmp_path):
    config = load_config("naturalspeech-small")
    config["model_args"]["decoder"] = {**config["model_args"].get("decoder", {}), "upsampel_rates": [8]}
    with pytest.raises(ConfigError, match="naturalspeech-small: model_args: .*upsampel_rates"):
        check_config(config, "naturalspeech-small")
    config = load_config("naturalspeech-small")
    config["discriminator_args"] = {"periodz": [2]}
    with pytest.raises(ConfigError, match="discriminator_args: .*periodz"):
        check_config(config, "naturalspeech-small")


@pytest.mark.parametrize("item, message", [
    ("train.batch_size=abc", r"^--set train.batch_size='abc': train.batch_size must be an integer"),
    ("train.lerning_rate=1e-4", r"^--set train.lerning_rate=0.0001: unknown key\(s\) train.lerning_rate"),
    ("model_args.n_blocks_dec=oops", r"^--set model_args.n_blocks_dec='oops'"),
    ("audio.hop_lenght=256", r"^--set audio.hop_lenght=256: unknown key\(s\) audio.hop_lenght"),
])
def test_a_bad_set_names_the_set(item, message):
    overrides = parse_overrides([item])
    with pytest.raises(ConfigError, match=message):
        check_config(load_config("glow-tts-small", overrides), "glow-tts-small", overrides)


@pytest.mark.parametrize("item", ["nokey", "=1", "a..b=1", "train.batch_size=[1", ".x=1", "a b=1"])
def test_a_malformed_set_is_one_config_error(item):
    with pytest.raises(ConfigError, match="--set"):
        parse_overrides([item])
    with pytest.raises(ConfigError, match="another --set"):
        parse_overrides(["train=1", "train.seed=2"])


def test_train_stops_before_any_work_on_a_bad_config(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "glow-tts", "--config", "glow-tts-small", "--data", str(tmp_path),
                 "--out", str(run), "--set", "train.lerning_rate=1"]) == 1
    assert "--set train.lerning_rate=1: unknown key(s) train.lerning_rate" in capsys.readouterr().err
    assert not run.exists()


def test_an_old_extra_section_says_where_each_key_went_including_renamed_ones(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"base": "naturalspeech-small", "train": {
        "extra": {"warmup_steps": 1000, "durations": "d.jsonl", "dequantize": True}}}))
    with pytest.raises(ConfigError) as err:
        check_config(load_config(path), str(path))
    # train.warmup_steps is the Noam warm-up: moving the key as it is would silently drop
    # the durator's warm-up, so the message must give its new name.
    assert str(err.value) == (
        f"config {path}: train.extra is gone: its keys now live directly under train: (move "
        "durations there; move warmup_steps as durator_warmup_steps; delete dequantize, which "
        "this model does not have)")


def _train_error(capsys, tmp_path, *args) -> str:
    assert main(["train", *args, "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 1
    assert not (tmp_path / "run").exists()
    return capsys.readouterr().err.strip()


def test_a_mistake_in_the_file_is_blamed_on_the_file_not_on_an_unrelated_set(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"base": "waveglow-small", "train": {"lerning_rate": 1.0e-3}}))
    # Both --set keys appear in the message's list of known keys.
    err = _train_error(capsys, tmp_path, "waveglow", "--config", str(path),
                       "--set", "train.learning_rate=0.5", "--set", "train.eval_every=4")
    assert err.startswith(f"flowspeech train: error: config {path}: unknown key(s) train.lerning_rate;")


def test_mistakes_in_both_the_file_and_a_set_name_both(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"base": "waveglow-small", "train": {"lerning_rate": 1.0e-3}}))
    err = _train_error(capsys, tmp_path, "waveglow", "--config", str(path),
                       "--set", "train.eval_every=4", "--set", "train.sigmaa=1")
    assert err.startswith(f"flowspeech train: error: config {path} and --set train.sigmaa=1: "
                          "unknown key(s) train.lerning_rate, train.sigmaa;")


def test_a_command_line_flag_is_named_as_the_flag_and_a_set_as_typed(tmp_path, capsys):
    err = _train_error(capsys, tmp_path, "glow-tts", "--config", "glow-tts-small", "--batch-size", "0")
    assert err == "flowspeech train: error: --batch-size 0: train.batch_size must be >= 1, got 0"
    err = _train_error(capsys, tmp_path, "glow-tts", "--config", "glow-tts-small",
                       "--set", "train.batch_size=abc")
    assert err == ("flowspeech train: error: --set train.batch_size=abc: train.batch_size must be "
                   "an integer, got 'abc'")


@pytest.mark.parametrize("model, preset, segment, message", [
    ("waveglow", "waveglow-small", 2044, "must be a multiple of n_group"),
    ("flowavenet", "flowavenet-small", 2000, "must be a multiple of the hop"),
])
def test_a_segment_length_the_model_cannot_take_stops_train_before_any_work(
        model, preset, segment, message, tmp_path, capsys):
    err = _train_error(capsys, tmp_path, model, "--config", preset,
                       "--set", f"train.segment_length={segment}")
    assert err.startswith(f"flowspeech train: error: --set train.segment_length={segment}: "
                          f"train.segment_length ({segment}) {message}")


_KEYS = st.sampled_from(["train.batch_size", "train.learning_rate", "train.precision", "train.betas",
                         "train.grad_clip_norm", "train.seed", "train.bogus", "audio.n_mels",
                         "audio.sample_rate", "audio.bogus", "model_args.n_blocks_dec",
                         "model_args.hidden_channels", "text.add_blank", "text.bogus", "bogus",
                         "train", "model_args"])
_VALUES = st.one_of(st.sampled_from(["1", "0", "-3", "1e-4", "abc", "[1, 2]", "null", "true", "{a: 1}",
                                     "fp16", "[", "'x", "1.5", ".nan", "- 1"]),
                    st.text(max_size=8))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=3))
def test_any_set_is_accepted_or_refused_with_one_config_error(pairs):
    items = [f"{k}={v}" for k, v in pairs]
    try:
        overrides = parse_overrides(items)
        config = load_config("glow-tts-small", overrides)
        check_config(config, "glow-tts-small", overrides)
    except ConfigError as err:
        assert "\n" not in str(err)
    else:
        TrainConfig.from_dict({k: v for k, v in config["train"].items()})
