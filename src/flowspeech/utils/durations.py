"""How predicted log-durations become whole frames at synthesis (Glow-TTS, Sec. 3.3).

A duration predictor trained by mean squared error on log-durations (the Glow-TTS authors'
recipe) estimates the mean of ``log d``, and ``exp`` of it is a geometric mean: below the
arithmetic mean of the durations whenever they vary, so a voice that spoke exactly its
predictions would speak faster than its data. The authors' code then takes the ceiling of
every prediction, which adds about half a frame to every token: more than the first bias
takes away, so such voices speak slower than their data (``docs/default-voice.md`` measures
both on the shipped voice).

:class:`DurationRounding` names the rule. ``ceil`` with scale 1 is the authors' and stays the
default, so imported models speak as they did; ``round`` after a ``scale`` fitted on held-out
alignments (the ratio of aligned frames to predicted frames,
``benchmarks/duration_rounding.py --corpus``) removes both biases at their cause.

This module is torch-free: the PyTorch model and the ONNX runtime apply the same rule, each
with its own array library, through :meth:`DurationRounding.frames`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from flowspeech.errors import ConfigError

ROUNDING_RULES = ("ceil", "round")


def check_duration_scale(value: Any) -> float:
    """NaturalSpeech's duration calibration (``duration_scale`` in a checkpoint's or an ONNX
    voice's ``inference`` entry; its durations stay fractional, so it has no rounding rule):
    a number in [0.25, 4]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.25 <= value <= 4.0:
        raise ConfigError(f"duration_scale must be a number in [0.25, 4], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DurationRounding:
    """``frames = max(1, rule(exp(log_d) * scale * length_scale))`` for every real token.

    Attributes:
        rule: ``"ceil"`` (the Glow-TTS authors') or ``"round"`` (to the nearest frame).
        scale: calibration of the predictor: held-out aligned frames over predicted frames
            (1.0: none). ``length_scale`` stays the user's pace control on top of it.
    """

    rule: str = "ceil"
    scale: float = 1.0

    def __post_init__(self):
        if self.rule not in ROUNDING_RULES:
            raise ConfigError(f"duration rounding must be one of {', '.join(ROUNDING_RULES)}, "
                              f"got {self.rule!r}")
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale)
                and 0.25 <= self.scale <= 4.0):
            raise ConfigError(f"duration rounding scale must be a number in [0.25, 4], got {self.scale!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DurationRounding:
        """From a config or ``voice.json`` entry (``{"rule": ..., "scale": ...}``); None: the
        authors' rule."""
        if data is None:
            return cls()
        if not isinstance(data, dict) or set(data) - {"rule", "scale"}:
            raise ConfigError(f"duration_rounding must be a mapping with 'rule' and 'scale', got {data!r}")
        return cls(rule=str(data.get("rule", "ceil")), scale=float(data.get("scale", 1.0)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def frames(self, log_durations, text_mask, length_scale: float, xp):
        """Whole frames per token from ``log_durations`` (any shape), zero where ``text_mask``
        is 0. ``xp`` is the array module of the inputs (``numpy`` or ``torch``); the result
        has their type and dtype."""
        d = xp.exp(log_durations) * (self.scale * length_scale)
        if self.rule == "ceil":
            d = xp.ceil(d)
        else:  # every token keeps at least one frame, as every token has under MAS in training
            d = xp.maximum(xp.round(d), xp.ones_like(d))
        return d * text_mask
