"""A short content fingerprint of a dataset and of its split, so a recorded result names the exact data it saw.

Two hashes (the first 16 hex digits of a SHA-256, enough to tell datasets apart, short enough to read):

* ``data_sha256``: the raw user and item ids, every interaction of train + val + test pooled (so the same data
  split another way has the same content hash), and each modality's feature matrix and presence mask.
* ``split_sha256``: which interactions are in train, in validation and in test.

Arrays are hashed in a fixed dtype and byte order, so the fingerprint is the same on every platform.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import scipy.sparse as sp

from modalrec.data.dataset import Dataset

DIGITS = 16


def _update_csr(h: Any, m: sp.csr_matrix) -> None:
    m = sp.csr_matrix(m)
    m.sort_indices()
    h.update(np.asarray(m.shape, dtype="<i8").tobytes())
    h.update(np.asarray(m.indptr, dtype="<i8").tobytes())
    h.update(np.asarray(m.indices, dtype="<i8").tobytes())


def _update_text(h: Any, values: np.ndarray) -> None:
    h.update("\n".join(str(v) for v in values).encode("utf-8"))
    h.update(b"\x00")


def data_sha256(data: Dataset) -> str:
    """Hash of the ids, the pooled interactions and the content features (see the module docstring)."""
    h = hashlib.sha256()
    _update_text(h, data.user_ids)
    _update_text(h, data.item_ids)
    pooled = (data.train + data.val + data.test).tocsr()
    pooled.data[:] = 1
    _update_csr(h, pooled)
    for name in sorted(data.features):
        h.update(name.encode("utf-8") + b"\x00")
        feats = np.ascontiguousarray(data.features[name], dtype="<f4")
        h.update(np.asarray(feats.shape, dtype="<i8").tobytes())
        h.update(feats.tobytes())
        h.update(np.ascontiguousarray(data.present(name), dtype=np.uint8).tobytes())
    return h.hexdigest()[:DIGITS]


def split_sha256(data: Dataset) -> str:
    """Hash of the train / validation / test membership of every interaction."""
    h = hashlib.sha256()
    for m in (data.train, data.val, data.test):
        _update_csr(h, m)
    return h.hexdigest()[:DIGITS]


def fingerprint(data: Dataset) -> dict[str, Any]:
    """Name, sizes, modalities (name -> feature dimension) and both hashes of ``data``."""
    return {
        "name": data.name,
        "users": int(data.n_users),
        "items": int(data.n_items),
        "interactions": {
            "train": int(data.train.nnz),
            "val": int(data.val.nnz),
            "test": int(data.test.nnz),
        },
        "modalities": {m: int(data.features[m].shape[1]) for m in sorted(data.features)},
        "data_sha256": data_sha256(data),
        "split_sha256": split_sha256(data),
    }
