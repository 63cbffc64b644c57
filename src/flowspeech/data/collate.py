"""Collate functions: lists of dataset items -> padded batch tensors.

Conventions (see CONTRIBUTING.md): sequences are channels-first ``[B, C, T]``, lengths are
``LongTensor [B]``; waveforms are ``[B, T]``. Padding is zero everywhere: token 0 is the pad
symbol ``_`` of both symbol sets, and spectrogram padding is 0 as in the Glow-TTS authors'
``TextMelCollate`` (not the log floor ``log(1e-5)``), because every model masks padded frames
with :func:`flowspeech.utils.masks.length_mask` built from the lengths returned here, so the
pad value never reaches a loss.

Items keep the order the sampler gave. Glow-TTS sorts each batch by decreasing text length,
a habit inherited from Tacotron's packed RNNs; no model here needs it since all take lengths.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def pad_1d(seqs: Sequence[torch.Tensor], value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[T_i]`` tensors into ``[B, max T]`` padded with ``value``; also lengths ``[B]``."""
    lengths = torch.tensor([s.shape[-1] for s in seqs], dtype=torch.long)
    out = seqs[0].new_full((len(seqs), int(lengths.max())), value)
    for i, s in enumerate(seqs):
        out[i, : s.shape[-1]] = s
    return out, lengths


def pad_2d(seqs: Sequence[torch.Tensor], value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[C, T_i]`` tensors into ``[B, C, max T]`` padded with ``value``; and ``[B]``."""
    lengths = torch.tensor([s.shape[-1] for s in seqs], dtype=torch.long)
    out = seqs[0].new_full((len(seqs), seqs[0].shape[0], int(lengths.max())), value)
    for i, s in enumerate(seqs):
        out[i, :, : s.shape[-1]] = s
    return out, lengths


def _speakers(items: Sequence[dict[str, Any]]) -> torch.Tensor:
    return torch.tensor([int(item.get("speaker", 0)) for item in items], dtype=torch.long)


def collate_text_mel(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`~flowspeech.data.TextMelDataset` items (Glow-TTS).

    Returns:
        ``tokens [B, L]`` (padded with 0), ``token_lengths [B]``, ``mels [B, n_mels, F]``
        (padded with 0), ``mel_lengths [B]``, ``speakers [B]``, ``ids`` (list of str).
    """
    tokens, token_lengths = pad_1d([item["tokens"] for item in items])
    mels, mel_lengths = pad_2d([item["mel"] for item in items])
    return {
        "tokens": tokens,
        "token_lengths": token_lengths,
        "mels": mels,
        "mel_lengths": mel_lengths,
        "speakers": _speakers(items),
        "ids": [item["id"] for item in items],
    }


def collate_audio_mel(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`~flowspeech.data.AudioMelDataset` items (vocoders).

    Returns:
        ``audio [B, S]``, ``mels [B, n_mels, S // hop]``, ``audio_lengths [B]``,
        ``mel_lengths [B]``, ``ids``. Segments all have the same length, so nothing is
        padded unless items of different lengths are mixed.
    """
    audio, audio_lengths = pad_1d([item["audio"] for item in items])
    mels, mel_lengths = pad_2d([item["mel"] for item in items])
    return {
        "audio": audio,
        "audio_lengths": audio_lengths,
        "mels": mels,
        "mel_lengths": mel_lengths,
        "ids": [item["id"] for item in items],
    }


def collate_text_audio(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`~flowspeech.data.TextAudioDataset` items (end-to-end models).

    Returns:
        ``tokens [B, L]``, ``token_lengths [B]``, ``audio [B, T]``, ``audio_lengths [B]``,
        ``linears [B, n_fft // 2 + 1, F]``, ``mels [B, n_mels, F]``, ``spec_lengths [B]``
        (frames, shared by linear and mel), ``speakers [B]``, ``ids``. All padded with 0.
    """
    tokens, token_lengths = pad_1d([item["tokens"] for item in items])
    audio, audio_lengths = pad_1d([item["audio"] for item in items])
    linears, spec_lengths = pad_2d([item["linear"] for item in items])
    mels, _ = pad_2d([item["mel"] for item in items])
    return {
        "tokens": tokens,
        "token_lengths": token_lengths,
        "audio": audio,
        "audio_lengths": audio_lengths,
        "linears": linears,
        "mels": mels,
        "spec_lengths": spec_lengths,
        "speakers": _speakers(items),
        "ids": [item["id"] for item in items],
    }
