"""ItemKNN and ItemKNN-CBF: sparse kNN graphs and per-batch scores against a naive dense oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_helpers import popularity_recall, recall_at

from modalrec.data import Dataset
from modalrec.models import MODELS
from modalrec.models.base import Model
from modalrec.models.itemknn import ItemKNN, ItemKNNCBF


def dense_cf_similarity(data: Dataset, shrink: float = 0.0) -> np.ndarray:
    """The naive oracle: full item-item co-occurrence cosine [I, I] with a zero diagonal."""
    r = data.train.toarray().astype(np.float64)
    co = r.T @ r
    norms = np.sqrt(np.diag(co))
    sim = co / (np.outer(norms, norms) + shrink + 1e-300 * (shrink == 0))
    np.fill_diagonal(sim, 0.0)
    return sim


def dense_cbf_similarity(data: Dataset) -> np.ndarray:
    parts = [f / np.linalg.norm(f, axis=1, keepdims=True) for f in data.features.values()]
    x = np.concatenate(parts, axis=1).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, 0.0)
    return np.where(sim > 0, sim, 0.0)


def all_scores(model: Model, data: Dataset) -> np.ndarray:
    with torch.no_grad():
        return model.score(model(), torch.arange(data.n_users)).numpy()


def test_registry_and_contract(tiny: Dataset) -> None:
    assert MODELS["itemknn"] is ItemKNN and MODELS["itemknn_cbf"] is ItemKNNCBF
    for cls in (ItemKNN, ItemKNNCBF):
        model = cls(tiny, cls.Config(k=10))
        assert cls.trainable is False
        assert list(model.parameters()) == []
        emb = model()
        assert emb.users.shape == (tiny.n_users, 0) and emb.items.shape == (tiny.n_items, 0)
        assert emb.extras is not None and emb.extras["similarity"].layout == torch.sparse_csr
        # at most k neighbours per item: the graph is sparse, never [I, I] dense
        assert model.similarity.values().numel() <= tiny.n_items * 10
        assert model.configure_optimizers(MODELS["mf"].Config()) == []  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="no parameters"):
            model.loss(None, emb)  # type: ignore[arg-type]


@pytest.mark.parametrize("shrink", [0.0, 3.0])
def test_itemknn_all_neighbours_equals_dense_oracle(tiny: Dataset, shrink: float) -> None:
    model = ItemKNN(tiny, ItemKNN.Config(k=tiny.n_items, shrink=shrink, chunk_size=37))
    sim = dense_cf_similarity(tiny, shrink)
    expected = tiny.train.toarray() @ sim.T  # s(u, i) = Σ_j R[u, j] sim(i, j)
    np.testing.assert_allclose(all_scores(model, tiny), expected, rtol=1e-4, atol=1e-5)


def test_itemknn_topk_keeps_the_k_largest_similarities(tiny: Dataset) -> None:
    k = 7
    model = ItemKNN(tiny, ItemKNN.Config(k=k, chunk_size=50))
    sim = dense_cf_similarity(tiny)
    kept = model.similarity.to_dense().numpy()
    for i in range(tiny.n_items):
        row = kept[i][kept[i] > 0]
        oracle = np.sort(sim[i])[::-1][:k]
        oracle = oracle[oracle > 0]
        np.testing.assert_allclose(np.sort(row)[::-1], oracle, rtol=1e-5)
        assert kept[i, i] == 0.0


def test_itemknn_hand_case() -> None:
    # 3 users x 3 items: item 0 and 1 co-occur twice, item 2 once with item 1.
    import scipy.sparse as sp

    r = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1]], dtype=np.float32))
    data = Dataset("hand", np.array(["a", "b", "c"]), np.array(["x", "y", "z"]), r, r * 0, r * 0)
    model = ItemKNN(data, ItemKNN.Config(k=1))
    # sim(0,1) = 2 / sqrt(2*3); sim(1,2) = 1 / sqrt(3*1); item 1's single neighbour is item 0 (0.816 > 0.577)
    dense = model.similarity.to_dense().numpy()
    np.testing.assert_allclose(dense[0], [0, 2 / np.sqrt(6), 0], rtol=1e-6)
    np.testing.assert_allclose(dense[1], [2 / np.sqrt(6), 0, 0], rtol=1e-6)
    np.testing.assert_allclose(dense[2], [0, 1 / np.sqrt(3), 0], rtol=1e-6)
    scores = all_scores(model, data)
    # user c holds items 1 and 2: item 0 gets sim(0, 1); item 1's only neighbour (0) is not held; item 2 gets sim(2, 1)
    np.testing.assert_allclose(scores[2], [2 / np.sqrt(6), 0, 1 / np.sqrt(3)], rtol=1e-6)


def test_itemknn_cbf_all_neighbours_equals_dense_oracle(tiny: Dataset) -> None:
    model = ItemKNNCBF(tiny, ItemKNNCBF.Config(k=tiny.n_items, chunk_size=64))
    expected = tiny.train.toarray() @ dense_cbf_similarity(tiny).T
    np.testing.assert_allclose(all_scores(model, tiny), expected, rtol=1e-4, atol=1e-5)


def test_scores_per_batch_match_full(tiny: Dataset) -> None:
    model = ItemKNN(tiny, ItemKNN.Config(k=20))
    full = all_scores(model, tiny)
    users = torch.tensor([5, 0, 299, 5])
    with torch.no_grad():
        part = model.score(model(), users).numpy()
    np.testing.assert_allclose(part, full[users.numpy()], rtol=1e-6)


def test_itemknn_cbf_needs_a_modality(tiny: Dataset) -> None:
    from modalrec.errors import ConfigError

    with pytest.raises(ConfigError):
        ItemKNNCBF(tiny.select_modalities([]), ItemKNNCBF.Config())


@pytest.mark.parametrize("cls", [ItemKNN, ItemKNNCBF])
def test_planted_signal_beats_popularity(tiny: Dataset, cls: type[Model]) -> None:
    model = cls(tiny, cls.Config())
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1
