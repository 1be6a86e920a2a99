"""The batch-restricted LightGCN layer mean equals the full one on the selected rows, forward and backward."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from modalrec.data import Dataset
from modalrec.data.sampling import Batch, BPRSampler
from modalrec.graph import bipartite_layer_mean, normalized_interactions
from modalrec.graph.batch_rows import batch_local_indices, csr_rows, layer_mean_batch_rows
from modalrec.models import MODELS


def _graph(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((40, 25)) < 0.2).astype(np.float32)
    dense[7] = 0.0  # an isolated user among the selected rows
    return sp.csr_matrix(dense)


def test_csr_rows_returns_the_selected_rows_in_the_given_order() -> None:
    r, _ = normalized_interactions(_graph())
    rows = torch.tensor([9, 0, 7, 33])
    sub, positions = csr_rows(r, rows)
    torch.testing.assert_close(sub.to_dense(), r.to_dense()[rows])
    torch.testing.assert_close(r.values()[positions], sub.values())


def test_batch_local_indices_map_back_to_the_batch() -> None:
    batch = Batch(torch.tensor([5, 2, 5, 9]), torch.tensor([1, 1, 0, 7]), torch.tensor([3, 7, 2, 2]))
    local, user_rows, item_rows = batch_local_indices(batch)
    assert user_rows.tolist() == [2, 5, 9] and item_rows.tolist() == [0, 1, 2, 3, 7]
    assert torch.equal(user_rows[local.users], batch.users)
    assert torch.equal(item_rows[local.pos], batch.pos)
    assert torch.equal(item_rows[local.neg], batch.neg)


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
def test_batch_rows_layer_mean_matches_full_propagation_and_gradients(n_layers: int) -> None:
    train = _graph()
    r, r_t = (m.to(torch.float64) for m in normalized_interactions(train))
    gen = torch.Generator().manual_seed(n_layers)
    rows_u, rows_i = torch.tensor([3, 7, 11, 39, 20]), torch.tensor([0, 4, 24, 9])
    weights = [torch.randn(len(rows), 6, generator=gen, dtype=torch.float64) for rows in (rows_u, rows_i) * 2]
    users = torch.randn(train.shape[0], 6, generator=gen, dtype=torch.float64, requires_grad=True)
    items = torch.randn(train.shape[1], 6, generator=gen, dtype=torch.float64, requires_grad=True)

    full_u, full_i = bipartite_layer_mean(r, r_t, users, items, n_layers)
    want_out = (full_u[rows_u], full_i[rows_i], users[rows_u], items[rows_i])
    sum((o * w).sum() for o, w in zip(want_out, weights, strict=True)).backward()  # type: ignore[union-attr]
    want_grads = (users.grad.clone(), items.grad.clone())  # type: ignore[union-attr]
    users.grad = items.grad = None

    got = layer_mean_batch_rows(r, r_t, users, items, n_layers, rows_u, rows_i)
    for g, w in zip(got, want_out, strict=True):
        torch.testing.assert_close(g, w.detach())
    sum((o * w).sum() for o, w in zip(got, weights, strict=True)).backward()  # type: ignore[union-attr]
    torch.testing.assert_close(users.grad, want_grads[0])
    torch.testing.assert_close(items.grad, want_grads[1])
    # the isolated user 7 keeps only its layer-0 share
    torch.testing.assert_close(got.users[1], users[7].detach() / (n_layers + 1))


@pytest.mark.parametrize("name", ["lightgcn", "lightgcn_m"])
def test_batch_loss_equals_the_full_forward_loss(tiny: Dataset, name: str) -> None:
    model_cls = MODELS[name]
    model = model_cls(tiny, model_cls.Config(n_layers=3, reg_weight=1e-2))
    batch: Batch = next(iter(BPRSampler(tiny.train, 256, seed=0).epoch(0)))
    fast = model.batch_loss(batch)
    sum(fast.values()).backward()  # type: ignore[union-attr]
    fast_grads = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
    model.zero_grad()
    slow = model.loss(batch, model.forward())
    sum(slow.values()).backward()  # type: ignore[union-attr]
    for k in slow:
        torch.testing.assert_close(fast[k], slow[k])
    for got, p in zip(fast_grads, model.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad)
