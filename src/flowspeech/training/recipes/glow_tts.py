"""Training Glow-TTS: maximum likelihood under the MAS alignment plus the duration loss,
Adam(0.9, 0.98, eps 1e-9) with the Noam schedule and gradient value clipping at 5, as the
authors (Kim et al., 2020, Sec. 4; their train.py and configs/base.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from flowspeech.audio import griffin_lim
from flowspeech.config import mel_config
from flowspeech.data import SpeakerTable, TextMelDataset, collate_text_mel, pad_2d
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
    #: With ``trainable: text-encoder``: compute each clip's latent once, with the frozen
    #: decoder in eval mode, and keep it in memory (about 4 bytes x n_mels per frame: 0.6 GB
    #: for 4,000 clips of LJSpeech length). Steps after the first epoch skip the decoder and
    #: cost about a third as much. Off by default: the decoder's dropout then still perturbs
    #: the latents, as in whole-model training, and nothing is held in memory.
    cache_latents: bool = False


class GlowTTSRecipe(Recipe):
    model_type = "glow-tts"
    train_config_class = GlowTTSTrainConfig

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)

        self.frontend = TextFrontend(**config.get("text", {}))
        self.mel_config = mel_config(config)
        self.speakers = None
        # clip id -> (z [n_mels, F], logdet) under the frozen decoder (train.cache_latents)
        self._latent_cache: dict[str, tuple[torch.Tensor, float]] = {}

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
        elif self.train.cache_latents:
            raise ConfigError("train.cache_latents needs train.trainable: text-encoder (a decoder "
                              "that learns changes every latent at every step)")
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

    def _cached_latents(self, model: GlowTTS, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z [B, n_mels, F], logdet [B])`` for the batch from the latent cache; clips not
        in it yet go through the decoder one at a time, in eval mode, so that a clip's latent
        does not depend on the batch it first came in (and a resumed run gets the same)."""
        cache = self._latent_cache
        missing = [i for i, utt in enumerate(batch["ids"]) if utt not in cache]
        if missing:
            was_training = model.decoder.training
            model.decoder.eval()
            with torch.no_grad():
                for i in missing:
                    n = int(batch["mel_lengths"][i])
                    speakers = batch["speakers"][i:i + 1] if batch.get("speakers") is not None else None
                    z, logdet, _ = model.mel_latents(batch["mels"][i:i + 1, :, :n],
                                                     batch["mel_lengths"][i:i + 1], speakers)
                    cache[batch["ids"][i]] = (z[0].float().cpu(), float(logdet[0]))
            model.decoder.train(was_training)
        entries = [cache[utt] for utt in batch["ids"]]
        # Padded to the longest trimmed clip: the batch's trimmed mel width.
        z, _ = pad_2d([z_i for z_i, _ in entries])
        z = z.to(batch["mels"])
        logdet = torch.tensor([logdet for _, logdet in entries], dtype=z.dtype, device=z.device)
        return z, logdet

    def training_step(self, ctx, batch):
        latents = None
        if self.train.cache_latents:
            latents = self._cached_latents(ctx.raw_model, batch)
        with ctx.autocast():
            out = ctx.model(*self._inputs(batch), latents=latents)
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
