"""Top-K search over item embeddings: exact (the ``Recommender``'s own scoring) or approximate with faiss.

The faiss searcher is an HNSW inner-product index over the final item embeddings. It is only valid for models
that score ``s(u, i) = <e_u, e_i>`` (the ``Model.score`` default); models with their own ``score`` (VBPR's item
bias, ItemKNN) must use exact search. Seen items are removed after the search, so it asks faiss for
``k + |seen(u)|`` candidates.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from modalrec.errors import ModalrecError
from modalrec.models.base import Model
from modalrec.recommend import Recommender


class ExactSearcher:
    """Delegates to ``Recommender.recommend`` (a [B, I] score block per request)."""

    name = "none"

    def __init__(self, rec: Recommender) -> None:
        self.rec = rec

    def recommend(self, users: Sequence[object], k: int, exclude_seen: bool) -> list[list[tuple[str, float]]]:
        return self.rec.recommend(users, k=k, exclude_seen=exclude_seen)

    def items_added(self, n_new: int) -> None:
        """Nothing to do: exact search reads the recommender's embeddings."""


class FaissSearcher:
    """Approximate top-K by inner product with a faiss HNSW index (``--ann faiss``).

    Args:
        rec: the recommender whose final embeddings are indexed.
        m: HNSW neighbours per node.
        ef_search: HNSW search breadth (higher = more exact, slower).
    """

    name = "faiss"

    def __init__(self, rec: Recommender, m: int = 32, ef_search: int = 128) -> None:
        try:
            import faiss
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ModalrecError("--ann faiss needs the faiss-cpu package (pip install faiss-cpu)") from exc
        if type(rec.model).score is not Model.score:
            raise ModalrecError(
                f"--ann faiss needs a model scored by a plain dot product; '{rec.model.name}' has its own "
                "score function: use --ann none"
            )
        self.rec = rec
        self._faiss = faiss
        d = rec.emb.items.shape[1]
        self.index: Any = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efSearch = ef_search
        self.index.add(np.ascontiguousarray(rec.emb.items.float().numpy()))
        self._lock = threading.Lock()

    def items_added(self, n_new: int) -> None:
        """Index the ``n_new`` items the recommender just appended."""
        new = self.rec.emb.items[-n_new:].float().numpy()
        with self._lock:
            self.index.add(np.ascontiguousarray(new))

    def recommend(self, users: Sequence[object], k: int, exclude_seen: bool) -> list[list[tuple[str, float]]]:
        rec = self.rec
        idx = np.array([rec._user(u) for u in users], dtype=np.int64)
        if len(idx) == 0:
            return []
        train = rec.data.train
        n_seen = np.diff(train.indptr)[idx] if exclude_seen else np.zeros(len(idx), dtype=np.int64)
        n_items = rec.n_items
        fetch = int(min(n_items, k + int(n_seen.max())))
        query = np.ascontiguousarray(rec.emb.users[torch.from_numpy(idx)].float().numpy())
        with self._lock:
            scores, cand = self.index.search(query, fetch)
        out: list[list[tuple[str, float]]] = []
        for row, u in enumerate(idx):
            seen = (
                set(train.indices[train.indptr[u] : train.indptr[u + 1]].tolist()) if exclude_seen else set()
            )
            items = [
                (rec.item_ids[int(i)], float(s))
                for s, i in zip(scores[row], cand[row], strict=True)
                if i >= 0 and int(i) not in seen
            ]
            out.append(items[:k])
        return out


def make_searcher(rec: Recommender, ann: str) -> ExactSearcher | FaissSearcher:
    """``ann`` = "none" (exact) or "faiss"."""
    if ann == "none":
        return ExactSearcher(rec)
    if ann == "faiss":
        return FaissSearcher(rec)
    raise ModalrecError(f"unknown --ann {ann!r}; choose none or faiss")
