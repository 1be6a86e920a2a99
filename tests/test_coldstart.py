"""The MICRO cold-start split: held-out items never appear in training, shares and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from modalrec.data import Dataset
from modalrec.data.coldstart import cold_items, cold_start_split
from modalrec.errors import DataError


def _items(mat: object) -> set[int]:
    return set(np.flatnonzero(np.asarray(mat.sum(axis=0)).ravel() > 0).tolist())  # type: ignore[attr-defined]


def test_cold_items_are_disjoint_from_training(tiny: Dataset) -> None:
    cold = cold_start_split(tiny, seed=3)
    train, val, test = _items(cold.train), _items(cold.val), _items(cold.test)
    assert not train & val and not train & test and not val & test
    n_val, n_test = round(0.1 * tiny.n_items), round(0.1 * tiny.n_items)
    assert len(val) <= n_val and len(test) <= n_test
    assert set(cold_items(cold).tolist()) >= val | test
    # Nothing is lost or duplicated: the pooled interactions are redistributed.
    pooled = tiny.train + tiny.val + tiny.test
    assert cold.train.nnz + cold.val.nnz + cold.test.nnz == pooled.nnz
    assert abs(cold.train + cold.val + cold.test - pooled).sum() == 0
    assert cold.features.keys() == tiny.features.keys() and cold.n_items == tiny.n_items
    assert cold.name == "tiny-coldstart"


def test_cold_start_split_is_seeded(tiny: Dataset) -> None:
    a, b, c = cold_start_split(tiny, seed=1), cold_start_split(tiny, seed=1), cold_start_split(tiny, seed=2)
    assert abs(a.test - b.test).sum() == 0
    assert _items(a.test) != _items(c.test)


def test_cold_start_split_shares() -> None:
    users = np.arange(50)
    items = np.arange(40)
    rng = np.random.default_rng(0)
    mat = (rng.random((50, 40)) < 0.5).astype(np.float32)
    empty = sp.csr_matrix(np.zeros((50, 40), dtype=np.float32))
    data = Dataset("d", users.astype(str), items.astype(str), sp.csr_matrix(mat), empty, empty)
    cold = cold_start_split(data, seed=0, val_share=0.25, test_share=0.125)
    assert len(_items(cold.val)) == 10 and len(_items(cold.test)) == 5
    assert len(_items(cold.train)) == 25
    with pytest.raises(DataError):
        cold_start_split(data, val_share=0.6, test_share=0.5)
