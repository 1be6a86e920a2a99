"""LightGCN-M: the layer-0 item input adds projected modality content (equation check), planted signal."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.graph import lightgcn_readout, normalized_adjacency
from modalrec.models import MODELS
from modalrec.models.lightgcn_m import LightGCNM


def test_forward_is_lightgcn_over_id_plus_content(tiny: Dataset) -> None:
    model = LightGCNM(tiny, LightGCNM.Config(embed_dim=8, n_layers=2))
    with torch.no_grad():
        content = sum(
            F.normalize(torch.from_numpy(tiny.features[m]), dim=1) @ model.proj[m].weight.T
            for m in tiny.modalities
        ) / len(tiny.modalities)
        ego = torch.cat([model.user_emb, model.item_emb + content])
        expected = lightgcn_readout(normalized_adjacency(tiny.train), ego, 2)
        emb = model()
    torch.testing.assert_close(torch.cat([emb.users, emb.items]), expected)
    assert emb.users.shape == (tiny.n_users, 8) and emb.items.shape == (tiny.n_items, 8)


def test_content_reaches_items_without_id_signal(tiny: Dataset) -> None:
    model = LightGCNM(tiny, LightGCNM.Config(n_layers=0))
    with torch.no_grad():
        model.item_emb.zero_()
        torch.testing.assert_close(model().items, model.content())


def test_one_modality_and_loss_terms(tiny: Dataset) -> None:
    model = LightGCNM(tiny.select_modalities(["visual"]), LightGCNM.Config())
    batch = next(BPRSampler(tiny.train, 64, seed=0).epoch(0))
    terms = model.loss(batch, model())
    assert set(terms) == {"bpr", "reg"}
    sum(terms.values()).backward()
    assert model.proj["visual"].weight.grad is not None


def test_planted_signal_beats_popularity(tiny: Dataset) -> None:
    assert MODELS["lightgcn_m"] is LightGCNM
    torch.manual_seed(0)
    model = LightGCNM(tiny, LightGCNM.Config())
    history = train(model, tiny)
    assert history[-1]["bpr"] < history[0]["bpr"]
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1
