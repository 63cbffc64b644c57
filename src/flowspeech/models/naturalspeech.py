"""NaturalSpeech: end-to-end text to waveform with a VAE whose prior is made strong and
whose posterior is made simple (Tan et al., 2022, arXiv:2205.04421).

The model (paper Fig. 2), with its four ideas and their config switches:

* **Posterior encoder** ``q(z|x)``: a 16-layer non-causal WaveNet over the linear
  spectrogram (as VITS), giving a 192-dimensional latent ``z`` per frame.
* **Phoneme encoder** (:class:`~flowspeech.models.phoneme_encoder.PhonemeEncoder`): a
  6-block relative-position transformer; with ``phoneme_pretraining`` it also reads
  sup-phonemes and starts from a mixed-phoneme masked-LM checkpoint (Sec. 3.1).
* **Differentiable durator** (:mod:`flowspeech.models.durator`, ``differentiable_durator``):
  predicted durations, learnable upsampling, frame-level prior ``p(z'|y)`` (Sec. 3.2).
* **Bidirectional prior/posterior** (``bidirectional_flow``): a volume-preserving flow
  ``f`` (4 shift-only couplings, each with a 4-layer WaveNet) between the prior space
  ``z'`` and the posterior space ``z``, trained backward (``z ~ q`` through ``f^-1``, KL to
  the prior) and, with the switch on, forward (``z' ~ p`` through ``f``, KL to the
  posterior, aligned by soft-DTW because the predicted and true lengths differ) (Sec. 3.3).
* **Memory-based VAE** (``memory_vae``): ``z`` queries a learned memory bank by multi-head
  attention and the waveform decoder reads the answer, not ``z`` (Sec. 3.4).
* **Waveform decoder**: a HiFi-GAN generator trained with least-squares adversarial,
  feature-matching and mel L1 losses against multi-period and multi-scale discriminators
  (:mod:`flowspeech.models.hifigan`).
* **End-to-end loss** (``end_to_end_loss``): a waveform generated from text alone (the
  prior path with predicted durations) is judged by the discriminators too, so training
  sees the inference path (Sec. 3.5).

Naming of the flow's directions: this module's ``self.flow`` maps posterior to prior space
(``flow(z) = f^-1(z) = z'``), and ``self.flow.inverse`` is the paper's ``f``.

Ground-truth durations for the backward path come from Monotonic Alignment Search inside the
model or are given (``flowspeech align`` output). With ``alignment_prior: token`` (the default)
MAS is VITS's: a 1x1 projection of ``H`` gives each phoneme a Gaussian over ``z'``, MAS finds
the most likely monotonic path of ``z'`` through them, and the backward KL is taken against
those Gaussians expanded along the path. MAS is then the hard E-step of the loss that shapes
``z'`` and trains the encoder. The learnable upsampler's frame-level prior, the one sampled at
synthesis, learns from ``z'`` (held fixed) with the path's durations through a KL of its own
(:meth:`NaturalSpeech.frame_prior_kl`). With phoneme pre-training, the 1x1 projection reads
a second text encoder, trained from scratch on the phonemes alone, instead of the pre-trained
``H`` (``alignment_encoder``): VITS's own arrangement, which aligns as early as VITS does,
where the pre-trained ``H`` held MAS back. ``alignment_prior: head`` restores the earlier design
(a separate head on detached ``H`` fitted to detached ``z'``; the KL against the frame prior),
whose alignment collapses (docs/naturalspeech.md, "Durations").

Shapes: tokens ``[B, T_text]``; linear spectrograms ``[B, n_fft/2+1, F]``; latents
``[B, 192, F]``; waveforms ``[B, 1, S]``; masks ``[B, 1, T]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flowspeech.align import maximum_path, path_from_durations
from flowspeech.align.likelihood import LOG_2PI, pairwise_gaussian_log_likelihood
from flowspeech.align.soft_dtw import soft_dtw
from flowspeech.config import mel_config
from flowspeech.errors import ConfigError, TextError
from flowspeech.flows import (
    AffineCoupling,
    ChannelFlip,
    FlowSequence,
    WaveNet,
    WaveNetCouplingNet,
    call_in_own_dtype,
)
from flowspeech.models.durator import Durator, predicted_frame_lengths
from flowspeech.models.hifigan import HiFiGANGenerator
from flowspeech.models.phoneme_encoder import PhonemeEncoder
from flowspeech.models.roles import TextToWaveform, WaveformStream, WaveformSynthesis
from flowspeech.text import TextFrontend
from flowspeech.text.sup_phonemes import SupPhonemeTokenizer
from flowspeech.utils.chunks import chunk_spans
from flowspeech.utils.durations import check_duration_scale
from flowspeech.utils.masks import length_mask
from flowspeech.utils.noise import Generators, per_utterance, randn, randn_padded


class PosteriorEncoder(nn.Module):
    """``q(z|x)``: 1x1 conv, non-causal WaveNet, 1x1 conv to mean and log-scale; ``z`` is one
    sample (VITS ``PosteriorEncoder``; NaturalSpeech Sec. 4.1: 16 layers, kernel 5,
    dilation 1). Input ``[B, n_freq, F]``; outputs ``z, mean, log_scale [B, C, F]``."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int,
                 kernel_size: int = 5, dilation_rate: int = 1, n_layers: int = 16):
        super().__init__()
        self.out_channels = out_channels
        self.pre = nn.Conv1d(in_channels, hidden_channels, 1)
        self.wn = WaveNet(hidden_channels, kernel_size, dilation_rate, n_layers)
        self.proj = nn.Conv1d(hidden_channels, 2 * out_channels, 1)

    def forward(self, spec: torch.Tensor, mask: torch.Tensor, noise_scale: float = 1.0):
        x = self.wn(self.pre(spec) * mask, mask)
        stats = self.proj(x) * mask
        mean, log_scale = stats.split(self.out_channels, dim=1)
        z = (mean + torch.randn_like(mean) * torch.exp(log_scale) * noise_scale) * mask
        return z, mean, log_scale


class PriorPosteriorFlow(nn.Module):
    """The flow between posterior and prior spaces: ``n_flows`` x [shift-only affine
    coupling with a WaveNet, channel flip]. NaturalSpeech drops the coupling's scale for
    stability (Sec. 4.1), so the flow preserves volume (log-determinant 0).
    ``forward(z)`` = ``f^-1`` (posterior to prior), ``inverse(z')`` = ``f``."""

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int = 5,
                 dilation_rate: int = 1, n_layers: int = 4, n_flows: int = 4):
        super().__init__()
        layers = []
        half = channels // 2
        for _ in range(n_flows):
            net = WaveNetCouplingNet(half, channels - half, hidden_channels, kernel_size,
                                     dilation_rate, n_layers, weight_norm_start=False)
            layers += [AffineCoupling(net, mean_only=True), ChannelFlip()]
        self.flows = FlowSequence(layers)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.flows(z, mask)[0]

    def inverse(self, z_p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.flows.inverse(z_p, mask)


class MemoryBank(nn.Module):
    """Memory-based VAE (Sec. 3.4): each latent frame is a query into a learned bank
    ``M [L, h]`` that serves as keys and values; multi-head attention
    ``softmax(z W_Q (M W_K)^T / sqrt(d)) M W_V W_O`` returns what the decoder reads.
    The paper uses ``L = 1000`` and ``h = 192``. Input and output ``[B, h, F]``.

    Starting the bank. From a random bank the attention is uniform and stays so: every frame
    gets the same answer, and the decoder never learns (docs/naturalspeech.md, training
    report). :meth:`init_from_latents` starts it from data instead: the bank becomes k-means
    centres of posterior latents (as heatz123/naturalspeech attaches its bank after a warm-up
    without it) and the projections start as the identity, with the query scaled so that the
    attention answer best reproduces its query. The decoder, trained until then on ``z``
    itself, is handed a close copy of ``z`` on the first step with the memory.

    ``in_use`` (a buffer, so checkpoints keep it) says whether the decoder reads the memory;
    the training recipe holds it off until the bank is started from data.
    """

    #: Query scales tried by :meth:`init_from_latents` (the attention's inverse temperature).
    QUERY_SCALES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)

    def __init__(self, channels: int, size: int = 1000, n_heads: int = 2):
        super().__init__()
        if channels % n_heads:
            raise ConfigError(f"memory: channels ({channels}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_channels = n_heads, channels // n_heads
        self.bank = nn.Parameter(torch.randn(size, channels) * channels ** -0.5)
        self.w_q = nn.Linear(channels, channels)
        self.w_k = nn.Linear(channels, channels)
        self.w_v = nn.Linear(channels, channels)
        self.w_o = nn.Linear(channels, channels)
        self.register_buffer("in_use", torch.tensor(True))

    def state_defaults(self) -> dict[str, torch.Tensor]:
        """Entries that checkpoints written before they existed lack: such a model read its
        memory from the first step."""
        return {"in_use": torch.tensor(True)}

    def attention(self, z: torch.Tensor) -> torch.Tensor:
        """Attention weights ``[B, H, F, L]`` of the frames of ``z [B, h, F]`` over the bank."""
        b, _, n = z.shape
        h, d = self.n_heads, self.head_channels
        q = self.w_q(z.transpose(1, 2)).view(b, n, h, d).transpose(1, 2)       # [B, H, F, d]
        k = self.w_k(self.bank).view(-1, h, d).transpose(0, 1)                   # [H, L, d]
        return torch.softmax(torch.matmul(q, k.transpose(1, 2)) / math.sqrt(d), dim=-1)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self._read(self.attention(z))
        return out if mask is None else out * mask

    def _read(self, attn: torch.Tensor) -> torch.Tensor:
        """The answer ``[B, h, F]`` to attention weights ``[B, H, F, L]``."""
        b, h, n, _ = attn.shape
        v = self.w_v(self.bank).view(-1, h, self.head_channels).transpose(0, 1)  # [H, L, d]
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, -1)
        return self.w_o(out).transpose(1, 2)

    @torch.no_grad()
    def stats(self, z: torch.Tensor) -> dict[str, float]:
        """What the memory makes of the frames of ``z [B, h, F]`` (unpadded):
        ``relative_error`` of the answer against its query over ``z``'s variance across
        frames (1.0: no better than the mean), the attention's ``entropy`` in nats (uniform:
        ``ln L``), its ``largest_weight`` and the answer's ``answer_variance`` across frames,
        each averaged."""
        attn = self.attention(z)
        answer = self._read(attn)
        return {
            "relative_error": float(((answer - z) ** 2).sum() / ((z - z.mean(2, keepdim=True)) ** 2).sum()),
            "entropy": float(-(attn * torch.log(attn.clamp_min(1e-12))).sum(-1).mean()),
            "largest_weight": float(attn.max(-1).values.mean()),
            "answer_variance": float(answer.var(2).mean()),
        }

    @torch.no_grad()
    def init_from_latents(self, latents: torch.Tensor, seed: int = 0,
                          max_iter: int = 100) -> dict[str, float]:
        """Start the bank from posterior latent frames ``[N, h]`` (see the class docstring)
        and set ``in_use``. Needs at least as many frames as bank entries. Returns what the
        start achieved on a subset of the frames (:meth:`stats`) and the chosen
        ``query_scale``."""
        from sklearn.cluster import KMeans  # lazy: a second to import; training only

        size, channels = self.bank.shape
        x = latents.detach().float().cpu()
        if x.dim() != 2 or x.size(1) != channels:
            raise ValueError(f"latents must be [N, {channels}], got {tuple(x.shape)}")
        if x.size(0) < size:
            raise ValueError(f"{x.size(0)} latent frames cannot start a bank of {size} entries")
        kmeans = KMeans(size, n_init=1, max_iter=max_iter, random_state=seed).fit(x.numpy())
        self.bank.copy_(torch.from_numpy(kmeans.cluster_centers_).to(self.bank))
        eye = torch.eye(channels, dtype=self.bank.dtype, device=self.bank.device)
        for linear in (self.w_q, self.w_k, self.w_v, self.w_o):
            linear.weight.copy_(eye)
            linear.bias.zero_()
        # The query scale that best reproduces the queries, on a fixed subset of the frames.
        probe = x[torch.randperm(x.size(0), generator=torch.Generator().manual_seed(seed))[:8192]]
        probe = probe.to(self.bank).t().unsqueeze(0)                             # [1, h, N]
        best = None
        for scale in self.QUERY_SCALES:
            self.w_q.weight.copy_(eye * scale)
            stats = self.stats(probe)
            if best is None or stats["relative_error"] < best[0]["relative_error"]:
                best = (stats, scale)
        stats, scale = best
        self.w_q.weight.copy_(eye * scale)
        self.in_use.fill_(True)
        return {**stats, "query_scale": scale}


@dataclass
class NaturalSpeechOutput:
    """What one training forward pass gives the losses."""

    wav: torch.Tensor               # [B, 1, S] posterior path, on the segment
    segment_starts: torch.Tensor    # [B] first frame of each segment
    z: torch.Tensor                 # [B, C, F] posterior sample
    z_p: torch.Tensor               # [B, C, F] f^-1(z)
    post_mean: torch.Tensor         # [B, C, F] q(z|x)
    post_log_scale: torch.Tensor
    prior_mean: torch.Tensor        # [B, C, F] p(z'|y) with ground-truth durations
    prior_log_scale: torch.Tensor
    spec_mask: torch.Tensor         # [B, 1, F]
    text_mask: torch.Tensor         # [B, 1, T_text]
    log_durations: torch.Tensor     # [B, T_text] predicted
    durations: torch.Tensor         # [B, T_text] ground truth (frames)
    align_nll: torch.Tensor         # scalar: the alignment head's NLL per dimension (0 if unused)
    kl_forward: torch.Tensor | None  # scalar or None (switch off / warm-up)
    wav_e2e: torch.Tensor | None    # [B, 1, S] prior path from text alone, or None
    predicted_lengths: torch.Tensor | None  # [B] frames of the prior path
    # alignment_prior "token": the token Gaussians expanded along the alignment path [B, C, F],
    # the prior of the backward KL; None with "head" (the backward KL is the frame prior's).
    token_mean: torch.Tensor | None = None
    token_log_scale: torch.Tensor | None = None


def random_segments(x: torch.Tensor, lengths: torch.Tensor, size: int,
                    starts: torch.Tensor | None = None):
    """Cut ``size`` frames from every item of ``x`` ``[B, C, T]`` at a random valid start
    (``[0, max(length - size, 0)]``); items shorter than ``size`` are zero-padded.
    Returns ``(segments [B, C, size], starts [B])``."""
    b = x.size(0)
    if starts is None:
        room = torch.clamp_min(lengths - size, 0) + 1
        starts = (torch.rand(b, device=x.device) * room).long()
    if x.size(2) < size:
        x = nn.functional.pad(x, (0, size - x.size(2)))
    index = starts.view(-1, 1, 1) + torch.arange(size, device=x.device).view(1, 1, -1)
    index = index.clamp_max(x.size(2) - 1).expand(-1, x.size(1), -1)
    segments = torch.gather(x, 2, index)
    valid = (torch.arange(size, device=x.device).view(1, 1, -1)
             < (lengths - starts).view(-1, 1, 1)).to(x.dtype)
    return segments * valid, starts


def alignment_stats(durations: torch.Tensor, text_mask: torch.Tensor) -> dict[str, float]:
    """How sane an alignment's durations ``[B, T_text]`` (frames, whole numbers) are, over
    the tokens of ``text_mask [B, 1, T_text]``:

    * ``one_frame``: the share of tokens given exactly one frame (near 1: collapsed, every
      token but a few squeezed to one frame);
    * ``diagonal_deviation``: the mean over frames of ``|(i + 1/2) / T - (t + 1/2) / F|``, with
      ``i`` the token frame ``t`` belongs to, ``T`` tokens and ``F`` frames, averaged over
      utterances: 0 for durations spread evenly, near 1/2 when the last token holds nearly
      every frame; real speech, whose rate varies, lies a little above 0.
    """
    mask = text_mask.squeeze(1) > 0
    one_frame = float(((durations == 1) & mask).sum() / mask.sum())
    deviations = []
    for d, m in zip(durations, mask):
        d = d[m].round().long().clamp_min(0)
        n_tok, n_frames = d.numel(), int(d.sum())
        if n_frames == 0:
            continue
        token_of_frame = torch.repeat_interleave(torch.arange(n_tok), d.cpu())
        frame = torch.arange(n_frames)
        deviations.append(float(((token_of_frame + 0.5) / n_tok - (frame + 0.5) / n_frames).abs().mean()))
    return {"one_frame": one_frame,
            "diagonal_deviation": sum(deviations) / max(len(deviations), 1)}


class NaturalSpeech(TextToWaveform):
    """NaturalSpeech (Tan et al., 2022). Defaults follow the paper's LJSpeech model.

    Args:
        n_vocab: phoneme ids.
        spec_channels: linear-spectrogram bins (``n_fft / 2 + 1`` = 513).
        hop_length: samples per frame; must equal the decoder's total upsampling (256).
        latent_channels: channels of ``z`` and ``z'`` (192).
        phoneme_encoder: kwargs of :class:`PhonemeEncoder` (6 blocks, 192 channels, 2 heads,
            filter 768, kernel 3, dropout 0.1).
        n_sup_vocab: sup-phoneme ids (0: none; set from the pre-training checkpoint).
        posterior_encoder: kwargs of :class:`PosteriorEncoder` (192 hidden, kernel 5,
            dilation 1, 16 layers).
        flow: kwargs of :class:`PriorPosteriorFlow` (4 couplings of 4 WaveNet layers, 192
            hidden, kernel 5).
        durator: kwargs of :class:`~flowspeech.models.durator.Durator` (``predictor``,
            ``upsampling``).
        memory: kwargs of :class:`MemoryBank` (1000 entries, 2 heads).
        decoder: kwargs of :class:`~flowspeech.models.hifigan.HiFiGANGenerator`.
        segment_frames: frames of latent decoded per item in training (32 = 8192 samples).
        soft_dtw_gamma, warp_penalty: soft-DTW of the forward loss (0.01 and 0.07, per
            latent dimension).
        phoneme_pretraining, differentiable_durator, bidirectional_flow, memory_vae,
            end_to_end_loss: the ablation switches (all on in the paper).
        alignment_prior: what MAS aligns ``z'`` with and what the backward KL is taken
            against (the paper does not say). ``"token"``: the token Gaussians of ``align_proj``
            on ``H`` (gradients reach the encoder), expanded along the MAS path, as VITS; the
            frame-level prior learns through :meth:`frame_prior_kl`. ``"head"``: the earlier
            design, ``align_proj`` on detached ``H`` trained by its own NLL on detached ``z'``
            and the backward KL against the frame-level prior; its alignment collapses.
        alignment_encoder: with ``phoneme_pretraining``, ``align_proj`` reads a text encoder
            of its own (``align_encoder``: a :class:`PhonemeEncoder` of the same size, trained
            from scratch on the phonemes alone, as VITS's text encoder) instead of the
            pre-trained ``H``; the durator and the frame-level prior still read ``H``. Training
            only. A pre-trained ``H`` is contextual, and the sup-phoneme added at every phoneme
            of its span makes neighbours alike, so MAS on it formed the alignment 50-100 steps
            later than VITS (docs/naturalspeech.md, "Phoneme pre-training and the alignment").
            Off without pre-training (and the recipe turns it off when no pre-trained encoder
            is loaded): a fresh encoder already is VITS's.
    """

    ALIGNMENT_PRIORS = ("token", "head")

    n_speakers = 1  # single-speaker, as the paper's LJSpeech model

    def __init__(self, n_vocab: int, spec_channels: int = 513, hop_length: int = 256,
                 latent_channels: int = 192, phoneme_encoder: dict | None = None,
                 n_sup_vocab: int = 0, posterior_encoder: dict | None = None,
                 flow: dict | None = None, durator: dict | None = None, memory: dict | None = None,
                 decoder: dict | None = None, segment_frames: int = 32,
                 soft_dtw_gamma: float = 0.01, warp_penalty: float = 0.07,
                 phoneme_pretraining: bool = True, differentiable_durator: bool = True,
                 bidirectional_flow: bool = True, memory_vae: bool = True,
                 end_to_end_loss: bool = True, alignment_prior: str = "token",
                 alignment_encoder: bool = False):
        super().__init__()
        if alignment_prior not in self.ALIGNMENT_PRIORS:
            raise ConfigError(f"alignment_prior must be one of {self.ALIGNMENT_PRIORS}, "
                              f"got {alignment_prior!r}")
        self.alignment_prior = alignment_prior
        self.hop_length, self.latent_channels = hop_length, latent_channels
        self.segment_frames = segment_frames
        self.soft_dtw_gamma, self.warp_penalty = soft_dtw_gamma, warp_penalty
        self.phoneme_pretraining = phoneme_pretraining
        # Maps phoneme ids to sup-phoneme ids at synthesis (pre-training on); from the
        # checkpoint (attach_inference_extras) or the training recipe. Not a weight.
        self.sup_tokenizer = None
        # Predicted durations are multiplied by this at synthesis (1: none). The durator is
        # trained by squared error on log-durations, so exp of its prediction estimates a
        # geometric mean, below the arithmetic one by exp(-var / 2) of its residual: a scale
        # fitted on held-out alignments (benchmarks/naturalspeech_duration_scale.py) undoes
        # that. From the checkpoint's inference entry ("duration_scale"). Not a weight.
        self.duration_scale = 1.0
        self.bidirectional_flow, self.memory_vae = bidirectional_flow, memory_vae
        self.end_to_end_loss = end_to_end_loss
        enc = dict(phoneme_encoder or {})
        self.encoder = PhonemeEncoder(n_vocab, n_sup_vocab if phoneme_pretraining else 0, **enc)
        channels = self.encoder_channels = enc.get("channels", 192)
        post = {"hidden_channels": 192, **(posterior_encoder or {})}
        self.posterior_encoder = PosteriorEncoder(spec_channels, latent_channels, **post)
        self.flow = PriorPosteriorFlow(latent_channels, **{"hidden_channels": 192, **(flow or {})})
        self.durator = Durator(channels, latent_channels, differentiable_durator, **(durator or {}))
        # Token-level Gaussians over z' for Monotonic Alignment Search (VITS's ``proj``); with
        # alignment_prior "token" also the backward KL's prior. Training only.
        self.align_proj = nn.Conv1d(channels, 2 * latent_channels, 1)
        # With a pre-trained phoneme encoder, the token Gaussians come from a text encoder of
        # their own, trained from scratch on the phonemes alone (VITS's): see the class doc.
        # Training only.
        self.align_encoder = (PhonemeEncoder(n_vocab, 0, **enc)
                              if alignment_encoder and phoneme_pretraining else None)
        self.memory = MemoryBank(latent_channels, **(memory or {})) if memory_vae else None
        self.decoder = HiFiGANGenerator(latent_channels, **(decoder or {}))
        if self.decoder.hop_length != hop_length:
            raise ConfigError(
                f"the decoder upsamples by {self.decoder.hop_length} (product of upsample_rates) "
                f"but the audio hop length is {hop_length}; they must be equal")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NaturalSpeech:
        mels = mel_config(config)
        args = dict(config.get("model_args", {}))
        args.setdefault("n_vocab", TextFrontend(**config.get("text", {})).n_vocab)
        args.setdefault("spec_channels", mels.n_fft // 2 + 1)
        args.setdefault("hop_length", mels.hop_length)
        return cls(**args)

    # --- pieces ----------------------------------------------------------------------------
    def _encode_text(self, tokens, token_lengths, sup_tokens):
        if not self.phoneme_pretraining:
            sup_tokens = None
        return self.encoder(tokens, token_lengths, sup_tokens)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.memory is not None and bool(self.memory.in_use):
            z = self.memory(z)
        return call_in_own_dtype(self.decoder, z)  # see set_waveform_dtype

    def attach_inference_extras(self, extras: dict[str, Any]) -> None:
        """The sup-phoneme tokenizer of a model trained with phoneme pre-training, and the
        duration scale a checkpoint was calibrated with (``duration_scale``)."""
        tokenizer_json = extras.get("sup_phoneme_tokenizer")
        if tokenizer_json and self.phoneme_pretraining:
            self.sup_tokenizer = SupPhonemeTokenizer.from_json(tokenizer_json)
        self.duration_scale = check_duration_scale(extras.get("duration_scale", 1.0))

    def set_waveform_dtype(self, dtype: torch.dtype) -> NaturalSpeech:
        """Run the waveform decoder, nine tenths of the synthesis time, in ``dtype`` (e.g.
        ``torch.bfloat16`` on CPUs with AVX512-BF16 or AMX: about 1.9x faster synthesis for the
        base model); everything before it stays in the model's dtype. For inference: the
        decoder's weights are rounded in place. Returns ``self``."""
        if not dtype.is_floating_point:
            raise ConfigError(f"set_waveform_dtype: {dtype} is not a floating-point dtype")
        self.decoder.to(dtype)
        return self

    def token_gaussians(self, h: torch.Tensor, text_mask: torch.Tensor):
        """``(mean, log_scale) [B, C, T_text]``: one Gaussian over ``z'`` per token, from
        ``align_proj`` on ``H`` (on detached ``H`` with ``alignment_prior: head``)."""
        if self.alignment_prior == "head":
            h = h.detach()
        mean, log_scale = (self.align_proj(h) * text_mask).split(self.latent_channels, 1)
        return mean, log_scale

    @staticmethod
    @torch.no_grad()
    def _mas_durations(mean, log_scale, text_mask, z_p, spec_mask):
        """The MAS path ``[B, T_text, F]`` (0/1) of ``z'`` through the token Gaussians
        ``(mean, log_scale) [B, C, T_text]``."""
        logp = pairwise_gaussian_log_likelihood(z_p.float(), mean.float(), log_scale.float())
        attn = maximum_path(logp, text_mask.transpose(1, 2) * spec_mask)
        return attn

    def _align_nll(self, h, text_mask, z_p, spec_mask, attn):
        """NLL per dimension of ``z'`` (detached) under the aligned token Gaussians: trains
        the alignment head only."""
        mean, log_scale = self.align_proj(h.detach()).split(self.latent_channels, 1)
        mean, log_scale = torch.matmul(mean, attn), torch.matmul(log_scale, attn)
        nll = log_scale + 0.5 * torch.exp(-2 * log_scale) * (z_p.detach() - mean) ** 2 + 0.5 * LOG_2PI
        return (nll * spec_mask).sum() / (spec_mask.sum() * self.latent_channels)

    def forward_kl(self, prior_mean, prior_log_scale, prior_mask, post_mean, post_log_scale,
                   spec_mask, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward loss ``KL[p(z'|y) || q(f(z')|x)]`` (eq. 2) on sequences of different
        lengths, aligned by soft-DTW (Sec. 3.3).

        A prior sample ``z'`` (predicted length ``N``) goes through ``f``; the cost of pairing
        prior frame ``i`` with posterior frame ``j`` is the one-sample KL estimate
        ``log p(z'_i|y) - log q(f(z')_i | x_j)`` per latent dimension (``f`` preserves
        volume). Soft-DTW with ``gamma`` and the warp penalty sums it along a soft
        alignment; the result is scaled to nats per frame like the backward KL.

        Returns ``(loss, f(z') [B, C, N])``.
        """

        if noise is None:
            noise = torch.randn_like(prior_mean)
        z_prior = (prior_mean + torch.exp(prior_log_scale) * noise) * prior_mask
        z_post_space = self.flow.inverse(z_prior, prior_mask)
        c = self.latent_channels
        log_p = -(prior_log_scale + 0.5 * LOG_2PI + 0.5 * noise ** 2)
        log_p = (log_p * prior_mask).sum(1)                                              # [B, N]
        log_q = pairwise_gaussian_log_likelihood(z_post_space.float(), post_mean.float(),
                                                 post_log_scale.float())                # [B, M, N]
        cost = (log_p.float().unsqueeze(-1) - log_q.transpose(1, 2)) / c                # [B, N, M]
        n_lengths = prior_mask.sum((1, 2)).long()
        m_lengths = spec_mask.sum((1, 2)).long()
        path_cost = soft_dtw(cost, n_lengths, m_lengths, gamma=self.soft_dtw_gamma,
                             warp_penalty=self.warp_penalty)
        loss = (path_cost * c / m_lengths.to(path_cost.dtype)).mean()
        return loss, z_post_space

    # --- training --------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, token_lengths: torch.Tensor, specs: torch.Tensor,
                spec_lengths: torch.Tensor, sup_tokens: torch.Tensor | None = None,
                durations: torch.Tensor | None = None, use_forward_loss: bool = True,
                use_e2e: bool = True) -> NaturalSpeechOutput:
        """One training pass.

        Args:
            tokens, token_lengths: phoneme ids ``[B, T_text]`` and lengths.
            specs, spec_lengths: linear spectrograms ``[B, n_freq, F]`` and frame counts.
            sup_tokens: sup-phoneme id of every phoneme ``[B, T_text]`` (pre-training on).
            durations: ground-truth frames per phoneme ``[B, T_text]``; None runs MAS.
            use_forward_loss, use_e2e: the training phase (the warm-up turns both off); the
                config switches ``bidirectional_flow`` and ``end_to_end_loss`` also apply.
        """
        h, text_mask = self._encode_text(tokens, token_lengths, sup_tokens)
        spec_mask = length_mask(spec_lengths, specs.size(2), specs.dtype)
        z, post_mean, post_log_scale = self.posterior_encoder(specs, spec_mask)
        z_p = self.flow(z, spec_mask)
        token_mean = token_log_scale = None
        align_nll = z.new_zeros(())
        if durations is None or self.alignment_prior == "token":
            h_align = h
            if self.align_encoder is not None:
                h_align, _ = self.align_encoder(tokens, token_lengths)
            mean, log_scale = self.token_gaussians(h_align, text_mask)  # once: MAS and the KL's prior
        if durations is None:
            attn = self._mas_durations(mean.detach(), log_scale.detach(), text_mask, z_p, spec_mask)
            if self.alignment_prior == "head":
                align_nll = self._align_nll(h_align, text_mask, z_p, spec_mask, attn)
            durations = attn.sum(-1)
        else:
            if durations.shape != tokens.shape:
                raise ValueError(f"durations must be [B, T_text] = {tuple(tokens.shape)}, "
                                 f"got {tuple(durations.shape)}")
            attn = None
        durations = durations.to(h.dtype) * text_mask.squeeze(1)
        if self.alignment_prior == "token":
            if attn is None:
                attn = path_from_durations(durations, text_mask.transpose(1, 2) * spec_mask)
            token_mean = torch.matmul(mean, attn.to(mean.dtype))                   # [B, C, F]
            token_log_scale = torch.matmul(log_scale, attn.to(mean.dtype))
        prior_mean, prior_log_scale, _, _ = self.durator.frame_prior(
            h, durations, text_mask, spec_lengths, specs.size(2))
        log_durations = self.durator.predict_log_durations(h, text_mask)

        z_seg, starts = random_segments(z, spec_lengths, self.segment_frames)
        wav = self._decode(z_seg)

        kl_fwd = wav_e2e = pred_lengths = None
        want_fwd = use_forward_loss and self.bidirectional_flow
        want_e2e = use_e2e and self.end_to_end_loss
        if want_fwd or want_e2e:
            # The prior path with predicted durations: gradients reach the duration
            # predictor through the (differentiable) upsampling.
            pred_durations = torch.exp(log_durations) * text_mask.squeeze(1)
            pred_lengths = predicted_frame_lengths(pred_durations, text_mask)
            p_mean, p_log_scale, p_mask, _ = self.durator.frame_prior(h, pred_durations, text_mask,
                                                                     pred_lengths)
            noise = torch.randn_like(p_mean)
            if want_fwd:
                kl_fwd, z_from_prior = self.forward_kl(p_mean, p_log_scale, p_mask, post_mean,
                                                       post_log_scale, spec_mask, noise)
            else:
                z_from_prior = self.flow.inverse((p_mean + torch.exp(p_log_scale) * noise) * p_mask, p_mask)
            if want_e2e:
                e2e_seg, _ = random_segments(z_from_prior, pred_lengths, self.segment_frames)
                wav_e2e = self._decode(e2e_seg)
        return NaturalSpeechOutput(wav, starts, z, z_p, post_mean, post_log_scale, prior_mean,
                                   prior_log_scale, spec_mask, text_mask, log_durations, durations,
                                   align_nll, kl_fwd, wav_e2e, pred_lengths, token_mean,
                                   token_log_scale)

    @staticmethod
    def _kl(z_p, post_log_scale, mean, log_scale, mask) -> torch.Tensor:
        """One-sample ``KL[q || N(mean, exp(log_scale))]`` in nats per frame (summed over
        latent dimensions), as VITS's ``kl_loss``."""
        kl = log_scale - post_log_scale - 0.5 + 0.5 * (z_p - mean) ** 2 * torch.exp(-2 * log_scale)
        return (kl.float() * mask).sum() / mask.sum()

    @staticmethod
    def kl_backward(out: NaturalSpeechOutput) -> torch.Tensor:
        """The backward loss ``KL[q(z|x) || p(f^-1(z)|y)]`` (eq. 1), one-sample estimate,
        in nats per frame (summed over latent dimensions), as VITS's ``kl_loss``. The prior
        is the token Gaussians along the alignment path (``alignment_prior: token``) or the
        frame-level prior (``head``)."""
        if out.token_mean is not None:
            mean, log_scale = out.token_mean, out.token_log_scale
        else:
            mean, log_scale = out.prior_mean, out.prior_log_scale
        return NaturalSpeech._kl(out.z_p, out.post_log_scale, mean, log_scale, out.spec_mask)

    @staticmethod
    def frame_prior_kl(out: NaturalSpeechOutput) -> torch.Tensor:
        """How the frame-level prior (learnable upsampling with the path's durations), the
        one sampled at synthesis, learns with ``alignment_prior: token``: the backward KL
        against it with ``z'`` and ``q``'s scale held fixed, so that it fits ``z'`` without
        pulling ``z'`` away from the token Gaussians. Nats per frame; zero with ``head``,
        whose backward KL already is the frame prior's."""
        if out.token_mean is None:
            return out.z_p.new_zeros(())
        return NaturalSpeech._kl(out.z_p.detach(), out.post_log_scale.detach(), out.prior_mean,
                                 out.prior_log_scale, out.spec_mask)

    @staticmethod
    def duration_loss(out: NaturalSpeechOutput) -> torch.Tensor:
        """Mean squared error of log-durations per phoneme."""
        mask = out.text_mask.squeeze(1)
        target = torch.log(torch.clamp_min(out.durations, 1e-8)) * mask
        return (((out.log_durations - target) ** 2) * mask).sum() / mask.sum()

    def wav_segment(self, audio: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """The real waveform ``[B, 1, segment_frames * hop]`` under the decoded segments."""
        hop = self.hop_length
        seg, _ = random_segments(audio.unsqueeze(1), torch.full_like(starts, audio.size(1)),
                                 self.segment_frames * hop, starts * hop)
        return seg

    # --- synthesis -------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, tokens: torch.Tensor, token_lengths: torch.Tensor, *,
              speakers: torch.Tensor | None = None, noise_scale: float = 0.667,
              length_scale: float = 1.0, generator: Generators = None,
              max_frames: int | None = None) -> WaveformSynthesis:
        """Text to waveform, in parallel (:meth:`TextToWaveform.infer`): ``wav [B, S]``,
        ``wav_lengths [B]`` in samples, ``durations [B, T_text]`` in frames."""
        z, lengths, durations = self._latents(tokens, token_lengths, speakers, noise_scale,
                                              length_scale, generator, max_frames)
        n_frames = z.size(2)
        if bool((lengths == n_frames).all()):
            wav = self._decode(z)[:, 0]
        else:  # each at its own length: the decoder's biases would carry a batch's padding in
            wav = z.new_zeros(z.size(0), n_frames * self.hop_length)
            for i, n in enumerate(lengths.tolist()):
                wav[i, :n * self.hop_length] = self._decode(z[i:i + 1, :, :n])[0, 0]
        return WaveformSynthesis(wav, lengths * self.hop_length, durations)

    @torch.no_grad()
    def stream(self, tokens: torch.Tensor, token_lengths: torch.Tensor, *, chunk_frames: int = 32,
               max_chunk_frames: int | None = None, **kwargs) -> WaveformStream:
        """:meth:`TextToWaveform.stream`: the latent ``z`` of the whole utterance first (text
        encoder, durator, flow: a few percent of the time), then the decoder over windows of
        ``chunk_frames`` frames with its receptive field of context on each side, so that the
        pieces join to :meth:`infer`'s waveform to float rounding."""
        if tokens.size(0) != 1:
            raise ValueError(f"stream takes one utterance, got a batch of {tokens.size(0)}")
        z, lengths, durations = self._latents(tokens, token_lengths, **kwargs)
        n = int(lengths[0])
        spans = chunk_spans(n, chunk_frames, max_chunk_frames)
        return WaveformStream(durations, lengths * self.hop_length,
                              self._decode_windows(z[:, :, :n], spans))

    def _decode_windows(self, z: torch.Tensor, spans: list[tuple[int, int]]) -> Iterator[torch.Tensor]:
        n, hop = z.size(2), self.hop_length
        overlap = self.decoder.receptive_field_frames() + 1
        for start, end in spans:
            lo, hi = max(0, start - overlap), min(n, end + overlap)
            with torch.no_grad():
                wav = self._decode(z[:, :, lo:hi])[:, 0]
            yield wav[:, (start - lo) * hop:(end - lo) * hop]

    def _latents(self, tokens, token_lengths, speakers=None, noise_scale=0.667, length_scale=1.0,
                 generator=None, max_frames=None):
        """``z [B, C, F]`` (zero past each length), frame lengths ``[B]`` and durations."""
        if speakers is not None:
            raise ValueError("NaturalSpeech is a single-speaker model: pass no speakers")
        sup_tokens = None
        if self.sup_tokenizer is not None and self.phoneme_pretraining:
            sup_tokens = self.sup_tokenizer.sup_ids_padded(tokens.cpu(), token_lengths.cpu()).to(tokens.device)
        h, text_mask = self._encode_text(tokens, token_lengths, sup_tokens)
        durations = torch.exp(self.durator.predict_log_durations(h, text_mask)) * text_mask.squeeze(1)
        durations = durations * (self.duration_scale * length_scale)
        lengths = predicted_frame_lengths(durations, text_mask)
        n_frames = int(lengths.max())
        if max_frames is not None and n_frames > max_frames:
            raise TextError(f"synthesis would produce {n_frames} frames, over the limit of "
                             f"{max_frames}: split the text into shorter sentences")
        mean, log_scale, mask, _ = self.durator.frame_prior(h, durations, text_mask, lengths, n_frames)
        rows = per_utterance(generator, tokens.size(0))
        if rows is None:
            noise = randn(*mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        else:
            noise = randn_padded(mean.shape, lengths, rows, mean.device, mean.dtype)
        z_p = (mean + torch.exp(log_scale) * noise * noise_scale) * mask
        return self.flow.inverse(z_p, mask) * mask, lengths, durations

    @torch.no_grad()
    def reconstruct(self, specs: torch.Tensor, spec_lengths: torch.Tensor,
                    noise_scale: float = 1.0) -> torch.Tensor:
        """Copy-synthesis through the posterior path: linear spectrograms ``[B, n_freq, F]``
        to ``z ~ q(z|x)`` (``noise_scale`` 0: its mean) to the decoder (through the memory
        when it is in use). What the decoder can make of true latents, before any question of
        the prior. Returns ``wav [B, F * hop]``, zero past each length."""
        mask = length_mask(spec_lengths, specs.size(2), specs.dtype)
        z, _, _ = self.posterior_encoder(specs, mask, noise_scale)
        wav = self._decode(z)[:, 0]
        wav_lengths = spec_lengths * self.hop_length
        return wav * (torch.arange(wav.size(1), device=wav.device)[None] < wav_lengths[:, None])

    @staticmethod
    def inference_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's weights from a training checkpoint, which also holds the
        discriminators (``generator.*`` / ``discriminator.*``); other dicts pass unchanged."""
        if not any(k.startswith("generator.") for k in state):
            return state
        return {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}

    def inference_parameters(self) -> int:
        """Parameters used at synthesis (everything but the posterior encoder and the
        alignment's projection and encoder): the number the paper reports (28.7 M)."""
        skip = ("posterior_encoder.", "align_proj.", "align_encoder.")
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith(skip))
