"""Training Glow-TTS: maximum likelihood under the MAS alignment plus the duration loss,
Adam(0.9, 0.98, eps 1e-9) with the Noam schedule and gradient value clipping at 5, as the
authors (Kim et al., 2020, Sec. 4; their train.py and configs/base.json)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from flowspeech.audio.griffin_lim import griffin_lim
from flowspeech.checkpoints import read_torch_file
from flowspeech.config import mel_config
from flowspeech.data import SpeakerTable, TextMelDataset, collate_text_mel, pad_2d
from flowspeech.errors import CheckpointError, ConfigError
from flowspeech.models.glow_tts import GlowTTS
from flowspeech.text import TextFrontend
from flowspeech.training.plots import alignment_figure, spectrogram_figure
from flowspeech.training.recipe import Recipe, TrainConfig
from flowspeech.utils.files import atomic_write

log = logging.getLogger("flowspeech.train")


@dataclass
class GlowTTSTrainConfig(TrainConfig):
    #: ``text-encoder``: the flow decoder, and the speaker embedding that conditions it, are
    #: frozen (no gradient, no optimiser state); only the text encoder and duration predictor
    #: learn. For teaching a trained voice something on the text side (e.g.
    #: ``absolute_positions``, warm-started with ``--init-partial``) without moving the spectral
    #: model; each step also costs about half as much, since nothing flows back through the
    #: decoder.
    trainable: Literal["all", "text-encoder"] = "all"
    #: With ``trainable: text-encoder``: compute each clip's latent once, with the frozen
    #: decoder in eval mode, and keep it in memory (about 4 bytes x n_mels per frame: 0.6 GB
    #: for 4,000 clips of LJSpeech length) and in the run folder's ``latent_cache/`` (as much
    #: again on disk), so a resumed run skips the decoder for every clip seen before. Steps
    #: after the first epoch skip the decoder and cost about a third as much. Off by
    #: default: the decoder's dropout then still perturbs the latents, as in whole-model
    #: training, and nothing is kept.
    cache_latents: bool = False
    #: Where ``cache_latents`` keeps its files (null: the run folder's ``latent_cache/``).
    #: Runs warm-started from the same voice can share one folder: each reads only the
    #: latents of its own decoder.
    latent_cache_dir: str | None = None


class LatentCache:
    """Each clip's latent under a frozen decoder, ``clip id -> (z [n_mels, F], logdet)``, in
    memory and, once :meth:`attach`-ed to a folder, in shard files there.

    A shard holds the clips added since the previous one. Shards belong to one decoder: the
    fingerprint of its weights (and the speaker embedding that conditions it) names their
    subfolder, so a run warm-started from other weights never reads them.
    """

    def __init__(self):
        self.entries: dict[str, tuple[torch.Tensor, float]] = {}
        self._unsaved: dict[str, None] = {}  # clips added or replaced since the last shard
        self.folder: Path | None = None

    def __contains__(self, clip: str) -> bool:
        return clip in self.entries

    def __getitem__(self, clip: str) -> tuple[torch.Tensor, float]:
        return self.entries[clip]

    def add(self, clip: str, z: torch.Tensor, logdet: float) -> None:
        self.entries[clip] = (z, logdet)
        self._unsaved[clip] = None

    @staticmethod
    def fingerprint(model: GlowTTS) -> str:
        """What the latents depend on besides the mels: the decoder's weights and buffers
        and the speaker embedding's, hashed."""
        digest = hashlib.sha256()
        tensors = [("decoder." + k, v) for k, v in model.decoder.state_dict().items()]
        if model.n_speakers > 1:
            tensors.append(("emb_g.weight", model.emb_g.weight))
        for name, tensor in sorted(tensors, key=lambda kv: kv[0]):
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def attach(self, folder: Path) -> int:
        """Read every shard in ``folder`` into memory and write future shards there; returns
        how many clips were read. Shards are read oldest first, so a clip computed again
        (its audio changed) has its newest latent. An unreadable shard is reported and left
        alone (its clips are computed again)."""
        self.folder = folder
        read = 0
        for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
            try:
                shard = read_torch_file(path, what="latent cache shard")
                clips, latents, logdets = shard["clips"], shard["z"], shard["logdet"].tolist()
            except (CheckpointError, KeyError, TypeError, AttributeError) as err:
                # Costs only its clips' recomputation.
                log.warning("latent cache: skipping unreadable %s (%s)", path, err)
                continue
            for clip, z, logdet in zip(clips, latents, logdets):
                read += clip not in self.entries
                self.entries[clip] = (z, logdet)
        return read

    def save(self, name: str) -> None:
        """Write the clips added since the last save as the shard ``name``.pt."""
        if self.folder is None or not self._unsaved:
            return
        clips = list(self._unsaved)
        shard = {"clips": clips, "z": [self.entries[c][0] for c in clips],
                 "logdet": torch.tensor([self.entries[c][1] for c in clips], dtype=torch.float64)}
        atomic_write(self.folder / f"{name}.pt", lambda tmp: torch.save(shard, tmp))
        self._unsaved = {}


class GlowTTSRecipe(Recipe):
    model_type = "glow-tts"
    train_config_class = GlowTTSTrainConfig

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)

        self.frontend = TextFrontend(**config.get("text", {}))
        self.mel_config = mel_config(config)
        self.speakers = None
        self._latent_cache = LatentCache()  # the frozen decoder's latents (train.cache_latents)

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
            if model.n_speakers > 1:  # the speaker embedding conditions the decoder too
                model.emb_g.requires_grad_(False)
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
        # The trimmed width tells a clip whose audio changed since.
        widths = model._trim(batch["mels"], batch["mel_lengths"])[1].tolist()
        missing = [i for i, utt in enumerate(batch["ids"])
                   if utt not in cache or cache[utt][0].size(1) != widths[i]]
        if missing:
            was_training = model.decoder.training
            model.decoder.eval()
            with torch.no_grad():
                for i in missing:
                    n = int(batch["mel_lengths"][i])
                    speakers = batch["speakers"][i:i + 1] if batch.get("speakers") is not None else None
                    z, logdet, _ = model.mel_latents(batch["mels"][i:i + 1, :, :n],
                                                     batch["mel_lengths"][i:i + 1], speakers)
                    cache.add(batch["ids"][i], z[0].float().cpu(), float(logdet[0]))
            model.decoder.train(was_training)
        entries = [cache[utt] for utt in batch["ids"]]
        # Padded to the longest trimmed clip: the batch's trimmed mel width.
        z, _ = pad_2d([z_i for z_i, _ in entries])
        z = z.to(batch["mels"])
        logdet = torch.tensor([logdet for _, logdet in entries], dtype=z.dtype, device=z.device)
        return z, logdet

    def load_run_state(self, run_dir, model):
        if not self.train.cache_latents:
            return
        base = self.train.latent_cache_dir or Path(run_dir) / "latent_cache"
        folder = Path(base) / LatentCache.fingerprint(model)
        read = self._latent_cache.attach(folder)
        if read:
            log.info("latent cache: %d clips read from %s", read, folder)

    def save_run_state(self, run_dir, model, rank):
        if self.train.cache_latents and self._latent_cache.folder is not None:
            # Named by time, then rank and process: read back in the order written; neither
            # ranks nor runs sharing the folder clash.
            self._latent_cache.save(f"{time.time_ns()}-rank{rank:03d}-{os.getpid()}")

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
