"""Presets and configuration files.

A preset is a YAML file in ``flowspeech/configs/`` (also reachable as ``./configs`` in a
checkout). Every preset has the same four sections::

    model: glow-tts            # model type, a key of flowspeech.models.registry.MODELS
    description: one line      # shown by `flowspeech presets`
    audio: {...}               # flowspeech.audio.MelConfig fields, or {preset: glow-tts}
    text: {...}                # flowspeech.text.TextFrontend options (text-input models only)
    model_args: {...}          # keyword arguments of the model class
    train: {...}               # optimiser, schedule, batching; read by the model's recipe

``load_config`` accepts a preset name or a path to a YAML file; a file may name a preset in
``base:`` and override any part of it (nested dicts are merged).
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from flowspeech.errors import ConfigError

_REQUIRED_SECTIONS = ("model", "model_args")


def _presets_dir() -> Path:
    return Path(str(resources.files("flowspeech") / "configs"))


def list_presets() -> list[str]:
    """Names of every preset shipped with the package, sorted."""
    return sorted(p.stem for p in _presets_dir().glob("*.yaml"))


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader, reading ``1e-4`` as a number (YAML 1.1 wants ``1.0e-4``, so
    PyYAML reads the common form as a string, and a learning rate would become text)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that reads ``1e-4`` as a float (see :class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping, got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (dicts merge, values replace)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a preset by name, or a YAML file by path, resolving ``base:`` chains.

    Raises:
        ConfigError: unknown preset, unreadable file, or a config missing required sections.
    """
    path = Path(name_or_path)
    seen: list[str] = []
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        config = _read_yaml(path)
        config.setdefault("name", path.stem)
    else:
        config = _load_preset(str(name_or_path), seen)
    while "base" in config:
        base_name = config.pop("base")
        base = _load_preset(str(base_name), seen)
        name = config.get("name")
        config = merge(base, config)
        if name:
            config["name"] = name
    if overrides:
        config = merge(config, overrides)
    missing = [s for s in _REQUIRED_SECTIONS if s not in config]
    if missing:
        raise ConfigError(f"config {name_or_path} lacks section(s): {', '.join(missing)}")
    return config


def _load_preset(name: str, seen: list[str]) -> dict[str, Any]:
    if name in seen:
        raise ConfigError(f"preset inheritance loops: {' -> '.join(seen + [name])}")
    seen.append(name)
    path = _presets_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_presets()) or "(none)"
        raise ConfigError(f"unknown preset {name!r}; known presets: {known}")
    config = _read_yaml(path)
    config.setdefault("name", name)
    return config


def mel_config(config: dict[str, Any]):
    """The :class:`flowspeech.audio.MelConfig` of a config's ``audio`` section: a named
    ``preset`` (default ``glow-tts``) with any field overridden."""

    from flowspeech.audio import MelConfig  # lazy: the package imports torch; --help must not

    section = dict(config.get("audio") or {})
    preset = section.pop("preset", "glow-tts")
    fields = MelConfig.preset(preset).to_dict()
    fields.update(section)
    return MelConfig.from_dict(fields)
