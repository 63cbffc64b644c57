"""NaturalSpeech's differentiable durator (Tan et al., 2022, Sec. 3.2 and Fig. 3).

Phoneme hidden states ``H`` become a frame-level prior ``p(z'|y)`` in three steps:

1. :class:`DurationPredictor` predicts each phoneme's duration (three conv layers, as the
   paper says; ReLU, layer norm and dropout as in FastSpeech's predictor).
2. :class:`LearnableUpsampling` expands ``H`` to frames with a *soft* token-to-frame weight
   matrix computed from the durations, the learned upsampling of Parallel Tacotron 2 (Elias
   et al., 2021, Sec. 3.3, eqs. 5-8). Because the weights are a smooth function of the
   durations, losses on the frames train the duration predictor end to end.
3. Two linear projections give the mean and log-scale of the frame-level prior.

:class:`HardLengthRegulator` is the ablation (``differentiable_durator: false``): the
FastSpeech/Glow-TTS expansion by rounded durations, through which no gradient reaches the
durations.

Shapes: ``H`` ``[B, C, T_text]``; durations ``[B, T_text]`` (frames, float); frame outputs
``[B, C, T_frames]``; masks ``[B, 1, T]``.
"""

from __future__ import annotations

import torch
from torch import nn

from flowspeech.align import path_from_durations
from flowspeech.models.transformer import ChannelLayerNorm
from flowspeech.utils.masks import length_mask


class DurationPredictor(nn.Module):
    """``n_layers`` x (conv, ReLU, layer norm, dropout) and a 1x1 projection to one
    log-duration per token. Input ``[B, C, T_text]``, output ``[B, 1, T_text]``."""

    def __init__(self, in_channels: int, filter_channels: int = 256, kernel_size: int = 3,
                 n_layers: int = 3, dropout: float = 0.5):
        super().__init__()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(n_layers):
            self.convs.append(nn.Conv1d(in_channels if i == 0 else filter_channels, filter_channels,
                                        kernel_size, padding=kernel_size // 2))
            self.norms.append(ChannelLayerNorm(filter_channels))
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Conv1d(filter_channels, 1, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = self.drop(norm(torch.relu(conv(x * mask))))
        return self.proj(x * mask) * mask


def _mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    # Parallel Tacotron 2's MLPs: two dense layers with a Swish in between.
    return nn.Sequential(nn.Linear(in_features, hidden), nn.SiLU(), nn.Linear(hidden, out_features))


class LearnableUpsampling(nn.Module):
    """Soft expansion of tokens to frames (Parallel Tacotron 2, Elias et al. 2021, Sec. 3.3).

    With ``e_i = sum_{k<=i} d_k`` and ``s_i = e_i - d_i`` the end and start of token ``i`` and
    frames numbered ``t = 1..T``, every (frame, token) pair gets the features
    ``[S_ti = t - s_i, E_ti = e_i - t, conv(proj(H))_i]`` (``2 + conv_channels`` values;
    the offsets enter as ``sign(x) log(1 + |x|)``, see ``forward``).
    Two small MLPs turn them into ``q`` attention maps ``W`` (softmax over tokens) and ``p``
    auxiliary values ``C``, and the frames are::

        O = proj_W(concat_q(W_q H)) + proj_C(concat_q(sum_i W_qti C_ti))

    NaturalSpeech uses ``q = 4``, ``p = 2`` and an 8-channel conv (so the MLP input has 10
    features), as in Parallel Tacotron 2.

    Args:
        channels: width ``h`` of ``H`` and of the output.
        conv_channels: output channels of the conv on ``H`` (8).
        conv_kernel: its kernel (3).
        n_weights: ``q`` (4).
        n_values: ``p`` (2).
        mlp_hidden: hidden units of both MLPs (16).
    """

    def __init__(self, channels: int, conv_channels: int = 8, conv_kernel: int = 3,
                 n_weights: int = 4, n_values: int = 2, mlp_hidden: int = 16):
        super().__init__()
        self.n_weights, self.n_values = n_weights, n_values
        self.proj_h = nn.Conv1d(channels, channels, 1)
        self.conv = nn.Conv1d(channels, conv_channels, conv_kernel, padding=conv_kernel // 2)
        self.norm = ChannelLayerNorm(conv_channels)
        self.mlp_w = _mlp(2 + conv_channels, mlp_hidden, n_weights)
        self.mlp_c = _mlp(2 + conv_channels, mlp_hidden, n_values)
        self.proj_w = nn.Linear(n_weights * channels, channels)
        self.proj_c = nn.Linear(n_weights * n_values, channels)

    def forward(self, h: torch.Tensor, durations: torch.Tensor, text_mask: torch.Tensor,
                frame_lengths: torch.Tensor, n_frames: int | None = None):
        """Expand ``h`` ``[B, C, T_text]`` by ``durations`` ``[B, T_text]`` (float frames).

        ``frame_lengths`` ``[B]`` says how many frames each item gets (the ground-truth
        length in training, the rounded predicted total at inference); the durations need not
        sum to it exactly. Returns ``(frames [B, C, F], frame_mask [B, 1, F], weights
        [B, q, F, T_text])``.
        """
        b, c, n_text = h.shape
        n_frames = int(frame_lengths.max()) if n_frames is None else n_frames
        frame_mask = length_mask(frame_lengths, n_frames, h.dtype)                  # [B, 1, F]
        durations = durations * text_mask.squeeze(1)
        ends = torch.cumsum(durations, dim=1)                                        # [B, T]
        starts = ends - durations
        t = torch.arange(1, n_frames + 1, device=h.device, dtype=h.dtype).view(1, -1, 1)
        s_dist = t - starts.unsqueeze(1)                                             # [B, F, T]
        e_dist = ends.unsqueeze(1) - t
        token_features = self.norm(self.conv(self.proj_h(h * text_mask) * text_mask)) * text_mask
        token_features = token_features.transpose(1, 2).unsqueeze(1).expand(b, n_frames, n_text, -1)
        # Offsets reach hundreds of frames for distant tokens; a signed log keeps them in a
        # range the MLPs can take from the first step (raw offsets, as Parallel Tacotron 2
        # writes them, made the prior's log-scale overflow at initialisation) while frames
        # near a token keep their resolution.
        offsets = torch.stack([s_dist, e_dist], -1)
        offsets = torch.sign(offsets) * torch.log1p(offsets.abs())
        features = torch.cat([offsets, token_features], -1)
        logits = self.mlp_w(features)                                                # [B, F, T, q]
        pair_mask = (text_mask.transpose(1, 2) * frame_mask).transpose(1, 2)         # [B, F, T]
        logits = logits.masked_fill(pair_mask.unsqueeze(-1) == 0, -1e4)
        weights = torch.softmax(logits, dim=2) * pair_mask.unsqueeze(-1)             # [B, F, T, q]
        values = self.mlp_c(features)                                                # [B, F, T, p]
        # sum over tokens of W (H and C): [B, F, q, C] and [B, F, q, p]
        expanded = torch.einsum("bftq,bct->bfqc", weights, h)
        aux = torch.einsum("bftq,bftp->bfqp", weights, values)
        out = self.proj_w(expanded.reshape(b, n_frames, -1)) + self.proj_c(aux.reshape(b, n_frames, -1))
        return out.transpose(1, 2) * frame_mask, frame_mask, weights.permute(0, 3, 1, 2)


class HardLengthRegulator(nn.Module):
    """Ablation of :class:`LearnableUpsampling`: repeat each token ``round(d_i)`` times
    (FastSpeech's length regulator; Glow-TTS's expansion). Not differentiable in the
    durations."""

    def forward(self, h: torch.Tensor, durations: torch.Tensor, text_mask: torch.Tensor,
                frame_lengths: torch.Tensor, n_frames: int | None = None):
        n_frames = int(frame_lengths.max()) if n_frames is None else n_frames
        frame_mask = length_mask(frame_lengths, n_frames, h.dtype)
        whole = torch.round(durations.detach() * text_mask.squeeze(1)).clamp_min(0)
        path = path_from_durations(whole, text_mask.transpose(1, 2) * frame_mask)    # [B, T, F]
        return torch.matmul(h, path) * frame_mask, frame_mask, path.transpose(1, 2).unsqueeze(1)


class Durator(nn.Module):
    """Duration predictor + upsampling + frame-level prior projections.

    Args:
        channels: phoneme-encoder width ``h``.
        latent_channels: channels of ``z'`` (the prior's dimension).
        differentiable: learnable upsampling (True, the paper) or the hard length
            regulator (False, the ablation).
        predictor: kwargs of :class:`DurationPredictor`.
        upsampling: kwargs of :class:`LearnableUpsampling`.
    """

    def __init__(self, channels: int, latent_channels: int, differentiable: bool = True,
                 predictor: dict | None = None, upsampling: dict | None = None):
        super().__init__()
        self.differentiable = differentiable
        self.duration_predictor = DurationPredictor(channels, **(predictor or {}))
        self.upsampler = (LearnableUpsampling(channels, **(upsampling or {})) if differentiable
                          else HardLengthRegulator())
        self.proj_mean = nn.Conv1d(channels, latent_channels, 1)
        self.proj_log_scale = nn.Conv1d(channels, latent_channels, 1)

    def predict_log_durations(self, h: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T_text]`` predicted log-durations (in frames). The predictor reads ``h``
        detached, as in Glow-TTS and VITS, so the duration loss does not shape ``h``; the
        upsampler still trains it through the durations it is given."""
        return self.duration_predictor(h.detach(), text_mask).squeeze(1)

    def frame_prior(self, h: torch.Tensor, durations: torch.Tensor, text_mask: torch.Tensor,
                    frame_lengths: torch.Tensor, n_frames: int | None = None):
        """Returns ``(mean, log_scale [B, latent, F], frame_mask [B, 1, F], weights)``."""
        frames, frame_mask, weights = self.upsampler(h, durations, text_mask, frame_lengths, n_frames)
        mean = self.proj_mean(frames) * frame_mask
        log_scale = self.proj_log_scale(frames) * frame_mask
        return mean, log_scale, frame_mask, weights


def predicted_frame_lengths(durations: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` frames to synthesise for predicted (fractional) durations: the rounded total,
    at least 1."""
    total = (durations * text_mask.squeeze(1)).sum(1)
    return torch.clamp_min(torch.round(total.detach()), 1).long()


__all__ = ["DurationPredictor", "Durator", "HardLengthRegulator", "LearnableUpsampling",
           "predicted_frame_lengths"]
