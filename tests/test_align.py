"""Tests of Monotonic Alignment Search (flowspeech.align): exact agreement with a brute-force
search over all monotonic alignments (ties broken as the authors' backtrack does), numba
and torch implementations against each other and against the authors' code (PyPI
``monotonic-alignment-search``), path invariants, durations and their expansion."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from flowspeech.align import (
    AlignmentError,
    durations_from_path,
    maximum_path,
    maximum_path_numba,
    maximum_path_torch,
    path_from_durations,
)
from flowspeech.align import _numba_kernels

torch.set_num_threads(1)

IMPLEMENTATIONS = {"numba": maximum_path_numba, "torch": maximum_path_torch}


def pair_mask(text_lengths, frame_lengths, n_text, n_frames, dtype=torch.float32):
    text_lengths, frame_lengths = torch.as_tensor(text_lengths), torch.as_tensor(frame_lengths)
    text = torch.arange(n_text)[None, :] < text_lengths[:, None]
    frames = torch.arange(n_frames)[None, :] < frame_lengths[:, None]
    return (text[:, :, None] & frames[:, None, :]).to(dtype)


def random_batch(rng, batch, max_text, max_frames, integer=False, padding=0.0):
    """Random lengths (1 <= text <= frames) including the edge cases 1 token, 1 frame and
    text == frames; padding filled with ``padding`` (never read)."""
    text_lengths = rng.integers(1, max_text + 1, size=batch)
    frame_lengths = np.array([rng.integers(t, max_frames + 1) for t in text_lengths])
    if batch >= 4:
        text_lengths[:4] = [1, 1, min(max_text, max_frames), max_text]
        frame_lengths[:4] = [max_frames, 1, min(max_text, max_frames), max_frames]
    if integer:  # small integers: many exact ties, scores summed exactly in float32
        value = rng.integers(-2, 3, size=(batch, max_text, max_frames)).astype(np.float32)
    else:
        value = rng.standard_normal((batch, max_text, max_frames)).astype(np.float32)
    mask = pair_mask(text_lengths, frame_lengths, max_text, max_frames)
    value = torch.from_numpy(value).masked_fill(mask == 0, padding)
    return value, mask, text_lengths, frame_lengths


def brute_force(scores):
    """Best monotonic surjective alignment of one ``[t_x, t_y]`` integer score matrix by
    enumeration. Returns ``(tokens per frame, all optimal token sequences)``.

    Ties: the authors' backtrack starts at the last frame and moves to the previous token
    only when that is strictly better, i.e. among optimal paths it takes, frame by frame
    from the end, the highest token it can. That is the lexicographic maximum of the token
    sequence read backwards."""
    t_x, t_y = scores.shape
    scored = []
    for changes in itertools.combinations(range(1, t_y), t_x - 1):
        tokens = np.repeat(np.arange(t_x), np.diff((0, *changes, t_y)))
        scored.append((int(scores[tokens, np.arange(t_y)].sum()), tuple(tokens[::-1]), tokens))
    best_score = max(s for s, _, _ in scored)
    optimal = [tokens for s, _, tokens in scored if s == best_score]
    chosen = max((item for item in scored if item[0] == best_score), key=lambda item: item[1])[2]
    return chosen, optimal


def tokens_to_path(tokens, n_text, n_frames):
    path = np.zeros((n_text, n_frames), dtype=np.float32)
    path[tokens, np.arange(len(tokens))] = 1
    return path


# --- exactness --------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_with_ties(name, seed):
    rng = np.random.default_rng(seed)
    value, mask, text_lengths, frame_lengths = random_batch(
        rng, batch=40, max_text=5, max_frames=7, integer=True, padding=1e6)
    path = IMPLEMENTATIONS[name](value, mask).numpy()
    for b, (t_x, t_y) in enumerate(zip(text_lengths, frame_lengths)):
        chosen, optimal = brute_force(value[b, :t_x, :t_y].numpy().astype(np.int64))
        expected = np.zeros_like(path[b])
        expected[:t_x, :t_y] = tokens_to_path(chosen, t_x, t_y)
        np.testing.assert_array_equal(path[b], expected, err_msg=f"item {b} ({t_x}x{t_y})")
        # The tie-break described in the docs: the highest token on every frame among all
        # optimal paths (each token change as early as possible).
        assert all((chosen >= other).all() for other in optimal)


def test_ties_take_the_highest_token():
    # All-zero scores: every alignment is optimal; the backtrack stays on the last token
    # as long as it can, so each token but the last gets exactly one frame.
    value = torch.zeros(1, 3, 6)
    path = maximum_path(value, torch.ones_like(value))
    assert durations_from_path(path).tolist() == [[1, 1, 4]]


def test_numba_torch_and_reference_agree_on_larger_batches():
    reference = pytest.importorskip("monotonic_alignment_search").maximum_path
    rng = np.random.default_rng(0)
    for integer in (False, True):
        value, mask, _, _ = random_batch(rng, batch=6, max_text=40, max_frames=150,
                                         integer=integer, padding=3.0)
        expected = reference(value, mask)
        assert torch.equal(maximum_path_numba(value, mask), expected)
        assert torch.equal(maximum_path_torch(value, mask), expected)


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_scores_accumulate_in_float32(name):
    # Frame 1: token 0 scores 1e8 + 2, token 1 scores 1e8 + 1. Exactly (or in float64)
    # frame 2 should come from token 0; in float32 both round to 1e8, a tie, and the
    # authors' backtrack stays on token 1.
    value = torch.tensor([[[1e8, 2.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    path = IMPLEMENTATIONS[name](value, torch.ones_like(value))
    assert path.tolist() == [[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_dtypes_accumulate_in_float32_like_the_reference(dtype):
    reference = pytest.importorskip("monotonic_alignment_search").maximum_path
    rng = np.random.default_rng(1)
    value, mask, _, _ = random_batch(rng, batch=4, max_text=12, max_frames=40)
    value, mask = value.to(dtype), mask.to(dtype)
    expected = reference(value.float(), mask.float())
    for implementation in IMPLEMENTATIONS.values():
        path = implementation(value, mask)
        assert path.dtype == dtype
        assert torch.equal(path.float(), expected)


# --- invariants ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_path_invariants(name):
    rng = np.random.default_rng(2)
    value, mask, text_lengths, frame_lengths = random_batch(
        rng, batch=8, max_text=20, max_frames=60, padding=float("nan"))
    path = IMPLEMENTATIONS[name](value, mask)
    assert path.shape == value.shape and path.dtype == value.dtype
    assert set(path.unique().tolist()) <= {0.0, 1.0}
    assert not path[mask == 0].any(), "path outside the mask"
    for b, (t_x, t_y) in enumerate(zip(text_lengths, frame_lengths)):
        valid = path[b, :t_x, :t_y]
        assert (valid.sum(0) == 1).all(), "each frame on exactly one token"
        assert (valid.sum(1) >= 1).all(), "each token on at least one frame"
        tokens = valid.argmax(0)
        steps = tokens[1:] - tokens[:-1]
        assert ((steps == 0) | (steps == 1)).all(), "monotonic, one token at a time"
        assert tokens[0] == 0 and tokens[-1] == t_x - 1


def test_bool_mask_empty_items_and_grad():
    value = torch.randn(3, 4, 9, requires_grad=True)
    mask = pair_mask([4, 0, 2], [9, 0, 5], 4, 9, dtype=torch.bool)
    for implementation in (maximum_path, *IMPLEMENTATIONS.values()):
        path = implementation(value, mask)
        assert not path.requires_grad
        assert not path[1].any(), "an item of length 0 gets no path"
        assert durations_from_path(path).sum(1).tolist() == [9, 0, 5]


def test_empty_tensors():
    for shape in [(0, 3, 5), (2, 0, 5), (2, 3, 0)]:
        value = torch.randn(shape)
        for implementation in (maximum_path, *IMPLEMENTATIONS.values()):
            assert implementation(value, torch.ones(shape)).shape == shape


# --- errors ---------------------------------------------------------------------------------


def test_fewer_frames_than_tokens_is_an_alignment_error():
    value = torch.randn(2, 5, 8)
    mask = pair_mask([5, 5], [8, 3], 5, 8)
    for implementation in (maximum_path, *IMPLEMENTATIONS.values()):
        with pytest.raises(AlignmentError, match="item 1: 5 tokens, 3 frames"):
            implementation(value, mask)


def test_bad_arguments():
    value = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="squeeze"):
        maximum_path(value, torch.ones(2, 1, 3, 4))
    with pytest.raises(ValueError, match=r"\[B, T_text, T_frames\]"):
        maximum_path(torch.randn(3, 4), torch.ones(3, 4))
    with pytest.raises(TypeError, match="floating-point"):
        maximum_path(torch.ones(2, 3, 4, dtype=torch.long), torch.ones(2, 3, 4))


def test_kernels_compile_when_no_cache_directory_is_writable(monkeypatch):
    # numba raises at decoration time when no cache location is writable (read-only
    # install, no writable home); the kernels must then compile without a cache.
    real_njit = _numba_kernels.numba.njit

    def njit(*, cache, **options):
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        return real_njit(cache=cache, **options)

    monkeypatch.setattr(_numba_kernels.numba, "njit", njit)
    assert _numba_kernels._jit(nogil=True)(lambda a: a + 1)(1) == 2


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_durations_round_trip(name):
    rng = np.random.default_rng(3)
    value, mask, text_lengths, frame_lengths = random_batch(rng, batch=8, max_text=15,
                                                            max_frames=50)
    path = IMPLEMENTATIONS[name](value, mask)
    durations = durations_from_path(path)
    assert durations.dtype == torch.long and durations.shape == (8, 15)
    assert durations.sum(1).tolist() == frame_lengths.tolist()
    assert (durations[mask[:, :, 0] == 1] >= 1).all()
    assert (durations[mask[:, :, 0] == 0] == 0).all()
    frame_mask = (torch.arange(50) < torch.as_tensor(frame_lengths)[:, None]).float()
    for m in (frame_mask.unsqueeze(1), frame_mask, mask):  # [B,1,F], [B,F], [B,T,F]
        assert torch.equal(path_from_durations(durations, m), path)


def test_path_from_durations_inference_use():
    # Ceiled float durations (Glow-TTS inference); the frame mask is shorter than their sum.
    durations = torch.tensor([[2.0, 0.0, 3.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    frame_mask = torch.tensor([[1.0] * 5, [1.0] * 2 + [0.0] * 3]).unsqueeze(1)
    path = path_from_durations(durations, frame_mask)
    expected = torch.tensor([
        [[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]],
        [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    ], dtype=torch.float32)
    assert torch.equal(path, expected)
    assert path_from_durations(durations.long(), frame_mask.bool()).dtype == torch.float32
    assert path_from_durations(durations, frame_mask.half()).dtype == torch.float16


def test_path_from_durations_errors():
    frame_mask = torch.ones(1, 1, 4)
    with pytest.raises(ValueError, match="whole numbers"):
        path_from_durations(torch.tensor([[1.5, 2.0]]), frame_mask)
    with pytest.raises(ValueError, match="non-negative"):
        path_from_durations(torch.tensor([[-1, 2]]), frame_mask)
    with pytest.raises(ValueError, match="frame_mask"):
        path_from_durations(torch.tensor([[1, 2]]), torch.ones(1, 3, 4))
    with pytest.raises(ValueError, match="durations"):
        path_from_durations(torch.tensor([1, 2]), frame_mask)
    with pytest.raises(ValueError, match="path"):
        durations_from_path(torch.ones(2, 3))


def test_numba_kernels_leave_torch_thread_count_alone():
    # numba's OpenMP layer once raised torch's intra-op threads to all cores after the first
    # alignment, which changed results in the last bits (and broke exact resume).
    from flowspeech.align import soft_dtw

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        value = torch.randn(8, 40, 120)
        mask = torch.ones(8, 40, 120)
        maximum_path_numba(value, mask)
        assert torch.get_num_threads() == 1
        soft_dtw(torch.rand(8, 120, 120, requires_grad=True)).sum().backward()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_merge_blank_durations_keeps_the_total():
    from flowspeech.align import merge_blank_durations

    #        _  a  _  b  _  c  _
    d = [4, 2, 3, 5, 0, 1, 6]
    assert merge_blank_durations(d) == [4 + 2 + 1, 2 + 5 + 0, 0 + 1 + 6]
    assert merge_blank_durations([1, 2, 3]) == [6]
    for bad in ([1, 2], [5]):
        with pytest.raises(ValueError, match="2n \\+ 1"):
            merge_blank_durations(bad)


def test_fit_durations_to_frames():
    from flowspeech.align import fit_durations_to_frames

    assert fit_durations_to_frames([3, 2, 1], 6) == [3, 2, 1]
    assert fit_durations_to_frames([3, 2, 1], 7) == [3, 2, 2]
    assert fit_durations_to_frames([3, 2, 1], 4) == [2, 1, 1]     # each keeps a frame
    with pytest.raises(ValueError, match="another hop length"):
        fit_durations_to_frames([3, 2, 1], 9)
    with pytest.raises(ValueError, match="too few"):
        fit_durations_to_frames([1, 1, 1], 2, tolerance=5)
