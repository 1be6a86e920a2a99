"""PGL: principal-subgraph extraction ("local" degree-sensitive sampling, "global" truncated SVD) against dense
oracles, training on the subgraph and evaluating on the full graph, gradients, planted signal and variants."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import scipy.sparse as sp
import torch
from tests.models.model_helpers import popularity_recall, recall_at, train

from modalrec.data import BPRSampler, Dataset
from modalrec.graph import bipartite_layer_mean
from modalrec.models.base import TrainSettings
from modalrec.models.pgl import PGL, degree_sensitive_sample, normalized_blocks, svd_principal_graph


def test_local_sampling_keeps_a_share_of_distinct_edges_favouring_low_degrees() -> None:
    # user 0 and item 0 are hubs; edge (1, 1) joins two degree-1 nodes
    users = torch.tensor([0, 0, 0, 0, 1, 2, 3, 4])
    items = torch.tensor([0, 2, 3, 4, 1, 0, 0, 0])
    torch.manual_seed(0)
    hits = torch.zeros(8)
    for _ in range(2000):
        ku, ki = degree_sensitive_sample(users, items, 5, 5, ratio=0.5)
        assert len(ku) == 4
        kept = {(int(a), int(b)) for a, b in zip(ku, ki, strict=True)}
        assert len(kept) == 4 and kept <= set(zip(users.tolist(), items.tolist(), strict=True))
        for e, pair in enumerate(zip(users.tolist(), items.tolist(), strict=True)):
            hits[e] += pair in kept
    freq = hits / 2000
    # exact inclusion probabilities of successive draws without replacement, P(draw) ∝ 1/sqrt(d_u d_i)
    w = np.array([1 / 4, 1 / 2, 1 / 2, 1 / 2, 1.0, 1 / 2, 1 / 2, 1 / 2])
    exact = np.zeros(8)
    for seq in itertools.permutations(range(8), 4):
        prob, left = 1.0, w.sum()
        for e in seq:
            prob *= w[e] / left
            left -= w[e]
        exact[list(seq)] += prob
    np.testing.assert_allclose(freq.numpy(), exact, atol=0.04)
    assert exact[4] > exact[1] > exact[0]  # the low-degree edge is kept most often, the hub-hub edge least


def test_normalized_blocks_match_dense_oracle() -> None:
    users = torch.tensor([0, 0, 1, 2, 2, 2])
    items = torch.tensor([0, 1, 1, 0, 1, 3])
    r, r_t = normalized_blocks(users, items, 4, 4)
    dense = np.zeros((4, 4))
    dense[users.numpy(), items.numpy()] = 1.0
    du, di = dense.sum(1), dense.sum(0)
    want = dense / np.sqrt(np.where(du > 0, du, 1))[:, None] / np.sqrt(np.where(di > 0, di, 1))[None, :]
    np.testing.assert_allclose(r.to_dense().numpy(), want, atol=1e-6)
    np.testing.assert_allclose(r_t.to_dense().numpy(), want.T, atol=1e-6)


def test_svd_principal_graph_matches_dense_oracle() -> None:
    rng = np.random.default_rng(0)
    n, rank = 12, 8
    adj = sp.random(n, n, density=0.4, random_state=1, dtype=np.float64)
    a, s, bt = np.linalg.svd(adj.toarray())
    keep = int(0.25 * rank)
    want = sum(s[j] * s[rank - 1 - j] * np.outer(a[:, j], bt[j]) for j in range(keep))
    want = np.where(np.abs(want) >= 1e-3, want, 0.0)
    for chunk in (5, 1024):
        got = svd_principal_graph(adj, rank, 0.25, 1e-3, chunk_size=chunk).toarray()
        np.testing.assert_allclose(got, want, atol=1e-5)
    capped = svd_principal_graph(adj, rank, 0.25, 1e-3, max_per_row=3).toarray()
    assert ((capped != 0).sum(1) <= 3).all()
    for row in range(n):  # the kept entries are the row's largest in magnitude
        kept = np.abs(capped[row][capped[row] != 0])
        assert kept.min() >= np.sort(np.abs(want[row]))[-3] - 1e-6
    del rng


def test_trains_on_the_subgraph_and_evaluates_on_the_full_graph(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = PGL(tiny, PGL.Config(n_item_layers=0))
    model.train()
    model.on_epoch_start(0)
    first = model().users.detach()
    model.on_epoch_start(1)
    second = model().users.detach()
    assert not torch.allclose(first, second)  # a fresh subgraph per epoch
    model.eval()
    with torch.no_grad():
        emb = model()
        users = torch.cat(list(model.user_prefs), dim=1)
        items = torch.cat(
            [
                torch.nn.functional.normalize(p(model.raw_features(m)), dim=1)
                for m, p in enumerate(model.projections)
            ],
            dim=1,
        )
        u, i = bipartite_layer_mean(model.r_hat, model.r_hat_t, users, items, 2)
    torch.testing.assert_close(emb.users, u)
    torch.testing.assert_close(emb.items, i)


def test_gradients_reach_every_part(tiny: Dataset) -> None:
    for subgraph in ("local", "global"):
        model = PGL(tiny, PGL.Config(subgraph=subgraph, svd_rank=16))
        model.train()
        batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
        terms = model.loss(batch, model())
        assert set(terms) == {"bpr", "cl"}
        torch.stack(list(terms.values())).sum().backward()
        for name, param in model.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, (subgraph, name)


def test_planted_signal(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = PGL(tiny, PGL.Config())
    train(model, tiny, epochs=10, lr=3e-3, batch_size=256)
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.05


def test_variants_and_one_modality(tiny: Dataset) -> None:
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    for overrides in [{}, *PGL.variants.values()]:
        model = PGL(tiny, PGL.Config(svd_rank=16, **overrides))
        model.on_epoch_start(0)
        terms = model.train_step(batch, model.configure_optimizers(TrainSettings(lr=1e-3)))
        assert all(math.isfinite(v) for v in terms.values())
    one = dataclasses.replace(tiny, features={"visual": tiny.features["visual"]})
    assert PGL(one, PGL.Config()).eval()().items.shape == (tiny.n_items, 64)
