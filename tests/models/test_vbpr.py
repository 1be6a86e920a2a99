"""VBPR: content projection, the feature bias, and cold-item embeddings from content alone."""

from __future__ import annotations

import torch

from modalrec.data import Dataset
from modalrec.models.vbpr import VBPR


def test_cold_item_embedding_is_the_content_part(tiny: Dataset) -> None:
    model = VBPR(tiny, VBPR.Config(embed_dim=8))
    feats = {m: tiny.features[m][:3] for m in tiny.modalities}
    cold = model.item_embeddings_from_features(feats)
    warm = model().items[:3].detach()
    assert cold.shape == (3, 8)
    torch.testing.assert_close(cold[:, 4:], warm[:, 4:])  # same projected content factors
    assert torch.count_nonzero(cold[:, :4]) == 0  # no ID factors for an unseen item


def test_score_includes_feature_bias(tiny: Dataset) -> None:
    model = VBPR(tiny, VBPR.Config(embed_dim=8))
    assert model.bias is not None
    torch.nn.init.normal_(model.bias.weight)
    emb = model()
    users = torch.tensor([0, 1])
    expected = emb.users[users] @ emb.items.T + model.bias(model.features).squeeze(1)
    torch.testing.assert_close(model.score(emb, users), expected)


def test_content_weights_are_penalised_only_when_asked(tiny: Dataset) -> None:
    from modalrec.data.sampling import Batch

    batch = Batch(users=torch.tensor([0, 1]), pos=torch.tensor([2, 3]), neg=torch.tensor([4, 5]))
    off = VBPR(tiny, VBPR.Config(embed_dim=8, content_reg_weight=0.0))
    assert "reg_content" not in off.loss(batch, off())
    model = VBPR(tiny, VBPR.Config(embed_dim=8, content_reg_weight=0.5))
    assert model.bias is not None
    torch.nn.init.ones_(model.bias.weight)
    expected = 0.5 * (model.proj.weight.pow(2).sum() + model.bias.weight.pow(2).sum())
    torch.testing.assert_close(model.loss(batch, model())["reg_content"], expected)
