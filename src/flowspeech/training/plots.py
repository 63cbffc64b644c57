"""Figures for TensorBoard: spectrograms and alignments (matplotlib, no display needed)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def _figure(rows: int = 1):
    # The object API: no pyplot state, no GUI backend, nothing to close.
    fig = Figure(figsize=(10, 2.6 * rows))
    return fig, fig.subplots(rows, 1, squeeze=False)


def spectrogram_figure(*mels: np.ndarray, titles: list[str] | None = None):
    """One panel per ``[n_mels, frames]`` array, with a shared colour scale."""
    fig, axes = _figure(len(mels))
    vmin = min(float(np.min(m)) for m in mels)
    vmax = max(float(np.max(m)) for m in mels)
    for i, (ax, mel) in enumerate(zip(axes[:, 0], mels)):
        im = ax.imshow(mel, aspect="auto", origin="lower", interpolation="none", vmin=vmin, vmax=vmax)
        ax.set_ylabel("mel bin")
        if titles:
            ax.set_title(titles[i], fontsize=9)
    axes[-1, 0].set_xlabel("frame")
    fig.colorbar(im, ax=axes[:, 0].tolist())
    return fig


def alignment_figure(attn: np.ndarray, title: str = "alignment"):
    """``attn`` is ``[T_text, frames]``."""
    fig, axes = _figure(1)
    ax = axes[0, 0]
    ax.imshow(attn, aspect="auto", origin="lower", interpolation="none")
    ax.set_xlabel("frame")
    ax.set_ylabel("token")
    ax.set_title(title, fontsize=9)
    return fig
