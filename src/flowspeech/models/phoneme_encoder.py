"""NaturalSpeech's phoneme encoder and its mixed-phoneme masked-language-model pre-training.

NaturalSpeech (Tan et al., 2022, Sec. 3.1) pre-trains the phoneme encoder on text alone
with Mixed-Phoneme BERT (Zhang et al., Interspeech 2022): every position reads the sum of a
phoneme embedding and the embedding of the *sup-phoneme* (a BPE unit of phonemes, see
:mod:`flowspeech.text.sup_phonemes`) it belongs to; 15% of the sup-phoneme units are
masked, whole (every phoneme inside a chosen unit), and two heads predict the masked
phonemes and sup-phonemes.

The encoder body is the relative-position transformer of Glow-TTS
(:class:`flowspeech.models.transformer.TransformerEncoder`).

``[MASK]`` ids: the masked language model adds one id at the end of both vocabularies.
With a front end of ``n_phonemes`` ids (``TextFrontend.n_vocab``) and a sup-phoneme
tokenizer of ``n_sup`` ids (``SupPhonemeTokenizer.vocab_size``) the encoder is
``PhonemeEncoder(n_phonemes + 1, n_sup + 1, ...)``, the phoneme ``[MASK]`` is
``n_phonemes`` and the sup-phoneme ``[MASK]`` is ``n_sup`` (:meth:`MixedPhonemeLM.build`).
A downstream model never feeds ``[MASK]``: :func:`load_pretrained_phoneme_encoder` drops
those two rows, so its weights load into ``PhonemeEncoder(n_phonemes, n_sup, ...)``.

Shapes: tokens ``[B, L]`` long; lengths ``[B]``; hidden states ``[B, C, L]``; masks
``[B, 1, L]``; logits ``[B, L, V]``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from flowspeech.checkpoints import load_checkpoint
from flowspeech.errors import CheckpointError
from flowspeech.models.transformer import TransformerEncoder
from flowspeech.text.sup_phonemes import SupPhonemeTokenizer
from flowspeech.utils.masks import length_mask

#: ``model_type`` of the checkpoints ``flowspeech pretrain-phonemes`` writes.
MODEL_TYPE = "phoneme-lm"
IGNORE_INDEX = -100
#: The :class:`PhonemeEncoder` keyword arguments a config may set
#: (``model_args.phoneme_encoder``).
ENCODER_OPTIONS = ("channels", "filter_channels", "n_heads", "n_layers", "kernel_size", "dropout",
                   "window_size")


class PhonemeEncoder(nn.Module):
    """Phoneme (+ sup-phoneme) embeddings and a relative-position transformer.

    The phoneme embedding is initialised N(0, channels^-0.5) and scaled by sqrt(channels)
    as in Glow-TTS; the sup-phoneme embedding (when ``n_sup_vocab > 0``) is built the same
    way and added at every position (Mixed-Phoneme BERT).

    Args:
        n_vocab: phoneme ids (including a ``[MASK]`` id when pre-trained, see the module doc).
        n_sup_vocab: sup-phoneme ids; 0 for a phoneme-only encoder.
        channels: width (192 in NaturalSpeech, as Glow-TTS).
        filter_channels: feed-forward width (768).
        n_heads: attention heads (2).
        n_layers: transformer blocks (6).
        kernel_size: feed-forward conv kernel (3).
        dropout: dropout inside the transformer (0.1).
        window_size: relative-position window (4).
    """

    def __init__(self, n_vocab: int, n_sup_vocab: int = 0, channels: int = 192,
                 filter_channels: int = 768, n_heads: int = 2, n_layers: int = 6,
                 kernel_size: int = 3, dropout: float = 0.1, window_size: int | None = 4):
        super().__init__()
        if n_vocab < 1 or n_sup_vocab < 0:
            raise ValueError(f"n_vocab must be >= 1 and n_sup_vocab >= 0, got {n_vocab}, "
                             f"{n_sup_vocab}")
        self.n_vocab = n_vocab
        self.n_sup_vocab = n_sup_vocab
        self.channels = channels
        self.emb = nn.Embedding(n_vocab, channels)
        nn.init.normal_(self.emb.weight, 0.0, channels ** -0.5)
        if n_sup_vocab > 0:
            self.sup_emb = nn.Embedding(n_sup_vocab, channels)
            nn.init.normal_(self.sup_emb.weight, 0.0, channels ** -0.5)
        else:
            self.sup_emb = None
        self.encoder = TransformerEncoder(channels, filter_channels, n_heads, n_layers, kernel_size,
                                          dropout, window_size)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor,
                sup_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens ``[B, L]``, lengths ``[B]``, sup_tokens ``[B, L]`` or None ->
        (h ``[B, C, L]``, zero at padding; mask ``[B, 1, L]``).

        Without ``sup_tokens`` only the phoneme embedding is used (also when the encoder has
        a sup-phoneme table)."""
        x = self.emb(tokens)
        if sup_tokens is not None:
            if self.sup_emb is None:
                raise ValueError("sup_tokens given to a PhonemeEncoder built with n_sup_vocab=0")
            if sup_tokens.shape != tokens.shape:
                raise ValueError(f"sup_tokens {tuple(sup_tokens.shape)} must have the shape of "
                                 f"tokens {tuple(tokens.shape)}: one sup-phoneme id per phoneme")
            x = x + self.sup_emb(sup_tokens)
        x = (x * math.sqrt(self.channels)).transpose(1, 2)  # [B, C, L]
        mask = length_mask(lengths, x.size(2), x.dtype)
        return self.encoder(x * mask, mask), mask


class _Head(nn.Module):
    """BERT's prediction-head transform (dense, GELU, layer norm); the output projection is
    the tied embedding table (Devlin et al., 2019)."""

    def __init__(self, channels: int, n_out: int):
        super().__init__()
        self.dense = nn.Linear(channels, channels)
        self.norm = nn.LayerNorm(channels)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.dense(h))), weight, self.bias)


class MixedPhonemeLM(nn.Module):
    """Mixed-Phoneme BERT (Zhang et al., 2022): a :class:`PhonemeEncoder` and two heads that
    predict the phoneme and the sup-phoneme of every position, each tied to its input
    embedding.

    ``[MASK]`` ids are the last id of each table: ``phoneme_mask_id = encoder.n_vocab - 1``,
    ``sup_mask_id = encoder.n_sup_vocab - 1`` (build with :meth:`build` to get them added).

    State-dict keys: ``encoder.*`` (the :class:`PhonemeEncoder`), ``phoneme_head.*``,
    ``sup_head.*``.
    """

    def __init__(self, encoder: PhonemeEncoder):
        super().__init__()
        if encoder.sup_emb is None:
            raise ValueError("MixedPhonemeLM needs a PhonemeEncoder with n_sup_vocab > 0")
        self.encoder = encoder
        self.phoneme_head = _Head(encoder.channels, encoder.n_vocab)
        self.sup_head = _Head(encoder.channels, encoder.n_sup_vocab)

    @classmethod
    def build(cls, n_phonemes: int, n_sup_phonemes: int, **encoder_kwargs: Any) -> MixedPhonemeLM:
        """A model for a front end of ``n_phonemes`` ids and ``n_sup_phonemes`` sup-phoneme
        ids: both tables get one more row, the ``[MASK]`` id."""
        return cls(PhonemeEncoder(n_phonemes + 1, n_sup_phonemes + 1, **encoder_kwargs))

    @property
    def phoneme_mask_id(self) -> int:
        return self.encoder.n_vocab - 1

    @property
    def sup_mask_id(self) -> int:
        return self.encoder.n_sup_vocab - 1

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor,
                sup_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens, sup_tokens ``[B, L]`` (masked inputs), lengths ``[B]`` ->
        (phoneme logits ``[B, L, n_vocab]``, sup-phoneme logits ``[B, L, n_sup_vocab]``)."""
        h, _ = self.encoder(tokens, lengths, sup_tokens)
        h = h.transpose(1, 2)  # [B, L, C]
        return (self.phoneme_head(h, self.encoder.emb.weight),
                self.sup_head(h, self.encoder.sup_emb.weight))

    @staticmethod
    def loss(phoneme_logits: torch.Tensor, sup_logits: torch.Tensor, phoneme_targets: torch.Tensor,
             sup_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-entropy at the masked positions (targets ``[B, L]``, ``-100`` elsewhere),
        averaged over them, for each head.

        Returns:
            (phoneme loss + sup-phoneme loss, phoneme loss, sup-phoneme loss), scalars; 0
            when nothing is masked.
        """
        phoneme = _masked_ce(phoneme_logits, phoneme_targets)
        sup = _masked_ce(sup_logits, sup_targets)
        return phoneme + sup, phoneme, sup


def _masked_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    total = F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)


def masked_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of the masked positions (``targets != -100``) whose argmax is the target
    (logits ``[B, L, V]``, targets ``[B, L]``); nan when nothing is masked."""
    chosen = targets != IGNORE_INDEX
    n = int(chosen.sum())
    if n == 0:
        return float("nan")
    return float((logits.argmax(-1)[chosen] == targets[chosen]).sum()) / n


class MaskedBatch(NamedTuple):
    """What :func:`mask_sup_phonemes` returns; every tensor is ``[B, L]``."""

    tokens: torch.Tensor          # model input: phoneme ids with the chosen units masked
    sup_tokens: torch.Tensor      # model input: sup-phoneme ids, likewise
    phoneme_targets: torch.Tensor  # original phoneme id at chosen positions, -100 elsewhere
    sup_targets: torch.Tensor     # original sup-phoneme id at chosen positions, -100 elsewhere
    selected: torch.Tensor        # bool, True at the positions of the chosen units


def units_from_spans(spans: list[list[tuple[int, int]]],
                     max_length: int | None = None) -> torch.Tensor:
    """``[B, L]`` long: the index of the unit each position belongs to (0, 1, ... within its
    sequence), ``-1`` at padding, from per-sequence ``(start, end)`` spans
    (:meth:`SupPhonemeTokenizer.spans`)."""
    lengths = [s[-1][1] if s else 0 for s in spans]
    length = max(lengths, default=0) if max_length is None else max_length
    out = torch.full((len(spans), length), -1, dtype=torch.long)
    for b, seq in enumerate(spans):
        for k, (start, end) in enumerate(seq):
            out[b, start:end] = k
    return out


def mask_sup_phonemes(tokens: torch.Tensor, sup_tokens: torch.Tensor, units: torch.Tensor, *,
                      phoneme_mask_id: int, sup_mask_id: int, n_phonemes: int, n_sup_phonemes: int,
                      ratio: float = 0.15, generator: torch.Generator | None = None,
                      first_random_phoneme: int = 1, first_random_sup: int = 2) -> MaskedBatch:
    """Mask whole sup-phoneme units, BERT style (Devlin et al., 2019; Mixed-Phoneme BERT).

    In each sequence ``ratio`` of its units are chosen (the count is ``ratio * n_units``
    rounded up or down at random, so the expected share is exact); every phoneme of a chosen
    unit is a prediction target. Each chosen unit, as a whole, is then replaced by
    ``[MASK]`` (80%: phoneme and sup-phoneme ids), by random ids (10%: a random phoneme at
    each position, one random sup-phoneme for the unit) or kept (10%). Padding is never
    chosen; spaces and punctuation are units of their own and may be.

    Args:
        tokens: ``[B, L]`` phoneme ids.
        sup_tokens: ``[B, L]`` sup-phoneme ids.
        units: ``[B, L]`` unit index of each position, ``-1`` at padding
            (:func:`units_from_spans`).
        phoneme_mask_id, sup_mask_id: the ``[MASK]`` ids.
        n_phonemes, n_sup_phonemes: random replacements are drawn from
            ``first_random_phoneme..n_phonemes-1`` and ``first_random_sup..n_sup_phonemes-1``
            (by default the pad, ``[PAD]`` and ``[UNK]`` are never drawn, nor ``[MASK]``).
        ratio: share of units to choose (0.15).
        generator: a CPU ``torch.Generator`` for reproducible masks.

    Returns:
        :class:`MaskedBatch` on the device of ``tokens``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    device = tokens.device
    units = units.to(device)
    valid = units >= 0
    n_units = (units.max(dim=1).values + 1).clamp(min=0)  # [B]
    b, u = tokens.size(0), max(int(n_units.max()) if n_units.numel() else 0, 1)

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(device)

    # Choose k_b units per sequence: rank random scores; units past the end sort last.
    k = torch.floor(n_units.float() * ratio + rand(b)).long().clamp(max=n_units)
    scores = rand(b, u).masked_fill(torch.arange(u, device=device)[None] >= n_units[:, None], 2.0)
    rank = torch.empty_like(scores, dtype=torch.long).scatter_(
        1, scores.argsort(dim=1), torch.arange(u, device=device).expand(b, u).contiguous())
    chosen_unit = rank < k[:, None]                        # [B, U]
    action = rand(b, u)                                    # < 0.8 mask, < 0.9 random, else keep
    random_sup = first_random_sup + (
        rand(b, u) * max(n_sup_phonemes - first_random_sup, 1)).long()
    random_phoneme = first_random_phoneme + (
        rand(*tokens.shape) * max(n_phonemes - first_random_phoneme, 1)).long()

    idx = units.clamp(min=0)
    selected = chosen_unit.gather(1, idx) & valid
    act = action.gather(1, idx)
    to_mask = selected & (act < 0.8)
    to_random = selected & (act >= 0.8) & (act < 0.9)
    if n_phonemes <= first_random_phoneme or n_sup_phonemes <= first_random_sup:
        to_random = torch.zeros_like(to_random)  # nothing to draw from: keep instead
    new_tokens = torch.where(to_mask, torch.full_like(tokens, phoneme_mask_id), tokens)
    new_tokens = torch.where(to_random, random_phoneme, new_tokens)
    new_sup = torch.where(to_mask, torch.full_like(sup_tokens, sup_mask_id), sup_tokens)
    new_sup = torch.where(to_random, random_sup.gather(1, idx), new_sup)
    ignore = torch.full_like(tokens, IGNORE_INDEX)
    return MaskedBatch(new_tokens, new_sup, torch.where(selected, tokens, ignore),
                       torch.where(selected, sup_tokens, ignore), selected)


def load_pretrained_phoneme_encoder(path: str | Path):
    """Read a checkpoint written by ``flowspeech pretrain-phonemes``.

    Returns:
        ``(state_dict, tokenizer, text_options)``: the :class:`PhonemeEncoder` weights (the
        model's ``encoder.*`` keys without the prefix, with the ``[MASK]`` rows of
        ``emb.weight`` and ``sup_emb.weight`` dropped, so they load into
        ``PhonemeEncoder(TextFrontend(**text_options).n_vocab, tokenizer.vocab_size,
        **model_args.phoneme_encoder)``), the
        :class:`~flowspeech.text.sup_phonemes.SupPhonemeTokenizer`, and the
        :class:`~flowspeech.text.TextFrontend` options the text was encoded with.

    Raises:
        CheckpointError: the file is missing, unreadable, not a ``phoneme-lm`` checkpoint,
            or lacks the tokenizer or the text options.
    """

    payload = load_checkpoint(path)
    if payload.get("model_type") != MODEL_TYPE:
        raise CheckpointError(
            f"{path} holds a {payload.get('model_type')!r} model, not a pre-trained phoneme "
            f"encoder ({MODEL_TYPE!r}); make one with `flowspeech pretrain-phonemes --text "
            f"CORPUS --out RUN` and pass RUN/checkpoints/step_*.pt")
    extras = payload.get("inference") or {}
    if not isinstance(extras.get("sup_phoneme_tokenizer"), str) \
            or not isinstance(extras.get("text"), dict):
        raise CheckpointError(f"{path} lacks the sup-phoneme tokenizer or the text options "
                              "(inference.sup_phoneme_tokenizer, inference.text): it is damaged")
    prefix = "encoder."
    state = {k[len(prefix):]: v for k, v in payload["model"].items() if k.startswith(prefix)}
    if "emb.weight" not in state or "sup_emb.weight" not in state:
        raise CheckpointError(f"{path} has no encoder.emb/encoder.sup_emb weights: it is damaged")
    # The last row of each table is [MASK], which only pre-training reads.
    state["emb.weight"] = state["emb.weight"][:-1].clone()
    state["sup_emb.weight"] = state["sup_emb.weight"][:-1].clone()
    tokenizer = SupPhonemeTokenizer.from_json(extras["sup_phoneme_tokenizer"])
    return state, tokenizer, dict(extras["text"])
