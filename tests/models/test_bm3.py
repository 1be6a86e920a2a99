"""BM3: the target view is a stop-gradient (dropout) copy of the online encoder, the losses by hand, planted
signal recovery and the ablation variants."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from tests.models.model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.models.bm3 import BM3, cosine_loss


def _batch(data: Dataset, size: int = 64):  # type: ignore[no-untyped-def]
    return next(iter(BPRSampler(data.train, size, seed=0).epoch(0)))


def test_cosine_loss_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 3.0]])
    # cosines 0 and 1 -> 1 - mean = 0.5
    assert math.isclose(float(cosine_loss(a, b)), 0.5, rel_tol=1e-6)


def test_target_is_a_stop_gradient_copy_of_the_online_encoder(tiny: Dataset) -> None:
    model = BM3(tiny, replace(BM3.Config(), dropout=0.0))
    model.train()
    _, items, _ = model.encode()
    target = model.targets(items)
    torch.testing.assert_close(target, items)  # no dropout: the same values as the online encoder
    assert not target.requires_grad  # and no gradient path through it
    # with dropout, the target is the encoder output with entries zeroed and the rest scaled by 1/(1-p)
    model = BM3(tiny, replace(BM3.Config(), dropout=0.5))
    model.train()
    _, items, _ = model.encode()
    t = model.targets(items)
    kept = t != 0
    assert 0.4 < kept.float().mean() < 0.6
    torch.testing.assert_close(t[kept], 2.0 * items.detach()[kept])
    model.eval()
    torch.testing.assert_close(model.targets(items), items.detach())


def test_losses_by_hand_and_gradients_only_through_the_online_view(tiny: Dataset) -> None:
    model = BM3(tiny, replace(BM3.Config(), dropout=0.0))
    model.train()
    batch = _batch(tiny)
    emb = model.forward()
    terms = model.loss(batch, emb)
    assert set(terms) == {"rec", "reg", "mm"}
    assert emb.extras is not None
    h_u, h_i = emb.extras["h_users"], emb.extras["h_items"]
    p = model.predictor
    u, i = batch.users, batch.pos
    rec = (
        2
        - F.cosine_similarity(p(h_u[u]), h_i[i], dim=1).mean()
        - F.cosine_similarity(p(h_i[i]), h_u[u], dim=1).mean()
    )
    torch.testing.assert_close(terms["rec"], rec)
    mm = sum(
        2
        - F.cosine_similarity(p(h[i]), h_i[i], dim=1).mean()
        - F.cosine_similarity(p(h[i]), h[i], dim=1).mean()
        for h in emb.extras["h_modal"]
    )
    torch.testing.assert_close(terms["mm"], model.cfg.cl_weight * mm)
    # the rec term's gradient w.r.t. h_u comes only from the online side ĥ_u = f_p(h_u)
    g_online = torch.autograd.grad(terms["rec"], h_u, retain_graph=True)[0]
    g_manual = torch.autograd.grad(1 - F.cosine_similarity(p(h_u[u]), h_i[i].detach(), dim=1).mean(), h_u)[0]
    torch.testing.assert_close(g_online, g_manual)


def test_planted_signal_recovery(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = BM3(tiny, BM3.Config())
    train(model, tiny, epochs=15, lr=0.01, batch_size=512)
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.02


@pytest.mark.parametrize("variant", sorted(BM3.variants))
def test_variants_run(tiny: Dataset, variant: str) -> None:
    model = BM3(tiny, replace(BM3.Config(), **BM3.variants[variant]))
    history = train(model, tiny, epochs=2, lr=0.01)
    assert all(math.isfinite(v) for row in history for v in row.values())
    assert ("mm" in history[0]) == (variant != "w/o-MM")


def test_single_modality(tiny: Dataset) -> None:
    one = tiny.select_modalities([tiny.modalities[0]])
    model = BM3(one, BM3.Config())
    history = train(model, one, epochs=1, lr=0.01)
    assert math.isfinite(history[0]["mm"])
