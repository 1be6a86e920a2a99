"""NCL: k-means on hand cases, structural (Eqs. 8-10) and prototype (Eqs. 11-14) terms, planted signal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_helpers import popularity_recall, recall_at

from modalrec.data import Dataset
from modalrec.data.sampling import Batch, BPRSampler
from modalrec.errors import ConfigError
from modalrec.models import MODELS
from modalrec.models.base import TrainSettings
from modalrec.models.ncl import NCL, kmeans, nearest_centroid


def test_registered_and_bad_options(tiny: Dataset) -> None:
    assert MODELS["ncl"] is NCL
    with pytest.raises(ConfigError, match="hyper_layers"):
        NCL(tiny, NCL.Config(n_layers=1, hyper_layers=1))
    with pytest.raises(ConfigError, match="negatives"):
        NCL(tiny, NCL.Config(negatives="some"))


def test_nearest_centroid_hand_case() -> None:
    x = torch.tensor([[0.0, 0.0], [0.9, 0.1], [5.0, 5.0], [4.0, 6.0], [0.4, 0.0]])
    c = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    # distances: row 4 is 0.4 from c0 and 0.6 from c1; row 3 is sqrt(2) from c2
    assert nearest_centroid(x, c, chunk_size=2).tolist() == [0, 1, 2, 2, 0]


def test_kmeans_recovers_two_blobs_and_assigns_to_nearest() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(30, 2, generator=gen) * 0.1 + torch.tensor([3.0, 0.0])
    b = torch.randn(20, 2, generator=gen) * 0.1 + torch.tensor([-3.0, 1.0])
    x = torch.cat([a, b])
    centroids, assign = kmeans(x, 2, generator=torch.Generator().manual_seed(1))
    assert len(set(assign[:30].tolist())) == 1 and len(set(assign[30:].tolist())) == 1
    assert assign[0] != assign[30]
    assert torch.allclose(centroids[assign[0]], a.mean(0), atol=1e-5)  # each centroid is its members' mean
    assert torch.allclose(centroids[assign[30]], b.mean(0), atol=1e-5)
    dist = torch.cdist(x, centroids)
    assert torch.equal(assign, dist.argmin(1))  # every point sits with its nearest centroid
    c_small, a_small = kmeans(x[:3], 10)  # k is clipped to the number of points
    assert c_small.shape == (3, 2) and sorted(a_small.tolist()) == [0, 1, 2]


def test_structural_and_prototype_terms_match_the_equations(tiny: Dataset) -> None:
    cfg = NCL.Config(embed_dim=8, n_clusters=5, warm_up_epochs=0)
    model = NCL(tiny, cfg)
    model.on_epoch_start(0)
    assert model.user_centroids.shape == (5, 8)
    assert torch.allclose(model.user_centroids.norm(dim=1), torch.ones(5), atol=1e-5)
    emb = model()
    layers = emb.extras["layers"]  # type: ignore[index]
    assert len(layers) == 4
    users, items = torch.tensor([0, 3, 3]), torch.tensor([1, 2, 7])
    u, n = tiny.n_users, tiny.n_items

    def nce_all(a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor, tau: float) -> torch.Tensor:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        logits = a[idx] @ b.T / tau
        return (torch.logsumexp(logits, 1) - logits[torch.arange(len(idx)), idx]).sum()

    ego, k2 = layers[0], layers[2]  # the structural neighbour is the 2nd (even) layer
    expected = nce_all(k2[:u], ego[:u], users, 0.1) + nce_all(k2[u:], ego[u:], items, 0.1)
    assert torch.allclose(model.structural_loss(layers, users, items), expected, rtol=1e-5)
    eu = F.normalize(model.user_emb[users], dim=1)
    logits = eu @ model.user_centroids.T / 0.1
    own = logits[torch.arange(3), model.user_cluster[users]]
    expected_u = (torch.logsumexp(logits, 1) - own).sum()
    ei = F.normalize(model.item_emb[items], dim=1)
    logits_i = ei @ model.item_centroids.T / 0.1
    expected_i = (torch.logsumexp(logits_i, 1) - logits_i[torch.arange(3), model.item_cluster[items]]).sum()
    assert torch.allclose(model.prototype_loss(users, items), expected_u + expected_i, rtol=1e-5)
    assert n == model.item_cluster.shape[0]
    terms = model.loss(Batch(users, items, torch.tensor([4, 5, 6])), emb)
    assert set(terms) == {"bpr", "reg", "cl", "proto"}


def test_prototype_term_waits_for_warm_up(tiny: Dataset) -> None:
    model = NCL(tiny, NCL.Config(warm_up_epochs=2))
    batch = Batch(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    model.on_epoch_start(1)
    assert "proto" not in model.loss(batch, model())
    assert torch.all(model.user_centroids == 0)  # no E-step yet
    model.on_epoch_start(2)
    assert "proto" in model.loss(batch, model())
    assert int(model.user_cluster.max()) > 0


def test_learns_planted_signal(tiny: Dataset) -> None:
    # the paper's λ are tuned for batch sums over millions of interactions; scale them up so they matter here
    model = NCL(tiny, NCL.Config(ssl_weight=1e-5, proto_weight=1e-5, n_clusters=8, warm_up_epochs=1))
    opts = model.configure_optimizers(TrainSettings(lr=1e-2))
    sampler = BPRSampler(tiny.train, 256, seed=0)
    history = []
    for epoch in range(8):
        model.train()
        model.on_epoch_start(epoch)
        logs = [model.train_step(b, opts) for b in sampler.epoch(epoch)]
        history.append({k: float(np.mean([row[k] for row in logs])) for k in logs[-1]})
    assert history[-1]["bpr"] < 0.5 * history[0]["bpr"]
    assert set(history[-1]) == {"bpr", "reg", "cl", "proto"}
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1


def test_m_step_pulls_embeddings_to_their_prototypes(tiny: Dataset) -> None:
    """With the E-step's prototypes fixed, descending L_P alone lowers it (the M-step of the EM view)."""
    model = NCL(tiny, NCL.Config(n_clusters=6, warm_up_epochs=0))
    model.on_epoch_start(0)
    users, items = torch.arange(tiny.n_users), torch.arange(tiny.n_items)
    opt = torch.optim.Adam([model.user_emb, model.item_emb], lr=1e-2)
    before = float(model.prototype_loss(users, items).detach())
    for _ in range(20):
        opt.zero_grad()
        model.prototype_loss(users, items).backward()
        opt.step()
    assert float(model.prototype_loss(users, items).detach()) < 0.8 * before


def test_structural_term_decreases_under_descent(tiny: Dataset) -> None:
    model = NCL(tiny, NCL.Config())
    users, items = torch.arange(tiny.n_users), torch.arange(tiny.n_items)
    opt = torch.optim.Adam([model.user_emb, model.item_emb], lr=1e-2)
    before = float(model.structural_loss(model().extras["layers"], users, items).detach())  # type: ignore[index]
    for _ in range(20):
        opt.zero_grad()
        model.structural_loss(model().extras["layers"], users, items).backward()  # type: ignore[index]
        opt.step()
    assert float(model.structural_loss(model().extras["layers"], users, items).detach()) < 0.9 * before  # type: ignore[index]
