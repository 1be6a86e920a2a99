"""CLCRec: both contrastive terms, cold-item embeddings from content (shape, determinism), planted signal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.models import MODELS
from modalrec.models.clcrec import CLCRec, sampled_info_nce


def test_sampled_info_nce_matches_a_naive_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(5, 4, generator=g) for _ in range(3))
    shared = torch.randn(7, 4, generator=g)
    loss = sampled_info_nce(a, p, n, shared, 0.5)
    expected = 0.0
    for b in range(5):
        cands = torch.cat([p[b : b + 1], n[b : b + 1], shared])
        expected += -torch.log_softmax(cands @ a[b] / 0.5, dim=0)[0] / 5
    torch.testing.assert_close(loss, torch.as_tensor(expected))


def test_shapes_and_loss_terms(tiny: Dataset) -> None:
    model = CLCRec(tiny, CLCRec.Config(embed_dim=16, n_neg=32))
    emb = model()
    assert emb.users.shape == (tiny.n_users, 16) and emb.items.shape == (tiny.n_items, 16)
    assert emb.extras is not None and emb.extras["content"].shape == (tiny.n_items, 16)
    batch = next(BPRSampler(tiny.train, 64, seed=0).epoch(0))
    terms = model.loss(batch, emb)
    assert set(terms) == {"re", "ui", "reg"}
    assert all(torch.isfinite(v) for v in terms.values())
    for warm in ("content", "sum"):
        assert CLCRec(tiny, CLCRec.Config(warm_items=warm))().items.shape == (tiny.n_items, 64)
    with pytest.raises(ValueError):
        CLCRec(tiny, CLCRec.Config(warm_items="both"))


def test_cold_item_embeddings(tiny: Dataset) -> None:
    model = CLCRec(tiny, CLCRec.Config(embed_dim=16))
    rng = np.random.default_rng(0)
    new = {m: rng.standard_normal((5, f.shape[1])).astype(np.float32) for m, f in tiny.features.items()}
    first = model.item_embeddings_from_features(new)
    assert first.shape == (5, 16) and not first.requires_grad
    torch.testing.assert_close(first, model.item_embeddings_from_features(new))  # deterministic
    # the modality order is the training one, whatever the dict order
    reordered = dict(reversed(list(new.items())))
    torch.testing.assert_close(first, model.item_embeddings_from_features(reordered))
    # known items embedded from their features get exactly their training content embedding
    with torch.no_grad():
        torch.testing.assert_close(model.item_embeddings_from_features(tiny.features), model.content())
    with pytest.raises(ValueError, match="visual"):
        model.item_embeddings_from_features({"textual": new["textual"]})


def test_training_aligns_id_and_content(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = CLCRec(tiny, CLCRec.Config())
    history = train(model, tiny)
    assert history[-1]["re"] < history[0]["re"] and history[-1]["ui"] < history[0]["ui"]


def test_planted_signal_beats_popularity(tiny: Dataset) -> None:
    assert MODELS["clcrec"] is CLCRec
    torch.manual_seed(0)
    model = CLCRec(tiny, CLCRec.Config())
    train(model, tiny)
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1
    # cold path: ranking by the content embeddings alone still beats popularity on the planted data
    cold = CLCRec(tiny, CLCRec.Config(warm_items="content"))
    cold.load_state_dict(model.state_dict())
    assert recall_at(cold, tiny) > popularity_recall(tiny)
