"""Training NaturalSpeech (Tan et al., 2022, Sec. 3.5 and 4.1) with the shared loop.

One step, as a VITS-style GAN with two optimisers:

1. The generator pass (:meth:`NaturalSpeech.forward`): posterior path on a random latent
   segment, backward KL, durations (MAS or given), and after the warm-up the prior path with
   predicted durations (forward KL by soft-DTW; an end-to-end waveform segment).
2. Discriminator step (``"discriminator"``): least-squares loss on the real segment against
   the posterior-path waveform and, after the warm-up, the end-to-end one (both detached).
3. Generator step (``"generator"``)::

       L = c_mel * mel L1 + feature matching + adversarial        (L_rec, posterior path)
         + c_kl * KL_bwd + c_kl_fwd * KL_fwd                       (bidirectional prior/posterior)
         + c_e2e * adversarial(end-to-end waveform)                (L_e2e)
         + c_dur * duration MSE
         + c_kl_frame * KL_frame      (alignment_prior "token": the frame-level prior fits z')
         + alignment-head NLL         (alignment_prior "head")

With ``model_args.alignment_prior: token`` (the default) ``KL_bwd`` is taken against the
token Gaussians along the MAS path, as VITS, and ``KL_frame``
(:meth:`NaturalSpeech.frame_prior_kl`) trains the learnable upsampler's prior, the one
synthesis samples, on ``z'`` held fixed.

Phases: the first ``durator_warmup_steps`` train the durator with ground-truth durations (backward
path only: no forward KL, no end-to-end loss), as the paper's warm-up; then everything.

The memory bank (``memory_vae``) is started from data: until step ``memory_start`` (by
default the end of the warm-up) the decoder reads the posterior latent ``z`` itself; then the
bank becomes k-means centres of ``memory_init_frames`` latent frames of random training clips
(:meth:`MemoryBank.init_from_latents`) and the decoder reads the memory from then on. A bank
used from the first step as drawn at random (``memory_init: random``) leaves the attention
uniform and the decoder without information (docs/naturalspeech.md, training report).

Optimisers: AdamW, betas (0.8, 0.99), eps 1e-9, learning rate 2e-4 decayed by 0.999875 per
epoch (the paper; the config gives the per-step factor).

The recipe's own ``train:`` keys are the fields of :class:`NaturalSpeechTrainConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.distributed as dist
from torch import nn

from flowspeech.align.durations import fit_durations_to_frames, read_alignment_file
from flowspeech.audio import mel_spectrogram
from flowspeech.audio.features import MelSpectrogram
from flowspeech.config import mel_config
from flowspeech.data import TextAudioDataset, collate_text_audio
from flowspeech.errors import ConfigError, DatasetError
from flowspeech.models.hifigan import (
    CombinedDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from flowspeech.models.naturalspeech import NaturalSpeech, alignment_stats, random_segments
from flowspeech.models.phoneme_encoder import load_pretrained_phoneme_encoder
from flowspeech.models.registry import build_model
from flowspeech.text import TextFrontend
from flowspeech.training.plots import spectrogram_figure
from flowspeech.training.recipe import Recipe, TrainConfig, require
from flowspeech.utils.masks import sequence_mask


@dataclass
class NaturalSpeechTrainConfig(TrainConfig):
    """``train:`` section: the shared options and NaturalSpeech's own."""

    durator_warmup_steps: int = 0     # ground-truth durations, backward path only (Sec. 3.5)
    memory_start: int | None = None   # the decoder reads z until then (None: end of the warm-up)
    memory_init: Literal["kmeans", "random"] = "kmeans"
    memory_init_frames: int = 100_000
    c_mel: float = 45.0               # loss weights
    c_kl: float = 1.0
    c_kl_fwd: float = 1.0
    c_e2e: float = 1.0
    c_dur: float = 1.0
    c_kl_frame: float = 1.0           # the frame-level prior's own KL (alignment_prior "token")
    phoneme_encoder_checkpoint: str | None = None  # `flowspeech pretrain-phonemes` checkpoint
    durations: str | None = None      # `flowspeech align` file: its durations replace MAS

    # train.warmup_steps is the Noam schedule's: the durator's warm-up took another name.
    renamed_from_extra: ClassVar[dict[str, str]] = {"warmup_steps": "durator_warmup_steps"}

    def validate(self) -> None:
        super().validate()
        require(self.durator_warmup_steps >= 0, "train.durator_warmup_steps must be >= 0")
        require(self.memory_start is None or self.memory_start >= 0, "train.memory_start must be >= 0")
        require(self.memory_init_frames >= 1, "train.memory_init_frames must be >= 1")
        for name in ("c_mel", "c_kl", "c_kl_fwd", "c_e2e", "c_dur", "c_kl_frame"):
            require(getattr(self, name) >= 0, f"train.{name} must be >= 0, got {getattr(self, name)}")

VAL_SEED = 0
VAL_NOISE_SCALE = 0.667


class NaturalSpeechGAN(nn.Module):
    """What the loop trains: the generator (the TTS model) and its discriminators.

    ``forward("generator", ...)`` and ``forward("discriminator", ...)`` dispatch, so that one
    DistributedDataParallel wrapper covers both (with ``find_unused_parameters``).
    Checkpoints therefore hold ``generator.*`` and ``discriminator.*`` weights; synthesis
    loads only the generator (:meth:`NaturalSpeech.inference_state_dict`).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator

    def forward(self, part: str, *args, **kwargs):
        if part == "generator":
            return self.generator(*args, **kwargs)
        if part == "discriminator":
            return self.discriminator(*args, **kwargs)
        raise ValueError(f"unknown part {part!r}")


class NaturalSpeechRecipe(Recipe):
    model_type = "naturalspeech"
    train_config_class = NaturalSpeechTrainConfig
    config_sections = ("discriminator_args",)

    @classmethod
    def check_config_sections(cls, config):
        try:
            with torch.device("meta"):
                CombinedDiscriminator(**dict(config.get("discriminator_args") or {}))
        except TypeError as err:
            raise ConfigError(f"discriminator_args: {err}") from None

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)

        t = self.train
        self.memory_start = t.durator_warmup_steps if t.memory_start is None else t.memory_start
        self.mel_config = mel_config(config)
        self.frontend = TextFrontend(**config.get("text", {}))
        self.sup_tokenizer = None
        self._encoder_state = None
        self._durations: dict[str, list[int]] | None = None
        self._mel = None
        args = config.get("model_args", {})
        checkpoint = self.train.phoneme_encoder_checkpoint
        if checkpoint and args.get("phoneme_pretraining", True):
            self._load_pretrained(checkpoint)
        elif args.get("alignment_encoder"):
            # No pre-trained encoder: the model's own starts as fresh as the alignment encoder
            # would (VITS's), so a second one would only cost time.
            self.config["model_args"]["alignment_encoder"] = False

    # --- pre-trained phoneme encoder ---------------------------------------------------------
    def _load_pretrained(self, path: str) -> None:
        state, tokenizer, text_options = load_pretrained_phoneme_encoder(path)
        if text_options is not None and dict(text_options) != dict(self.frontend.to_dict()):
            raise ConfigError(
                f"{path} was pre-trained with the text front end {text_options}, but this config's "
                f"is {self.frontend.to_dict()}: pre-train with the same `text:` section")
        self.sup_tokenizer, self._encoder_state = tokenizer, state
        # The model needs the sup-phoneme vocabulary size to build its embedding.
        self.config.setdefault("model_args", {})["n_sup_vocab"] = tokenizer.vocab_size

    def build_model(self) -> NaturalSpeechGAN:
        generator = build_model(self.config)
        generator.sup_tokenizer = self.sup_tokenizer  # synthesis in validation reads it
        if self._encoder_state is not None:
            try:
                missing, unexpected = generator.encoder.load_state_dict(self._encoder_state, strict=False)
            except RuntimeError as err:  # shapes differ
                raise ConfigError(
                    f"the pre-trained phoneme encoder does not fit this config's phoneme_encoder "
                    f"({str(err).splitlines()[-1].strip()[:200]}): pre-train with the same "
                    f"model_args.phoneme_encoder") from None
            if unexpected or [k for k in missing if not k.startswith("sup_emb")]:
                raise ConfigError(
                    f"the pre-trained phoneme encoder does not fit this config's phoneme_encoder "
                    f"(missing {missing[:5]}, unexpected {unexpected[:5]}): pre-train with the "
                    f"same model_args.phoneme_encoder")
        disc_args = dict(self.config.get("discriminator_args", {}))
        return NaturalSpeechGAN(generator, CombinedDiscriminator(**disc_args))

    # --- data ----------------------------------------------------------------------------------
    def build_datasets(self, data, val_data, cache_dir):
        train_manifest, val_manifest = self.manifests(data, val_data)
        if self.train.durations:
            self._durations = read_durations(self.train.durations)
        train = TextAudioDataset(train_manifest, self.frontend, self.mel_config, cache_dir)
        val = (TextAudioDataset(val_manifest, self.frontend, self.mel_config, cache_dir)
               if val_manifest is not None else None)
        return train, val

    def collate(self, items):
        batch = collate_text_audio(items)
        tokens = batch["tokens"]
        if self.sup_tokenizer is not None:
            batch["sup_tokens"] = self.sup_tokenizer.sup_ids_padded(tokens, batch["token_lengths"])
        if self._durations is not None:
            durations = torch.zeros(tokens.shape, dtype=torch.float32)
            for i, (uid, n, frames) in enumerate(zip(batch["ids"], batch["token_lengths"].tolist(),
                                                     batch["spec_lengths"].tolist())):
                d = self._durations.get(uid)
                if d is None:
                    raise DatasetError(
                        f"{self.train.durations}: no durations for {uid} - the file must cover "
                        "every utterance, validation included (`flowspeech align` without --split)")
                if len(d) != n:
                    raise DatasetError(
                        f"{self.train.durations}: {uid} has {len(d)} durations but {n} tokens - "
                        "align with a model that uses this config's text front end "
                        "(`flowspeech align --merge-blanks` if that model used blanks)")
                try:
                    d = fit_durations_to_frames(d, frames)
                except ValueError as e:
                    raise DatasetError(f"{self.train.durations}: {uid}: {e}") from None
                durations[i, :n] = torch.tensor(d, dtype=torch.float32)
            batch["durations"] = durations
        return batch

    # --- optimisers ------------------------------------------------------------------------------
    def build_optimizers(self, model):
        t = self.train
        kwargs = {"lr": t.learning_rate, "betas": t.betas, "eps": t.eps, "weight_decay": t.weight_decay}
        return {"generator": torch.optim.AdamW(model.generator.parameters(), **kwargs),
                "discriminator": torch.optim.AdamW(model.discriminator.parameters(), **kwargs)}

    # --- one step ----------------------------------------------------------------------------
    def mel(self, wav: torch.Tensor) -> torch.Tensor:
        """Mel features of ``wav [B, 1, S]`` as the dataset computes them."""

        if self._mel is None or self._mel.window.device != wav.device:
            self._mel = MelSpectrogram(self.mel_config).to(wav.device)
        return self._mel(wav.squeeze(1).float())

    def _inputs(self, batch):
        return (batch["tokens"], batch["token_lengths"], batch["linears"], batch["spec_lengths"],
                batch.get("sup_tokens"), batch.get("durations"))

    def training_step(self, ctx, batch):
        e = self.train
        raw = ctx.raw_model
        gen = raw.generator
        raw.zero_grad(set_to_none=True)  # the generator loss also reaches the discriminators
        if (gen.memory is not None and not bool(gen.memory.in_use)
                and ctx.step >= self.memory_start):
            self._start_memory(ctx)
        full = ctx.step >= e.durator_warmup_steps
        with ctx.autocast():
            out = ctx.model("generator", *self._inputs(batch), use_forward_loss=full, use_e2e=full)
        real = gen.wav_segment(batch["audio"], out.segment_starts)
        # Posterior-path and end-to-end fakes go through the discriminators as one batch: one
        # discriminator pass per optimiser step, as DistributedDataParallel requires.
        fakes = torch.cat([out.wav] + ([out.wav_e2e] if out.wav_e2e is not None else []))
        n = out.wav.size(0)

        # Discriminators.
        with ctx.autocast():
            real_scores, fake_scores, _, _ = ctx.model("discriminator", real, fakes.detach())
            loss_d = discriminator_loss(real_scores, fake_scores)[0]
        ctx.optimize(loss_d, "discriminator")

        # Generator.
        with ctx.autocast():
            real_mel, _ = random_segments(batch["mels"], batch["spec_lengths"], gen.segment_frames,
                                          out.segment_starts)
            mel_l1 = nn.functional.l1_loss(self.mel(out.wav), real_mel.float())
            _, fake_scores, real_maps, fake_maps = ctx.model("discriminator", real, fakes)
            adv = generator_adversarial_loss([s[:n] for s in fake_scores])
            fm = feature_matching_loss(real_maps, [[f[:n] for f in maps] for maps in fake_maps])
            kl = NaturalSpeech.kl_backward(out)
            dur = NaturalSpeech.duration_loss(out)
            loss_g = (e.c_mel * mel_l1 + fm + adv + e.c_kl * kl + e.c_dur * dur + out.align_nll)
            logs = {"mel_l1": mel_l1, "kl_bwd": kl, "duration": dur, "adv": adv, "fm": fm,
                    "loss_d": loss_d}
            if out.token_mean is not None:          # the frame-level prior learns on its own
                kl_frame = NaturalSpeech.frame_prior_kl(out)
                loss_g = loss_g + e.c_kl_frame * kl_frame
                logs["kl_frame"] = kl_frame
            elif batch.get("durations") is None:    # MAS ran: its alignment head learns
                logs["align_nll"] = out.align_nll
            if out.kl_forward is not None:
                loss_g = loss_g + e.c_kl_fwd * out.kl_forward
                logs["kl_fwd"] = out.kl_forward
            if out.wav_e2e is not None:
                adv_e2e = generator_adversarial_loss([s[n:] for s in fake_scores])
                loss_g = loss_g + e.c_e2e * adv_e2e
                logs["adv_e2e"] = adv_e2e
        ctx.optimize(loss_g, "generator")
        logs["loss_g"] = loss_g
        return {k: (v.detach() if torch.is_tensor(v) else v) for k, v in logs.items()}

    def wrap_distributed(self, model, wrap):
        # Generator and discriminators each get their own DDP wrapper (as VITS does): the
        # step runs them in separate passes with separate backward passes.
        return NaturalSpeechGAN(wrap(model.generator), wrap(model.discriminator))

    @torch.no_grad()
    def initialize(self, model, batch):
        """A memory bank started from data waits until ``memory_start``; nothing else is
        data-dependent (no ActNorm)."""
        memory = model.generator.memory
        if memory is not None and self.train.memory_init == "kmeans":
            memory.in_use.fill_(False)

    @torch.no_grad()
    def _start_memory(self, ctx) -> None:
        """Start the memory bank from posterior latents of random training clips (rank 0
        computes, every rank receives), and log how well it reproduces them."""
        gen = ctx.raw_model.generator
        memory = gen.memory
        seed = self.train.seed + ctx.step
        if ctx.dist.is_main:
            latents = self._posterior_latents(gen, ctx, seed)
            stats = memory.init_from_latents(latents, seed=seed)
            ctx.log(
                f"step {ctx.step}: memory bank started from k-means of {latents.size(0)} latent "
                f"frames; the memory's answer keeps {1 - stats['relative_error']:.0%} of the "
                f"latents' variance (query scale {stats['query_scale']:g}, attention entropy "
                f"{stats['entropy']:.2f} of {math.log(memory.bank.size(0)):.2f} nats)")
        if ctx.dist.enabled:

            for tensor in memory.parameters():
                dist.broadcast(tensor.data, src=0)
        memory.in_use.fill_(True)

    def _posterior_latents(self, gen, ctx, seed: int) -> torch.Tensor:
        """Posterior samples ``z`` ``[N, h]`` of random training clips, at least
        ``memory_init_frames`` of them (or all the data has), drawn without touching the
        training RNG."""

        dataset = ctx.train_set
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
        want = max(self.train.memory_init_frames, gen.memory.bank.size(0))
        frames, total = [], 0
        was_training = gen.training
        gen.eval()
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for first in range(0, len(order), 8):
                batch = ctx.to_device(self.collate([dataset[i] for i in order[first:first + 8]]))
                specs = batch["linears"]
                mask = sequence_mask(batch["spec_lengths"], specs.size(2))
                z, _, _ = gen.posterior_encoder(specs, mask.unsqueeze(1).to(specs.dtype))
                frames.append(z.transpose(1, 2)[mask].float().cpu())
                total += frames[-1].size(0)
                if total >= want:
                    break
        gen.train(was_training)
        return torch.cat(frames)

    @torch.no_grad()
    def validate(self, model, batch):
        return self.validate_with_alignment(model, batch)[0]

    @torch.no_grad()
    def validate_with_alignment(self, model, batch) -> tuple[dict[str, float], torch.Tensor]:
        """:meth:`validate`'s values and the durations ``[B, T_text]`` (frames) of the path the
        model's own MAS (or the durations file) gave ``batch``: the path the alignment
        statistics were taken on, from the same pass."""
        gen = model.generator
        out = gen(*self._inputs(batch), use_forward_loss=False, use_e2e=False)
        real_mel, _ = random_segments(batch["mels"], batch["spec_lengths"], gen.segment_frames,
                                      out.segment_starts)
        values = {"kl_bwd": float(NaturalSpeech.kl_backward(out)),
                  "kl_frame": float(NaturalSpeech.frame_prior_kl(out)),
                  "duration": float(NaturalSpeech.duration_loss(out)),
                  "mel_l1": float(nn.functional.l1_loss(self.mel(out.wav), real_mel.float()))}
        if batch.get("durations") is None:
            # Share of phonemes MAS gives a single frame: near 1 the alignment has collapsed
            # onto a few phonemes; and how far it strays from the diagonal (docs/naturalspeech.md,
            # "Durations").
            stats = alignment_stats(out.durations, out.text_mask)
            values["mas_one_frame"] = stats["one_frame"]
            values["mas_diagonal"] = stats["diagonal_deviation"]
        return values, out.durations

    @torch.no_grad()
    def validate_samples(self, model, batch, step, writer):
        gen, values = model.generator, {}
        n_tok = int(batch["token_lengths"][0])
        generator = torch.Generator(device=batch["tokens"].device).manual_seed(VAL_SEED)
        wav, wav_lengths, _ = gen.infer(batch["tokens"][:1, :n_tok], batch["token_lengths"][:1],
                                        noise_scale=VAL_NOISE_SCALE, generator=generator)
        wav = wav[0, :int(wav_lengths[0])].float().clamp(-1, 1).cpu()
        values["length_ratio"] = float(wav.numel()) / max(int(batch["audio_lengths"][0]), 1)
        if writer is not None:

            sr = self.mel_config.sample_rate
            writer.add_audio("val/synthesised", wav[None], step, sr)
            target = batch["mels"][0, :, :int(batch["spec_lengths"][0])].float().cpu().numpy()
            synth = mel_spectrogram(wav, self.mel_config).numpy()
            writer.add_figure("val/mel", spectrogram_figure(
                target, synth, titles=["recording", f"synthesised from text (T={VAL_NOISE_SCALE})"]), step)
            if step <= self.train.eval_every:
                audio = batch["audio"][0, :int(batch["audio_lengths"][0])].float().cpu()
                writer.add_audio("val/recording", audio[None], step, sr)
        return values

    def inference_extras(self):
        extras: dict[str, Any] = {"text": self.frontend.to_dict()}
        if self.sup_tokenizer is not None:
            extras["sup_phoneme_tokenizer"] = self.sup_tokenizer.to_json()
        return extras


def read_durations(path: str) -> dict[str, list[int]]:
    """``{id: frames per token}`` from a ``flowspeech align`` JSON-lines file."""

    return read_alignment_file(path, "durations", lambda values: [int(d) for d in values])
