"""Tests of the shared flow layers (flowspeech.flows): invertibility, log-determinants
against autograd Jacobians, the authors' channel orderings and parameterisations, inverse
caching, ActNorm's data-dependent initialisation, weight-norm removal."""

from __future__ import annotations

import pytest
import torch

from flowspeech.errors import ConfigError
from flowspeech.flows import (
    ActNorm,
    AffineCoupling,
    ChannelFlip,
    ChannelSwap,
    FlowSequence,
    GroupedInvertibleConv1x1,
    InvertibleConv1x1,
    WaveNet,
    WaveNetCouplingNet,
    remove_weight_norm,
    set_coupling_dtype,
    squeeze,
    unsqueeze,
)

torch.set_num_threads(1)

B, C, T = 2, 8, 9
LENGTHS = [9, 6]
COND_CH = 3


def make_mask(lengths, t, dtype=torch.float32):
    return (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(1).to(dtype)


def make_cond(kind, b=B, t=T, dtype=torch.float32):
    if kind is None:
        return None
    return torch.randn(b, COND_CH, 1 if kind == "global" else t, dtype=dtype)


def coupling(channels=C, cond=None, **kw):
    c_a = channels // 2
    c_b = channels - c_a
    out = c_b if kw.get("mean_only") else 2 * c_b
    net = WaveNetCouplingNet(c_a, out, hidden_channels=8, kernel_size=3, dilation_rate=2, n_layers=2,
                             cond_channels=COND_CH if cond else 0)
    return AffineCoupling(net, **kw)


@torch.no_grad()
def perturb(module, scale=0.1):
    """Move every parameter away from its (often identity) initialisation."""
    for p in module.parameters():
        p.add_(scale * torch.randn_like(p))


# name -> (builder, cond kind). Couplings see the conditioning kinds they must support.
CASES = {
    "actnorm": (lambda: ActNorm(C), None),
    "actnorm_scale": (lambda: ActNorm(C, parameterization="scale"), None),
    "invconv": (lambda: InvertibleConv1x1(C), None),
    "invconv_lu": (lambda: InvertibleConv1x1(C, lu=True), None),
    "invconv_grouped": (lambda: GroupedInvertibleConv1x1(C, n_split=4), None),
    "coupling": (lambda: coupling(), None),
    "coupling_global_cond": (lambda: coupling(cond="global"), "global"),
    "coupling_time_cond": (lambda: coupling(cond="time"), "time"),
    "coupling_sigmoid": (lambda: coupling(cond="global", sigmoid_scale=True), "global"),
    "coupling_mean_only": (lambda: coupling(cond="time", mean_only=True), "time"),
    "coupling_flowavenet": (lambda: coupling(cond="time", parameterization="flowavenet"), "time"),
    "coupling_odd_channels": (lambda: coupling(channels=7), None),
    "flip": (lambda: ChannelFlip(), None),
    "swap": (lambda: ChannelSwap(), None),
    "sequence": (
        lambda: FlowSequence(
            [
                ActNorm(C),
                InvertibleConv1x1(C),
                coupling(cond="time"),
                ActNorm(C, parameterization="scale"),
                GroupedInvertibleConv1x1(C, n_split=4),
                coupling(cond="time", sigmoid_scale=True),
                ChannelSwap(),
                InvertibleConv1x1(C, lu=True),
                coupling(cond="time", parameterization="flowavenet"),
                ChannelFlip(),
                coupling(cond="time", mean_only=True),
            ]
        ),
        "time",
    ),
}


def build(name, dtype=torch.float32, masked=True):
    """The layer after DDI on one batch and a perturbation, in eval mode, with its inputs."""
    torch.manual_seed(sum(map(ord, name)))
    builder, cond_kind = CASES[name]
    flow = builder()
    channels = 7 if name == "coupling_odd_channels" else C
    x = torch.randn(B, channels, T) * 2 + 1
    mask = make_mask(LENGTHS, T) if masked else None
    if mask is not None:
        x = x * mask
    cond = make_cond(cond_kind)
    flow.train()
    flow(x, mask, cond)  # runs DDI of any ActNorm
    perturb(flow)
    flow.eval()
    flow.to(dtype)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return flow, cast(x), cast(mask), cast(cond)


@pytest.mark.parametrize("masked", [True, False], ids=["padded", "full"])
@pytest.mark.parametrize("name", list(CASES))
def test_inverse_of_forward(name, masked):
    flow, x, mask, cond = build(name, masked=masked)
    y, logdet = flow(x, mask, cond)
    assert y.shape == x.shape and logdet.shape == (B,)
    assert not torch.allclose(y, x, atol=1e-3), "perturbed layer should not be the identity"
    if mask is not None:
        assert torch.all(y * (1 - mask) == 0), "padded outputs must be zero"
    x_rec = flow.inverse(y, mask, cond)
    torch.testing.assert_close(x_rec, x, atol=1e-5, rtol=0)


def _flat_logdets(flow, x, mask, cond):
    """Per-sample log|det J| of ``flow`` restricted to valid positions, via autograd."""
    shape = x.shape

    def f(flat):
        return flow(flat.view(shape), mask, cond)[0].reshape(-1)

    jac = torch.autograd.functional.jacobian(f, x.reshape(-1), vectorize=True)
    valid = (torch.ones_like(x) * (1 if mask is None else mask)).reshape(-1).bool()
    sample = torch.arange(shape[0]).repeat_interleave(shape[1] * shape[2])
    logdets = []
    for b in range(shape[0]):
        rows = valid & (sample == b)
        # Valid outputs of a sample depend on nothing but its own valid inputs.
        assert torch.all(jac[rows][:, ~rows] == 0), "padding or other samples leak into outputs"
        logdets.append(torch.linalg.slogdet(jac[rows][:, rows])[1])
    return torch.stack(logdets)


@pytest.mark.parametrize("masked", [True, False], ids=["padded", "full"])
@pytest.mark.parametrize("name", [n for n in CASES if n != "sequence"] + ["sequence"])
def test_logdet_matches_autograd_jacobian(name, masked):
    # float64 so the comparison is tight enough to catch a missing mask or a sign.
    flow, x, mask, cond = build(name, dtype=torch.float64, masked=masked)
    _, logdet = flow(x, mask, cond)
    expected = _flat_logdets(flow, x, mask, cond)
    torch.testing.assert_close(logdet, expected, atol=1e-8, rtol=1e-8)


# -- the authors' orderings and parameterisations ---------------------------------------


def test_grouped_conv_channel_grouping_is_glow_tts():
    # Glow-TTS InvConvNear with C=8, n_split=4: groups (0, 1, 4, 5) and (2, 3, 6, 7), in
    # that order, each mixed by the same 4x4 matrix.
    layer = GroupedInvertibleConv1x1(8, n_split=4)
    w = torch.tensor([[2.0, 3, 5, 7], [11, 13, 17, 19], [23, 29, 31, 37], [41, 43, 47, 53]])
    with torch.no_grad():
        layer.weight.copy_(w)
    groups = [(0, 1, 4, 5), (2, 3, 6, 7)]
    for group in groups:
        for j_in, ch_in in enumerate(group):
            x = torch.zeros(1, 8, 3)
            x[:, ch_in] = 1.0
            y, _ = layer(x)
            expected = torch.zeros(8)
            for j_out, ch_out in enumerate(group):
                expected[ch_out] = w[j_out, j_in]
            torch.testing.assert_close(y[0, :, 0], expected)
    _, logdet = layer(torch.zeros(1, 8, 3))
    torch.testing.assert_close(logdet, torch.linalg.slogdet(w.double())[1].float().view(1) * 2 * 3)


class _FixedNet(torch.nn.Module):
    """A coupling 'network' returning a fixed tensor, to pin how its output is read."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x_a, mask, cond):
        return self.out


@pytest.mark.parametrize(
    "kw, expect",
    [
        (dict(), lambda xb, o: o[:, :2] + torch.exp(o[:, 2:]) * xb),  # [shift, log_s]
        (dict(sigmoid_scale=True), lambda xb, o: o[:, :2] + (1e-6 + torch.sigmoid(o[:, 2:] + 2)) * xb),
        (dict(parameterization="flowavenet"), lambda xb, o: (xb - o[:, 2:]) * torch.exp(-o[:, :2])),  # [log_s, t]
        (dict(mean_only=True), lambda xb, o: xb + o),
    ],
    ids=["glow", "sigmoid_scale", "flowavenet", "mean_only"],
)
def test_coupling_reads_network_output_like_the_authors(kw, expect):
    torch.manual_seed(0)
    out = torch.randn(2, 2 if kw.get("mean_only") else 4, 5)
    x = torch.randn(2, 4, 5)
    layer = AffineCoupling(_FixedNet(out), **kw)
    y, _ = layer(x)
    torch.testing.assert_close(y[:, :2], x[:, :2])
    torch.testing.assert_close(y[:, 2:], expect(x[:, 2:], out))


def test_fresh_wavenet_coupling_is_identity():
    layer = coupling(cond="global")
    x, cond = torch.randn(B, C, T), make_cond("global")
    y, logdet = layer(x, None, cond)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(logdet, torch.zeros(B))


@pytest.mark.parametrize("parameterization", ["glow", "flowavenet"])
def test_reduced_precision_coupling_network_keeps_the_flow_exactly_invertible(parameterization):
    """A bfloat16 network computes slightly different parameters, but the same ones on the
    way back (x_a passes unchanged), so the float32 flow still inverts to float rounding."""
    torch.manual_seed(0)
    layer = coupling(cond="local", parameterization=parameterization)
    perturb(layer, 0.3)
    x, mask, cond = torch.randn(B, C, T), make_mask(LENGTHS, T), make_cond("local")
    x = x * mask
    y32, logdet32 = layer(x, mask, cond)
    set_coupling_dtype(layer, torch.bfloat16)
    assert layer.net.end.weight.dtype == torch.bfloat16
    y, logdet = layer(x, mask, cond)
    assert y.dtype == torch.float32 and logdet.dtype == torch.float32
    assert 0 < (y - y32).abs().max() < 0.05 * y32.abs().max()
    torch.testing.assert_close(layer.inverse(y, mask, cond), x, atol=1e-6, rtol=1e-6)
    with pytest.raises(ConfigError, match="floating-point"):
        set_coupling_dtype(layer, torch.int8)


@pytest.mark.parametrize("order", ["glow_tts", "flowavenet"])
@pytest.mark.parametrize("factor", [2, 3])
def test_squeeze_ordering_and_inverse(order, factor):
    b, c, t = 2, 3, 11
    x = torch.randn(b, c, t)
    mask = make_mask([11, 7], t)
    x = x * mask
    x_sq, m_sq = squeeze(x, mask, factor, order)
    t_sq = t // factor
    assert x_sq.shape == (b, c * factor, t_sq) and m_sq.shape == (b, 1, t_sq)
    for ch in range(c):
        for k in range(factor):
            out_ch = k * c + ch if order == "glow_tts" else ch * factor + k
            torch.testing.assert_close(x_sq[:, out_ch], x[:, ch, k : t_sq * factor : factor] * m_sq[:, 0])
    # a group is valid iff its last frame is (Glow-TTS subsamples the mask so)
    torch.testing.assert_close(m_sq, mask[:, :, factor - 1 : t_sq * factor : factor])
    x_back, m_back = unsqueeze(x_sq, m_sq, factor, order)
    torch.testing.assert_close(m_back, m_sq.repeat_interleave(factor, 2))
    torch.testing.assert_close(x_back, x[:, :, : t_sq * factor] * m_back)
    # lengths that are multiples of the factor lose nothing
    full = torch.randn(b, c, t_sq * factor)
    torch.testing.assert_close(unsqueeze(*squeeze(full, None, factor, order), factor, order)[0], full)


def test_squeeze_matches_glow_tts_formula():
    # commons.squeeze: view(b, c, t/2, 2).permute(0, 3, 1, 2); FloWaveNet: permute(0, 1, 3, 2)
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    ref_glow = x.view(2, 3, 2, 2).permute(0, 3, 1, 2).reshape(2, 6, 2)
    ref_fwn = x.view(2, 3, 2, 2).permute(0, 1, 3, 2).reshape(2, 6, 2)
    torch.testing.assert_close(squeeze(x, None, 2, "glow_tts")[0], ref_glow)
    torch.testing.assert_close(squeeze(x, None, 2, "flowavenet")[0], ref_fwn)


# -- inverse caching ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [lambda: InvertibleConv1x1(6), lambda: InvertibleConv1x1(6, lu=True),
             lambda: GroupedInvertibleConv1x1(8, 4)], ids=["plain", "lu", "grouped"]
)
def test_inverse_matrix_is_cached_and_invalidated(make, monkeypatch):
    layer = make().eval()
    calls = []
    real_inv = torch.linalg.inv
    monkeypatch.setattr(torch.linalg, "inv", lambda a: calls.append(1) or real_inv(a))
    y = torch.randn(2, layer.channels, 5)
    with torch.no_grad():
        x1 = layer.inverse(y)
        cached = layer._inv
        x2 = layer.inverse(y)
    assert len(calls) == 1 and layer._inv is cached
    torch.testing.assert_close(x1, x2)

    # an in-place update (what an optimiser step does) invalidates the cache
    perturb(layer, 0.3)
    with torch.no_grad():
        x3 = layer.inverse(y)
    assert len(calls) == 2 and layer._inv is not cached
    torch.testing.assert_close(layer(x3)[0], y, atol=1e-5, rtol=0)

    # so does loading a state dict
    other = make()
    layer.load_state_dict(other.state_dict())
    with torch.no_grad():
        layer.inverse(y)
    assert len(calls) == 3


def test_inverse_is_differentiable_when_training():
    layer = InvertibleConv1x1(4)
    layer.inverse(torch.randn(2, 4, 3)).pow(2).sum().backward()
    assert layer.weight.grad is not None and layer._inv is None


def test_inverse_cached_in_inference_mode_is_usable_with_autograd():
    layer = InvertibleConv1x1(4).requires_grad_(False)
    y = torch.randn(2, 4, 3)
    with torch.inference_mode():
        x_inf = layer.inverse(y)
    y_grad = y.clone().requires_grad_()
    x = layer.inverse(y_grad)  # must not reuse the inference-mode tensor in autograd
    x.sum().backward()
    torch.testing.assert_close(x.detach(), x_inf)
    assert y_grad.grad is not None


# -- ActNorm ---------------------------------------------------------------------------


@pytest.mark.parametrize("parameterization", ["log_scale", "scale"])
def test_actnorm_ddi_normalises_valid_frames(parameterization):
    torch.manual_seed(0)
    layer = ActNorm(5, parameterization=parameterization)
    mask = make_mask([12, 8, 3], 12)
    x = (torch.randn(3, 5, 12) * torch.arange(1.0, 6.0).view(1, 5, 1) + 3) * mask
    x = x + 1e3 * (1 - mask)  # garbage in the padding must not affect the statistics
    y, _ = layer.train()(x, mask)
    n = mask.sum()
    mean = (y * mask).sum((0, 2)) / n
    var = (((y - mean.view(1, -1, 1)) * mask) ** 2).sum((0, 2)) / (n - int(parameterization == "scale"))
    torch.testing.assert_close(mean, torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(var, torch.ones(5), atol=1e-4, rtol=0)
    assert bool(layer.initialized)
    # a second training forward does not re-initialise
    before = [p.clone() for p in layer.parameters()]
    layer(torch.randn(3, 5, 12), mask)
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))


def test_actnorm_initialized_survives_state_dict_and_blocks_reinit():
    torch.manual_seed(0)
    trained = ActNorm(4).train()
    trained(torch.randn(2, 4, 6) * 3 + 2)
    state = trained.state_dict()
    assert "initialized" in state and bool(state["initialized"])

    loaded = ActNorm(4).train()  # ddi=True: would initialise on its first forward
    loaded.load_state_dict(state)
    x = torch.randn(2, 4, 6) * 10
    y_loaded, _ = loaded(x)
    torch.testing.assert_close(y_loaded, trained(x)[0])
    torch.testing.assert_close(loaded.logs, trained.logs)

    # a checkpoint converted from the authors' code has no flag: it counts as initialised
    authors = {"logs": state["logs"], "bias": state["bias"]}
    converted = ActNorm(4).train()
    converted.load_state_dict(authors)  # strict
    converted(x)
    torch.testing.assert_close(converted.bias, trained.bias)


def test_actnorm_ddi_controls():
    x = torch.randn(2, 3, 5) * 4 + 1
    off = ActNorm(3, ddi=False).train()
    torch.testing.assert_close(off(x)[0], x)  # identity, no DDI
    eval_mode = ActNorm(3).eval()
    torch.testing.assert_close(eval_mode(x)[0], x)  # DDI only in training mode
    marked = ActNorm(3)
    marked.mark_initialized()
    torch.testing.assert_close(marked.train()(x)[0], x)
    marked.set_ddi(True)
    assert not torch.allclose(marked(x)[0], x)


# -- weight norm, no_grad / inference_mode, WaveNet -----------------------------------


def test_remove_weight_norm_keeps_outputs():
    flow, x, mask, cond = build("sequence")
    y_before, ld_before = flow(x, mask, cond)
    flow.remove_weight_norm()
    assert not any("parametrizations" in k for k in flow.state_dict())
    y_after, ld_after = flow(x, mask, cond)
    torch.testing.assert_close(y_after, y_before, atol=1e-6, rtol=0)
    torch.testing.assert_close(ld_after, ld_before, atol=1e-6, rtol=0)
    remove_weight_norm(flow)  # idempotent


def test_old_weight_norm_keys_load():
    # checkpoints of the authors' code store weight_g / weight_v
    net = WaveNet(4, 3, 2, 2, cond_channels=2)
    state = {}
    for k, v in net.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        state[k] = v + 1
    fresh = WaveNet(4, 3, 2, 2, cond_channels=2)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.in_layers[0].parametrizations.weight.original1, state["in_layers.0.weight_v"])


@pytest.mark.parametrize("ctx", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inference_mode"])
def test_no_grad_and_inference_mode(ctx):
    flow, x, mask, cond = build("sequence")
    y_ref, ld_ref = flow(x, mask, cond)
    with ctx():
        y, ld = flow(x, mask, cond)
        x_rec = flow.inverse(y, mask, cond)
    torch.testing.assert_close(y, y_ref.detach())
    torch.testing.assert_close(ld, ld_ref.detach())
    torch.testing.assert_close(x_rec, x, atol=1e-5, rtol=0)
    # DDI also runs there
    layer = ActNorm(C).train()
    with ctx():
        layer(x, mask)
    assert bool(layer.initialized) and not torch.all(layer.logs == 0)


def test_wavenet_global_cond_equals_broadcast_per_frame_cond():
    torch.manual_seed(0)
    net = WaveNet(6, 3, 2, 3, cond_channels=COND_CH).eval()
    perturb(net)
    x, g = torch.randn(2, 6, 10), torch.randn(2, COND_CH, 1)
    torch.testing.assert_close(net(x, None, g), net(x, None, g.expand(-1, -1, 10)))


def test_wavenet_matches_plain_reference():
    # The same network written without the in-place shortcuts, from its definition.
    torch.manual_seed(0)
    h, n = 4, 3
    net = WaveNet(h, 3, 2, n, cond_channels=2)
    perturb(net)
    x, g, mask = torch.randn(2, h, 8), torch.randn(2, 2, 8), make_mask([8, 5], 8)
    x = x * mask
    ref, cur = 0, x
    cond_all = net.cond_layer(g)
    for i in range(n):
        a = net.in_layers[i](cur) + cond_all[:, 2 * h * i : 2 * h * (i + 1)]
        acts = torch.tanh(a[:, :h]) * torch.sigmoid(a[:, h:])
        rs = net.res_skip_layers[i](acts)
        if i < n - 1:
            cur = (cur + rs[:, :h]) * mask
            ref = ref + rs[:, h:]
        else:
            ref = ref + rs
    torch.testing.assert_close(net(x, mask, g), ref * mask)
    with torch.no_grad():
        torch.testing.assert_close(net(x, mask, g), ref * mask)


def test_flow_sequence_is_a_container():
    seq = FlowSequence([ActNorm(4), InvertibleConv1x1(4)])
    seq.append(ChannelFlip())
    assert len(seq) == 3 and isinstance(seq[1], InvertibleConv1x1)
    assert isinstance(seq[:2], FlowSequence) and [type(m) for m in seq][2] is ChannelFlip
    assert set(seq.state_dict()) == {"0.logs", "0.bias", "0.initialized", "1.weight"}


def test_errors():
    with pytest.raises(ConfigError):
        GroupedInvertibleConv1x1(6, n_split=4)
    with pytest.raises(ConfigError):
        WaveNet(4, 2, 1, 2)  # even kernel
    with pytest.raises(ConfigError):
        AffineCoupling(torch.nn.Identity(), parameterization="flowavenet", sigmoid_scale=True)
    with pytest.raises(ConfigError):
        squeeze(torch.zeros(1, 2, 4), None, 2, "nope")
    with pytest.raises(ValueError, match="built for 4 channels"):
        InvertibleConv1x1(4)(torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="mask"):
        ActNorm(4)(torch.zeros(1, 4, 3), torch.ones(1, 1, 4))
    with pytest.raises(ValueError, match="cond_channels=0"):
        coupling()(torch.zeros(1, C, 3), None, torch.zeros(1, COND_CH, 3))
    with pytest.raises(ValueError, match="network must return"):
        AffineCoupling(_FixedNet(torch.zeros(1, 3, 3)))(torch.zeros(1, 4, 3))
