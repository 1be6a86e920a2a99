"""GRCN: refined edge weights (fusion, pruning) on hand cases, routing softmax, shapes, planted signal."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.models import MODELS
from modalrec.models.grcn import GRCN, refined_edge_weights, segment_softmax


def test_refined_edge_weights_hand_case() -> None:
    aff = torch.tensor([[0.5, -0.2], [-0.3, -0.1], [0.0, 0.9]])
    torch.testing.assert_close(refined_edge_weights(aff, "max"), torch.tensor([0.5, 0.0, 0.9]))
    torch.testing.assert_close(refined_edge_weights(aff, "mean"), torch.tensor([0.15, 0.0, 0.45]))
    torch.testing.assert_close(refined_edge_weights(aff, "max", prune=False), torch.tensor([0.5, -0.1, 0.9]))
    with pytest.raises(ValueError):
        refined_edge_weights(aff, "sum")


def test_segment_softmax_normalises_each_group() -> None:
    scores = torch.tensor([1.0, 2.0, 3.0, 0.5, 100.0])
    index = torch.tensor([0, 0, 2, 2, 1])
    out = segment_softmax(scores, index, 3)
    sums = torch.zeros(3).index_add(0, index, out)
    torch.testing.assert_close(sums, torch.ones(3))
    torch.testing.assert_close(out[:2], torch.softmax(scores[:2], 0))
    assert out[4] == 1.0  # a single edge gets all the mass, no overflow at score 100


def hand_dataset() -> Dataset:
    # user 0 holds items 0 and 1, user 1 holds items 1 and 2; one 2-d modality with positive features
    r = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))
    feats = {"visual": np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)}
    return Dataset("hand", np.array(["a", "b"]), np.array(["x", "y", "z"]), r, r * 0, r * 0, feats)


def test_pruning_on_a_hand_case() -> None:
    data = hand_dataset()
    model = GRCN(data, GRCN.Config(content_dim=2, n_routing=0, normalize_features=False))
    with torch.no_grad():
        model.content_mlp[0].weight.copy_(torch.eye(2))
        model.content_mlp[0].bias.zero_()
        # user 0 dislikes the first content axis and likes the second; user 1 likes the first
        model.preference[0].copy_(torch.tensor([[-1.0, 0.5], [1.0, 0.0]]))
        weights = model.edge_weights()
    pairs = list(zip(model.edge_users.tolist(), model.edge_items.tolist(), strict=True))
    expected = {
        (0, 0): 0.0,  # cos([-1, .5], [1, 0]) < 0: pruned
        (0, 1): 0.5 / np.sqrt(1.25),  # cos([-1, .5], [0, 1])
        (1, 1): 0.0,  # cos([1, 0], [0, 1]) = 0
        (1, 2): 1 / np.sqrt(2),  # cos([1, 0], [1, 1])
    }
    for (u, i), w in zip(pairs, weights.tolist(), strict=True):
        assert w == pytest.approx(expected[(u, i)], abs=1e-6)
    # a pruned edge carries no message: user 0's ID state ignores item 0 entirely
    emb = model()
    assert emb.extras is not None and emb.extras["edge_weights"][0] == 0.0


def test_refined_weights_in_range_and_shapes(tiny: Dataset) -> None:
    cfg = GRCN.Config(embed_dim=16, content_dim=8)
    model = GRCN(tiny, cfg)
    with torch.no_grad():
        weights = model.edge_weights()
        unrouted = GRCN(tiny, GRCN.Config(embed_dim=16, content_dim=8, n_routing=0))
        unrouted.load_state_dict(model.state_dict())
        raw = unrouted.edge_weights()
    assert weights.shape == (tiny.train.nnz,)
    assert float(weights.min()) >= 0.0 and float(weights.max()) <= 1.0 + 1e-6
    # random preferences disagree with some content: those edges are pruned ...
    assert (raw == 0).any() and float(raw.max()) <= 1.0 + 1e-6
    # ... and routing pulls each preference towards its user's items, raising the weights of their edges
    assert float(weights.mean()) > float(raw.mean()) + 0.1
    emb = model()
    width = cfg.embed_dim + len(tiny.modalities) * cfg.content_dim
    assert emb.users.shape == (tiny.n_users, width) and emb.items.shape == (tiny.n_items, width)
    assert model.score(emb, torch.tensor([0, 3])).shape == (2, tiny.n_items)


def test_mean_fusion_and_one_modality(tiny: Dataset) -> None:
    one = tiny.select_modalities(["visual"])
    model = GRCN(one, GRCN.Config(fusion="mean", content_dim=8))
    assert model().items.shape == (one.n_items, 64 + 8)
    with pytest.raises(ValueError):
        GRCN(tiny, GRCN.Config(fusion="sum"))


def test_gradients_reach_the_refinement(tiny: Dataset) -> None:
    model = GRCN(tiny, GRCN.Config())
    batch = next(BPRSampler(tiny.train, 64, seed=0).epoch(0))
    terms = model.loss(batch, model())
    sum(terms.values()).backward()
    assert model.content_mlp[0].weight.grad is not None and model.content_mlp[0].weight.grad.abs().sum() > 0
    assert model.preference[0].grad is not None


def test_planted_signal_beats_popularity(tiny: Dataset) -> None:
    assert MODELS["grcn"] is GRCN
    torch.manual_seed(0)
    model = GRCN(tiny, GRCN.Config())
    history = train(model, tiny)
    assert history[-1]["bpr"] < history[0]["bpr"]
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1
