"""HCCF: shapes, the low-rank hypergraph layer (Eq. 3), layer combination, cross-view InfoNCE, planted signal."""

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
from modalrec.models.hccf import HCCF


def test_registered_and_bad_options(tiny: Dataset) -> None:
    assert MODELS["hccf"] is HCCF
    with pytest.raises(ConfigError, match="keep_rate"):
        HCCF(tiny, HCCF.Config(keep_rate=0.0))
    with pytest.raises(ConfigError, match="negatives"):
        HCCF(tiny, HCCF.Config(negatives="x"))


def test_eval_forward_is_the_sum_of_local_and_hypergraph_layers(tiny: Dataset) -> None:
    model = HCCF(tiny, HCCF.Config(embed_dim=8, n_hyperedges=5, leaky_slope=1.0)).eval()
    emb = model()
    assert emb.users.shape == (tiny.n_users, 8) and emb.items.shape == (tiny.n_items, 8)
    # linear layers (slope 1): Γ = Λ (Λ^T E), Λ = E^(0) W, z = Ā E, E^(l) = z + Γ, output Σ_l E^(l)
    x = torch.cat([model.user_emb, model.item_emb])
    dep_u, dep_i = model.user_emb @ model.user_hyper, model.item_emb @ model.item_hyper
    adj = model.adj.to_dense()
    total, u = x, tiny.n_users
    for _ in range(2):
        gu = dep_u @ (dep_u.T @ x[:u])
        gi = dep_i @ (dep_i.T @ x[u:])
        x = adj @ x + torch.cat([gu, gi])
        total = total + x
    assert torch.allclose(torch.cat([emb.users, emb.items]), total, atol=1e-5)
    assert torch.equal(model().users, emb.users)  # no dropout in eval mode


def test_leaky_hyper_layer_and_training_dropout(tiny: Dataset) -> None:
    model = HCCF(tiny, HCCF.Config())
    dep, x = torch.randn(6, 3), torch.randn(6, 4)
    assert torch.allclose(model.hyper_layer(dep, x), F.leaky_relu(dep @ F.leaky_relu(dep.T @ x, 0.5), 0.5))
    model.train()
    assert not torch.equal(model().users, model().users)  # edge and hyperedge dropout while training


def test_hyperedge_mixing_layers_are_residual_maps_per_layer_and_side(tiny: Dataset) -> None:
    model = HCCF(tiny, HCCF.Config(n_hyperedges=6, mix_layers=2, n_layers=2))
    assert len(model.mixers) == 2 * 2 * 2  # layers x sides x c
    dep, x = torch.randn(5, 6), torch.randn(5, 4)
    act = lambda t: F.leaky_relu(t, 0.5)  # noqa: E731
    for layer, side in ((0, 0), (1, 1)):
        first = (layer * 2 + side) * 2
        edges = act(dep.T @ x)
        for v in (model.mixers[first], model.mixers[first + 1]):
            edges = act(v @ edges) + edges
        torch.testing.assert_close(model.hyper_layer(dep, x, layer, side), act(dep @ edges))
    # c = 0 is the plain Eq. 3 layer, and a bad c is refused
    assert len(HCCF(tiny, HCCF.Config()).mixers) == 0
    with pytest.raises(ConfigError, match="mix_layers"):
        HCCF(tiny, HCCF.Config(mix_layers=-1))


def test_cross_view_contrast_is_eq8(tiny: Dataset) -> None:
    model = HCCF(tiny, HCCF.Config()).eval()
    emb = model()
    batch = Batch(torch.tensor([2, 2, 9]), torch.tensor([4, 0, 4]), torch.tensor([1, 1, 1]))
    u = tiny.n_users

    def nce(a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        logits = a[idx] @ b.T / 1.0  # every node of the other view is a negative, τ = 1
        return (torch.logsumexp(logits, 1) - logits[torch.arange(len(idx)), idx]).mean()

    users, items = torch.tensor([2, 9]), torch.tensor([0, 4])
    expected = sum(
        nce(z[:u], g[:u], users) + nce(z[u:], g[u:], items)
        for z, g in zip(emb.extras["local"], emb.extras["global"], strict=True)  # type: ignore[index]
    )
    terms = model.loss(batch, emb)
    assert set(terms) == {"bpr", "reg", "cl"}
    assert torch.allclose(terms["cl"], 1e-3 * expected, rtol=1e-5)


def test_learns_planted_signal(tiny: Dataset) -> None:
    model = HCCF(tiny, HCCF.Config())
    opts = model.configure_optimizers(TrainSettings(lr=1e-2))
    sampler = BPRSampler(tiny.train, 256, seed=0)
    losses = []
    for epoch in range(6):
        model.train()
        losses.append(np.mean([model.train_step(b, opts)["bpr"] for b in sampler.epoch(epoch)]))
    assert losses[-1] < 0.5 * losses[0]
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1


def test_detach_local_stops_the_contrastive_gradient_at_the_local_view(tiny: Dataset) -> None:
    batch = Batch(torch.tensor([2, 5, 9]), torch.tensor([4, 0, 7]), torch.tensor([1, 1, 1]))

    def cl_grad(detach: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = HCCF(tiny, HCCF.Config(detach_local=detach, ssl_weight=1.0)).eval()
        emb = model()
        model.loss(batch, emb)["cl"].backward(inputs=[*emb.extras["local"]])  # type: ignore[index]
        local = emb.extras["local"]  # type: ignore[index]
        return torch.stack([z.grad.abs().sum() if z.grad is not None else torch.tensor(0.0) for z in local])

    # The last layer's local view reaches the loss only as the contrastive operand. (Earlier layers' local views
    # still get a gradient through the next layer's hypergraph input, in the release too.)
    assert (cl_grad(False) > 0).all()  # the paper: both views move
    assert cl_grad(True)[-1] == 0  # the release: only the hypergraph view is pulled


def test_tf_release_options_residual_layers_hinge_loss_and_projected_contrast(tiny: Dataset) -> None:
    cfg = HCCF.Config(
        embed_dim=8,
        n_hyperedges=5,
        leaky_slope=1.0,
        residual=True,
        rank_loss="hinge",
        ssl_projection=True,
        negatives="batch",
    )
    model = HCCF(tiny, cfg).eval()
    emb = model()
    # residual layers: E^(l) = Ā E^(l-1) + Γ^(l) + E^(l-1), output Σ_l E^(l)
    x = torch.cat([model.user_emb, model.item_emb])
    dep_u, dep_i = model.user_emb @ model.user_hyper, model.item_emb @ model.item_hyper
    adj, u = model.adj.to_dense(), tiny.n_users
    total = x
    for _ in range(2):
        x = adj @ x + torch.cat([dep_u @ (dep_u.T @ x[:u]), dep_i @ (dep_i.T @ x[u:])]) + x
        total = total + x
    assert torch.allclose(torch.cat([emb.users, emb.items]), total, atol=1e-5)

    batch = Batch(torch.tensor([2, 2, 9]), torch.tensor([4, 0, 4]), torch.tensor([1, 3, 1]))
    terms = model.loss(batch, emb)
    assert set(terms) == {"hinge", "reg", "cl"}
    pos = (emb.users[batch.users] * emb.items[batch.pos]).sum(1)
    neg = (emb.users[batch.users] * emb.items[batch.neg]).sum(1)
    assert torch.allclose(terms["hinge"], torch.clamp(1 - (pos - neg), min=0).mean())

    def nce(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(a, dim=1) @ (F.normalize(b, dim=1) @ w).T / 1.0  # batch nodes only, τ = 1
        return (torch.logsumexp(logits, 1) - logits.diagonal()).mean()

    users, items = torch.tensor([2, 9]), torch.tensor([0, 4])
    expected = sum(
        nce(z[:u][users], g[:u][users], w) + nce(z[u:][items], g[u:][items], w)
        for z, g, w in zip(emb.extras["local"], emb.extras["global"], model.ssl_proj, strict=True)  # type: ignore[index]
    )
    assert len(model.ssl_proj) == 2
    assert torch.allclose(terms["cl"], 1e-3 * expected, rtol=1e-5)
    with pytest.raises(ConfigError, match="rank_loss"):
        HCCF(tiny, HCCF.Config(rank_loss="x"))
    with pytest.raises(ConfigError, match="ssl_projection"):
        HCCF(tiny, HCCF.Config(ssl_projection=True))  # default negatives "all"


def test_dep_scale_scales_the_hypergraph_view_by_its_square(tiny: Dataset) -> None:
    torch.manual_seed(0)
    base = HCCF(tiny, HCCF.Config(embed_dim=8, n_hyperedges=5, leaky_slope=1.0, n_layers=1)).eval()
    scaled = HCCF(tiny, HCCF.Config(embed_dim=8, n_hyperedges=5, leaky_slope=1.0, n_layers=1, dep_scale=0.1))
    scaled.load_state_dict(base.state_dict())
    scaled.eval()
    local, glob = base.views()[1:], scaled.views()[1:]
    assert torch.allclose(local[0][0], glob[0][0])  # the local view is untouched
    assert torch.allclose(glob[1][0], 0.01 * local[1][0], atol=1e-7)  # Γ = (sΛ)(sΛ)ᵀ E


def test_sparse_release_dependency_is_the_scaled_embedding_table(tiny: Dataset) -> None:
    cfg = HCCF.Config(embed_dim=6, leaky_slope=1.0, dependency="embedding", dep_scale=0.5, keep_rate=1.0)
    model = HCCF(tiny, cfg).eval()
    # no W: the parameters are the two embedding tables only (so the all-parameter L2 covers just them)
    assert [p.shape for p in model.parameters()] == [(tiny.n_users, 6), (tiny.n_items, 6)]
    x = torch.cat([model.user_emb, model.item_emb])
    dep_u, dep_i = 0.5 * model.user_emb, 0.5 * model.item_emb  # Λ = mult · E^(0), H = d
    adj, u, total = model.adj.to_dense(), tiny.n_users, x
    for _ in range(2):
        x = adj @ x + torch.cat([dep_u @ (dep_u.T @ x[:u]), dep_i @ (dep_i.T @ x[u:])])
        total = total + x
    emb = model()
    assert torch.allclose(torch.cat([emb.users, emb.items]), total, atol=1e-5)
    # Λ is never dropped: with the edge dropout off (keep rate 1), training and eval forwards agree
    assert torch.allclose(model.train()().users, emb.users, atol=1e-6)
    with pytest.raises(ConfigError, match="dependency"):
        HCCF(tiny, HCCF.Config(dependency="x"))
