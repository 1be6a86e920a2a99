"""MMGCL: branch layout, ME/MM augmented views, contrastive term, planted signal."""

from __future__ import annotations

import pytest
import torch
from model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.models import MODELS
from modalrec.models.mmgcl import MMGCL


def test_shapes_and_fusion(tiny: Dataset) -> None:
    n_mod = len(tiny.modalities)
    emb = MMGCL(tiny, MMGCL.Config(embed_dim=8))()
    assert emb.users.shape == (tiny.n_users, 8 * (n_mod + 1)) and emb.items.shape == (
        tiny.n_items,
        8 * (n_mod + 1),
    )
    emb = MMGCL(tiny, MMGCL.Config(embed_dim=8, fusion="sum", with_id=False))()
    assert emb.users.shape == (tiny.n_users, 8)
    with pytest.raises(ValueError):
        MMGCL(tiny, MMGCL.Config(fusion="mean"))


def test_views_are_random_corruptions_of_the_clean_encoding(tiny: Dataset) -> None:
    model = MMGCL(tiny, MMGCL.Config())
    with torch.no_grad():
        clean = model._encode()
        torch.testing.assert_close(model._encode()[0], clean[0])  # no augmentation: deterministic
        me = model._encode(edge_drop=0.2)
        mm = model._encode(mask_prob=0.2)
        assert not torch.allclose(me[0], clean[0]) and not torch.allclose(mm[1], clean[1])
        # masking touches only the modality branches: the ID branch (first block) of items is unchanged
        d = model.cfg.embed_dim
        torch.testing.assert_close(mm[1][:, :d], clean[1][:, :d])
        # masking every item's modality input equals a model whose projections output zeros
        full = model._encode(mask_prob=1.0)
        for lin in model.proj:
            lin.weight.zero_()
        torch.testing.assert_close(full[1], model._encode()[1])


def test_contrastive_term_and_gradients(tiny: Dataset) -> None:
    batch = next(BPRSampler(tiny.train, 64, seed=0).epoch(0))
    model = MMGCL(tiny, MMGCL.Config())
    terms = model.loss(batch, model())
    assert set(terms) == {"bpr", "reg", "cl"} and terms["cl"] > 0
    terms["cl"].backward()
    assert all(p.grad is not None for p in model.proj.parameters())
    assert set(MMGCL(tiny, MMGCL.Config(cl_weight=0.0)).loss(batch, model())) == {"bpr", "reg"}


def test_planted_signal_beats_popularity(tiny: Dataset) -> None:
    assert MODELS["mmgcl"] is MMGCL
    torch.manual_seed(0)
    model = MMGCL(tiny, MMGCL.Config())
    history = train(model, tiny)
    assert history[-1]["bpr"] < history[0]["bpr"] and history[-1]["cl"] < history[0]["cl"]
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1
