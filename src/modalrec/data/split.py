"""Seeded splits of interaction pairs into train / validation / test.

Methods:
  * ``ratio``: per user, a random share (default 8:1:1). Users with fewer than ``small_user`` (10) interactions get
    exactly one validation and one test item when they have at least 3, as in the LATTICE code's preprocessing;
    with 2 interactions one goes to test, with 1 it stays in train.
  * ``loo``: leave-one-out; the last item (by timestamp when given, else random) is test, the one before validation.
  * ``temporal``: per user by timestamp; the most recent share goes to test, the share before it to validation.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from modalrec.data.dataset import pairs_to_csr
from modalrec.errors import DataError

SPLIT_METHODS = ("ratio", "loo", "temporal")


def split_interactions(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    method: str = "ratio",
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    timestamps: np.ndarray | None = None,
    small_user: int = 10,
) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """Split index pairs into (train, val, test) CSR matrices of shape [n_users, n_items].

    Args:
        users, items: index arrays [N] (duplicates should already be removed).
        method: one of ``SPLIT_METHODS``.
        ratios: train/val/test shares for ``ratio`` and ``temporal``.
        seed: seeds the random order (and tie-breaking among equal timestamps).
        timestamps: [N] times; required for ``temporal``, used for ordering by ``loo`` when given.
    """
    if method not in SPLIT_METHODS:
        raise DataError(f"unknown split method {method!r}; choose one of {SPLIT_METHODS}")
    if method == "temporal" and timestamps is None:
        raise DataError("the temporal split needs a timestamp column in the interactions")
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise DataError(f"split ratios must be three non-negative numbers, got {ratios}")
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(len(users))
    if method == "ratio" or (method == "loo" and timestamps is None):
        order = np.lexsort((tiebreak, users))
    else:
        assert timestamps is not None
        order = np.lexsort((tiebreak, np.asarray(timestamps, dtype=np.float64), users))
    users, items = users[order], items[order]
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(users)) - starts[users]
    n = counts[users]
    if method == "loo":
        n_test = (n >= 2).astype(np.int64)
        n_val = (n >= 3).astype(np.int64)
    else:
        share = np.asarray(ratios, dtype=np.float64) / sum(ratios)
        n_test = np.round(n * share[2]).astype(np.int64)
        n_val = np.round(n * share[1]).astype(np.int64)
        small = n < small_user
        n_test = np.where(small, (n >= 2) * (share[2] > 0), n_test)
        n_val = np.where(small, (n >= 3) * (share[1] > 0), n_val)
    is_test = position >= n - n_test
    is_val = ~is_test & (position >= n - n_test - n_val)
    is_train = ~is_test & ~is_val

    def build(mask: np.ndarray) -> sp.csr_matrix:
        return pairs_to_csr(users[mask], items[mask], n_users, n_items)

    return build(is_train), build(is_val), build(is_test)
