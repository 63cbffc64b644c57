"""Training WaveGlow by maximum likelihood (Prenger, Valle and Catanzaro, 2019, Sec. 2-3).

What the authors' ``train.py`` and ``config.json`` (github NVIDIA/waveglow) do, and this
recipe with the shared loop does the same:

* random segments of ``segment_length`` = 16000 samples of each clip with their mel frames
  (:class:`~flowspeech.data.AudioMelDataset`; clips shorter than that are zero-padded);
* the loss is ``WaveGlowLoss(sigma = 1.0)``: the negative log-likelihood of eq. 1-4 without
  its constant, per audio sample (:meth:`WaveGlow.loss`);
* Adam at a constant 1e-4 (PyTorch's default betas and eps): no warm-up, no schedule, no
  gradient clipping (the paper lowers the rate to 5e-5 by hand once training plateaus:
  resume with ``--set train.learning_rate=5e-5``);
* batch 12 per GPU, fp16 mixed precision (their apex ``O1``; here the loop's autocast and
  gradient scaler on CUDA), a shuffled list of clips without length bucketing.

Logged, in nats per audio sample: ``loss`` (the authors' number, e.g. about -5.5 late in
their training) and ``nll`` (the complete negative log-likelihood, ``loss + 0.5 log(2 pi
sigma^2)``). Validation: ``nll`` on fixed segments of the validation clips, and a
copy-synthesis of the first validation clip's whole mel (``sigma = 0.6``, fixed seed), its
audio and spectrogram written to TensorBoard with its log-spectral distance to the clip
(``lsd_db``) next to Griffin-Lim's on the same mel (``lsd_griffin_lim_db``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from flowspeech.audio import log_spectral_distance, mel_spectrogram
from flowspeech.audio.griffin_lim import griffin_lim
from flowspeech.config import mel_config
from flowspeech.data import AudioMelDataset, collate_audio_mel
from flowspeech.errors import ConfigError
from flowspeech.models.waveglow import WaveGlow
from flowspeech.training.plots import spectrogram_figure
from flowspeech.training.recipe import Recipe, TrainConfig, require

# The copy-synthesis in validation: a fixed seed.
VAL_SEED = 0


@dataclass
class WaveGlowTrainConfig(TrainConfig):
    """``train:`` section (defaults: the authors' config.json). The segments all have the
    same length, so batches are drawn from the whole shuffled set (no length buckets), as
    the authors' loader does."""

    n_buckets: int = 1
    segment_length: int = 16000   # random audio segments of this many samples
    sigma: float = 1.0            # the latent's standard deviation in the training likelihood
    val_sigma: float = 0.6        # validation copy-synthesis (the paper's listening tests)

    def validate(self) -> None:
        super().validate()
        require(self.segment_length >= 1, f"train.segment_length must be >= 1 (samples), got {self.segment_length}")
        require(self.sigma > 0, f"train.sigma must be > 0, got {self.sigma}")
        require(self.val_sigma >= 0, f"train.val_sigma must be >= 0, got {self.val_sigma}")


class WaveGlowRecipe(Recipe):
    model_type = "waveglow"
    train_config_class = WaveGlowTrainConfig

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.mel_config = mel_config(config)
        self.segment_length, self.sigma = self.train.segment_length, self.train.sigma
        self._val_clips = None          # whole validation clips, for the copy-synthesis
        self._val_manifest = None
        self._cache_dir = None
        self._griffin_lim_lsd: float | None = None

    # --- what to train -------------------------------------------------------------------
    def build_model(self) -> WaveGlow:
        model = super().build_model()
        self.check_model(model, self.train)
        return model

    @classmethod
    def check_model(cls, model, train) -> None:
        s, hop = train.segment_length, model.hop_length
        if s % model.n_group:
            raise ConfigError(f"train.segment_length ({s}) must be a multiple of n_group "
                              f"({model.n_group}), the samples per flow position")
        # A segment of S samples comes with S // hop mel frames, whose upsampled length
        # (frames - 1) * hop + kernel must cover it.
        if s >= hop and (s // hop - 1) * hop + model.upsample_kernel_size < s:
            raise ConfigError(
                f"train.segment_length ({s}) is not covered by its {s // hop} mel frames "
                f"(upsampler kernel {model.upsample_kernel_size}, hop {hop}): use a multiple of "
                f"the hop")

    def build_datasets(self, data, val_data, cache_dir):
        train_manifest, val_manifest = self.manifests(data, val_data)
        seed, size = self.train.seed, self.segment_length
        train = AudioMelDataset(train_manifest, self.mel_config, size, cache_dir, seed)
        val = None
        if val_manifest is not None:
            # Epoch 0 forever: validation scores the same segments every time.
            val = AudioMelDataset(val_manifest, self.mel_config, size, cache_dir, seed + 1)
            self._val_manifest, self._cache_dir = val_manifest, cache_dir
        return train, val

    def collate(self, items):
        return collate_audio_mel(items)

    # --- how to train --------------------------------------------------------------------
    def nll_offset(self) -> float:
        """``nll - loss``: the likelihood's constant per sample, ``0.5 log(2 pi sigma^2)``."""
        return 0.5 * math.log(2 * math.pi * self.sigma ** 2)

    def training_step(self, ctx, batch):
        with ctx.autocast():
            out = ctx.model(batch["audio"], batch["mels"])
        loss = WaveGlow.loss(out, self.sigma)  # computed in float32 from the output
        ctx.optimize(loss, "main")
        loss = loss.detach()
        return {"loss": loss, "nll": loss + self.nll_offset()}

    def _first_val_clip(self):
        if self._val_clips is None:

            self._val_clips = AudioMelDataset(self._val_manifest, self.mel_config, None,
                                              self._cache_dir)
        return self._val_clips[0]

    # Hooks that FloWaveNet's recipe overrides.
    def validation_nll(self, model, batch) -> float:
        return float(WaveGlow.nll(model(batch["audio"], batch["mels"]), self.sigma).mean())

    def copy_synthesis(self, model, mel, generator):
        # Chunked: memory stays bounded whatever the clip's length (exact with the default overlap).
        return model.infer_chunked(mel, sigma=self.train.val_sigma, generator=generator).waveforms

    def synthesis_label(self) -> str:
        return f"sigma={self.train.val_sigma}"

    @torch.no_grad()
    def validate(self, model, batch):
        return {"nll": self.validation_nll(model, batch)}

    @torch.no_grad()
    def validate_samples(self, model, batch, step, writer):
        values = {}
        if self._val_manifest is None:
            return values

        clip = self._first_val_clip()
        device = batch["mels"].device
        mel = clip["mel"].to(device)
        generator = torch.Generator(device=device).manual_seed(VAL_SEED)
        audio = self.copy_synthesis(model, mel[None], generator)[0]
        audio = audio.float().clamp(-1, 1).cpu()
        reference = clip["audio"]
        values["lsd_db"] = log_spectral_distance(reference, audio)
        if self._griffin_lim_lsd is None:
            gl = griffin_lim(clip["mel"], self.mel_config)
            self._griffin_lim_lsd = log_spectral_distance(reference, gl)
        values["lsd_griffin_lim_db"] = self._griffin_lim_lsd
        if writer is not None:

            sr = self.mel_config.sample_rate
            writer.add_audio("val/copy_synthesis", audio[None], step, sr)
            resynth = mel_spectrogram(audio, self.mel_config).numpy()
            target = clip["mel"].numpy()
            writer.add_figure("val/mel", spectrogram_figure(
                target, resynth[:, :target.shape[1]],
                titles=[f"{clip['id']}", f"mel of the copy-synthesis ({self.synthesis_label()})"]), step)
            if step <= self.train.eval_every:
                writer.add_audio("val/original", reference[None], step, sr)
        return values
