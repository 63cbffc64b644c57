"""An exponential moving average of a model's weights, kept beside the training weights.

Polyak averaging (Polyak & Juditsky 1992) in its exponential form, as TensorFlow's
``ExponentialMovingAverage`` keeps it: after every optimiser step,

    average <- d_t * average + (1 - d_t) * weights,   d_t = min(decay, (1 + t) / (10 + t))

where ``t`` counts the updates since the average started, so that its first updates are not
weighed down by the initial weights. The average leaves out the noise that each step's
gradients put into the weights; with a learning rate that is still high (Glow-TTS's Noam
warm-up runs 4,000 steps) that noise is large. Training itself never reads the average: a
run with it trains the same weights, bit for bit, as one without.

Only parameters are averaged. Buffers (an ActNorm's "initialised" flag, permutations, a
memory bank's switch) are not trained and are taken from the model as they are.

Checkpoints keep it under ``"weight_average"``: ``{"decay", "updates", "model"}``, where
``model`` is a whole state dict (averaged parameters, the model's buffers) that loads into
the same model; ``flowspeech export --weight-average`` writes it as an inference checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch


class WeightAverage:
    """Exponential moving average of ``model``'s parameters (see the module docstring).

    Args:
        model: the model being trained (not a DDP wrapper: its parameter names are the
            state dict's).
        decay: the average's decay per step, in [0, 1); its time constant is about
            ``1 / (1 - decay)`` steps (0.995: 200).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.averaged = {name: p.detach().clone() for name, p in model.named_parameters()
                         if p.is_floating_point()}

    def current_decay(self) -> float:
        """``d_t`` of the next update."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards ``model``'s parameters (call after each optimiser step)."""
        params = dict(model.named_parameters())
        current = [params[name].detach() for name in self.averaged]
        torch._foreach_lerp_(list(self.averaged.values()), current, 1.0 - self.current_decay())
        self.updates += 1

    def model_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """A state dict of ``model`` with the averaged parameters in place of its own."""
        return {name: self.averaged[name].clone() if name in self.averaged else value.detach().clone()
                for name, value in model.state_dict().items()}

    def state_dict(self, model: torch.nn.Module) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "model": self.model_state(model)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore an average saved by :meth:`state_dict` (its decay is this one's: a resumed
        run may change it)."""
        missing = [name for name in self.averaged if name not in state["model"]]
        if missing:
            raise KeyError(f"the saved weight average lacks {', '.join(missing[:5])}")
        for name, value in self.averaged.items():
            value.copy_(state["model"][name])
        self.updates = int(state["updates"])
