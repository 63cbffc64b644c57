"""Length-bucketed, distributed-aware, resumable batch sampler."""

from __future__ import annotations

import logging
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from flowspeech.errors import ConfigError

logger = logging.getLogger("flowspeech.data")

#: Number of equal-count buckets used when ``boundaries`` is None.
DEFAULT_BUCKETS = 10


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of items of similar length, shared out between distributed ranks.

    The idea is VITS's ``DistributedBucketSampler`` (Kim et al., 2021, github
    jaywalnut310/vits ``data_utils.py``): batching items of similar length cuts the padding
    (and the wasted compute) of random batches. Each epoch:

    1. every item goes to the bucket its length falls in;
    2. each bucket is shuffled, the buckets are laid end to end (shortest first) and cut into
       batches of ``batch_size`` (so only one batch per epoch is partial, and a batch that
       straddles two buckets still holds neighbouring lengths);
    3. the batch order is shuffled and rank ``r`` of ``R`` takes batches ``r, r+R, ...``.

    Unlike VITS, no item is repeated or dropped to even out the ranks. With
    ``drop_last=False`` every index appears exactly once per epoch across all ranks, and
    ranks get equal batch counts by splitting the largest batches in two where needed (at
    most ``R - 1`` batches are smaller than ``batch_size`` for this). With
    ``drop_last=True`` every batch is full and the surplus items and batches are dropped
    (different ones each epoch). ``boundaries=1`` gives plain random batches of fixed size,
    the ``DistributedSampler`` case.

    The order depends only on ``(seed, epoch)``, never on a global RNG, and is the same on
    every rank. ``state_dict()`` records the epoch and the batches already taken so a run
    resumed mid-epoch receives exactly the batches it had not yet seen.

    Args:
        lengths: ``[N]`` length of each item (frames or samples), e.g. ``dataset.lengths``.
        batch_size: items per batch (per rank).
        boundaries: bucket edges, or a number of buckets, or None (``DEFAULT_BUCKETS``).
            A list ``[b1, b2, ...]`` puts lengths ``< b1`` in the first bucket,
            ``b1 <= length < b2`` in the second, and so on (lengths beyond the last edge go
            to the last bucket; nothing is discarded). An integer ``n`` makes ``n``
            equal-count buckets from the length quantiles.
        shuffle: shuffle within buckets and the batch order. If False the batches come in
            order of length and index (useful for evaluation).
        seed: base of the per-epoch random stream; must be the same on every rank.
        num_replicas: number of ranks; defaults to ``torch.distributed``'s world size when
            it is initialised, else 1.
        rank: this process's rank; defaults like ``num_replicas``.
        drop_last: see above.
        n_buckets: another way to write ``boundaries=n_buckets`` (``1``: no bucketing).

    Raises:
        ConfigError: bad sizes or ranks, or fewer items than ranks.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        boundaries: Sequence[float] | int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        n_buckets: int | None = None,
    ):
        if n_buckets is not None:
            if boundaries is not None:
                raise ConfigError("give boundaries or n_buckets, not both")
            boundaries = int(n_buckets)
        if isinstance(lengths, torch.Tensor):
            lengths = lengths.tolist()
        self.lengths = np.asarray(lengths)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ConfigError(
                f"lengths must be a non-empty 1-D sequence, got shape {self.lengths.shape}"
            )
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if num_replicas is None or rank is None:
            dist_ok = torch.distributed.is_available() and torch.distributed.is_initialized()
            if num_replicas is None:
                num_replicas = torch.distributed.get_world_size() if dist_ok else 1
            if rank is None:
                rank = torch.distributed.get_rank() if dist_ok else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(
                f"rank must be in [0, num_replicas); got rank {rank} of {num_replicas}"
            )
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._skip = 0  # batches of `epoch` to skip (set by load_state_dict)
        self._done = 0  # batches of the current iteration handed out so far

        n = len(self.lengths)
        n_batches = n // self.batch_size if drop_last else math.ceil(n / self.batch_size)
        if drop_last:
            self._batches_per_rank = n_batches // self.num_replicas
        else:
            self._batches_per_rank = math.ceil(n_batches / self.num_replicas)
        # Without drop_last every batch needs at least one item of its own.
        too_few = not drop_last and self._batches_per_rank * self.num_replicas > n
        if self._batches_per_rank == 0 or too_few:
            raise ConfigError(
                f"{n} items cannot fill batches on {self.num_replicas} ranks (batch_size "
                f"{self.batch_size}, drop_last={drop_last}); use fewer ranks or more data"
            )
        self.bucket_of = np.searchsorted(self._edges(boundaries), self.lengths, side="right")
        # Bucket members in index order, buckets in order of length; fixed for all epochs.
        order = np.lexsort((np.arange(n), self.bucket_of))
        self._buckets = np.split(order, np.flatnonzero(np.diff(self.bucket_of[order])) + 1)

    def _edges(self, boundaries: Sequence[float] | int | None) -> np.ndarray:
        if boundaries is None:
            boundaries = DEFAULT_BUCKETS
        if isinstance(boundaries, (int, np.integer)):
            if boundaries < 1:
                raise ConfigError(f"the number of buckets must be at least 1, got {boundaries}")
            ranked = np.sort(self.lengths)
            cuts = ranked[(np.arange(1, boundaries) * len(ranked)) // boundaries]
            return np.unique(cuts)
        edges = np.asarray(boundaries, dtype=float)
        if edges.ndim != 1 or np.any(np.diff(edges) <= 0):
            raise ConfigError(f"boundaries must be increasing, got {list(boundaries)}")
        return edges

    @property
    def n_buckets(self) -> int:
        """Number of non-empty buckets."""
        return len(self._buckets)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields (call before each epoch).

        Setting the epoch a resumed state is in keeps its position; any other epoch starts
        from its first batch.
        """
        if int(epoch) != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of ``epoch`` (default: the current one) for every rank, in global order.

        Rank ``r`` takes ``batches[r::num_replicas]``.
        """
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        if self.shuffle:
            flat = np.concatenate([rng.permutation(bucket) for bucket in self._buckets])
        else:
            flat = np.concatenate(self._buckets)
        n_full = len(flat) // self.batch_size
        batches = [flat[i * self.batch_size:(i + 1) * self.batch_size] for i in range(n_full)]
        if len(flat) % self.batch_size and not self.drop_last:
            batches.append(flat[n_full * self.batch_size:])
        if self.drop_last:
            order = rng.permutation(len(batches)) if self.shuffle else np.arange(len(batches))
            batches = [batches[i] for i in order[: self._batches_per_rank * self.num_replicas]]
        else:
            while len(batches) % self.num_replicas:
                # Split the largest batch (the first such, for determinism) to even out ranks.
                i = max(range(len(batches)), key=lambda j: (len(batches[j]), -j))
                half = (len(batches[i]) + 1) // 2
                batches[i:i + 1] = [batches[i][:half], batches[i][half:]]
            if self.shuffle:
                batches = [batches[i] for i in rng.permutation(len(batches))]
        return [b.tolist() for b in batches]

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.batches()[self.rank::self.num_replicas]
        start, self._skip = self._skip, 0
        self._done = start
        for batch in mine[start:]:
            self._done += 1
            yield batch

    def __len__(self) -> int:
        """Batches the next iteration yields on this rank (fewer after a mid-epoch resume)."""
        return self._batches_per_rank - self._skip

    def state_dict(self, batches_yielded: int | None = None) -> dict[str, Any]:
        """Position in the epoch, for a checkpoint.

        Args:
            batches_yielded: batches of this epoch (on this rank) the training loop has
                consumed. Defaults to the number this sampler has handed out, which a
                ``DataLoader`` with workers runs ahead of (it prefetches); pass the loop's
                own count in that case.

        Returns:
            ``{"epoch", "batches_yielded"}`` and, to check a resumed run matches,
            ``"seed", "num_items", "batch_size", "num_replicas"``.
        """
        done = self._done if batches_yielded is None else int(batches_yielded)
        return {
            "epoch": self.epoch,
            "batches_yielded": done,
            "seed": self.seed,
            "num_items": len(self.lengths),
            "batch_size": self.batch_size,
            "num_replicas": self.num_replicas,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position: the next iteration yields the rest of that epoch.

        ``state`` needs ``"epoch"`` and ``"batches_yielded"``; the other keys of
        :meth:`state_dict` are optional. If they show that the data, batch size, seed or
        number of ranks changed, the exact position cannot be restored: the stored epoch then
        restarts from its first batch (with a warning).
        """
        self.epoch = int(state["epoch"])
        current = {"num_items": len(self.lengths), "batch_size": self.batch_size,
                   "num_replicas": self.num_replicas, "seed": self.seed}
        changed = {k: (state[k], v) for k, v in current.items() if k in state and state[k] != v}
        if changed:
            logger.warning(
                "sampler state was saved with different settings (saved, now): %s; epoch %d "
                "restarts from its first batch", changed, self.epoch,
            )
            self._skip = 0
        else:
            self._skip = min(max(int(state["batches_yielded"]), 0), self._batches_per_rank)
        self._done = self._skip
