"""Gaussian noise for synthesis: from a generator that may live on another device than the
model, and, for a batch, optionally one generator per utterance.

With one generator per utterance (``Generators`` as a list), an utterance's noise depends on
its own generator and length only, never on what else is in the batch: a sentence sounds the
same synthesised alone, in a batch, or streamed (:meth:`flowspeech.Synthesizer.stream`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# One generator for the whole batch, one per utterance, or None (the global RNG).
Generators = torch.Generator | Sequence[torch.Generator] | None


def randn(*shape: int, generator: torch.Generator | None = None,
          device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.randn(shape)`` on ``device``, drawn from ``generator`` on the generator's own
    device and then moved. So a CPU generator (what ``--seed`` makes) drives a CUDA model, and
    one seed gives the same latent on every device."""
    if generator is None:
        return torch.randn(*shape, device=device, dtype=dtype)
    return torch.randn(*shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def per_utterance(generator: Generators, batch: int) -> list[torch.Generator] | None:
    """The per-utterance generators ``generator`` holds (checked against ``batch``), or None
    when it is one generator (or None) for the whole batch."""
    if generator is None or isinstance(generator, torch.Generator):
        return None
    generators = list(generator)
    if len(generators) != batch:
        raise ValueError(f"{len(generators)} generators for a batch of {batch} utterances")
    return generators


def randn_padded(shape: Sequence[int], lengths: torch.Tensor, generators: Sequence[torch.Generator],
                 device=None, dtype=None) -> torch.Tensor:
    """Noise of ``shape`` ``[B, ..., T]``: row ``b`` holds ``lengths[b]`` standard-normal time
    steps from ``generators[b]`` (drawn as ``[..., lengths[b]]``), zeros beyond."""
    out = torch.zeros(*shape, device=device, dtype=dtype)
    for b, (n, g) in enumerate(zip(lengths.tolist(), generators)):
        out[b, ..., :n] = randn(*shape[1:-1], int(n), generator=g, device=device, dtype=dtype)
    return out


def utterance_generators(seed: int, count: int, start: int = 0) -> list[torch.Generator]:
    """``count`` CPU generators for utterances ``start, start + 1, ...`` of a text synthesised
    with ``seed``: independent streams (numpy's SeedSequence), the same whatever the batching."""
    out = []
    for i in range(start, start + count):
        state = np.random.SeedSequence([int(seed) % 2**63, i]).generate_state(1, np.uint64)[0]
        out.append(torch.Generator().manual_seed(int(state) % 2**63))
    return out
