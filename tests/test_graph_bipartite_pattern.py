"""graph.BipartitePattern: edge-dropped blocks equal the normalised blocks of the rebuilt subgraph."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.graph import BipartitePattern, bipartite_layer_mean, normalized_interactions


def _random_train(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((13, 9)) < 0.35).astype(np.float32)
    dense[5] = 0.0  # a user without interactions
    return sp.csr_matrix(dense)


def test_full_blocks_equal_normalized_interactions() -> None:
    train = _random_train()
    r, r_t = BipartitePattern(train).blocks()
    ref, ref_t = normalized_interactions(train)
    torch.testing.assert_close(r.to_dense(), ref.to_dense())
    torch.testing.assert_close(r_t.to_dense(), ref_t.to_dense())


def test_dropped_blocks_equal_the_rebuilt_subgraph_and_propagate_alike() -> None:
    train = _random_train(1)
    pattern = BipartitePattern(train)
    keep = torch.rand(len(pattern), generator=torch.Generator().manual_seed(3)) >= 0.4
    sub = train.copy()
    sub.data = keep.numpy().astype(np.float32)
    sub.eliminate_zeros()
    r, r_t = pattern.blocks(keep)
    ref, ref_t = normalized_interactions(sub)
    torch.testing.assert_close(r.to_dense(), ref.to_dense())
    torch.testing.assert_close(r_t.to_dense(), ref_t.to_dense())
    users, items = torch.randn(13, 4), torch.randn(9, 4)
    got = bipartite_layer_mean(r, r_t, users, items, 2)
    want = bipartite_layer_mean(ref, ref_t, users, items, 2)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
