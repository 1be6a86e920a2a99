"""The item cold-start protocol of MICRO (Zhang et al., TKDE 2022, Sec. 4.1.3).

A random 20% of the items is removed from training entirely: every interaction with them leaves the training
set; half of these items (10% of all items) hold the validation interactions, the other half the test
interactions. All interactions with the remaining (warm) items form the training set. Models are then asked
to rank items that no user has interacted with during training, which only content-aware models can do
better than chance."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from modalrec.data.dataset import Dataset
from modalrec.errors import DataError


def cold_start_split(
    data: Dataset, seed: int = 0, val_share: float = 0.1, test_share: float = 0.1
) -> Dataset:
    """Re-split ``data`` so that validation and test items never occur in training.

    All interactions of ``data`` (train + val + test) are pooled; a seeded random ``val_share`` of the items
    becomes the validation items and a disjoint ``test_share`` the test items (each rounded, at least one
    item). Features, users and items (and their index order) are unchanged.

    Args:
        data: any dataset; its existing split is ignored.
        seed: seeds the choice of cold items.
        val_share, test_share: shares of items held out for validation and test.

    Returns:
        A new Dataset named ``<name>-coldstart`` whose val/test matrices only have columns of cold items and
        whose train matrix has none.
    """
    if val_share < 0 or test_share <= 0 or val_share + test_share >= 1:
        raise DataError(
            f"cold-start shares must satisfy 0 <= val_share, 0 < test_share, val_share + test_share < 1; "
            f"got {val_share} and {test_share}"
        )
    n_items = data.n_items
    n_val = max(1, round(val_share * n_items)) if val_share > 0 else 0
    n_test = max(1, round(test_share * n_items))
    if n_val + n_test >= n_items:
        raise DataError(f"dataset '{data.name}' has too few items ({n_items}) for a cold-start split")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_items)
    role = np.zeros(n_items, dtype=np.int8)  # 0 = warm (train), 1 = validation, 2 = test
    role[order[:n_val]] = 1
    role[order[n_val : n_val + n_test]] = 2
    pooled = sp.csr_matrix(data.train + data.val + data.test, dtype=np.float32)
    pooled.data[:] = 1.0
    pooled.eliminate_zeros()

    def keep(which: int) -> sp.csr_matrix:
        mask = sp.diags((role == which).astype(np.float32))
        mat = sp.csr_matrix(pooled @ mask, dtype=np.float32)
        mat.eliminate_zeros()
        mat.sort_indices()
        return mat

    return Dataset(
        f"{data.name}-coldstart",
        data.user_ids,
        data.item_ids,
        keep(0),
        keep(1),
        keep(2),
        dict(data.features),
        dict(data.feature_masks),
    )


def cold_items(data: Dataset) -> np.ndarray:
    """Indices of items without any training interaction (the cold items after ``cold_start_split``)."""
    return np.flatnonzero(np.asarray(data.train.sum(axis=0)).ravel() == 0)
