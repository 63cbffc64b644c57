"""Numba kernels of Monotonic Alignment Search (Glow-TTS, Kim et al. 2020, Algorithm 1).

Private: :func:`flowspeech.align.maximum_path_numba` validates the inputs and calls
:func:`maximum_path_batch`.

Layout and precision, per utterance (``t_x`` tokens, ``t_y`` frames):

- The recursion ``Q[x, y] = max(Q[x, y-1], Q[x-1, y-1]) + value[x, y]`` walks frames in
  the outer loop and tokens in the inner loop. ``value`` is ``[T_text, T_frames]`` (token
  rows), so the tokens of one frame are ``T_frames`` elements apart. Every block of 8
  frames is therefore first copied into a small transposed buffer ``[8, t_x]`` (a few KiB,
  stays in L1), 8 x 8 tiles at a time with register shuffles, which makes the inner loop
  contiguous and lets LLVM vectorise it (compare, max and add on 8 or 16 floats at once).
- Only the band of cells that lie on some monotonic path from (0, 0) to
  (t_x - 1, t_y - 1) is read or computed: token ``x`` can be on frame ``y`` only if
  ``x <= y`` (a token per frame before it) and ``t_x - x <= t_y - y`` (a frame per token
  after it). Padding is never read.
- ``Q`` is not kept: two rows (previous and current frame) suffice for the forward pass.
  The backtrack instead reads a byte per cell, "token ``x`` on frame ``y`` came from token
  ``x - 1``" (1) or "from token ``x``" (0). For 150 x 800 that is 120 KB per utterance,
  which fits in L2 and is written by the same vectorised loop; packing bits would cost
  shifts in that loop for no measurable gain.
- Scores accumulate in float32, like the authors' ``monotonic_align/core.pyx``. The
  additions and comparisons are the same IEEE float32 operations in the same order, so the
  path is bit-for-bit the authors' path, ties included; float64 would pick a different path
  whenever two candidates differ by less than float32 rounding, and double the memory
  traffic. Where a cell has no predecessor we use ``-inf``; the authors use ``-1e9``, which
  gives the same result whenever every path score is above ``-1e9``.
- Tie-breaking: the backtrack moves to token ``x - 1`` only if
  ``Q[x - 1, y - 1] > Q[x, y - 1]`` strictly (or ``x == y``), as the authors' code does.
  Among equally likely paths it returns the one on the highest token at every frame, i.e.
  each token starts as early as it can (the tests check this against brute force).

Compilation: ``cache=True`` stores the machine code next to this file, or in the user's
cache directory when the package is read-only (``NUMBA_CACHE_DIR`` overrides both). When no
location is writable at all, the kernels are compiled without a cache instead of failing.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

__all__ = ["maximum_path_batch"]

# Frames per transposed block, the width of the 8 x 8 tiles below; the buffer of
# 8 frames x 150 tokens x 4 bytes = 4.8 KiB stays in L1.
_FRAMES_PER_BLOCK = 8
_NEG_INF = np.float32(-np.inf)


def _transpose_network():
    """Shuffle masks of an 8 x 8 transpose in three rounds of two-input shuffles:
    interleave pairs of floats, then pairs of pairs, then halves (each a ``(left, right,
    mask)`` triple over the previous round's vectors)."""
    rounds = [[], [], [None] * 8]
    for a in range(0, 8, 2):
        rounds[0] += [(a, a + 1, [0, 8, 1, 9, 4, 12, 5, 13]),
                      (a, a + 1, [2, 10, 3, 11, 6, 14, 7, 15])]
    for a in (0, 4):
        for left in (a, a + 1):
            rounds[1] += [(left, left + 2, [0, 1, 8, 9, 4, 5, 12, 13]),
                          (left, left + 2, [2, 3, 10, 11, 6, 7, 14, 15])]
    for k in range(4):
        rounds[2][k] = (k, k + 4, [0, 1, 2, 3, 8, 9, 10, 11])
        rounds[2][k + 4] = (k, k + 4, [4, 5, 6, 7, 12, 13, 14, 15])
    return rounds


_TRANSPOSE_ROUNDS = _transpose_network()


@intrinsic
def _transpose_8x8(typingctx, src, src_row, src_col, dst, dst_row, dst_col):
    """``dst[dst_row + k, dst_col + j] = src[src_row + j, src_col + k]`` for j, k < 8.

    Eight 8-float loads, 24 register shuffles, eight stores: about four times faster than
    an element-by-element copy, which LLVM does not turn into shuffles by itself. Both arrays
    are 2-D C-contiguous float32; the caller guarantees that the tiles are in bounds.
    """
    for array in (src, dst):
        if not (isinstance(array, types.Array) and array.dtype == types.float32
                and array.ndim == 2 and array.layout == "C"):
            return None
    signature = types.void(src, src_row, src_col, dst, dst_row, dst_col)

    def codegen(context, builder, sig, args):
        vector = ir.VectorType(ir.FloatType(), 8)
        index = [context.cast(builder, args[i], sig.args[i], types.intp) for i in (1, 2, 4, 5)]

        def row_pointer(argument, row, col, offset):
            array = context.make_array(sig.args[argument])(context, builder, args[argument])
            n_cols = builder.extract_value(array.shape, 1)
            row = builder.add(row, ir.Constant(row.type, offset))
            element = builder.gep(array.data, [builder.add(builder.mul(row, n_cols), col)])
            return builder.bitcast(element, vector.as_pointer())

        rows = [builder.load(row_pointer(0, index[0], index[1], j), align=4)
                for j in range(8)]
        for shuffles in _TRANSPOSE_ROUNDS:
            rows = [builder.shuffle_vector(rows[a], rows[b],
                                           ir.Constant(ir.VectorType(ir.IntType(32), 8), mask))
                    for a, b, mask in shuffles]
        for k in range(8):
            builder.store(rows[k], row_pointer(3, index[2], index[3], k), align=4)
        return context.get_dummy_value()

    return signature, codegen


@contextlib.contextmanager
def parallel_region():
    """Run a ``parallel=True`` kernel with work handed out one item at a time, and leave
    torch's thread count as it was.

    numba's OpenMP threading layer sets OpenMP's thread count to its own (all cores) when its
    first parallel kernel starts, and torch's intra-op pool follows OpenMP: without the
    restore, ``torch.set_num_threads(1)`` (or ``OMP_NUM_THREADS=1``) silently became 2 after
    the first alignment, and float results computed before and after that point differed in
    the last bits, so a resumed training run drifted from an uninterrupted one.
    """

    threads = torch.get_num_threads()
    try:
        with numba.parallel_chunksize(1):
            yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _jit(**options):
    """``numba.njit(cache=True, **options)``, falling back to no cache where no cache
    directory is writable (numba raises at decoration time in that case)."""

    def decorate(function):
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:
            return numba.njit(cache=False, **options)(function)

    return decorate


@_jit(nogil=True)
def _align_one(path, value, t_x, t_y):
    """Writes the 1s of the most likely path of one utterance into ``path``.

    Args:
        path: ``[T_text, T_frames]`` float32, zero on entry.
        value: ``[T_text, T_frames]`` float32, log-likelihood of frame ``y`` under token
            ``x``; only ``[:t_x, :t_y]`` is read.
        t_x, t_y: number of tokens and frames, ``1 <= t_x <= t_y``.
    """
    block = _FRAMES_PER_BLOCK
    # q[r, 1 + x] is Q[x, y] for the frame y whose parity selects row r; column 0 is a
    # permanent -inf standing for "token -1", so token 0 can only stay on token 0. Cells with
    # x > y are never written and stay -inf: token y on frame y cannot have stayed.
    q = np.full((2, t_x + 1), _NEG_INF, dtype=np.float32)
    came_from_previous = np.empty((t_y, t_x), dtype=np.uint8)
    buffer = np.empty((block, t_x), dtype=np.float32)
    band_offset = t_x - t_y  # token x is reachable on frame y only if x >= band_offset + y
    current = 0
    for y0 in range(0, t_y, block):
        n = min(block, t_y - y0)
        x_first = max(0, band_offset + y0)
        x_last = min(t_x - 1, y0 + n - 1)
        # Transpose value[x_first:x_last + 1, y0:y0 + n] into buffer[:n] (a few cells off
        # the band are copied too; they are never read): 8 x 8 tiles, then the leftovers.
        x_tiled = x_first
        if n == block:
            while x_tiled + 8 <= x_last + 1:
                _transpose_8x8(value, x_tiled, y0, buffer, 0, x_tiled)
                x_tiled += 8
        for x in range(x_tiled, x_last + 1):
            for k in range(n):
                buffer[k, x] = value[x, y0 + k]
        for k in range(n):
            y = y0 + k
            frame = buffer[k]
            if y == 0:
                # The authors start from Q[-1, -1] = 0: Q[0, 0] = value[0, 0].
                q[0, 1] = frame[0]
                continue
            lo = max(0, band_offset + y)
            hi = min(t_x - 1, y)
            previous = q[current]
            # Views keep the inner loop free of index arithmetic, so that it vectorises.
            advance = previous[lo:hi + 1]      # Q[x - 1, y - 1]
            stay = previous[lo + 1:hi + 2]     # Q[x, y - 1]
            out = q[1 - current][lo + 1:hi + 2]
            cell = frame[lo:hi + 1]
            moved = came_from_previous[y, lo:hi + 1]
            for i in range(cell.shape[0]):
                take = advance[i] > stay[i]
                out[i] = (advance[i] if take else stay[i]) + cell[i]
                moved[i] = take
            current = 1 - current
    x = t_x - 1
    for y in range(t_y - 1, 0, -1):
        path[x, y] = 1.0
        x -= came_from_previous[y, x]
    path[x, 0] = 1.0


@_jit(nogil=True, parallel=True)
def maximum_path_batch(path, value, text_lengths, frame_lengths, order):
    """Most likely monotonic alignment of each utterance, in parallel over the batch.

    Args:
        path: ``[B, T_text, T_frames]`` float32, C-contiguous, written in full (zeros and
            the path's 1s).
        value: ``[B, T_text, T_frames]`` float32, C-contiguous.
        text_lengths, frame_lengths: ``[B]`` int64, ``0 <= text <= frames`` and
            ``text == 0`` only together with ``frames == 0``.
        order: ``[B]`` int64, a permutation of the batch: utterances are handed to threads
            in this order (largest first balances the threads' loads).
    """
    for i in prange(order.shape[0]):
        b = order[i]
        path[b] = 0.0
        if text_lengths[b] > 0:
            _align_one(path[b], value[b], text_lengths[b], frame_lengths[b])
