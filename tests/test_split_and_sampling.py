"""Seeded splits and the vectorised BPR sampler."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from modalrec.data.sampling import BPRSampler
from modalrec.data.split import split_interactions


def _pairs(n_users: int = 50, n_items: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        k = int(rng.integers(1, 30))
        users += [u] * k
        items += rng.choice(n_items, size=k, replace=False).tolist()
    return np.array(users), np.array(items)


def test_ratio_split_partitions_and_follows_small_user_rule() -> None:
    users, items = _pairs()
    tr, va, te = split_interactions(users, items, 50, 40, "ratio", seed=3)
    assert tr.nnz + va.nnz + te.nnz == len(users)
    assert (tr.multiply(va)).nnz == 0 and (tr.multiply(te)).nnz == 0 and (va.multiply(te)).nnz == 0
    counts = np.bincount(users, minlength=50)
    for u in range(50):
        n = counts[u]
        n_val, n_test = va[u].nnz, te[u].nnz
        if n >= 10:
            assert n_test == round(n * 0.1) and n_val == round(n * 0.1)
        elif n >= 3:
            assert (n_val, n_test) == (1, 1)
        elif n == 2:
            assert (n_val, n_test) == (0, 1)
        else:
            assert (n_val, n_test) == (0, 0)
    again = split_interactions(users, items, 50, 40, "ratio", seed=3)
    assert (again[2] != te).nnz == 0


def test_temporal_and_loo_take_latest_items() -> None:
    users = np.array([0, 0, 0, 0, 1, 1, 1])
    items = np.array([0, 1, 2, 3, 0, 1, 2])
    times = np.array([4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0])
    tr, va, te = split_interactions(users, items, 2, 4, "loo", timestamps=times)
    assert te[0].indices.tolist() == [0] and va[0].indices.tolist() == [1]
    assert te[1].indices.tolist() == [2] and va[1].indices.tolist() == [1]
    assert tr.nnz == 3
    with pytest.raises(Exception, match="timestamp"):
        split_interactions(users, items, 2, 4, "temporal")


def test_sampler_negatives_exclude_positives_and_epochs_are_deterministic() -> None:
    users, items = _pairs(seed=1)
    train = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(50, 40))
    sampler = BPRSampler(train, batch_size=64, seed=5)
    batches = list(sampler.epoch(0))
    assert len(batches) == len(sampler)
    u = np.concatenate([b.users.numpy() for b in batches])
    p = np.concatenate([b.pos.numpy() for b in batches])
    n = np.concatenate([b.neg.numpy() for b in batches])
    dense = train.toarray() > 0
    assert dense[u, p].all(), "positives are training pairs"
    assert not dense[u, n].any(), "negatives are never training pairs"
    assert sorted(zip(u.tolist(), p.tolist(), strict=True)) == sorted(
        zip(users.tolist(), items.tolist(), strict=True)
    )
    again = list(BPRSampler(train, 64, seed=5).epoch(0))
    assert all((a.neg == b.neg).all() for a, b in zip(batches, again, strict=True))
    other = list(sampler.epoch(1))
    assert not all((a.users == b.users).all() for a, b in zip(batches, other, strict=False))


def test_user_mode_sampler() -> None:
    users, items = _pairs(seed=2)
    train = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(50, 40))
    sampler = BPRSampler(train, batch_size=32, seed=0, mode="users")
    dense = train.toarray() > 0
    for b in sampler.epoch(0):
        assert len(b.users) == 32
        assert dense[b.users.numpy(), b.pos.numpy()].all()
        assert not dense[b.users.numpy(), b.neg.numpy()].any()
