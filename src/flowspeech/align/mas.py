"""Monotonic Alignment Search (Kim, Kim, Kong & Yoon 2020, "Glow-TTS", Sec. 3.2, Algorithm 1).

Given ``value[b, x, y]``, the log-likelihood of mel frame ``y`` under the prior of text
token ``x``, MAS finds the hard alignment ``A`` (frame ``y`` -> token ``A(y)``) that
maximises ``sum_y value[A(y), y]`` under the constraints that ``A`` is monotonic
(``A(y) - A(y-1)`` is 0 or 1), starts on the first token and ends on the last, so that
every token gets at least one frame. It is the dynamic programme::

    Q[x, y] = max(Q[x, y - 1], Q[x - 1, y - 1]) + value[x, y],   Q[0, 0] = value[0, 0]

followed by a backtrack from ``(t_x - 1, t_y - 1)``. Two implementations give identical
paths (the authors' float32 arithmetic and tie-breaking, see ``_numba_kernels``):

- :func:`maximum_path_numba`: CPU, compiled with numba, parallel over the batch.
- :func:`maximum_path_torch`: any device, vectorised over batch and tokens.

:func:`maximum_path` picks numba for CPU tensors and torch otherwise (CUDA), so that GPU
training needs no device-to-host copy.
"""

from __future__ import annotations

import torch

from flowspeech.align import _numba_kernels
from flowspeech.errors import FlowspeechError

__all__ = ["AlignmentError", "maximum_path", "maximum_path_numba", "maximum_path_torch"]


class AlignmentError(FlowspeechError, ValueError):
    """No monotonic alignment exists (an utterance has fewer frames than tokens)."""


def maximum_path(value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Most likely monotonic hard alignment of each text/mel pair in a batch.

    Uses :func:`maximum_path_numba` for CPU tensors and :func:`maximum_path_torch` for
    others (CUDA). Both return the path of the authors' ``monotonic_align.maximum_path``.

    Args:
        value: ``[B, T_text, T_frames]`` float, ``value[b, x, y]`` the log-likelihood of
            frame ``y`` under token ``x``. Must be finite where ``mask`` is 1; padding is
            never read.
        mask: ``[B, T_text, T_frames]`` (float or bool), 1 where ``x < text_len[b]`` and
            ``y < frame_len[b]``: the outer product of the text and frame masks. As in the
            authors' code, the lengths are read from its first column and first row.

    Returns:
        ``[B, T_text, T_frames]`` 0/1 path, dtype and device of ``value``: every frame
        ``y < frame_len`` is on exactly one token, every token ``x < text_len`` on at least
        one frame, the path is monotonic from (0, 0) to (text_len - 1, frame_len - 1), and
        it is 0 outside the mask.

    Raises:
        AlignmentError: an utterance has fewer frames than tokens.
    """
    if value.device.type == "cpu":
        return maximum_path_numba(value, mask)
    return maximum_path_torch(value, mask)


def maximum_path_numba(value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`maximum_path` on the CPU with numba kernels, parallel over the batch.

    Tensors on another device are copied to the CPU and the path copied back, as in the
    authors' code. Scores accumulate in float32 whatever the dtype of ``value``.
    The first call in a fresh environment compiles the kernels (a few seconds); the machine
    code is cached on disk, and a later process's first call takes under a second (numba
    loading its own modules).

    Threads: numba's (``NUMBA_NUM_THREADS``, all cores by default); each takes one
    utterance at a time, longest first. On a machine busy with other processes, threads that
    busy-wait (OpenMP's default) can make a call many times slower than its work;
    ``OMP_WAIT_POLICY=PASSIVE`` in the environment avoids that (``docs/benchmarks.md``).

    Shapes as in :func:`maximum_path`.
    """
    text_lengths, frame_lengths = _lengths_from_mask(value, mask)
    if value.numel() == 0:
        return torch.zeros_like(value)
    values = value.detach().to(device="cpu", dtype=torch.float32).contiguous()
    path = torch.empty(values.shape, dtype=torch.float32)
    text_lengths, frame_lengths = text_lengths.cpu(), frame_lengths.cpu()
    # Longest utterances first, handed out one at a time: balances the threads' loads.
    order = torch.argsort(text_lengths * frame_lengths, descending=True)
    with _numba_kernels.parallel_region():
        _numba_kernels.maximum_path_batch(
            path.numpy(), values.numpy(), text_lengths.numpy(), frame_lengths.numpy(),
            order.numpy(),
        )
    return path.to(device=value.device, dtype=value.dtype)


@torch.no_grad()
def maximum_path_torch(value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`maximum_path` with torch operations, on the device of ``value``.

    The forward recursion is vectorised over batch and tokens, with a Python loop over
    frames (two small kernels per frame). The backtrack is vectorised over frames too: the
    per-frame maps "token on frame y -> token on frame y - 1" are composed by pointer
    doubling, ``ceil(log2 T_frames)`` gathers over ``[B, T_frames, T_text]`` int64, instead of
    a loop over frames.

    Expected cost on a GPU: about ``2 * T_frames`` kernel launches plus a few dozen, so it is
    bound by launch latency (roughly 5 to 10 us each): an estimated 10 ms for
    ``T_frames = 800``, nearly independent of batch size and ``T_text``, with no
    device-to-host copy of ``value``. Memory: ``value`` once as float32 plus two
    ``[B, T_frames, T_text]`` int64 buffers during the backtrack. The batch is first cropped
    to the longest text and frame lengths in it (one host sync, also used for validation).

    Shapes as in :func:`maximum_path`; scores accumulate in float32.
    """
    text_lengths, frame_lengths = _lengths_from_mask(value, mask)
    path = torch.zeros_like(value)
    if value.numel() == 0:
        return path
    n_text, n_frames = int(text_lengths.max()), int(frame_lengths.max())
    if n_text == 0:
        return path
    batch, device = value.size(0), value.device

    # q[b, y, 1 + x] = Q[x, y]; column 0 is -inf ("token -1"), so token 0 can only stay.
    # Q is built in place over the transposed values: row y holds frame y's tokens
    # contiguously, and each step reads row y - 1 and adds its maxima to row y.
    q = torch.empty(batch, n_frames, n_text + 1, dtype=torch.float32, device=device)
    q[:, :, 0] = float("-inf")
    q[:, :, 1:] = value[:, :n_text, :n_frames].transpose(1, 2)
    q[:, 0, 2:] = float("-inf")  # frame 0 is on token 0: Q[0, 0] = value[0, 0]
    # Per-frame views made once: slicing in the loop would cost more than the arithmetic.
    advance, stay = q[:, :, :-1].unbind(1), q[:, :, 1:].unbind(1)
    best_previous = torch.empty(batch, n_text, dtype=torch.float32, device=device)
    for y in range(1, n_frames):
        # max(Q[x - 1, y - 1], Q[x, y - 1]); tokens x > y stay -inf (max of two -inf).
        torch.maximum(advance[y - 1], stay[y - 1], out=best_previous)
        stay[y].add_(best_previous)

    # Backtrack. On frame y (y >= 1), token x came from token x - 1 iff
    # Q[x - 1, y - 1] > Q[x, y - 1]: strictly, as in the authors' code (ties stay).
    tokens = torch.arange(n_text, device=device)
    frame_valid = torch.arange(n_frames, device=device) < frame_lengths.unsqueeze(1)
    moved = (q[:, :-1, :-1] > q[:, :-1, 1:]) & frame_valid[:, 1:, None]  # [B, F - 1, T]
    # composed[b, y, x]: the token on frame y of the path that is on token x at the last
    # frame. Start: one step back (composed[y] = step[y], the token on frame y given token
    # x on frame y + 1; the identity past the end of the utterance, so that the path sits
    # on the last token at its last frame) and the identity on the last frame. Pointer
    # doubling: after the pass with stride s, composed[y] = step[y] o ... o step[y + 2s - 1].
    composed = torch.empty(batch, n_frames, n_text, dtype=torch.long, device=device)
    torch.where(moved, tokens - 1, tokens, out=composed[:, :-1])
    composed[:, -1] = tokens
    spare = torch.empty_like(composed)
    stride = 1
    while stride < n_frames - 1:
        torch.gather(composed[:, :-stride], 2, composed[:, stride:], out=spare[:, :-stride])
        spare[:, -stride:] = composed[:, -stride:]
        composed, spare = spare, composed
        stride *= 2
    last_token = (text_lengths - 1).clamp_min(0).view(batch, 1, 1).expand(batch, n_frames, 1)
    token_on_frame = torch.gather(composed, 2, last_token)                # [B, n_frames, 1]
    on_path = tokens.view(1, -1, 1) == token_on_frame.transpose(1, 2)    # [B, n_text, n_frames]
    on_path &= frame_valid[:, None, :]
    path[:, :n_text, :n_frames] = on_path.to(path.dtype)
    return path


def _lengths_from_mask(value: torch.Tensor,
                       mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checks the inputs of MAS; returns ``(text_lengths, frame_lengths)``, ``[B]`` int64."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"value must be a floating-point tensor, got "
                        f"{getattr(value, 'dtype', type(value).__name__)}")
    if value.dim() != 3:
        raise ValueError(f"value must be [B, T_text, T_frames], got shape {tuple(value.shape)}")
    if not isinstance(mask, torch.Tensor) or mask.shape != value.shape:
        raise ValueError(f"mask must have the shape of value {tuple(value.shape)}, got "
                         f"{tuple(getattr(mask, 'shape', ()))}; a [B, 1, T_text, T_frames] "
                         f"mask needs .squeeze(1)")
    if mask.device != value.device:
        raise ValueError(f"mask is on {mask.device} but value on {value.device}")
    batch, n_text, n_frames = value.shape
    if n_text == 0 or n_frames == 0:
        empty = torch.zeros(batch, dtype=torch.long, device=value.device)
        return empty, empty
    text_lengths = mask[:, :, 0].sum(1, dtype=torch.long)
    frame_lengths = mask[:, 0, :].sum(1, dtype=torch.long)
    too_short = frame_lengths < text_lengths
    if bool(too_short.any()):
        items = too_short.nonzero().flatten().tolist()
        details = ", ".join(f"item {i}: {int(text_lengths[i])} tokens, {int(frame_lengths[i])} "
                            f"frames" for i in items[:5])
        raise AlignmentError(
            f"monotonic alignment needs at least one frame per token ({details}); drop such "
            f"utterances from the training set (e.g. a minimum duration per token)")
    return text_lengths, frame_lengths
