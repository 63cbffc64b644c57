"""Check a whole training config before any work: every key known, every value well typed.

A typo (``lerning_rate``), a key of another model or a value of the wrong type is an error
that names the key and where it came from (the config file, or the ``--set`` that gave it),
instead of a setting silently ignored or a traceback an hour into training.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Sequence
from typing import Any

import torch

from flowspeech.audio import MelConfig
from flowspeech.config import mel_config
from flowspeech.errors import ConfigError
from flowspeech.models.registry import build_model, get_spec, resolve
from flowspeech.text import TextFrontend
from flowspeech.training.recipe import coerce

Overrides = dict[str, Any] | Sequence[tuple[str, dict[str, Any]]]  # what check_config blames

# Sections every training config may have; a recipe adds its own (Recipe.config_sections).
COMMON_SECTIONS = ("model", "name", "description", "base", "audio", "text", "model_args", "train")


def _leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of the values a nested dict sets (an empty dict counts as a value)."""
    out = []
    for key, value in tree.items():
        path = (*prefix, key)
        out += _leaves(value, path) if isinstance(value, dict) and value else [path]
    return out


def _without(config: dict[str, Any], paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """A copy of ``config`` with the values at ``paths`` removed (defaults apply instead)."""
    out = copy.deepcopy(config)
    for path in paths:
        node = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


def _parameters(fn) -> tuple[set[str], bool]:
    """Keyword names ``fn`` takes, and whether it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _unknown(section: str, given, known) -> None:
    extra = sorted(set(given) - set(known))
    if extra:
        raise ConfigError(f"unknown key(s) {', '.join(f'{section}.{k}' for k in extra)}; known in "
                          f"{section}: {', '.join(sorted(known))}")


def check_config(config: dict[str, Any], source: str, overrides: Overrides | None = None) -> None:
    """Refuse a training config with an unknown key or a bad value anywhere: the top-level
    sections, ``audio`` (MelConfig), ``text`` (TextFrontend), ``model_args`` (the model's
    constructor, nested arguments included: the model is built on the meta device) and
    ``train`` (the recipe's typed TrainConfig).

    Args:
        source: where the config came from (a preset name or a YAML path), for messages.
        overrides: what was merged into it on the command line, so that an error one of them
            causes names it rather than the file: ``(label, values)`` pairs such as
            ``("--set train.seed=1", {"train": {"seed": 1}})``, or one dict whose values
            are each labelled ``--set KEY=VALUE``.

    Raises:
        ConfigError: ``"<config SOURCE and/or --set KEY=VALUE>: <what is wrong>"``.
    """
    try:
        _check(config)
    except ConfigError as err:
        message = str(err)
    else:
        return
    # Blame by experiment, not by reading the message: an override is at fault when the
    # config without its values fails differently (or not at all); the file is at fault
    # when the config without any override still fails.
    layers = _layers(overrides)
    culprits = [label for label, values in layers
                if _failure(_without(config, _leaves(values))) != message]
    file_fails = not layers or _failure(
        _without(config, [p for _, values in layers for p in _leaves(values)])) is not None
    where = ([f"config {source}"] if file_fails or not culprits else []) + culprits
    raise ConfigError(f"{' and '.join(where)}: {message}") from None


def _layers(overrides: Overrides | None) -> list[tuple[str, dict[str, Any]]]:
    if not overrides:
        return []
    if isinstance(overrides, dict):  # one --set per value
        layers = []
        for path in _leaves(overrides):
            value = functools.reduce(lambda node, key: node[key], path, overrides)
            layers.append((f"--set {'.'.join(map(str, path))}={value!r}",
                           functools.reduce(lambda inner, key: {key: inner}, reversed(path), value)))
        return layers
    return [(label, values) for label, values in overrides]


def _failure(config: dict[str, Any]) -> str | None:
    try:
        _check(config)
    except ConfigError as err:
        return str(err)
    return None


def _check(config: dict[str, Any]) -> None:
    spec = get_spec(config.get("model"))
    if spec.recipe is None:
        raise ConfigError(f"model {spec.name!r} has no training recipe")
    recipe = resolve(spec.recipe)
    _unknown("config", config, set(COMMON_SECTIONS) | set(recipe.config_sections))
    for section in ("audio", "text", "model_args", "train", *recipe.config_sections):
        if section in config and not isinstance(config[section], dict):
            raise ConfigError(f"{section} must be a section of keys, got {config[section]!r}")
    audio = dict(config.get("audio") or {})
    _unknown("audio", audio, {f.name for f in dataclasses.fields(MelConfig)} | {"preset"})
    mel_config(config)
    text_args = config.get("text")
    if text_args is not None:
        names, _ = _parameters(TextFrontend.__init__)
        _unknown("text", text_args, names)
        TextFrontend(**text_args)
    model_class = spec.model_class()
    names, open_ended = _parameters(model_class.__init__)
    model_args = config.get("model_args") or {}
    if not open_ended and names:
        _unknown("model_args", model_args, names)
    hints = typing.get_type_hints(model_class.__init__)
    for key, value in model_args.items():  # plain typed arguments; sections go to the build
        if hints.get(key) in (int, float, bool, str) or typing.get_origin(hints.get(key)) is types.UnionType:
            try:
                coerce(value, hints[key], f"model_args.{key}")
            except TypeError:  # an annotation coerce does not know: left to the build
                pass
    try:
        with torch.device("meta"):
            model = build_model(config)  # nested arguments and their values, without allocating
    except ConfigError as err:
        raise ConfigError(f"model_args: {err}") from None
    except Exception as err:  # a value the layers cannot take (0 channels, a negative size, ...)
        first = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError(f"model_args: the model cannot be built from these arguments "
                          f"({type(err).__name__}: {first[:200]})") from None
    recipe.check_config_sections(config)
    recipe.check_model(model, recipe.train_config_class.from_dict(config.get("train")))
