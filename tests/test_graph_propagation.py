"""The two-block LightGCN propagation equals the stacked-adjacency reference, forward and backward."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.graph import (
    bipartite_layer_mean,
    lightgcn_readout,
    normalized_adjacency,
    normalized_interactions,
)


def _random_graph(n_users: int = 30, n_items: int = 20, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < 0.15).astype(np.float32)
    dense[5] = 0.0  # a user without interactions: zero degree must stay finite
    return sp.csr_matrix(dense)


def test_bipartite_layer_mean_matches_stacked_readout_and_its_gradient() -> None:
    train = _random_graph()
    n_users, n_items = train.shape
    r, r_t = normalized_interactions(train)
    adj = normalized_adjacency(train)
    torch.manual_seed(0)
    users = torch.randn(n_users, 8, requires_grad=True)
    items = torch.randn(n_items, 8, requires_grad=True)
    weights = torch.randn(n_users + n_items, 8)

    ref = lightgcn_readout(adj, torch.cat([users, items]), 3)
    (ref * weights).sum().backward()
    ref_grads = torch.cat([users.grad, items.grad]).clone()  # type: ignore[list-item]
    users.grad, items.grad = None, None

    out_u, out_i = bipartite_layer_mean(r, r_t, users, items, 3)
    (torch.cat([out_u, out_i]) * weights).sum().backward()
    got_grads = torch.cat([users.grad, items.grad])  # type: ignore[list-item]

    torch.testing.assert_close(torch.cat([out_u, out_i]), ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_grads, ref_grads, atol=1e-6, rtol=1e-5)
    assert torch.all(out_u[5] == users[5] / 4)  # an isolated user keeps only its own layer-0 share


def test_bipartite_layer_mean_without_grad_leaves_inputs_untouched() -> None:
    train = _random_graph(seed=1)
    r, r_t = normalized_interactions(train)
    users, items = torch.ones(train.shape[0], 4), torch.ones(train.shape[1], 4)
    out_u, out_i = bipartite_layer_mean(r, r_t, users, items, 2)
    assert torch.all(users == 1) and torch.all(items == 1)
    assert out_u.shape == users.shape and out_i.shape == items.shape
