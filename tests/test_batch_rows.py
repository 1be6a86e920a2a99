"""The batch-restricted LightGCN layer mean equals the full one on the selected rows, forward and backward."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from modalrec.batch_rows import csr_rows, layer_mean_user_rows
from modalrec.data import Dataset
from modalrec.data.sampling import Batch, BPRSampler
from modalrec.graph import bipartite_layer_mean, normalized_interactions
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


def test_user_rows_layer_mean_matches_full_propagation_and_gradients() -> None:
    train = _graph()
    r, r_t = normalized_interactions(train)
    torch.manual_seed(0)
    rows = torch.tensor([3, 7, 11, 39, 20])
    w_u, w_i = torch.randn(len(rows), 6), torch.randn(train.shape[1], 6)
    for n_layers in (1, 3):
        users = torch.randn(train.shape[0], 6, requires_grad=True)
        items = torch.randn(train.shape[1], 6, requires_grad=True)
        full_u, full_i = bipartite_layer_mean(r, r_t, users, items, n_layers)
        ((full_u[rows] * w_u).sum() + (full_i * w_i).sum()).backward()
        want = (users.grad.clone(), items.grad.clone())  # type: ignore[union-attr]
        users.grad = items.grad = None

        got_u, got_i = layer_mean_user_rows(r, r_t, users, items, n_layers, rows)
        torch.testing.assert_close(got_u, full_u[rows].detach())
        torch.testing.assert_close(got_i, full_i.detach())
        ((got_u * w_u).sum() + (got_i * w_i).sum()).backward()
        torch.testing.assert_close(users.grad, want[0])
        torch.testing.assert_close(items.grad, want[1])
        assert got_u[1].abs().sum() > 0  # the isolated user keeps its layer-0 share
        torch.testing.assert_close(got_u[1], users[7].detach() / (n_layers + 1))


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
