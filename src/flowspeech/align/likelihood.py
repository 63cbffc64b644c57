"""Log-likelihood of every frame under every token's diagonal Gaussian: the score matrix
Monotonic Alignment Search maximises over (Glow-TTS, Kim et al. 2020, Sec. 3.2) and the
pairwise cost soft-DTW minimises over (NaturalSpeech, Tan et al. 2022, Sec. 3.3)."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def pairwise_gaussian_log_likelihood(z: torch.Tensor, mean: torch.Tensor,
                                     log_scale: torch.Tensor) -> torch.Tensor:
    """``log N(z_j; mean_i, exp(log_scale_i))`` summed over channels, for every pair ``(i, j)``.

    Expanded into four matrix products so that no ``[B, T_i, T_j, C]`` tensor is built (the
    Glow-TTS authors' formulation).

    Args:
        z: ``[B, C, T_j]`` points (e.g. latent frames).
        mean, log_scale: ``[B, C, T_i]`` Gaussians (e.g. one per token).

    Returns:
        ``[B, T_i, T_j]``.
    """
    inv_var = torch.exp(-2 * log_scale)                                    # [B, C, T_i]
    term_1 = torch.sum(-0.5 * LOG_2PI - log_scale, 1).unsqueeze(-1)       # [B, T_i, 1]
    term_2 = torch.matmul(inv_var.transpose(1, 2), -0.5 * z ** 2)        # [B, T_i, T_j]
    term_3 = torch.matmul((mean * inv_var).transpose(1, 2), z)            # [B, T_i, T_j]
    term_4 = torch.sum(-0.5 * mean ** 2 * inv_var, 1).unsqueeze(-1)      # [B, T_i, 1]
    return term_1 + term_2 + term_3 + term_4
