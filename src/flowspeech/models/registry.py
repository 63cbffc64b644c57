"""The model registry: one table of model types that everything else consults.

A :class:`ModelSpec` says what a model type is (its role), which class builds it, which
training recipe trains it, which function imports the authors' checkpoints, and its
presets. Synthesis, vocoders, voices, export, ``train``, ``import`` and ``presets`` all
read this table; no other list of model types exists. Classes, recipes and importers are
named by ``"module:attribute"`` and imported only when used, so reading the table (e.g. for
``flowspeech --help``) imports no model code. A new model joins with :func:`register_model`,
or, from another package, through an entry point in the group ``flowspeech.models`` that names
its :class:`ModelSpec`; the command line then knows it too (``docs/architecture.md``, "Adding
a model").
"""

from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from flowspeech.errors import ConfigError

__all__ = ["ModelSpec", "Role", "build_model", "count_parameters", "get_spec", "inference_state", "load_plugins", "model_class",
           "model_specs", "parameter_names", "register_model", "resolve", "unregister_model"]


class Role(str, enum.Enum):
    """What a model maps; each role has one inference signature (:mod:`flowspeech.models.roles`)."""

    TEXT_TO_MEL = "text-to-mel"
    MEL_TO_WAVEFORM = "mel-to-waveform"
    TEXT_TO_WAVEFORM = "text-to-waveform"

    def __str__(self) -> str:
        return self.value

    @property
    def noun(self) -> str:
        """What a model of this role is called, for messages."""
        return {"text-to-mel": "an acoustic model (text to mel)",
                "mel-to-waveform": "a vocoder (mel to waveform)",
                "text-to-waveform": "an end-to-end model (text to waveform)"}[self.value]


def resolve(target: str | Any) -> Any:
    """``"package.module:attribute"`` imported, or ``target`` itself if it is not a string."""
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class ModelSpec:
    """One model type.

    Attributes:
        name: the type's name, the ``model:`` key of its configs (``"glow-tts"``).
        role: what it maps (:class:`~flowspeech.models.roles.Role`); None for a model that is
            trained but never synthesises (the phoneme encoder's pre-training LM).
        model: its class, or ``"module:Class"``; a :class:`~flowspeech.models.roles.SpeechModel`
            when it has a role, with ``from_config(config)`` in any case.
        recipe: its training recipe (a :class:`flowspeech.training.recipe.Recipe` subclass,
            or ``"module:Class"``), resolved by the training package; None: not trainable.
        importer: ``f(src, out, **options) -> config`` converting the authors' checkpoint, or
            ``"module:function"``; None: nothing to import.
        import_options: the importer's keyword options the ``import`` command accepts.
        description: one line for listings.
    """

    name: str
    role: Role | None
    model: str | type
    recipe: str | type | None = None
    importer: str | Callable | None = None
    import_options: tuple[str, ...] = ()
    description: str = ""

    def model_class(self) -> type:
        return resolve(self.model)

    def presets(self) -> list[str]:
        """The shipped presets of this type (``flowspeech/configs/*.yaml`` naming it)."""
        from flowspeech.config import list_presets, load_config  # lazy: read at CLI start-up

        return [name for name in list_presets() if load_config(name)["model"] == self.name]


_SPECS: dict[str, ModelSpec] = {}
ENTRY_POINT_GROUP = "flowspeech.models"
_plugins_loaded = False


def load_plugins() -> list[str]:
    """Register the :class:`ModelSpec` every installed package names in the entry-point group
    ``flowspeech.models`` (``name = "package.module:SPEC"``). Runs once, on the first look-up;
    returns the names it added."""
    import importlib.metadata  # lazy: 50 ms; at a look-up, never for --help

    global _plugins_loaded
    _plugins_loaded = True
    added = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = entry.load()
        except Exception as err:  # a broken plugin must not take the command line down
            raise ConfigError(f"the model plugin {entry.name!r} ({entry.value}) cannot be "
                              f"loaded: {type(err).__name__}: {err}") from err
        if not isinstance(spec, ModelSpec):
            raise ConfigError(f"the model plugin {entry.name!r} ({entry.value}) is a "
                              f"{type(spec).__name__}, not a flowspeech ModelSpec")
        if _SPECS.get(spec.name) is not spec:
            register_model(spec)
            added.append(spec.name)
    return added


def _specs() -> dict[str, ModelSpec]:
    if not _plugins_loaded:
        load_plugins()
    return _SPECS


def register_model(spec: ModelSpec, replace: bool = False) -> ModelSpec:
    """Add a model type to the registry (``replace=True`` to redefine one). Returns ``spec``."""
    if not replace and spec.name in _SPECS:
        raise ConfigError(f"model type {spec.name!r} is already registered")
    if spec.role is not None and not isinstance(spec.role, Role):
        raise ConfigError(f"model type {spec.name!r}: role must be a Role, got {spec.role!r}")
    _SPECS[spec.name] = spec
    return spec


def unregister_model(name: str) -> None:
    """Remove a model type (tests register temporary ones)."""
    _SPECS.pop(name, None)


def model_specs(role: Role | None = None, trainable: bool | None = None,
                plugins: bool = True) -> list[ModelSpec]:
    """Registered model types, optionally only those of ``role`` / with a recipe;
    ``plugins=False`` leaves out entry-point plugins not yet loaded (no package scan)."""
    return [s for s in (_specs() if plugins else _SPECS).values()
            if (role is None or s.role == role)
            and (trainable is None or (s.recipe is not None) == trainable)]


def get_spec(name: str) -> ModelSpec:
    try:
        return _specs()[name]
    except KeyError:
        known = ", ".join(sorted(_SPECS))
        raise ConfigError(f"unknown model type {name!r}; known types: {known}") from None


def model_class(model_type: str) -> type:
    """The class implementing ``model_type``."""
    return get_spec(model_type).model_class()


def build_model(config: dict[str, Any]):
    """Instantiate the model a config describes (random weights)."""
    return model_class(config["model"]).from_config(config)


def inference_state(model_type: str, state: dict[str, Any]) -> dict[str, Any]:
    """The weights synthesis uses from a checkpoint's ``model`` entry
    (:meth:`~flowspeech.models.roles.SpeechModel.inference_state_dict` of the type's class)."""
    return model_class(model_type).inference_state_dict(state)


def parameter_names(config: dict[str, Any]) -> set[str]:
    """Names of the trained parameters (not the buffers) of the model a config describes, as
    its inference state dict names them; built on the ``meta`` device, like
    :func:`count_parameters`."""
    import torch  # lazy: see count_parameters

    with torch.device("meta"):
        model = build_model(config)
    return {name for name, _ in model.named_parameters()}


def count_parameters(config: dict[str, Any]) -> int:
    """Exact number of parameters of the model a config describes.

    The model is built on the ``meta`` device, so no memory is allocated and no
    initialisation runs: counting even the largest presets takes milliseconds.
    """

    import torch  # lazy: the registry is read at CLI start-up, before torch is needed

    with torch.device("meta"):
        model = build_model(config)
    return sum(p.numel() for p in model.parameters())


for _spec in (
    ModelSpec("glow-tts", Role.TEXT_TO_MEL, "flowspeech.models.glow_tts:GlowTTS",
              recipe="flowspeech.training.recipes.glow_tts:GlowTTSRecipe",
              importer="flowspeech.models.glow_tts_import:import_glow_tts",
              import_options=("preset",),
              description="Glow-TTS (Kim et al., 2020): text to mel"),
    ModelSpec("waveglow", Role.MEL_TO_WAVEFORM, "flowspeech.models.waveglow:WaveGlow",
              recipe="flowspeech.training.recipes.waveglow:WaveGlowRecipe",
              importer="flowspeech.models.waveglow_import:import_waveglow",
              description="WaveGlow (Prenger et al., 2019): mel to waveform"),
    ModelSpec("flowavenet", Role.MEL_TO_WAVEFORM, "flowspeech.models.flowavenet:FloWaveNet",
              recipe="flowspeech.training.recipes.flowavenet:FloWaveNetRecipe",
              importer="flowspeech.models.flowavenet_import:import_flowavenet",
              description="FloWaveNet (Kim et al., 2019): mel to waveform"),
    ModelSpec("naturalspeech", Role.TEXT_TO_WAVEFORM, "flowspeech.models.naturalspeech:NaturalSpeech",
              recipe="flowspeech.training.recipes.naturalspeech:NaturalSpeechRecipe",
              description="NaturalSpeech (Tan et al., 2022): text to waveform"),
    ModelSpec("phoneme-lm", None, "flowspeech.models.phoneme_encoder:MixedPhonemeLM",
              recipe="flowspeech.training.recipes.phoneme_lm:PhonemeLMRecipe",
              description="NaturalSpeech's mixed-phoneme pre-training (Sec. 3.1)"),
):
    register_model(_spec)
