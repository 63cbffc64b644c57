"""WaveGlow's inverse on folded weights: the fast path of :meth:`WaveGlow.infer
<flowspeech.models.waveglow.WaveGlow.infer>` on CPUs.

It gives the same numbers as the layer modules (:meth:`WaveGlow.inverse`) to float rounding
and is checked against them in the tests; ``docs/waveglow.md`` explains the folds and
``docs/benchmarks.md`` measures them against the authors' code.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from flowspeech.flows import ensure_finite

if TYPE_CHECKING:
    from flowspeech.models.waveglow import WaveGlow

__all__ = ["InverseEngine"]


class InverseEngine:
    """WaveGlow's inverse on folded weights, in time-major buffers (one row per group).

    Per flow ``k`` (in reverse) and per WaveNet layer ``i`` the authors compute
    ``acts = gate(in_layer_i(h) + cond_layer(c)_i)``, ``h += res_i(acts)``,
    ``out += skip_i(acts)``, then ``end(out)``. Here, exactly the same maps are regrouped:

    * one workspace row per group position holds ``[h(t - d) | h(t) | s | h(t + d) | c(t) | 1 |
      x_a taps]``; ``c`` is the grouped upsampled mel (no bias) and ``s`` accumulates the
      coupling output; so a layer's dilated conv, its conditioning projection and all biases
      are ONE matrix product ``a = row @ W_i``;
    * ``end`` is linear, so ``end(sum_i skip_i(acts_i)) = sum_i (E S_i) acts_i + const``: the
      skip projections shrink from ``H x H`` to ``2 C_b x H`` and the residual and skip outputs
      of a layer are one product accumulated in place into ``[h(t) | s]``;
    * ``start`` (``C_a -> H``) is folded into layer 0's taps, which then read the ``C_a``
      input channels instead of ``H`` (the start bias seen through zero padding is corrected
      on the edge rows);
    * ``tanh(x) sigmoid(y) = sigmoid(y) - 2 sigmoid(-2x) sigmoid(y)``: the ``-2`` is folded
      into the weights, so the gate is one in-place sigmoid and one ``addcmul``;
    * the upsampler is ``n_taps = kernel / hop`` matrix products of the mel with the kernel
      slices, overlap-added straight into the grouped, time-major conditioning columns.

    Folding is done in float64, then cast to the device and to the coupling networks' dtype
    (the workspace and all matrix products but the 1x1 inverses); the audio and the inverse
    1x1 matrices keep the model's dtype (``state_dtype``), which differs after
    :meth:`WaveGlow.set_waveform_dtype`.
    """

    def __init__(self, model: WaveGlow):
        p = model.upsample.weight
        self.state_dtype, self.device = p.dtype, p.device
        self.dtype = next(model.coupling[0].net.parameters()).dtype
        self.n_group, self.hop = model.n_group, model.hop_length
        self.flow_channels = list(model.flow_channels)
        H, G, k = model.n_channels, model.n_group, model.kernel_size
        self.H, self.L, self.k, self.c = H, model.n_layers, k, (k - 1) // 2
        self.n_mels = model.n_mel_channels
        cc = self.n_mels * G
        # Workspace columns.
        self.A = G // 2                               # widest x_a
        self.off_center = self.c * H
        self.off_s = self.off_center + H
        self.off_right = self.off_s + G               # s holds up to 2 C_b = G columns
        self.off_g = k * H + G
        self.off_one = self.off_g + cc
        self.off_xa = self.off_one + 1
        width = self.off_xa + k * self.A
        self.width = (width + 15) // 16 * 16          # 64-byte rows
        self.acts_width = (H + 1 + 15) // 16 * 16

        f64 = dict(dtype=torch.float64, device=self.device)
        cast = dict(dtype=self.dtype, device=self.device)
        # Upsampler: kernel zero-padded to n_taps * hop; slice m as [n_mels_in, (p, c, k')].
        w_up = model.upsample.weight.detach().to(**f64)            # [c_in, c, K]
        n_taps = math.ceil(model.upsample_kernel_size / self.hop)
        w_up = F.pad(w_up, (0, n_taps * self.hop - w_up.size(2)))
        w_up = w_up.view(self.n_mels, self.n_mels, n_taps, self.hop // G, G)
        self.up = [w_up[:, :, m].permute(0, 2, 1, 3).reshape(self.n_mels, -1).to(**cast)
                   for m in range(n_taps)]
        up_bias = model.upsample.bias.detach().to(**f64).repeat_interleave(G)  # [cc]

        gate_scale = torch.ones(2 * H, **f64)
        gate_scale[:H] = -2.0
        self.flows = []
        for kk, ch in enumerate(model.flow_channels):
            net = model.coupling[kk].net
            wn = net.wn
            c_a, c_b = ch // 2, ch - ch // 2
            s_w = net.start.weight.detach().to(**f64)[:, :, 0]            # [H, C_a]
            s_b = net.start.bias.detach().to(**f64)
            e_w = net.end.weight.detach().to(**f64)[:, :, 0]              # [2 C_b, H]
            e_b = net.end.bias.detach().to(**f64)
            c_w = wn.cond_layer.weight.detach().to(**f64)[:, :, 0]        # [2 H L, cc]
            cond_b = wn.cond_layer.bias.detach().to(**f64) + c_w @ up_bias
            layers = []
            for i in range(self.L):
                w_in = wn.in_layers[i].weight.detach().to(**f64)         # [2H, H, k]
                b_in = wn.in_layers[i].bias.detach().to(**f64)
                rows = slice(2 * H * i, 2 * H * (i + 1))
                corr = None
                if i == 0:
                    taps = [w_in[:, :, j] @ s_w for j in range(k)]        # [2H, C_a]
                    w = torch.zeros(cc + 1 + k * self.A, 2 * H, **f64)
                    w[:cc] = c_w[rows].T
                    w[cc] = b_in + cond_b[rows] + sum(w_in[:, :, j] @ s_b for j in range(k))
                    for j in range(k):
                        w[cc + 1 + j * self.A: cc + 1 + j * self.A + c_a] = taps[j].T
                    corr = [((w_in[:, :, j] @ s_b) * gate_scale).to(**cast) for j in range(k)]
                else:
                    w = torch.zeros(self.off_one + 1, 2 * H, **f64)
                    for j in range(k):
                        w[self._tap_offset(j):self._tap_offset(j) + H] = w_in[:, :, j].T
                    w[self.off_g:self.off_one] = c_w[rows].T
                    w[self.off_one] = b_in + cond_b[rows]
                w = (w * gate_scale).to(**cast)
                rs_w = wn.res_skip_layers[i].weight.detach().to(**f64)[:, :, 0]
                rs_b = wn.res_skip_layers[i].bias.detach().to(**f64)
                if i < self.L - 1:   # [h | s] += acts @ rs: residual then folded skip
                    rs = torch.zeros(H + 1, H + ch, **f64)
                    rs[:H, :H], rs[H, :H] = rs_w[:H].T, rs_b[:H]
                    rs[:H, H:], rs[H, H:] = (e_w @ rs_w[H:]).T, e_w @ rs_b[H:]
                else:                # the last layer has a skip output only
                    rs = torch.cat([(e_w @ rs_w).T, (e_w @ rs_b)[None]], dim=0)
                layers.append((w, rs.to(**cast), corr))
            w_inv = model.convinv[kk].inverse_matrix().detach().to(**f64)
            self.flows.append(dict(
                start_w=s_w.T.to(**cast), start_b=s_b.to(**cast), end_b=e_b.to(**cast),
                layers=layers, w_inv_t=w_inv.T.to(dtype=self.state_dtype, device=self.device),
                c_a=c_a, c_b=c_b))

    def _tap_offset(self, j: int) -> int:
        """First workspace column of dilated tap ``j`` (the centre tap is ``h`` itself)."""
        if j < self.c:
            return j * self.H
        if j == self.c:
            return self.off_center
        return self.off_right + (j - self.c - 1) * self.H

    @staticmethod
    def _shift(dst: torch.Tensor, src: torch.Tensor, offset: int) -> None:
        """``dst[t] = src[t + offset]``, zero outside (the convolution's zero padding)."""
        n = src.size(0) - abs(offset)
        if n <= 0:
            dst.zero_()
        elif offset >= 0:
            dst[:n].copy_(src[offset:])
            dst[n:].zero_()
        else:
            dst[-offset:].copy_(src[:n])
            dst[:-offset].zero_()

    def _conditioning(self, cols: torch.Tensor, mel: torch.Tensor, skip: int) -> None:
        """Fill the ``c`` columns with the grouped upsampled mel of frames ``skip..F-1``
        (earlier frames only contribute through the kernel's reach). ``mel`` ``[n_mels, F]``."""
        n_frames = mel.size(1) - skip
        per_frame = self.hop // self.n_group
        g = cols[:, self.off_g:self.off_one].view(n_frames, per_frame, self.n_mels, self.n_group)
        mel_t = mel.T
        for m, w in enumerate(self.up):
            # Sample hop * q + r gets kernel tap hop * m + r of frame q - m.
            q0 = max(0, m - skip)
            if q0 >= n_frames:
                break
            part = torch.mm(mel_t[q0 + skip - m:n_frames + skip - m], w)
            part = part.view(n_frames - q0, per_frame, self.n_mels, self.n_group)
            if m == 0:
                g.copy_(part)
            else:
                g[q0:].add_(part)

    def run(self, mel: torch.Tensor, z: torch.Tensor, skip_frames: int = 0) -> torch.Tensor:
        """Audio ``[B, (F - skip_frames) * hop]`` from mel ``[B, n_mels, F]`` and latent ``z``
        ``[B, n_group, T]`` (already scaled by sigma); the first ``skip_frames`` mel frames
        are upsampler context only."""
        batch, _, n_frames = mel.shape
        n = (n_frames - skip_frames) * self.hop
        t = n // self.n_group
        if tuple(z.shape) != (batch, self.n_group, t):
            raise ValueError(f"expected z of shape {[batch, self.n_group, t]}, got {tuple(z.shape)}")
        H = self.H
        mel = mel.to(self.dtype)
        # Zeroed, not empty: the matrix products read strided views of these buffers, and
        # oneDNN's AMX bfloat16 kernels read past a view's last column up to a multiple of
        # 32 (oneDNN issue 5717), relying on zeros in the packed weights. Garbage there
        # (NaN * 0 = NaN) made the audio NaN on such CPUs; finite neighbours contribute 0.
        cols = torch.zeros(t, self.width, dtype=self.dtype, device=self.device)
        cols[:, self.off_one] = 1
        a = torch.zeros(t, 2 * H, dtype=self.dtype, device=self.device)
        acts = torch.zeros(t, self.acts_width, dtype=self.dtype, device=self.device)
        acts[:, H] = 1
        acts1 = acts[:, :H + 1]
        out = torch.empty(batch, n, dtype=self.state_dtype, device=self.device)
        for b in range(batch):
            self._conditioning(cols, mel[b], skip_frames)
            x = out[b].view(t, self.n_group)      # final layout = audio sample order
            x.copy_(z[b].T)
            for kk in reversed(range(len(self.flows))):
                self._flow(kk, x, cols, a, acts, acts1)
        if self.dtype != self.state_dtype:
            ensure_finite(out, f"WaveGlow's coupling networks in {self.dtype}".replace("torch.", ""))
        return out

    def _flow(self, kk, x, cols, a, acts, acts1) -> None:
        fl = self.flows[kk]
        H, k, c = self.H, self.k, self.c
        ch = self.flow_channels[kk]
        lo = self.n_group - ch
        c_a, c_b = fl["c_a"], fl["c_b"]
        x_a, y_b = x[:, lo:lo + c_a], x[:, lo + c_a:]
        # Layer-0 taps read x_a directly; unused columns must hold finite values.
        for j in range(k):
            col = self.off_xa + j * self.A
            self._shift(cols[:, col:col + c_a], x_a, j - c)
            if c_a < self.A:
                cols[:, col + c_a:col + self.A].zero_()
        h = cols[:, self.off_center:self.off_s]
        centre_tap = self.off_xa + c * self.A        # x_a itself, in the workspace's dtype
        torch.addmm(fl["start_b"], cols[:, centre_tap:centre_tap + c_a], fl["start_w"], out=h)
        s = cols[:, self.off_s:self.off_s + ch]
        s.copy_(fl["end_b"].expand_as(s))
        if ch < self.n_group:
            cols[:, self.off_s + ch:self.off_right].zero_()
        hs = cols[:, self.off_center:self.off_s + ch]
        rows = x.size(0)
        for i, (w, rs, corr) in enumerate(fl["layers"]):
            if i == 0:
                torch.mm(cols[:, self.off_g:self.off_xa + k * self.A], w, out=a)
                for j in range(k):  # taps that fell into the zero padding saw no start bias
                    o = j - c
                    if o < 0:
                        a[:min(-o, rows)] -= corr[j]
                    elif o > 0:
                        a[max(rows - o, 0):] -= corr[j]
            else:
                d = 2 ** i
                for j in range(k):
                    if j != c:
                        col = self._tap_offset(j)
                        self._shift(cols[:, col:col + H], h, (j - c) * d)
                torch.mm(cols[:, :self.off_one + 1], w, out=a)
            a.sigmoid_()
            torch.addcmul(a[:, H:], a[:, :H], a[:, H:], value=-2.0, out=acts[:, :H])
            if i < self.L - 1:
                hs.addmm_(acts1, rs)
            else:
                s.addmm_(acts1, rs)
        # Inverse affine coupling, then the inverse 1x1 convolution.
        y_b.sub_(s[:, :c_b]).mul_(torch.exp(-s[:, c_b:2 * c_b].to(x.dtype)))
        cur = x[:, lo:]
        cur.copy_(torch.mm(cur, fl["w_inv_t"]))
