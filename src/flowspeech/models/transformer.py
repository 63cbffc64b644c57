"""Transformer text encoder with relative-position self-attention.

The encoder of Glow-TTS (Kim et al., 2020, Sec. 3.3 and Appendix A.1), which follows the
Transformer (Vaswani et al., 2017) with two changes: relative position representations
(Shaw et al., 2018) with a window of 4 instead of absolute positional encodings, and
post-layer normalisation over channels. NaturalSpeech's phoneme encoder reuses it.

Layout: ``x`` is ``[B, C, T]`` and ``mask`` is ``[B, 1, T]`` (1 = valid).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class SinusoidalPositions(nn.Module):
    """Absolute sinusoidal position encoding (Vaswani et al., 2017, Sec. 3.5), through a
    learned 1x1 convolution, added to ``x [B, C, T]``.

    Glow-TTS's relative attention sees only the 4 nearest tokens by position; beyond them
    every token is alike to it, so a token far from both ends of a long sentence cannot tell
    where in the sentence it stands, and sentence-level intonation (declination) cannot be
    learnt. This gives the encoder that position.

    The projection starts at zero, so an encoder with it computes exactly what the one
    without it did until training moves it: a trained voice warm-started with it speaks as
    before at step 0. (A single scale on the table, Transformer TTS's, does not learn from
    zero there: its gradient sums the position signal of every channel, which cancels; it
    stayed at 2e-4 after 250 steps. The projection learns each channel's weight apart.)
    """

    def __init__(self, channels: int, max_period: float = 10_000.0):
        super().__init__()
        if channels % 2:
            raise ValueError(f"sinusoidal positions need an even channel count, got {channels}")
        self.proj = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        inverse_periods = max_period ** (-torch.arange(0, channels, 2, dtype=torch.float32) / channels)
        self.register_buffer("inverse_periods", inverse_periods, persistent=False)

    def table(self, length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``[1, C, length]``: sines of the positions in the first half of the channels,
        cosines in the second, periods from 2 pi to ``2 pi * max_period``."""
        positions = torch.arange(length, device=device, dtype=torch.float32)
        angles = self.inverse_periods[:, None] * positions[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], 0).unsqueeze(0).to(dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x + self.proj(self.table(x.size(2), x.device, x.dtype)) * mask


class ChannelLayerNorm(nn.Module):
    """Layer normalisation over the channel axis of ``[B, C, T]`` (parameters ``gamma``,
    ``beta`` of shape ``[C]``; eps 1e-4 as in the Glow-TTS code)."""

    def __init__(self, channels: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The parameter's shape, not the input's: a constant when the model is traced for export.
        x = F.layer_norm(x.transpose(1, -1), self.gamma.shape, self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class ConvReluNorm(nn.Module):
    """Residual conv pre-net: ``n_layers`` x (conv, layer norm, ReLU, dropout), then a
    zero-initialised 1x1 projection added to the input (Glow-TTS's optional pre-net)."""

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int = 5,
                 n_layers: int = 3, dropout: float = 0.5):
        super().__init__()
        if n_layers < 1:
            raise ValueError("ConvReluNorm needs at least one layer")
        self.conv_layers = nn.ModuleList()
        self.norm_layers = nn.ModuleList()
        for i in range(n_layers):
            self.conv_layers.append(nn.Conv1d(channels if i == 0 else hidden_channels, hidden_channels,
                                              kernel_size, padding=kernel_size // 2))
            self.norm_layers.append(ChannelLayerNorm(hidden_channels))
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Conv1d(hidden_channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        residual = x
        for conv, norm in zip(self.conv_layers, self.norm_layers):
            x = self.dropout(torch.relu(norm(conv(x * mask))))
        return (residual + self.proj(x)) * mask


class RelativeMultiHeadAttention(nn.Module):
    """Multi-head self-attention with relative position embeddings for keys and values
    (Shaw et al., 2018), shared by all heads, over relative distances ``-window..window``;
    farther pairs get no relative term (as in the Glow-TTS/VITS code).

    Parameters keep the authors' names and shapes (``conv_q/k/v/o``, ``emb_rel_k/v`` of
    shape ``[1, 2 * window + 1, C / n_heads]``) so their checkpoints load by name.

    Unlike the authors' pad-and-reshape formulation, which materialises ``2T - 1``
    relative positions per query, this gathers only the ``2 * window + 1`` that exist.
    """

    def __init__(self, channels: int, n_heads: int, window_size: int | None = 4, dropout: float = 0.0):
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"channels ({channels}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)
        if window_size is not None:
            std = self.head_channels ** -0.5
            self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.head_channels) * std)
            self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.head_channels) * std)
        for conv in (self.conv_q, self.conv_k, self.conv_v):
            nn.init.xavier_uniform_(conv.weight)

    def _band_index(self, length: int, device) -> torch.Tensor:
        """``[T, 2w+1]``: column ``r`` of row ``i`` is key position ``i + r - w`` shifted by
        ``w`` into a zero-padded key axis of length ``T + 2w``."""
        w = self.window_size
        return torch.arange(length, device=device)[:, None] + torch.arange(2 * w + 1, device=device)[None, :]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x ``[B, C, T]``, mask ``[B, 1, T]`` -> ``[B, C, T]``."""
        b, c, t = x.shape
        h, d = self.n_heads, self.head_channels
        q = self.conv_q(x).view(b, h, d, t).transpose(2, 3)  # [B, H, T, d]
        k = self.conv_k(x).view(b, h, d, t).transpose(2, 3)
        v = self.conv_v(x).view(b, h, d, t).transpose(2, 3)
        q = q / math.sqrt(d)
        scores = torch.matmul(q, k.transpose(-2, -1))  # [B, H, T, T]
        if self.window_size is not None:
            w = self.window_size
            index = self._band_index(t, x.device).expand(b, h, t, 2 * w + 1)
            rel = torch.matmul(q, self.emb_rel_k.transpose(-2, -1).unsqueeze(0))  # [B, H, T, 2w+1]
            band = scores.new_zeros(b, h, t, t + 2 * w).scatter_(-1, index, rel)
            scores = scores + band[..., w:w + t]
        pair_mask = mask.unsqueeze(2) * mask.unsqueeze(-1)  # [B, 1, T, T]
        scores = scores.masked_fill(pair_mask == 0, -1e4)
        p_attn = self.dropout(torch.softmax(scores, dim=-1))
        out = torch.matmul(p_attn, v)  # [B, H, T, d]
        if self.window_size is not None:
            p_band = F.pad(p_attn, (w, w)).gather(-1, index)  # [B, H, T, 2w+1]
            out = out + torch.matmul(p_band, self.emb_rel_v.unsqueeze(0))
        out = out.transpose(2, 3).reshape(b, c, t)
        return self.conv_o(out)


class FeedForward(nn.Module):
    """Position-wise feed-forward block made of two convolutions (kernel ``kernel_size``)."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int, dropout: float = 0.0):
        super().__init__()
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.dropout(torch.relu(self.conv_1(x * mask)))
        return self.conv_2(x * mask) * mask


class TransformerEncoder(nn.Module):
    """``n_layers`` post-norm blocks of relative self-attention and conv feed-forward.

    Args:
        channels: model width (192 in Glow-TTS base).
        filter_channels: feed-forward width (768).
        n_heads: attention heads (2).
        n_layers: blocks (6).
        kernel_size: feed-forward conv kernel (3).
        dropout: dropout after attention, feed-forward and inside attention (0.1).
        window_size: relative-position window (4); None for no relative positions.
    """

    def __init__(self, channels: int, filter_channels: int, n_heads: int, n_layers: int,
                 kernel_size: int = 1, dropout: float = 0.0, window_size: int | None = 4):
        super().__init__()
        self.attn_layers = nn.ModuleList()
        self.norm_layers_1 = nn.ModuleList()
        self.ffn_layers = nn.ModuleList()
        self.norm_layers_2 = nn.ModuleList()
        for _ in range(n_layers):
            self.attn_layers.append(RelativeMultiHeadAttention(channels, n_heads, window_size, dropout))
            self.norm_layers_1.append(ChannelLayerNorm(channels))
            self.ffn_layers.append(FeedForward(channels, filter_channels, kernel_size, dropout))
            self.norm_layers_2.append(ChannelLayerNorm(channels))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x ``[B, C, T]``, mask ``[B, 1, T]`` -> ``[B, C, T]`` (zero at padding)."""
        for attn, norm_1, ffn, norm_2 in zip(self.attn_layers, self.norm_layers_1,
                                             self.ffn_layers, self.norm_layers_2):
            x = x * mask
            x = norm_1(x + self.dropout(attn(x, mask)))
            x = norm_2(x + self.dropout(ffn(x, mask)))
        return x * mask
