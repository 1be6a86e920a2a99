"""Vectorised BPR triple sampling: (user, positive item, negative item) with negatives outside the user's
training positives.

Two epoch definitions are offered because the papers differ:
  * ``interactions`` (LightGCN/MMRec): every training pair once per epoch, in a random order.
  * ``users`` (NGCF/LATTICE/MICRO/MMSSL code): batches of uniformly drawn users, one random positive each;
    an epoch has ``nnz // batch_size + 1`` batches.
Each epoch's stream is a pure function of (seed, epoch), so resuming from an epoch boundary reproduces it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass
class Batch:
    """One training batch of index tensors, each of shape [B]."""

    users: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.users.to(device), self.pos.to(device), self.neg.to(device))


class BPRSampler:
    """Samples BPR triples from a binary CSR training matrix.

    Args:
        train: [n_users, n_items] binary CSR with sorted indices.
        batch_size: triples per batch.
        seed: base seed; epoch e uses the stream seeded by (seed, e).
        mode: ``"interactions"`` or ``"users"`` (see module docstring).
    """

    def __init__(
        self, train: sp.csr_matrix, batch_size: int, seed: int = 0, mode: str = "interactions"
    ) -> None:
        if mode not in ("interactions", "users"):
            raise ValueError(f"sampler mode must be 'interactions' or 'users', not {mode!r}")
        if train.nnz == 0:
            raise ValueError("the training split has no interactions")
        train = sp.csr_matrix(train)
        train.sort_indices()
        self.n_users, self.n_items = train.shape
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.mode = mode
        self.indptr = train.indptr.astype(np.int64)
        self.indices = train.indices.astype(np.int64)
        self.row_of_pair = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.indptr))
        # Sorted keys user * n_items + item let one searchsorted test membership for a whole batch.
        self.keys = self.row_of_pair * self.n_items + self.indices
        degrees = np.diff(self.indptr)
        self.active_users = np.flatnonzero(degrees > 0)
        if (degrees >= self.n_items).any():
            raise ValueError("a user has interacted with every item: no negative can be sampled")

    def __len__(self) -> int:
        """Number of batches per epoch."""
        n = len(self.keys)
        if self.mode == "users":
            return n // self.batch_size + 1
        return (n + self.batch_size - 1) // self.batch_size

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean [B]: whether each (user, item) pair is a training interaction."""
        query = users * self.n_items + items
        pos = np.searchsorted(self.keys, query)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == query

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Uniform negatives for each user, redrawn until none is a training positive."""
        neg = rng.integers(0, self.n_items, size=len(users))
        bad = self.is_positive(users, neg)
        while bad.any():
            neg[bad] = rng.integers(0, self.n_items, size=int(bad.sum()))
            bad[bad] = self.is_positive(users[bad], neg[bad])
        return neg

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Yield the batches of one epoch (deterministic in (seed, epoch))."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.mode == "interactions":
            order = rng.permutation(len(self.keys))
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                users = self.row_of_pair[idx]
                yield self._batch(users, self.indices[idx], rng)
        else:
            for _ in range(len(self)):
                users = rng.choice(self.active_users, size=self.batch_size)
                deg = self.indptr[users + 1] - self.indptr[users]
                offs = (rng.random(len(users)) * deg).astype(np.int64)
                yield self._batch(users, self.indices[self.indptr[users] + offs], rng)

    def _batch(self, users: np.ndarray, pos: np.ndarray, rng: np.random.Generator) -> Batch:
        neg = self.sample_negatives(users, rng)
        return Batch(torch.from_numpy(users), torch.from_numpy(pos), torch.from_numpy(neg))
