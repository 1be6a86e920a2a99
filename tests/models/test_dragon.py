"""DRAGON: the user-user co-interaction graph and the binary item kNN graph against dense oracles, the
forward against a hand-written dense recomputation, gradients, planted signal and the ablation variants."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from tests.models.model_helpers import popularity_recall, recall_at, train

from modalrec.data import BPRSampler, Dataset
from modalrec.errors import ConfigError
from modalrec.models.base import TrainSettings
from modalrec.models.dragon import DRAGON
from modalrec.models.homogeneous_graphs import binary_knn_graph, cooccurrence_topk, row_softmax


def _random_interactions(n_users: int, n_items: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    dense[7] = 0  # a user without interactions has no neighbour
    return sp.csr_matrix(dense)


@pytest.mark.parametrize("chunk", [1, 4, 1024])
def test_cooccurrence_topk_matches_dense_oracle(chunk: int) -> None:
    r = _random_interactions(23, 15, 0.25, seed=0)
    counts = (r @ r.T).toarray()
    np.fill_diagonal(counts, 0)
    k = 4
    rows, cols, vals = cooccurrence_topk(r, k, chunk_size=chunk)
    got = np.zeros_like(counts)
    got[rows.numpy(), cols.numpy()] = vals.numpy()
    for u in range(23):
        want = np.sort(counts[u])[::-1][:k]
        want = want[want > 0]
        picked = got[u][got[u] > 0]
        # the kept counts are the k largest (ties at the k-th place may pick either user) and are exact
        np.testing.assert_array_equal(np.sort(picked)[::-1], want)
        np.testing.assert_array_equal(got[u][got[u] > 0], counts[u][got[u] > 0])
    assert 7 not in rows.tolist() and 7 not in cols.tolist()
    assert not (rows == cols).any()


@pytest.mark.parametrize("chunk", [3, 1024])
def test_cooccurrence_cosine_matches_dense_oracle(chunk: int) -> None:
    dense = _random_interactions(23, 15, 0.25, seed=1).toarray()
    dense[0] = 1.0  # a very active user: many shared items, yet a low cosine with most users
    r = sp.csr_matrix(dense)
    counts = (r @ r.T).toarray()
    deg = counts.diagonal().copy()
    np.fill_diagonal(counts, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(counts > 0, counts / np.sqrt(np.outer(deg, deg)), 0.0)
    k = 4
    rows, cols, vals = cooccurrence_topk(r, k, chunk_size=chunk, similarity="cosine")
    got = np.zeros_like(cos)
    got[rows.numpy(), cols.numpy()] = vals.numpy()
    for u in range(23):
        want = np.sort(cos[u])[::-1][:k]
        want = want[want > 0]
        picked = got[u][got[u] > 0]
        np.testing.assert_allclose(np.sort(picked)[::-1], want, rtol=1e-6)
        np.testing.assert_allclose(got[u][got[u] > 0], cos[u][got[u] > 0], rtol=1e-6)
    assert 7 not in rows.tolist() and not (rows == cols).any()
    # by count the active user 0 is among every user's top k; by cosine it is not
    count_cols = cooccurrence_topk(r, k, similarity="count")[1]
    assert (count_cols == 0).sum() > (cols == 0).sum()
    with pytest.raises(ConfigError):
        cooccurrence_topk(r, k, similarity="jaccard")


def test_cooccurrence_counts_ignore_interaction_values() -> None:
    r = sp.csr_matrix(np.array([[2.0, 1.0, 0.0], [5.0, 1.0, 1.0], [0.0, 0.0, 3.0]], dtype=np.float32))
    rows, cols, vals = cooccurrence_topk(r, 5)
    edges = {(int(a), int(b)): float(v) for a, b, v in zip(rows, cols, vals, strict=True)}
    assert edges == {(0, 1): 2.0, (1, 0): 2.0, (1, 2): 1.0, (2, 1): 1.0}


def test_row_softmax_hand_case() -> None:
    rows = torch.tensor([0, 0, 2])
    vals = torch.tensor([1.0, 3.0, 7.0])
    got = row_softmax(rows, vals, 3)
    e1, e3 = math.exp(1.0), math.exp(3.0)
    torch.testing.assert_close(got, torch.tensor([e1 / (e1 + e3), e3 / (e1 + e3), 1.0]))


def test_binary_knn_graph_matches_dense_oracle() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((11, 5)).astype(np.float32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    s = np.zeros_like(sim)
    for i in range(11):
        s[i, np.argsort(-sim[i], kind="stable")[:3]] = 1.0
    deg = s.sum(1)
    want = s / np.sqrt(deg)[:, None] / np.sqrt(deg)[None, :]
    for chunk in (2, 1024):
        g = binary_knn_graph(torch.from_numpy(x), 3, chunk_size=chunk)
        got = np.zeros((11, 11))
        np.add.at(got, (g.rows.numpy(), g.cols.numpy()), g.vals.numpy())
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_forward_matches_a_dense_recomputation(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = DRAGON(tiny, DRAGON.Config(user_k=5, n_item_layers=2))
    model.eval()
    with torch.no_grad():
        emb = model()
        u_n, i_n = tiny.n_users, tiny.n_items
        r = torch.from_numpy(tiny.train.toarray()).float()
        a = torch.zeros(u_n + i_n, u_n + i_n)
        a[:u_n, u_n:], a[u_n:, :u_n] = r, r.T
        deg = a.sum(1)
        inv = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
        a_hat = inv[:, None] * a * inv[None, :]
        users, items = [], []
        for m, feats in enumerate(tiny.features.values()):
            z = torch.cat([model.preferences[m], model.mlps[m](torch.from_numpy(feats).float())])
            z = F.normalize(z, dim=1)
            h = z + a_hat @ z + a_hat @ (a_hat @ z)
            users.append(model.user_modal_weight[:, m : m + 1] * h[:u_n])
            items.append(h[u_n:])
        users_t, items_t = torch.cat(users, 1), torch.cat(items, 1)
        s = model.item_graph.to_dense()
        torch.testing.assert_close(model.item_graph_t.to_dense(), s.T)
        items_t = items_t + s @ (s @ items_t)
        counts = r @ r.T
        counts.fill_diagonal_(0)
        beta = model.user_graph.to_dense()
        assert ((beta > 0).sum(1) <= 5).all()
        # β is the softmax of the kept co-interaction counts within each row
        row = int(beta.sum(1).nonzero()[0])
        kept = beta[row] > 0
        torch.testing.assert_close(beta[row, kept], torch.softmax(counts[row, kept], 0))
        users_t = users_t + beta @ users_t
    torch.testing.assert_close(emb.users, users_t, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(emb.items, items_t, atol=1e-5, rtol=1e-4)
    assert emb.users.shape == (tiny.n_users, 2 * 64)


def test_cosine_user_graph_weights(tiny: Dataset) -> None:
    model = DRAGON(tiny, DRAGON.Config(user_k=5, user_similarity="cosine"))
    r = torch.from_numpy((tiny.train.toarray() > 0).astype(np.float32))
    counts = r @ r.T
    deg = counts.diagonal().clone()
    cos = counts / torch.sqrt(torch.outer(deg, deg)).clamp(min=1e-12)
    cos.fill_diagonal_(0)
    beta = model.user_graph.to_dense()
    for row in beta.sum(1).nonzero()[:, 0].tolist():
        kept = beta[row] > 0
        # the kept neighbours are the 5 highest cosines and β is their softmax
        assert cos[row, kept].min() >= torch.sort(cos[row], descending=True).values[4] - 1e-6
        torch.testing.assert_close(beta[row, kept], torch.softmax(cos[row, kept], 0))
    with pytest.raises(ConfigError):
        DRAGON(tiny, DRAGON.Config(user_similarity="jaccard"))


def test_gradients_reach_every_part(tiny: Dataset) -> None:
    model = DRAGON(tiny, DRAGON.Config())
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    terms = model.loss(batch, model())
    assert set(terms) == {"bpr", "reg"}
    torch.stack(list(terms.values())).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_planted_signal(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = DRAGON(tiny, DRAGON.Config())
    train(model, tiny, epochs=8, lr=3e-3, batch_size=256)
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.05


def test_variants_and_one_modality(tiny: Dataset) -> None:
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    for overrides in [{}, *DRAGON.variants.values()]:
        model = DRAGON(tiny, DRAGON.Config(**overrides))
        terms = model.train_step(batch, model.configure_optimizers(TrainSettings(lr=1e-3)))
        assert all(math.isfinite(v) for v in terms.values())
    summed = DRAGON(tiny, DRAGON.Config(fusion="sum"))
    assert summed().users.shape == (tiny.n_users, 64)
    one = dataclasses.replace(tiny, features={"visual": tiny.features["visual"]})
    model = DRAGON(one, DRAGON.Config(item_graph_weights=[1.0]))
    assert model().items.shape == (tiny.n_items, 64)
    with pytest.raises(ConfigError):
        DRAGON(tiny, DRAGON.Config(item_graph_weights=[0.5]))
    with pytest.raises(ConfigError):
        DRAGON(tiny, DRAGON.Config(fusion="max"))
