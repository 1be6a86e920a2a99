"""MMGCN: per-modality GCN shapes, any number of modalities, combination variants, planted signal."""

from __future__ import annotations

import numpy as np
import torch
from model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.models import MODELS
from modalrec.models.mmgcn import MMGCN, row_normalized_bipartite


def test_row_normalised_adjacency_is_a_neighbour_mean(tiny: Dataset) -> None:
    adj = row_normalized_bipartite(tiny.train)
    n = tiny.n_users + tiny.n_items
    assert adj.shape == (n, n) and adj.layout == torch.sparse_csr
    sums = torch.sparse.mm(adj, torch.ones(n, 1)).squeeze(1)
    deg = np.concatenate([np.diff(tiny.train.indptr), np.asarray(tiny.train.sum(0)).ravel()])
    torch.testing.assert_close(sums, torch.from_numpy((deg > 0).astype(np.float32)))


def test_shapes_for_one_two_and_three_modalities(tiny: Dataset) -> None:
    three = Dataset(
        tiny.name,
        tiny.user_ids,
        tiny.item_ids,
        tiny.train,
        tiny.val,
        tiny.test,
        {**tiny.features, "acoustic": np.ones((tiny.n_items, 300), dtype=np.float32)},
    )
    for data in (tiny.select_modalities(["textual"]), tiny, three):
        model = MMGCN(data, MMGCN.Config(embed_dim=16, feat_dim=32))
        assert len(model.gcns) == len(data.modalities)
        emb = model()
        assert emb.users.shape == (data.n_users, 16) and emb.items.shape == (data.n_items, 16)
    # the 300-wide modality is projected to feat_dim; the narrow ones are used as they are
    assert model.gcns[2].mlp is not None and model.gcns[2].preference.shape == (three.n_users, 32)
    assert model.gcns[0].mlp is None and model.gcns[0].preference.shape[1] == 16


def test_concat_combination_and_gradients(tiny: Dataset) -> None:
    model = MMGCN(tiny, MMGCN.Config(concat=True, n_layers=3))
    batch = next(BPRSampler(tiny.train, 64, seed=0).epoch(0))
    terms = model.loss(batch, model())
    assert set(terms) == {"bpr", "reg"}
    sum(terms.values()).backward()
    for gcn in model.gcns:
        assert gcn.preference.grad is not None and gcn.preference.grad.abs().sum() > 0
    assert model.id_emb.grad is not None


def test_planted_signal_beats_popularity(tiny: Dataset) -> None:
    assert MODELS["mmgcn"] is MMGCN
    torch.manual_seed(0)
    model = MMGCN(tiny, MMGCN.Config())
    history = train(model, tiny)
    assert history[-1]["bpr"] < history[0]["bpr"]
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1
