"""Invertible 1x1 convolutions: channel mixing between couplings.

* :class:`InvertibleConv1x1` - Kingma & Dhariwal 2018 ("Glow", section 3.2), plain as in
  WaveGlow (Prenger et al. 2019, ``glow.Invertible1x1Conv``) or LU-parameterised (Glow,
  section 3.2, "LU decomposition").
* :class:`GroupedInvertibleConv1x1` - Glow-TTS (Kim et al. 2020, section 3.3, "invertible
  1x1 convolution" applied to groups of channels; the authors' ``modules.InvConvNear``).

The inverse matrix is computed once (in float64) and cached for inference; the cache is keyed
on the identity and version counter of the parameters, so any in-place update (an optimiser
step, ``load_state_dict``) or a move to another device or dtype invalidates it. When autograd
is recording and the weights require gradients, the inverse is recomputed differentiably on
every call instead (training through the inverse, e.g. NaturalSpeech's bidirectional prior).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flowspeech.errors import ConfigError
from flowspeech.flows.base import Flow, check_input, logdet_dtype, valid_frames

__all__ = ["InvertibleConv1x1", "GroupedInvertibleConv1x1"]


def _random_rotation(n: int) -> torch.Tensor:
    """Random orthogonal ``[n, n]`` matrix with determinant +1 (Glow / WaveGlow initialisation).

    Q from the QR decomposition of a Gaussian matrix; if ``det Q < 0`` the first column is
    negated, as WaveGlow and Glow-TTS do, so that ``log det W`` is defined at the start.
    """
    # Made on the CPU even under a `torch.device("meta")` context (used to count parameters
    # without allocating), where the data-dependent sign check could not run.
    w = torch.linalg.qr(torch.randn(n, n, device="cpu"))[0]
    if torch.det(w) < 0:
        w[:, 0] = -w[:, 0]
    return w


class _CachedInverse(Flow):
    """Caches ``inv(W)`` of a layer whose matrix is a function of some parameters."""

    def __init__(self) -> None:
        super().__init__()
        self._inv: torch.Tensor | None = None
        self._inv_key: tuple | None = None

    def _matrix_params(self) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _matrix64(self) -> torch.Tensor:
        """The mixing matrix in float64."""
        raise NotImplementedError

    def _compute_inverse(self) -> torch.Tensor:
        w = self._matrix_params()[0]
        return torch.linalg.inv(self._matrix64()).to(w.dtype)

    def inverse_matrix(self) -> torch.Tensor:
        """``W^-1`` in the parameters' dtype; cached unless gradients must flow through it."""
        params = self._matrix_params()
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return self._compute_inverse()
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        cached = self._inv
        # A tensor made under inference_mode cannot take part in autograd outside it.
        if (
            cached is None
            or self._inv_key != key
            or (torch.is_inference(cached) and not torch.is_inference_mode_enabled())
        ):
            with torch.no_grad():
                cached = self._compute_inverse()
            self._inv, self._inv_key = cached, key
        return cached

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .half(): the key would reject the stale cache anyway; dropping it
        # here frees its memory on the old device at once.
        self._inv, self._inv_key = None, None
        return super()._apply(fn, *args, **kwargs)


class InvertibleConv1x1(_CachedInverse):
    """Invertible 1x1 convolution ``y = W x`` mixing the ``C`` channels of every frame.

    ``lu=False`` (WaveGlow): ``W`` is the parameter ``weight`` ``[C, C]``, initialised to a
    random rotation. ``log|det W|`` is taken with ``slogdet`` in float64.

    ``lu=True`` (Glow, section 3.2): ``W = P L (U + diag(sign_s * exp(log_s)))`` with ``P`` a
    fixed permutation (buffer ``perm``), ``L`` unit lower triangular (parameter ``lower``),
    ``U`` strictly upper triangular (parameter ``upper``), ``sign_s`` fixed (buffer) and
    ``log_s`` trainable; all from the LU decomposition of a random rotation. Then
    ``log|det W| = sum(log_s)`` costs ``O(C)``.

    ::

        forward:  y = W x
        inverse:  x = W^-1 y
        logdet:   log|det W| * T_valid

    Args:
        channels: ``C``.
        lu: use the LU parameterisation.

    Shapes: ``x``, ``y`` ``[B, C, T]``; ``mask`` ``[B, 1, T]``; ``logdet`` ``[B]``.
    """

    def __init__(self, channels: int, lu: bool = False) -> None:
        super().__init__()
        if channels < 1:
            raise ConfigError(f"InvertibleConv1x1: channels must be positive, got {channels}")
        self.channels = channels
        self.lu = lu
        w = _random_rotation(channels)
        if not lu:
            self.weight = nn.Parameter(w)
        else:
            p, lower, upper = torch.linalg.lu(w)
            s = torch.diagonal(upper)
            self.register_buffer("perm", p)
            self.register_buffer("sign_s", torch.sign(s))
            self.lower = nn.Parameter(torch.tril(lower, -1))
            self.upper = nn.Parameter(torch.triu(upper, 1))
            self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def _matrix_params(self):
        if not self.lu:
            return (self.weight,)
        return (self.lower, self.upper, self.log_s)

    def _matrix64(self) -> torch.Tensor:
        if not self.lu:
            return self.weight.double()
        eye = torch.eye(self.channels, dtype=torch.float64, device=self.log_s.device)
        # The masks keep only the triangles: entries outside them never influence W.
        lower = torch.tril(self.lower.double(), -1) + eye
        upper = torch.triu(self.upper.double(), 1) + torch.diag(self.sign_s.double() * torch.exp(self.log_s.double()))
        return self.perm.double() @ lower @ upper

    def matrix(self) -> torch.Tensor:
        """``W`` ``[C, C]`` in the parameters' dtype."""
        if not self.lu:
            return self.weight
        return self._matrix64().to(self.log_s.dtype)

    def log_abs_det(self) -> torch.Tensor:
        """``log|det W|`` as a 0-dim tensor (float64 for the plain matrix)."""
        if not self.lu:
            return torch.linalg.slogdet(self.weight.double())[1]
        return self.log_s.sum()

    def forward(self, x, mask=None, cond=None):
        check_input(x, mask, self.channels, "InvertibleConv1x1")
        y = F.conv1d(x, self.matrix().to(x.dtype).unsqueeze(-1))
        if mask is not None:
            y = y * mask
        logdet = self.log_abs_det().to(logdet_dtype(x)) * valid_frames(x, mask)
        return y, logdet

    def inverse(self, y, mask=None, cond=None):
        check_input(y, mask, self.channels, "InvertibleConv1x1")
        x = F.conv1d(y, self.inverse_matrix().to(y.dtype).unsqueeze(-1))
        if mask is not None:
            x = x * mask
        return x

    def extra_repr(self) -> str:
        return f"{self.channels}, lu={self.lu}"


class GroupedInvertibleConv1x1(_CachedInverse):
    """Glow-TTS's invertible 1x1 convolution over groups of ``n_split`` channels (``InvConvNear``).

    The ``C`` channels form ``C / n_split`` groups and one shared ``[n_split, n_split]``
    matrix ``W`` (parameter ``weight``) mixes the channels of each group. Group ``g`` holds,
    in this order, channels ``g * n_split/2 + k`` of the first half and
    ``C/2 + g * n_split/2 + k`` of the second half, ``k = 0 .. n_split/2 - 1``; e.g. for
    ``C = 8, n_split = 4`` the groups are ``(0, 1, 4, 5)`` and ``(2, 3, 6, 7)``. Each group
    therefore mixes both coupling halves. This is exactly the authors' view/permute, so their
    ``weight`` imports as is.

    ::

        forward:  y_g = W x_g          for every group g
        inverse:  x_g = W^-1 y_g
        logdet:   log|det W| * (C / n_split) * T_valid

    Args:
        channels: ``C``, a multiple of ``n_split``.
        n_split: group size, even.

    Shapes: ``x``, ``y`` ``[B, C, T]``; ``mask`` ``[B, 1, T]``; ``logdet`` ``[B]``.
    """

    def __init__(self, channels: int, n_split: int = 4) -> None:
        super().__init__()
        if n_split < 2 or n_split % 2 != 0:
            raise ConfigError(f"GroupedInvertibleConv1x1: n_split must be even and >= 2, got {n_split}")
        if channels < n_split or channels % n_split != 0:
            raise ConfigError(
                f"GroupedInvertibleConv1x1: channels ({channels}) must be a positive multiple "
                f"of n_split ({n_split})"
            )
        self.channels = channels
        self.n_split = n_split
        self.weight = nn.Parameter(_random_rotation(n_split))

    def _matrix_params(self):
        return (self.weight,)

    def _matrix64(self) -> torch.Tensor:
        return self.weight.double()

    def _mix(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        n = self.n_split
        # [B, C, T] -> [B, 2 (half), C/n (group), n/2 (k), T] -> [B, n (half, k), C/n, T]
        x = x.reshape(b, 2, c // n, n // 2, t).permute(0, 1, 3, 2, 4).reshape(b, n, c // n, t)
        z = F.conv2d(x, w.to(x.dtype).view(n, n, 1, 1))
        return z.view(b, 2, n // 2, c // n, t).permute(0, 1, 3, 2, 4).reshape(b, c, t)

    def forward(self, x, mask=None, cond=None):
        check_input(x, mask, self.channels, "GroupedInvertibleConv1x1")
        y = self._mix(x, self.weight)
        if mask is not None:
            y = y * mask
        log_abs_det = torch.linalg.slogdet(self.weight.double())[1]
        logdet = log_abs_det.to(logdet_dtype(x)) * (self.channels // self.n_split) * valid_frames(x, mask)
        return y, logdet

    def inverse(self, y, mask=None, cond=None):
        check_input(y, mask, self.channels, "GroupedInvertibleConv1x1")
        x = self._mix(y, self.inverse_matrix())
        if mask is not None:
            x = x * mask
        return x

    def extra_repr(self) -> str:
        return f"{self.channels}, n_split={self.n_split}"
