"""The relative-position transformer against a direct, loop-based definition."""

import math

import torch

from flowspeech.models.transformer import ChannelLayerNorm, RelativeMultiHeadAttention, TransformerEncoder
from flowspeech.utils.masks import length_mask


def reference_attention(attn: RelativeMultiHeadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Shaw et al. (2018) relative attention written element by element."""
    b, c, t = x.shape
    h, d, w = attn.n_heads, attn.head_channels, attn.window_size
    q = attn.conv_q(x).view(b, h, d, t)
    k = attn.conv_k(x).view(b, h, d, t)
    v = attn.conv_v(x).view(b, h, d, t)
    ek, ev = attn.emb_rel_k[0], attn.emb_rel_v[0]  # [2w+1, d]
    out = torch.zeros(b, h, d, t)
    for bi in range(b):
        for hi in range(h):
            for i in range(t):
                scores = torch.empty(t)
                for j in range(t):
                    s = q[bi, hi, :, i] @ k[bi, hi, :, j]
                    if abs(j - i) <= w:
                        s = s + q[bi, hi, :, i] @ ek[j - i + w]
                    s = s / math.sqrt(d)
                    if mask[bi, 0, i] == 0 or mask[bi, 0, j] == 0:
                        s = torch.tensor(-1e4)
                    scores[j] = s
                p = torch.softmax(scores, 0)
                for j in range(t):
                    val = v[bi, hi, :, j]
                    if abs(j - i) <= w:
                        val = val + ev[j - i + w]
                    out[bi, hi, :, i] += p[j] * val
    return attn.conv_o(out.reshape(b, c, t))


def test_relative_attention_matches_definition():
    torch.manual_seed(0)
    attn = RelativeMultiHeadAttention(8, n_heads=2, window_size=2).eval()
    x = torch.randn(2, 8, 7)
    mask = length_mask(torch.tensor([7, 5]), 7)
    ours = attn(x, mask)
    ref = reference_attention(attn, x, mask)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_relative_attention_short_sequence_shorter_than_window():
    torch.manual_seed(1)
    attn = RelativeMultiHeadAttention(4, n_heads=1, window_size=4).eval()
    x = torch.randn(1, 4, 3)
    mask = torch.ones(1, 1, 3)
    assert torch.allclose(attn(x, mask), reference_attention(attn, x, mask), atol=1e-5)


def test_channel_layer_norm():
    norm = ChannelLayerNorm(6)
    with torch.no_grad():
        norm.gamma.uniform_(0.5, 2)
        norm.beta.uniform_(-1, 1)
    x = torch.randn(3, 6, 5)
    mean = x.mean(1, keepdim=True)
    var = ((x - mean) ** 2).mean(1, keepdim=True)
    ref = (x - mean) / torch.sqrt(var + 1e-4) * norm.gamma.view(1, -1, 1) + norm.beta.view(1, -1, 1)
    assert torch.allclose(norm(x), ref, atol=1e-5)


def test_encoder_ignores_padding():
    """Outputs of valid positions do not depend on what sits in the padding."""
    torch.manual_seed(2)
    enc = TransformerEncoder(8, 16, n_heads=2, n_layers=2, kernel_size=3, dropout=0.0, window_size=2).eval()
    x = torch.randn(1, 8, 9)
    mask = length_mask(torch.tensor([6]), 9)
    y1 = enc(x, mask)
    x2 = x.clone()
    x2[:, :, 6:] = torch.randn(1, 8, 3) * 100
    y2 = enc(x2, mask)
    assert torch.allclose(y1, y2, atol=1e-5)
    assert torch.all(y1[:, :, 6:] == 0)
