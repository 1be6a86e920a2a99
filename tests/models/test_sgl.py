"""SGL: augmentations keep the right share of edges/nodes, views per epoch, Eq. 10, planted signal."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError
from modalrec.graph import lightgcn_readout, normalized_adjacency
from modalrec.losses import info_nce
from modalrec.models import MODELS
from modalrec.models.sgl import SGL, drop_edges, drop_nodes


def random_interactions(n_users: int = 400, n_items: int = 300, density: float = 0.1) -> sp.csr_matrix:
    mat = sp.random(n_users, n_items, density=density, format="csr", random_state=1, dtype=np.float32)
    mat.data[:] = 1.0
    return mat


def test_registered() -> None:
    assert MODELS["sgl"] is SGL


@pytest.mark.parametrize("field,value", [("aug", "xx"), ("negatives", "some"), ("ratio", 1.0)])
def test_bad_options_raise(tiny: Dataset, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        SGL(tiny, SGL.Config(**{field: value}))  # type: ignore[arg-type]


def test_edge_dropout_keeps_the_right_share() -> None:
    mat = random_interactions()
    kept = drop_edges(mat, 0.1, np.random.default_rng(0))
    assert abs(kept.nnz / mat.nnz - 0.9) < 0.02
    assert (kept - kept.multiply(mat)).nnz == 0  # a subgraph: no new edges


def test_node_dropout_drops_nodes_with_all_their_edges() -> None:
    mat = random_interactions()
    kept = drop_nodes(mat, 0.2, np.random.default_rng(0))
    live_u = np.diff(kept.indptr) > 0
    live_i = np.asarray(kept.sum(0)).ravel() > 0
    assert abs(live_u.mean() - 0.8) < 0.06 and abs(live_i.mean() - 0.8) < 0.06
    # every edge between two surviving nodes is kept: kept == R restricted to live users x live items
    restricted = sp.diags(live_u.astype(np.float32)) @ mat @ sp.diags(live_i.astype(np.float32))
    assert abs(kept - restricted).sum() == 0


def test_views_per_epoch_and_random_walk_layers(tiny: Dataset) -> None:
    ed = SGL(tiny, SGL.Config(aug="ed"))
    assert len(ed.views) == 2 and all(len(v) == 3 for v in ed.views)
    assert ed.views[0][0] is ed.views[0][1]  # edge dropout: the same subgraph at every layer
    r_hat = ed.views[0][0][0]  # the user-item block R̂ of view 0, layer 0
    assert not torch.equal(r_hat.values(), ed.views[1][0][0].values()) or (
        r_hat.col_indices().shape != ed.views[1][0][0].col_indices().shape
    )
    # the transposed block is R̂ᵀ of the same subgraph
    assert torch.allclose(ed.views[0][0][1].to_dense(), r_hat.to_dense().T)
    first = r_hat.col_indices().clone()
    ed.on_epoch_start(1)
    assert not torch.equal(first, ed.views[0][0][0].col_indices())  # regenerated each epoch
    ed.on_epoch_start(0)
    assert torch.equal(first, ed.views[0][0][0].col_indices())  # deterministic in (seed, epoch)
    assert abs(ed.views[0][0][0].col_indices().numel() / tiny.train.nnz - 0.9) < 0.03
    rw = SGL(tiny, SGL.Config(aug="rw"))
    layers = rw.views[0]
    assert layers[0] is not layers[1]
    assert not torch.equal(layers[0][0].col_indices(), layers[1][0].col_indices())


@pytest.mark.parametrize("aug", ["ed", "rw"])
def test_view_encoding_matches_stacked_adjacency(tiny: Dataset, aug: str) -> None:
    """Each view's two-block propagation equals the layer mean over its stacked [(U+I), (U+I)] matrices."""
    model = SGL(tiny, SGL.Config(embed_dim=8, aug=aug))
    view = model.views[0]
    stacked = [
        torch.cat(
            [
                torch.cat([torch.zeros(tiny.n_users, tiny.n_users), r.to_dense()], 1),
                torch.cat([r_t.to_dense(), torch.zeros(tiny.n_items, tiny.n_items)], 1),
            ]
        )
        for r, r_t in view
    ]
    x = torch.cat([model.user_emb, model.item_emb]).detach()
    layers = [x]
    for adj in stacked:
        layers.append(adj @ layers[-1])
    expected = torch.stack(layers).mean(0)
    users, items = model.encode(view)
    assert torch.allclose(torch.cat([users, items]), expected, atol=1e-5)
    # gradients flow to both tables through either propagation path
    (users.sum() + items.pow(2).sum()).backward()
    assert model.user_emb.grad is not None and model.item_emb.grad is not None


def test_forward_is_lightgcn_and_ssl_term_is_eq10(tiny: Dataset) -> None:
    model = SGL(tiny, SGL.Config(embed_dim=8, ssl_weight=0.1))
    emb = model()
    ref = lightgcn_readout(normalized_adjacency(tiny.train), torch.cat([model.user_emb, model.item_emb]), 3)
    assert emb.users.shape == (tiny.n_users, 8) and emb.items.shape == (tiny.n_items, 8)
    assert torch.allclose(torch.cat([emb.users, emb.items]), ref, atol=1e-6)
    batch = Batch(torch.tensor([0, 1, 1, 5]), torch.tensor([2, 3, 3, 4]), torch.tensor([7, 8, 9, 10]))
    (u1, i1), (u2, i2) = (model.encode(v) for v in model.views)
    users, items = torch.tensor([0, 1, 5]), torch.tensor([2, 3, 4])  # duplicates removed

    def nce(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # Eq. 10 written out, cosine / τ
        a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
        logits = a @ b.T / 0.2
        return (torch.logsumexp(logits, 1) - logits.diag()).mean()

    expected = nce(u1[users], u2[users]) + nce(i1[items], i2[items])
    assert torch.allclose(model.ssl_loss(batch), expected, atol=1e-5)
    assert torch.allclose(expected, info_nce(u1[users], u2[users], 0.2) + info_nce(i1[items], i2[items], 0.2))
    terms = model.loss(batch, emb)
    assert set(terms) == {"bpr", "reg", "cl"}
    assert torch.allclose(terms["cl"], 0.1 * expected, atol=1e-6)


@pytest.mark.parametrize("aug", ["ed", "nd", "rw"])
def test_learns_planted_signal(tiny: Dataset, aug: str) -> None:
    model = SGL(tiny, SGL.Config(aug=aug))
    # InfoNCE dominates while the embeddings are small, so BPR starts slowly; a large lr shortens that
    history = train(model, tiny, epochs=8, lr=3e-2, batch_size=256)
    assert history[-1]["bpr"] < 0.5 * history[0]["bpr"]
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1
