"""Training Glow-TTS: maximum likelihood under the MAS alignment plus the duration loss,
Adam(0.9, 0.98, eps 1e-9) with the Noam schedule and gradient value clipping at 5, as the
authors (Kim et al., 2020, Sec. 4; their train.py and configs/base.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from flowspeech.audio import griffin_lim
from flowspeech.config import mel_config
from flowspeech.data import SpeakerTable, TextMelDataset, collate_text_mel
from flowspeech.errors import ConfigError
from flowspeech.models.glow_tts import GlowTTS
from flowspeech.text import TextFrontend
from flowspeech.training.plots import alignment_figure, spectrogram_figure
from flowspeech.training.recipe import Recipe, TrainConfig


@dataclass
class GlowTTSTrainConfig(TrainConfig):
    #: ``text-encoder``: the flow decoder is frozen (no gradient, no optimiser state) and only
    #: the text encoder and duration predictor learn. For teaching a trained voice something
    #: on the text side (e.g. ``absolute_positions``, warm-started with ``--init-partial``)
    #: without moving the spectral model; each step also costs about half as much, since
    #: nothing flows back through the decoder.
    trainable: Literal["all", "text-encoder"] = "all"


class GlowTTSRecipe(Recipe):
    model_type = "glow-tts"
    train_config_class = GlowTTSTrainConfig

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)

        self.frontend = TextFrontend(**config.get("text", {}))
        self.mel_config = mel_config(config)
        self.speakers = None

    def build_datasets(self, data, val_data, cache_dir):
        train_manifest, val_manifest = self.manifests(data, val_data)
        labels = [u.speaker for u in train_manifest.utterances]
        n_speakers = self.config["model_args"].get("n_speakers", 0)
        if any(label is not None for label in labels):
            self.speakers = SpeakerTable.from_labels(labels)
            if len(self.speakers) > 1 and n_speakers < len(self.speakers):
                raise ConfigError(
                    f"the data has {len(self.speakers)} speakers but the config's model_args."
                    f"n_speakers is {n_speakers}: set n_speakers >= {len(self.speakers)} and "
                    f"gin_channels (e.g. 256)")
        train = TextMelDataset(train_manifest, self.frontend, self.mel_config, cache_dir, self.speakers)
        val = (TextMelDataset(val_manifest, self.frontend, self.mel_config, cache_dir, self.speakers)
               if val_manifest is not None else None)
        return train, val

    def collate(self, items):
        return collate_text_mel(items)

    def build_model(self):
        model = super().build_model()
        if self.train.trainable == "text-encoder":
            model.decoder.requires_grad_(False)
        return model

    def build_optimizers(self, model):
        t = self.train
        params = [p for p in model.parameters() if p.requires_grad]
        return {"main": torch.optim.Adam(params, lr=t.learning_rate, betas=t.betas, eps=t.eps)}

    @staticmethod
    def _inputs(batch):
        return batch["tokens"], batch["token_lengths"], batch["mels"], batch["mel_lengths"], batch.get("speakers")

    @torch.no_grad()
    def initialize(self, model, batch):
        # Data-dependent ActNorm initialisation (the authors' "ddi"): one forward pass in
        # training mode sets every ActNorm from this batch's statistics.
        model(*self._inputs(batch))

    def training_step(self, ctx, batch):
        with ctx.autocast():
            out = ctx.model(*self._inputs(batch))
        nll = GlowTTS.nll_per_dim(out)
        duration = GlowTTS.duration_loss(out, batch["token_lengths"])
        loss = nll + duration
        ctx.optimize(loss, "main")
        return {"loss": loss.detach(), "nll": nll.detach(), "duration": duration.detach()}

    @torch.no_grad()
    def validate(self, model, batch):
        tokens, token_lengths, mels, mel_lengths, speakers = self._inputs(batch)
        out = model(tokens, token_lengths, mels, mel_lengths, speakers)
        return {"nll": float(GlowTTS.nll_per_dim(out)),
                "duration": float(GlowTTS.duration_loss(out, token_lengths))}

    @torch.no_grad()
    def validate_samples(self, model, batch, step, writer):
        if writer is None:
            return {}
        tokens, token_lengths, mels, mel_lengths, speakers = self._inputs(batch)
        out = model(tokens, token_lengths, mels, mel_lengths, speakers)

        n_tok, n_frm = int(token_lengths[0]), int(out.mel_lengths[0])
        gen, gen_lengths, _ = model.infer(tokens[:1, :n_tok], token_lengths[:1],
                                          speakers=speakers[:1] if speakers is not None else None,
                                          noise_scale=0.667, generator=torch.Generator(
                                              device=tokens.device).manual_seed(0))
        target = mels[0, :, :n_frm].float().cpu().numpy()
        synth = gen[0, :, :int(gen_lengths[0])].float().cpu().numpy()
        writer.add_figure("val/mel", spectrogram_figure(target, synth, titles=["target", "synthesised (T=0.667)"]), step)
        writer.add_figure("val/alignment", alignment_figure(out.attn[0, :n_tok, :n_frm].cpu().numpy(),
                                                           "MAS alignment"), step)
        sr = self.mel_config.sample_rate
        writer.add_audio("val/synthesised_griffin_lim", torch.from_numpy(griffin_lim(synth, self.mel_config)), step, sr)
        if step <= self.train.eval_every:
            writer.add_audio("val/target_griffin_lim", torch.from_numpy(griffin_lim(target, self.mel_config)), step, sr)
        return {}

    def inference_extras(self):
        return {"speakers": self.speakers.to_dict() if self.speakers is not None else None}
