"""The in-memory dataset every model and tool works on.

Interactions are implicit (user, item) pairs stored as scipy CSR matrices of shape [n_users, n_items]
with value 1.0; content features are dense float32 arrays aligned to the item index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from modalrec.errors import DataError


def pairs_to_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Build a binary [n_users, n_items] CSR matrix from index pairs (duplicates collapse to 1)."""
    data = np.ones(len(users), dtype=np.float32)
    mat = sp.csr_matrix((data, (users, items)), shape=(n_users, n_items), dtype=np.float32)
    mat.sum_duplicates()
    mat.data[:] = 1.0
    mat.sort_indices()
    return mat


def empty_csr(n_users: int, n_items: int) -> sp.csr_matrix:
    """An all-zero [n_users, n_items] CSR matrix."""
    return sp.csr_matrix((n_users, n_items), dtype=np.float32)


@dataclass
class Dataset:
    """Users, items, the three interaction splits and per-item content features.

    Attributes:
        name: a label used in run folders and reports.
        user_ids: raw user id of each user index, shape [n_users] (strings).
        item_ids: raw item id of each item index, shape [n_items] (strings).
        train, val, test: binary CSR matrices [n_users, n_items].
        features: modality name -> float32 array [n_items, d_m], row i belongs to item index i. A row
            of NaN marks an item that lacks this modality; it is recorded in ``feature_masks`` and the
            row is stored as zeros until a filler (``modalrec.data.missing``) replaces it. The row of an
            item masked off by ``feature_masks`` but given finite values is kept as given: that is how a
            filler hands over imputed content that models can still tell from real content.
        feature_masks: modality name -> bool array [n_items], True where the item has this content.
            A modality without an entry is present for every item.
        missing_summary: how missing content was prepared for a run (drop setting, fill strategy, missing
            items per modality before filling); empty when nothing was dropped or filled.
        timestamps: optional (user, item) -> time is not kept; only used by temporal splitting upstream.
    """

    name: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    train: sp.csr_matrix
    val: sp.csr_matrix
    test: sp.csr_matrix
    features: dict[str, np.ndarray] = field(default_factory=dict)
    feature_masks: dict[str, np.ndarray] = field(default_factory=dict)
    missing_summary: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = (len(self.user_ids), len(self.item_ids))
        # own copies: ``dataclasses.replace(data, ...)`` passes the original's dicts, which must stay untouched
        self.features = dict(self.features)
        self.feature_masks = dict(self.feature_masks)
        for split in ("train", "val", "test"):
            mat = getattr(self, split)
            if mat.shape != shape:
                raise DataError(f"{split} matrix has shape {mat.shape}, expected {shape}")
            setattr(self, split, sp.csr_matrix(mat, dtype=np.float32))
        # Own copies of the two dicts: the caller's (e.g. another dataset's, via dataclasses.replace) stay as given.
        self.features = dict(self.features)
        self.feature_masks = dict(self.feature_masks)
        self.missing_summary = dict(self.missing_summary)
        for name, feats in list(self.features.items()):
            if feats.ndim != 2 or feats.shape[0] != shape[1]:
                raise DataError(
                    f"modality '{name}' has shape {feats.shape}, expected ({shape[1]}, d): one row per item"
                )
            feats = np.ascontiguousarray(feats, dtype=np.float32)
            present = self._presence(name, feats, self.feature_masks.get(name))
            nan_rows = ~present & np.isnan(feats).any(axis=1)  # partial-NaN rows were refused above
            if nan_rows.any():
                feats = feats.copy()  # never write into the caller's array
                feats[nan_rows] = 0.0
            self.features[name] = feats
            self.feature_masks[name] = present
        unknown = sorted(set(self.feature_masks) - set(self.features))
        if unknown:
            raise DataError(f"feature masks given for unknown modalities {unknown}")
        self.feature_masks = {n: m for n, m in self.feature_masks.items() if not m.all()}
        self._user_index: dict[str, int] | None = None
        self._item_index: dict[str, int] | None = None

    @staticmethod
    def _presence(name: str, feats: np.ndarray, given: np.ndarray | None) -> np.ndarray:
        """Which items have modality ``name``: rows not entirely NaN, and not masked off by ``given``.

        A row that is NaN in part, or any infinite value, is an error (a broken extraction, not a missing
        item); so is a modality that no item has.
        """
        finite = np.isfinite(feats)
        row_nan = np.isnan(feats).all(axis=1) if feats.shape[1] else np.zeros(len(feats), dtype=bool)
        bad = ~finite.all(axis=1) & ~row_nan
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"modality '{name}' row {row}: NaN or infinite values in part of the row "
                "(a missing item must be a row of NaN in full)"
            )
        present = ~row_nan
        if given is not None:
            given = np.asarray(given)
            if given.dtype != np.bool_ or given.shape != (len(feats),):
                raise DataError(
                    f"modality '{name}' mask must be booleans of shape ({len(feats)},), got {given.dtype} "
                    f"{given.shape}"
                )
            present &= given
        if len(feats) and not present.any():
            raise DataError(f"modality '{name}' is missing for every item; drop the modality instead")
        return present

    def present(self, modality: str) -> np.ndarray:
        """Bool [n_items]: True where the item has ``modality`` (all True when nothing is missing)."""
        if modality not in self.features:
            raise DataError(f"dataset '{self.name}' has no modality '{modality}'")
        mask = self.feature_masks.get(modality)
        return mask if mask is not None else np.ones(self.n_items, dtype=bool)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def modalities(self) -> list[str]:
        """Names of the content modalities, in a stable order."""
        return list(self.features)

    def user_index(self, raw: object) -> int:
        """Index of a raw user id; raises KeyError if unknown."""
        if self._user_index is None:
            self._user_index = {str(u): i for i, u in enumerate(self.user_ids)}
        return self._user_index[str(raw)]

    def item_index(self, raw: object) -> int:
        """Index of a raw item id; raises KeyError if unknown."""
        if self._item_index is None:
            self._item_index = {str(v): i for i, v in enumerate(self.item_ids)}
        return self._item_index[str(raw)]

    def select_modalities(self, names: list[str] | None) -> Dataset:
        """A shallow copy keeping only the named modalities (None keeps all)."""
        if names is None:
            return self
        missing = [n for n in names if n not in self.features]
        if missing:
            raise DataError(f"dataset '{self.name}' has no modality {missing}; it has {self.modalities}")
        return Dataset(
            self.name,
            self.user_ids,
            self.item_ids,
            self.train,
            self.val,
            self.test,
            {n: self.features[n] for n in names},
            {n: self.feature_masks[n] for n in names if n in self.feature_masks},
        )

    def stats(self) -> dict[str, object]:
        """Counts and density of every split, feature shapes and missing content (for `modalrec data stats`).

        ``missing_items`` counts, per modality, the items that lack it; ``items_without_content`` the items
        that lack every modality.
        """
        n_train, n_val, n_test = self.train.nnz, self.val.nnz, self.test.nnz
        total = n_train + n_val + n_test
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": total,
            "train": n_train,
            "val": n_val,
            "test": n_test,
            "density": total / max(1, self.n_users * self.n_items),
            "modalities": {k: list(v.shape) for k, v in self.features.items()},
            "missing_items": {k: int((~self.present(k)).sum()) for k in self.features},
            "items_without_content": int(self.items_without_content().sum()),
        }

    def items_without_content(self) -> np.ndarray:
        """Bool [n_items]: True for items that lack every modality (none when the dataset has no modality)."""
        lacks = np.zeros(self.n_items, dtype=bool)
        if self.features:
            lacks[:] = True
            for name in self.features:
                lacks &= ~self.present(name)
        return lacks
