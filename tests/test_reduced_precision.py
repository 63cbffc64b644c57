"""Reduced-precision inference never returns NaN audio in silence.

On Intel CPUs with AMX, oneDNN's bfloat16 matrix product reads each row of its left operand
past the last column, up to a multiple of 32, and relies on zero padding in the packed
right operand to cancel what it read (oneDNN issue 5717). Where the bytes after a row are
uninitialised memory holding a NaN pattern, NaN * 0 = NaN leaks into the result. The fault
cannot be run on other processors, so ``kernel_reading_past_k`` reproduces it in Python:
WaveGlow's engine must give finite audio under it, even when fresh buffers hold NaN. And any
non-finite reduced-precision result, whatever its cause, must stop with a clear error.
"""

from __future__ import annotations

import pytest
import torch
from test_flowavenet import tiny as tiny_flowavenet
from test_naturalspeech import tiny_config as tiny_naturalspeech
from test_waveglow import tiny as tiny_waveglow

from flowspeech.errors import NumericalError
from flowspeech.models.registry import build_model

_mm, _addmm, _addmm_ = torch.mm, torch.addmm, torch.Tensor.addmm_
_empty = torch.empty


def kernel_reading_past_k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` as the faulty AMX kernel computes it for bfloat16 with ``K > 32`` and
    ``K % 32 != 0``: each row of ``a`` is read up to ``K`` rounded up to 32 (what lies in
    memory after the row's last column), against ``b`` padded with zero rows. The rows whose
    over-read would leave the allocation are computed exactly, as the kernel's last tile is."""
    k = a.size(1)
    k_read = -(-k // 32) * 32
    if a.dtype != torch.bfloat16 or k <= 32 or k_read == k or a.stride(1) != 1:
        return _mm(a, b)
    size = a.untyped_storage().nbytes() // a.element_size()
    rows = 0
    while rows < a.size(0) and a.storage_offset() + rows * a.stride(0) + k_read <= size:
        rows += 1
    read = a.as_strided((rows, k_read), (a.stride(0), 1))
    b_padded = torch.cat([b, b.new_zeros(k_read - k, b.size(1))])
    return torch.cat([_mm(read, b_padded), _mm(a[rows:], b)])


@pytest.fixture
def faulty_bf16_kernels(monkeypatch):
    """The over-reading products in place of torch's, and fresh buffers full of NaN (the bit
    patterns uninitialised memory may hold)."""
    def mm(a, b, *, out=None):
        r = kernel_reading_past_k(a, b)
        return r if out is None else out.copy_(r)

    def addmm(bias, a, b, *, out=None):
        r = bias + kernel_reading_past_k(a, b)
        return r if out is None else out.copy_(r)

    def addmm_(self, a, b):
        return self.add_(kernel_reading_past_k(a, b))

    def empty(*shape, **kwargs):
        t = _empty(*shape, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "mm", mm)
    monkeypatch.setattr(torch, "addmm", addmm)
    monkeypatch.setattr(torch.Tensor, "addmm_", addmm_)
    monkeypatch.setattr(torch, "empty", empty)


def test_the_emulated_kernel_leaks_what_lies_after_a_strided_row():
    buffer = torch.full((6, 48), float("nan"), dtype=torch.bfloat16)
    buffer[:, :37] = 1.0
    a, b = buffer[:, :37], torch.ones(37, 4, dtype=torch.bfloat16)
    assert torch.isnan(kernel_reading_past_k(a, b)[:-1]).all()          # the fault
    assert torch.equal(kernel_reading_past_k(a.contiguous(), b), _mm(a.contiguous(), b))


@pytest.mark.parametrize("channels", [16, 40])   # 40: the gate's 41 columns over-read too
def test_waveglow_bfloat16_engine_stays_finite_when_the_kernel_reads_past_each_row(channels, faulty_bf16_kernels):
    model = tiny_waveglow(n_channels=channels)
    mel, z = torch.randn(2, 3, 40), torch.randn(2, 8, 80)
    expected = model.infer(mel, sigma=1.0, noise=z).waveforms
    model.prepare_for_inference().set_waveform_dtype(torch.bfloat16)
    for _ in range(3):   # fresh NaN-filled buffers each time
        out = model.infer(mel, sigma=1.0, noise=z).waveforms
        assert torch.isfinite(out).all()
        assert float((out - expected).abs().max()) <= 0.03 * float(expected.abs().max())


def _poison(module: torch.nn.Module) -> None:
    with torch.no_grad():
        next(p for name, p in module.named_parameters() if name.endswith("bias")).fill_(float("nan"))


def test_waveglow_engine_in_bfloat16_refuses_to_return_nan_audio():
    model = tiny_waveglow().prepare_for_inference().set_waveform_dtype(torch.bfloat16)
    _poison(model.coupling[0].net.end)
    with pytest.raises(NumericalError, match="WaveGlow's coupling networks in bfloat16 gave NaN.*float32"):
        model.infer(torch.randn(1, 3, 10), sigma=1.0)
    with pytest.raises(NumericalError, match="in bfloat16 gave NaN"):    # the layer modules too
        model.inverse(torch.randn(1, 8, 20), torch.randn(1, 3, 10))


def test_flowavenet_in_bfloat16_refuses_to_return_nan_audio():
    model = tiny_flowavenet().prepare_for_inference()
    model.set_waveform_dtype(torch.bfloat16)
    assert torch.isfinite(model.infer(torch.rand(1, 4, 10), sigma=1.0).waveforms).all()
    _poison(next(m for m in model.modules() if type(m).__name__ == "AffineCoupling").net)
    with pytest.raises(NumericalError, match="NonCausalWaveNet in bfloat16 gave NaN"):
        model.infer(torch.rand(1, 4, 10), sigma=1.0)


def test_naturalspeech_decoder_in_bfloat16_refuses_to_return_nan_audio():
    torch.manual_seed(0)
    model = build_model(tiny_naturalspeech()).prepare_for_inference().set_waveform_dtype(torch.bfloat16)
    tokens, lengths = torch.randint(1, 20, (1, 6)), torch.tensor([6])
    assert torch.isfinite(model.infer(tokens, lengths, noise_scale=0.0).waveforms).all()
    _poison(model.decoder)
    with pytest.raises(NumericalError, match="in bfloat16 gave NaN"):
        model.infer(tokens, lengths, noise_scale=0.0)


def test_float32_models_are_not_checked_or_slowed():
    """The check belongs to reduced precision only: a float32 model's NaN (a user's broken
    weights, say) is not this error."""
    model = tiny_waveglow().prepare_for_inference()
    _poison(model.coupling[0].net.end)
    assert torch.isnan(model.infer(torch.randn(1, 3, 10), sigma=1.0).waveforms).any()
