"""Glow-TTS: a generative flow for text-to-speech via Monotonic Alignment Search.

Kim, Kim, Kong and Yoon, NeurIPS 2020 (arXiv:2005.11129). The model has three parts:

* a **text encoder** (embedding, optional conv pre-net, relative-position transformer)
  that gives, per token, the mean (and optionally log-scale) of a Gaussian prior over the
  latent of each mel frame aligned to it (Sec. 3.3);
* a **duration predictor** (two conv layers on the detached encoder output) trained to
  predict the log of each token's frame count under the alignment found by MAS (Sec. 3.2);
* a **flow decoder** (Sec. 3.3, Fig. 2): ``n_blocks`` x [ActNorm, grouped invertible 1x1
  conv, affine coupling with a WaveNet-style network] over the mel squeezed in time by 2,
  which maps a mel ``y`` to a latent ``z`` with exact log-determinant.

Training maximises ``log p(y | text) = log N(z; mu_A, sigma_A) + log|det dz/dy|`` under the
most likely monotonic alignment ``A`` (found by :func:`flowspeech.align.maximum_path`,
Algorithm 1), plus the duration loss. Inference expands the prior with predicted durations,
samples ``z`` with temperature ``noise_scale`` and inverts the decoder — all in parallel.

Parameter and module names follow the authors' code (github jaywalnut310/glow-tts), so
their checkpoints map onto this model by a short, explicit key table
(:mod:`flowspeech.models.glow_tts_import`).

Shapes: tokens ``[B, T_text]``; mels ``[B, n_mels, T_frames]``; masks ``[B, 1, T]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from flowspeech.align import maximum_path, path_from_durations
from flowspeech.align.likelihood import LOG_2PI, pairwise_gaussian_log_likelihood
from flowspeech.config import mel_config
from flowspeech.errors import TextError
from flowspeech.flows import (
    ActNorm,
    AffineCoupling,
    FlowSequence,
    GroupedInvertibleConv1x1,
    WaveNetCouplingNet,
    squeeze,
    unsqueeze,
)
from flowspeech.models.roles import MelSynthesis, TextToMel
from flowspeech.models.transformer import (
    ChannelLayerNorm,
    ConvReluNorm,
    SinusoidalPositions,
    TransformerEncoder,
)
from flowspeech.text import TextFrontend
from flowspeech.utils.durations import DurationRounding
from flowspeech.utils.masks import length_mask
from flowspeech.utils.noise import Generators, per_utterance, randn, randn_padded


class DurationPredictor(nn.Module):
    """Two conv-ReLU-LayerNorm-dropout layers and a 1x1 projection to one log-duration per
    token (Glow-TTS Appendix A.1; FastSpeech's predictor). Output ``[B, 1, T_text]``."""

    def __init__(self, in_channels: int, filter_channels: int, kernel_size: int, dropout: float):
        super().__init__()
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.norm_1 = ChannelLayerNorm(filter_channels)
        self.conv_2 = nn.Conv1d(filter_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.norm_2 = ChannelLayerNorm(filter_channels)
        self.proj = nn.Conv1d(filter_channels, 1, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.norm_1(torch.relu(self.conv_1(x * mask))))
        x = self.drop(self.norm_2(torch.relu(self.conv_2(x * mask))))
        return self.proj(x * mask) * mask


class TextEncoder(nn.Module):
    """Tokens to the prior's per-token statistics and log-durations."""

    def __init__(self, n_vocab: int, out_channels: int, hidden_channels: int, filter_channels: int,
                 filter_channels_dp: int, n_heads: int, n_layers: int, kernel_size: int, dropout: float,
                 window_size: int | None, mean_only: bool, prenet: bool, gin_channels: int,
                 absolute_positions: bool = False):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.mean_only = mean_only
        self.emb = nn.Embedding(n_vocab, hidden_channels)
        nn.init.normal_(self.emb.weight, 0.0, hidden_channels ** -0.5)
        self.pre = ConvReluNorm(hidden_channels, hidden_channels, 5, 3, 0.5) if prenet else None
        self.positions = SinusoidalPositions(hidden_channels) if absolute_positions else None
        self.encoder = TransformerEncoder(hidden_channels, filter_channels, n_heads, n_layers,
                                          kernel_size, dropout, window_size)
        self.proj_m = nn.Conv1d(hidden_channels, out_channels, 1)
        self.proj_s = None if mean_only else nn.Conv1d(hidden_channels, out_channels, 1)
        self.proj_w = DurationPredictor(hidden_channels + gin_channels, filter_channels_dp,
                                        kernel_size, dropout)

    def forward(self, tokens: torch.Tensor, token_lengths: torch.Tensor, g: torch.Tensor | None = None):
        """Returns mean, log-scale ``[B, n_mels, T_text]``, log-durations and mask
        ``[B, 1, T_text]``."""
        x = self.emb(tokens) * math.sqrt(self.hidden_channels)  # [B, T, H]
        x = x.transpose(1, 2)
        mask = length_mask(token_lengths, x.size(2), x.dtype)
        if self.pre is not None:
            x = self.pre(x, mask)
        if self.positions is not None:
            x = self.positions(x, mask)
        x = self.encoder(x, mask)
        # Stop-gradient: the duration loss must not shape the text representation (Sec. 3.2).
        x_dp = x.detach()
        if g is not None:
            x_dp = torch.cat([x_dp, g.expand(-1, -1, x.size(-1))], 1)
        mean = self.proj_m(x) * mask
        log_scale = torch.zeros_like(mean) if self.proj_s is None else self.proj_s(x) * mask
        log_durations = self.proj_w(x_dp, mask)
        return mean, log_scale, log_durations, mask


class FlowDecoder(nn.Module):
    """Mel <-> latent: squeeze by ``n_sqz``, ``n_blocks`` x [ActNorm, grouped 1x1 conv,
    affine coupling], unsqueeze. ``forward`` is mel -> z (with logdet), ``inverse`` z -> mel."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int,
                 n_blocks: int, n_layers: int, dropout: float = 0.0, n_split: int = 4, n_sqz: int = 2,
                 sigmoid_scale: bool = False, gin_channels: int = 0):
        super().__init__()
        self.n_sqz = n_sqz
        channels = in_channels * n_sqz
        layers = []
        for _ in range(n_blocks):
            layers.append(ActNorm(channels))
            layers.append(GroupedInvertibleConv1x1(channels, n_split=n_split))
            # The authors apply the decoder's dropout to the dilated conv output, before
            # the conditioning is added and the gate applied.
            net = WaveNetCouplingNet(channels // 2, 2 * (channels - channels // 2), hidden_channels,
                                     kernel_size, dilation_rate, n_layers,
                                     cond_channels=gin_channels, dropout=dropout,
                                     dropout_position="pre_gate")
            layers.append(AffineCoupling(net, sigmoid_scale=sigmoid_scale))
        self.flows = FlowSequence(layers)

    def forward(self, y: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None = None):
        x, m = squeeze(y, mask, self.n_sqz)
        z, logdet = self.flows(x, m, cond=g)
        z, _ = unsqueeze(z, m, self.n_sqz)
        return z, logdet

    def inverse(self, z: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        x, m = squeeze(z, mask, self.n_sqz)
        y = self.flows.inverse(x, m, cond=g)
        y, _ = unsqueeze(y, m, self.n_sqz)
        return y


@dataclass
class GlowTTSOutput:
    """Everything a training step, a scorer or an aligner needs from one forward pass."""

    z: torch.Tensor               # [B, n_mels, F] latent of the mel
    z_mean: torch.Tensor          # [B, n_mels, F] prior mean expanded by the alignment
    z_log_scale: torch.Tensor     # [B, n_mels, F]
    logdet: torch.Tensor          # [B] log|det dz/dy|
    z_mask: torch.Tensor          # [B, 1, F]
    attn: torch.Tensor            # [B, T_text, F] hard alignment (0/1)
    log_durations: torch.Tensor   # [B, 1, T_text] predicted
    log_durations_target: torch.Tensor  # [B, 1, T_text] log(1e-8 + frames per token) from MAS
    text_mask: torch.Tensor       # [B, 1, T_text]
    mel_lengths: torch.Tensor     # [B] lengths after truncation to a multiple of n_sqz


class GlowTTS(TextToMel):
    """Glow-TTS (Kim et al., 2020). Defaults are the paper's LJSpeech model (``base``).

    Args:
        n_vocab: number of token ids (148 for the authors' symbols, 149 with blanks).
        n_mels: mel bands (80).
        hidden_channels: encoder width (192); also the Noam schedule's ``d_model``.
        filter_channels: encoder feed-forward width (768).
        filter_channels_dp: duration-predictor width (256).
        kernel_size: encoder feed-forward and duration-predictor kernel (3).
        n_heads, n_layers_enc: attention heads (2) and encoder blocks (6).
        p_dropout: encoder dropout (0.1).
        window_size: relative-attention window (4).
        prenet: conv pre-net before the transformer (True in the paper's base config).
        mean_only: the prior has unit variance; only its mean is predicted (True in base).
        n_blocks_dec, n_block_layers, kernel_size_dec, dilation_rate: decoder flow blocks (12),
            WaveNet layers per coupling (4), their kernel (5) and dilation rate (1).
        hidden_channels_dec: decoder WaveNet width (192).
        p_dropout_dec: decoder dropout (0.05).
        n_split: groups of the invertible 1x1 conv (4).
        n_sqz: squeeze factor over time (2).
        sigmoid_scale: bound the coupling scale with a sigmoid (False).
        n_speakers, gin_channels: speaker embedding table and size (0: single speaker).
        absolute_positions: add a sinusoidal position encoding after the pre-net
            (:class:`~flowspeech.models.transformer.SinusoidalPositions`). Not in the
            paper, whose encoder knows positions only through the relative window: off in
            every paper preset. It lets the encoder place sentence-level intonation.
    """

    def __init__(self, n_vocab: int, n_mels: int = 80, hidden_channels: int = 192,
                 filter_channels: int = 768, filter_channels_dp: int = 256, kernel_size: int = 3,
                 n_heads: int = 2, n_layers_enc: int = 6, p_dropout: float = 0.1,
                 window_size: int | None = 4, prenet: bool = True, mean_only: bool = True,
                 n_blocks_dec: int = 12, n_block_layers: int = 4, kernel_size_dec: int = 5,
                 dilation_rate: int = 1, hidden_channels_enc: int | None = None,
                 hidden_channels_dec: int | None = None, p_dropout_dec: float = 0.05,
                 n_split: int = 4, n_sqz: int = 2, sigmoid_scale: bool = False,
                 n_speakers: int = 0, gin_channels: int = 0, absolute_positions: bool = False):
        super().__init__()
        if n_speakers > 1 and gin_channels <= 0:
            raise ValueError("a multi-speaker Glow-TTS needs gin_channels > 0")
        self.n_vocab, self.n_mels, self.n_sqz = n_vocab, n_mels, n_sqz
        self.hidden_channels = hidden_channels
        self.n_speakers = n_speakers
        # How predicted durations become frames at synthesis; the authors' ceiling unless a
        # voice sets its own (see flowspeech.utils.durations).
        self.duration_rounding = DurationRounding()
        self.encoder = TextEncoder(n_vocab, n_mels, hidden_channels_enc or hidden_channels,
                                   filter_channels, filter_channels_dp, n_heads, n_layers_enc,
                                   kernel_size, p_dropout, window_size, mean_only, prenet,
                                   gin_channels if n_speakers > 1 else 0, absolute_positions)
        self.decoder = FlowDecoder(n_mels, hidden_channels_dec or hidden_channels, kernel_size_dec,
                                   dilation_rate, n_blocks_dec, n_block_layers, p_dropout_dec, n_split,
                                   n_sqz, sigmoid_scale, gin_channels if n_speakers > 1 else 0)
        if n_speakers > 1:
            self.emb_g = nn.Embedding(n_speakers, gin_channels)
            nn.init.uniform_(self.emb_g.weight, -0.1, 0.1)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "GlowTTS":
        """Build from a flowspeech config: ``n_vocab`` comes from the ``text`` section's front
        end and ``n_mels`` from the ``audio`` section."""

        args = dict(config.get("model_args", {}))
        args.setdefault("n_vocab", TextFrontend(**config.get("text", {})).n_vocab)
        args.setdefault("n_mels", mel_config(config).n_mels)
        return cls(**args)

    # --- helpers ---------------------------------------------------------------------------
    def speaker_embedding(self, speakers: torch.Tensor | None) -> torch.Tensor | None:
        if self.n_speakers <= 1:
            return None
        if speakers is None:
            raise ValueError("this is a multi-speaker model: pass speaker ids")
        return F.normalize(self.emb_g(speakers)).unsqueeze(-1)  # [B, gin, 1]

    def _trim(self, mels: torch.Tensor, mel_lengths: torch.Tensor):
        """Frames beyond a multiple of ``n_sqz`` cannot be squeezed; drop them (as the
        authors do)."""
        max_len = (mels.size(2) // self.n_sqz) * self.n_sqz
        return mels[:, :, :max_len], (mel_lengths // self.n_sqz) * self.n_sqz

    @staticmethod
    def prior_log_likelihood(z: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """``log N(z_j; mean_i, exp(log_scale_i))`` summed over channels, for every token i and
        frame j: ``[B, T_text, F]`` (see :func:`~flowspeech.align.likelihood.pairwise_gaussian_log_likelihood`)."""
        return pairwise_gaussian_log_likelihood(z, mean, log_scale)

    # --- training / scoring / alignment ----------------------------------------------------
    def mel_latents(self, mels: torch.Tensor, mel_lengths: torch.Tensor,
                    speakers: torch.Tensor | None = None):
        """The flow decoder's half of :meth:`forward`: mels ``[B, n_mels, F]`` to latents
        ``z`` ``[B, n_mels, F']``, ``logdet`` ``[B]`` and lengths ``[B]``, with ``F'`` and the
        lengths trimmed to a multiple of ``n_sqz``."""
        mels, mel_lengths = self._trim(mels, mel_lengths)
        z_mask = length_mask(mel_lengths, mels.size(2), mels.dtype)
        z, logdet = self.decoder(mels, z_mask, self.speaker_embedding(speakers))
        return z, logdet, mel_lengths

    def forward(self, tokens: torch.Tensor, token_lengths: torch.Tensor, mels: torch.Tensor,
                mel_lengths: torch.Tensor, speakers: torch.Tensor | None = None,
                attn: torch.Tensor | None = None,
                latents: tuple[torch.Tensor, torch.Tensor] | None = None) -> GlowTTSOutput:
        """Mel to latent, then the most likely alignment by MAS (or the given ``attn``
        ``[B, T_text, F]``), then the prior statistics expanded along it.

        ``latents``: this batch's ``(z, logdet)`` from :meth:`mel_latents`, computed earlier
        (a frozen decoder's output can be kept); the decoder is then skipped and ``mels``
        only gives the padded shape."""
        g = self.speaker_embedding(speakers)
        mean, log_scale, log_durations, text_mask = self.encoder(tokens, token_lengths, g)
        if latents is None:
            z, logdet, mel_lengths = self.mel_latents(mels, mel_lengths, speakers)
        else:
            (z, logdet), (_, mel_lengths) = latents, self._trim(mels, mel_lengths)
        z_mask = length_mask(mel_lengths, z.size(2), z.dtype)
        if attn is None:
            with torch.no_grad():
                pair_mask = text_mask.transpose(1, 2) * z_mask  # [B, T_text, F]
                logp = self.prior_log_likelihood(z.float(), mean.float(), log_scale.float())
                attn = maximum_path(logp, pair_mask).detach()
        attn = attn.to(mean.dtype)
        z_mean = torch.matmul(mean, attn)           # [B, C, T] x [B, T, F] -> [B, C, F]
        z_log_scale = torch.matmul(log_scale, attn)
        log_durations_target = torch.log(1e-8 + attn.sum(-1)).unsqueeze(1) * text_mask
        return GlowTTSOutput(z, z_mean, z_log_scale, logdet, z_mask, attn, log_durations,
                             log_durations_target, text_mask, mel_lengths)

    @staticmethod
    def nll_per_dim(out: GlowTTSOutput, reduce: bool = True) -> torch.Tensor:
        """Negative log-likelihood of the mel in nats per dimension (per mel bin and frame),
        the authors' ``mle_loss``: ``-[sum log N(z; mu, sigma) + logdet] / (C * F_valid)``.
        ``reduce=False`` gives one value per utterance ``[B]``."""
        z, m, logs, mask = out.z.float(), out.z_mean.float(), out.z_log_scale.float(), out.z_mask
        per_item = (torch.sum(logs * mask, (1, 2))
                    + 0.5 * torch.sum(torch.exp(-2 * logs) * (z - m) ** 2 * mask, (1, 2))
                    - out.logdet.float())
        dims = mask.sum((1, 2)) * z.size(1)
        if reduce:
            return per_item.sum() / dims.sum() + 0.5 * LOG_2PI
        return per_item / dims + 0.5 * LOG_2PI

    @staticmethod
    def duration_loss(out: GlowTTSOutput, token_lengths: torch.Tensor) -> torch.Tensor:
        """Mean squared error of log-durations per token (the authors' ``duration_loss``)."""
        diff = (out.log_durations.float() - out.log_durations_target.float()) ** 2
        return diff.sum() / token_lengths.sum()

    @torch.no_grad()
    def score(self, tokens, token_lengths, mels, mel_lengths, speakers=None) -> torch.Tensor:
        """NLL per dimension ``[B]`` of each (text, mel) pair under its best alignment."""
        return self.nll_per_dim(self(tokens, token_lengths, mels, mel_lengths, speakers), reduce=False)

    @torch.no_grad()
    def align(self, tokens, token_lengths, mels, mel_lengths, speakers=None) -> torch.Tensor:
        """Forced alignment: frames per token ``[B, T_text]`` (long) from MAS. Durations sum
        to the mel length truncated to a multiple of ``n_sqz``."""
        out = self(tokens, token_lengths, mels, mel_lengths, speakers)
        return out.attn.sum(-1).round().long()

    # --- synthesis -------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, tokens: torch.Tensor, token_lengths: torch.Tensor, *,
              speakers: torch.Tensor | None = None, noise_scale: float = 0.667,
              length_scale: float = 1.0, generator: Generators = None,
              max_frames: int | None = None) -> MelSynthesis:
        """Parallel synthesis of a batch (:meth:`TextToMel.infer`).

        Args:
            noise_scale: temperature of the prior sample (the authors' code defaults to
                0.667; the paper's listening tests used 0.333).
            length_scale: multiplies predicted durations: > 1 speaks slower.
            generator: torch generator for the prior noise (reproducible synthesis), or one
                per utterance (then each one's noise is independent of the batch).
            max_frames: refuse to make more than this many frames (guards memory).

        Returns:
            ``(mels [B, n_mels, F], mel_lengths [B], durations [B, T_text])``.
        """
        g = self.speaker_embedding(speakers)
        mean, log_scale, log_durations, text_mask = self.encoder(tokens, token_lengths, g)
        durations = self.duration_rounding.frames(log_durations, text_mask, length_scale, torch).squeeze(1)
        mel_lengths = torch.clamp_min(durations.sum(1), 1).long()
        mel_lengths = torch.clamp_min((mel_lengths // self.n_sqz) * self.n_sqz, self.n_sqz)
        n_frames = int(mel_lengths.max())
        if max_frames is not None and n_frames > max_frames:
            raise TextError(f"synthesis would produce {n_frames} frames, over the limit of "
                             f"{max_frames}: split the text into shorter sentences")
        z_mask = length_mask(mel_lengths, n_frames, mean.dtype)
        pair_mask = text_mask.transpose(1, 2) * z_mask
        attn = path_from_durations(durations, pair_mask)  # [B, T_text, F]
        z_mean = torch.matmul(mean, attn)
        z_log_scale = torch.matmul(log_scale, attn)
        rows = per_utterance(generator, tokens.size(0))
        if rows is None:
            noise = randn(*z_mean.shape, generator=generator, device=z_mean.device, dtype=z_mean.dtype)
        else:
            noise = randn_padded(z_mean.shape, mel_lengths, rows, z_mean.device, z_mean.dtype)
        z = (z_mean + torch.exp(z_log_scale) * noise * noise_scale) * z_mask
        mels = self.decoder.inverse(z, z_mask, g) * z_mask
        return MelSynthesis(mels, mel_lengths, attn.sum(-1).long())
