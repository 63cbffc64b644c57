"""Training FloWaveNet by maximum likelihood, in one stage (Kim et al., ICML 2019, Sec. 3-4).

What the authors' ``train.py`` (github ksw0306/FloWaveNet) does, and this recipe with the
shared loop does the same:

* random segments of the clips with their mel frames (the authors cut 16,000 samples; here
  ``segment_length`` = 15,872, the nearest multiple of the hop and of ``2**n_blocks``), from
  :class:`~flowspeech.data.AudioMelDataset`, the same data pipeline as WaveGlow;
* the loss is the exact negative log-likelihood ``-(log p(z) + log|det J|)`` per audio sample
  (:meth:`FloWaveNet.loss`), logged in nats per sample (``nll``) and bits per sample
  (``bits``);
* data-dependent ActNorm initialisation from the first batch;
* Adam at 1e-3 (PyTorch's default betas), halved every 200,000 steps (their ``StepLR``),
  gradient norm clipped at 1.

One difference: the authors scale every clip to a peak of 0.999 before computing its
features; flowspeech's datasets do not rescale audio (the stand-in corpus is already
level-normalised), so a model trained here expects the audio's own level.

Validation: ``nll`` on fixed segments of the validation clips and a copy-synthesis of the
first validation clip (latent standard deviation ``train.val_sigma``, 0.8 as the authors'
synthesis temperature, fixed seed), with its log-spectral distance to the clip next to
Griffin-Lim's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flowspeech.errors import ConfigError
from flowspeech.models.flowavenet import FloWaveNet
from flowspeech.training.recipe import require
from flowspeech.training.recipes.waveglow import WaveGlowRecipe, WaveGlowTrainConfig


@dataclass
class FloWaveNetTrainConfig(WaveGlowTrainConfig):
    """``train:`` section (defaults: the authors' train.py; fixed-length segments: no length
    buckets)."""

    segment_length: int = 15872   # their 16,000 samples cut to a multiple of the hop
    lr_decay_every: int = 200000  # StepLR(step_size=200000, gamma=0.5)
    lr_decay_factor: float = 0.5
    val_sigma: float = 0.8        # the authors' synthesis temperature

    def validate(self) -> None:
        super().validate()
        require(self.lr_decay_every >= 1, f"train.lr_decay_every must be >= 1, got {self.lr_decay_every}")
        require(0 < self.lr_decay_factor <= 1, f"train.lr_decay_factor must lie in (0, 1], got {self.lr_decay_factor}")


class FloWaveNetRecipe(WaveGlowRecipe):
    model_type = "flowavenet"
    train_config_class = FloWaveNetTrainConfig

    def build_model(self) -> FloWaveNet:
        model = super(WaveGlowRecipe, self).build_model()
        self.check_model(model, self.train)
        return model

    @classmethod
    def check_model(cls, model, train) -> None:
        s, hop, unit = train.segment_length, model.hop_length, 2 ** model.n_blocks
        if s % unit or s % hop:
            raise ConfigError(f"train.segment_length ({s}) must be a multiple of the hop "
                              f"({hop}) and of 2**n_blocks ({unit})")

    def build_schedulers(self, optimizers):
        every, factor = self.train.lr_decay_every, self.train.lr_decay_factor
        return {name: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: factor ** (step // every))
                for name, opt in optimizers.items()}

    @torch.no_grad()
    def initialize(self, model, batch):
        # Data-dependent ActNorm initialisation: the first training-mode forward sets them.
        model(batch["audio"], batch["mels"])

    def nll_offset(self) -> float:
        return 0.0

    def training_step(self, ctx, batch):
        with ctx.autocast():
            out = ctx.model(batch["audio"], batch["mels"])
        loss = FloWaveNet.loss(out)
        ctx.optimize(loss, "main")
        loss = loss.detach()
        return {"nll": loss, "bits": loss / math.log(2)}

    def validation_nll(self, model, batch) -> float:
        return float(FloWaveNet.loss(model(batch["audio"], batch["mels"])))

    def copy_synthesis(self, model, mel, generator):
        return model.infer_chunked(mel, sigma=self.train.val_sigma, generator=generator).waveforms

    def synthesis_label(self) -> str:
        return f"sigma={self.train.val_sigma}"
