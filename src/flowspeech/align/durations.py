"""Hard alignments to durations and back (Glow-TTS, Kim et al. 2020, Sec. 3.2 and 3.3).

Training takes each token's frame count from the MAS path as the duration predictor's
target; inference expands the prior with predicted durations, ``A(y) = x`` for the frames
``sum(d[:x]) <= y < sum(d[:x + 1])`` (the authors' ``commons.generate_path``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from flowspeech.errors import DatasetError

__all__ = ["durations_from_path", "fit_durations_to_frames", "merge_blank_durations",
           "path_from_durations"]


def durations_from_path(path: torch.Tensor) -> torch.Tensor:
    """Frames per token of a hard alignment.

    Args:
        path: ``[B, T_text, T_frames]`` 0/1 alignment (any dtype), e.g. from
            :func:`flowspeech.align.maximum_path`.

    Returns:
        ``[B, T_text]`` int64; row ``b`` sums to the number of aligned frames of item ``b``.
    """
    if not isinstance(path, torch.Tensor) or path.dim() != 3:
        raise ValueError(f"path must be [B, T_text, T_frames], got shape "
                         f"{tuple(getattr(path, 'shape', ()))}")
    # Summing in int64 is exact for any length (a float16 sum is not beyond 2048 frames).
    return path.sum(dim=2, dtype=torch.long)


def path_from_durations(durations: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Expands durations into a monotonic hard alignment.

    Token ``x`` of item ``b`` covers frames ``[start, start + durations[b, x])`` with
    ``start = durations[b, :x].sum()``, cut off where ``frame_mask`` is 0. Vectorised: one
    cumulative sum and two comparisons, no loop over tokens.

    Args:
        durations: ``[B, T_text]`` non-negative whole numbers of frames, int or float (e.g.
            ``torch.ceil`` of predicted durations); padded tokens should have 0.
        frame_mask: ``[B, 1, T_frames]`` or ``[B, T_frames]`` valid frames, or the
            ``[B, T_text, T_frames]`` text-frame mask the authors' ``generate_path`` takes.

    Returns:
        ``[B, T_text, T_frames]`` 0/1 alignment in the dtype of ``frame_mask`` (float32 if
        that is not floating point), on the device of ``durations``.
    """
    if not isinstance(durations, torch.Tensor) or durations.dim() != 2:
        raise ValueError(f"durations must be [B, T_text], got shape "
                         f"{tuple(getattr(durations, 'shape', ()))}")
    if frame_mask.dim() == 2:
        frame_mask = frame_mask.unsqueeze(1)
    batch, n_text = durations.shape
    if (frame_mask.dim() != 3 or frame_mask.size(0) != batch
            or frame_mask.size(1) not in (1, n_text)):
        raise ValueError(f"frame_mask must be [B, 1, T_frames], [B, T_frames] or "
                         f"[B, T_text, T_frames] with B={batch}, T_text={n_text}; got shape "
                         f"{tuple(frame_mask.shape)}")
    if durations.is_floating_point():
        bad = (durations < 0) | (durations != torch.round(durations))
    else:
        bad = durations < 0
    if bool(bad.any()):
        raise ValueError("durations must be non-negative whole numbers of frames "
                         "(round or ceil predicted durations first)")
    ends = torch.cumsum(durations.long(), dim=1)          # [B, T_text], exclusive end frame
    starts = ends - durations.long()
    frames = torch.arange(frame_mask.size(2), device=durations.device)
    on_path = (frames >= starts.unsqueeze(2)) & (frames < ends.unsqueeze(2))
    on_path = on_path & frame_mask.to(device=durations.device, dtype=torch.bool)
    dtype = frame_mask.dtype if frame_mask.is_floating_point() else torch.float32
    return on_path.to(dtype)


def merge_blank_durations(durations: list[int]) -> list[int]:
    """Durations of a blank-interspersed sequence ``[_, t1, _, t2, ..., tn, _]`` (length
    ``2n + 1``) folded onto ``[t1, ..., tn]``, the total kept.

    A blank between two tokens gives half its frames to the token before and the rest to the
    one after; the first and last blanks go whole to the first and last token (the silence at
    the ends stays with the nearest sound, as without blanks).
    """
    if len(durations) % 2 != 1 or len(durations) < 3:
        raise ValueError(f"a blank-interspersed sequence has 2n + 1 >= 3 entries, got {len(durations)}")
    tokens = [int(d) for d in durations[1::2]]
    blanks = [int(d) for d in durations[0::2]]
    tokens[0] += blanks[0]
    tokens[-1] += blanks[-1]
    for i, blank in enumerate(blanks[1:-1]):
        tokens[i] += blank // 2
        tokens[i + 1] += blank - blank // 2
    return tokens


def fit_durations_to_frames(durations: list[int], n_frames: int, tolerance: int = 2) -> list[int]:
    """``durations`` changed at the end so they sum to ``n_frames``.

    Features framed another way (centred frames give ``1 + S // hop``, VITS's padding
    ``S // hop``) differ by a frame or two at the end of the clip; those frames are taken
    from (or given to) the last tokens, each keeping at least one frame. Raises ValueError past ``tolerance`` frames: the
    alignment was made for other audio or another hop length.
    """
    out = [int(d) for d in durations]
    diff = n_frames - sum(out)
    if abs(diff) > tolerance:
        raise ValueError(f"the durations cover {sum(out)} frames but the audio has {n_frames} "
                         f"(more than {tolerance} apart: another hop length or other audio?)")
    if diff > 0:
        out[-1] += diff
    i = len(out) - 1
    while diff < 0 and i >= 0:       # every token keeps a frame if it had one
        take = min(max(out[i] - 1, 0), -diff)
        out[i] -= take
        diff += take
        i -= 1
    if diff < 0:
        raise ValueError(f"{n_frames} frames are too few for {len(out)} tokens")
    return out


def read_alignment_file(path, field: str, convert):
    """``{id: convert(row[field])}`` from a ``flowspeech align`` file (one JSON object a line
    with ``id``, ``durations``, ``nll_per_dim``, ...).

    Raises:
        DatasetError: missing file, or a line without ``id`` and ``field`` (or whose value
            ``convert`` rejects), named by its line number.
    """

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (write it with `flowspeech align`)")
    out = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["id"])] = convert(row[field])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise DatasetError(f"{path}:{lineno}: expected a JSON object with 'id' and "
                               f"'{field}' (flowspeech align output)") from None
    return out
