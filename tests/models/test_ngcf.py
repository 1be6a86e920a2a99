"""NGCF: Eq. 7 on a hand graph, message dropout, concat readout, official-code layer, planted signal."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from model_helpers import popularity_recall, recall_at

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.models import MODELS
from modalrec.models.base import TrainSettings
from modalrec.models.ngcf import NGCF


def hand_dataset() -> Dataset:
    """2 users x 3 items: u0-{i0, i1}, u1-{i1, i2}."""
    train = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))
    empty = sp.csr_matrix((2, 3), dtype=np.float32)
    return Dataset("hand", np.array(["u0", "u1"]), np.array(["a", "b", "c"]), train, empty, empty)


def test_registered() -> None:
    assert MODELS["ngcf"] is NGCF


def test_layer_is_eq7_on_a_hand_graph() -> None:
    """E' = LeakyReLU((L + I) E W1 + (L E) ⊙ E W2) with L = D^-1/2 A D^-1/2, checked densely."""
    data = hand_dataset()
    model = NGCF(data, NGCF.Config(embed_dim=4, layer_sizes=[3], mess_dropout=0.0))
    a = np.zeros((5, 5), dtype=np.float32)
    a[:2, 2:] = data.train.toarray()
    a[2:, :2] = data.train.toarray().T
    d = a.sum(1) ** -0.5
    lap = torch.from_numpy(d[:, None] * a * d[None, :])
    e = torch.cat([model.user_emb, model.item_emb]).detach()
    w1, w2 = model.w1[0].weight.detach(), model.w2[0].weight.detach()
    expected = F.leaky_relu((lap + torch.eye(5)) @ e @ w1.T + ((lap @ e) * e) @ w2.T, 0.2)
    # per-message form (Eq. 3-4) for user 0: m_{u<-u} + Σ_i p_ui (W1 e_i + W2 (e_i ⊙ e_u))
    p = 1.0 / np.sqrt(2 * np.array([1.0, 2.0]))  # |N_u0| = 2; |N_i0| = 1, |N_i1| = 2
    msg = e[0] @ w1.T + sum(float(p[j]) * (e[2 + j] @ w1.T + (e[2 + j] * e[0]) @ w2.T) for j in range(2))
    assert torch.allclose(expected[0], F.leaky_relu(msg, 0.2), atol=1e-6)
    out = model.layer(0, model.adj, e)
    assert torch.allclose(out, expected, atol=1e-6)
    emb = model()
    assert emb.users.shape == (2, 7) and emb.items.shape == (3, 7)  # concat readout: 4 + 3
    assert torch.allclose(emb.users[:, :4], model.user_emb) and torch.allclose(emb.users[:, 4:], expected[:2])


def test_message_dropout_only_in_training(tiny: Dataset) -> None:
    model = NGCF(tiny, NGCF.Config(mess_dropout=0.5))
    model.eval()
    assert torch.equal(model().users, model().users)
    model.train()
    out = model().users[:, 64:]
    assert 0.4 < float((out == 0).float().mean()) < 0.6  # about half of every layer's messages dropped
    assert model.out_dim == 256


def test_official_layer_normalises_each_layer(tiny: Dataset) -> None:
    model = NGCF(tiny, NGCF.Config(official_layer=True)).eval()
    emb = model()
    for k in range(1, 4):
        block = emb.items[:, 64 * k : 64 * (k + 1)]
        assert torch.allclose(block.norm(dim=1), torch.ones(tiny.n_items), atol=1e-5)
    assert model.w1[0].bias is not None


def test_node_dropout_drops_laplacian_entries(tiny: Dataset) -> None:
    model = NGCF(tiny, NGCF.Config(node_dropout=0.3, mess_dropout=0.0))
    model.train()
    torch.manual_seed(1)
    a, b = model().users, model().users
    assert not torch.equal(a, b)
    model.eval()
    assert torch.equal(model().users, model().users)


def test_learns_planted_signal(tiny: Dataset) -> None:
    model = NGCF(tiny, NGCF.Config())
    opts = model.configure_optimizers(TrainSettings(lr=1e-2))
    sampler = BPRSampler(tiny.train, 256, seed=0)
    losses = []
    for epoch in range(6):
        model.train()
        losses.append(np.mean([model.train_step(b, opts)["bpr"] for b in sampler.epoch(epoch)]))
    assert losses[-1] < 0.5 * losses[0]
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1


def test_reg_on_final_penalises_the_concatenated_readout_rows() -> None:
    """reg_on="final" (official code): λ/B · ½ Σ ||e*||² over the batch's 256-d readout rows, not layer 0."""
    from modalrec.data.sampling import Batch

    data = hand_dataset()
    batch = Batch(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([2, 0]))
    for reg_on in ("ego", "final"):
        model = NGCF(data, NGCF.Config(embed_dim=4, layer_sizes=[3, 3], reg_weight=0.5, reg_on=reg_on))
        model.eval()
        emb = model.forward()
        users, items = (emb.users, emb.items) if reg_on == "final" else (model.user_emb, model.item_emb)
        assert users.shape[1] == (10 if reg_on == "final" else 4)
        rows = [users[batch.users], items[batch.pos], items[batch.neg]]
        expected = 0.5 * 0.5 * sum(float(r.detach().pow(2).sum()) for r in rows) / 2
        assert abs(float(model.loss(batch, emb)["reg"].detach()) - expected) < 1e-6


def test_reg_on_all_is_the_squared_norm_of_every_parameter() -> None:
    """reg_on="all" (Eq. 11 literally): λ·||Θ||² over the embedding tables and every W1/W2, bpr unchanged."""
    from modalrec.data.sampling import Batch

    data = hand_dataset()
    batch = Batch(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([2, 0]))
    torch.manual_seed(0)
    model = NGCF(data, NGCF.Config(embed_dim=4, layer_sizes=[3, 3], reg_weight=0.5, reg_on="all")).eval()
    emb = model.forward()
    tables = [model.user_emb, model.item_emb, *(lin.weight for lin in [*model.w1, *model.w2])]
    expected = 0.5 * sum(float(t.detach().pow(2).sum()) for t in tables)
    terms = model.loss(batch, emb)
    assert abs(float(terms["reg"].detach()) - expected) < 1e-5
    model.cfg.reg_on = "ego"
    torch.testing.assert_close(terms["bpr"], model.loss(batch, emb)["bpr"])


def test_normalize_layers_gives_unit_rows_per_layer_and_feeds_them_on(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = NGCF(tiny, NGCF.Config(embed_dim=8, layer_sizes=[8, 8], normalize_layers=True)).eval()
    emb = model.forward()
    for block in (emb.users[:, 8:16], emb.users[:, 16:], emb.items[:, 8:16]):
        torch.testing.assert_close(block.norm(dim=1), torch.ones(block.shape[0]))
    x = F.normalize(model.layer(0, model.adj, torch.cat([model.user_emb, model.item_emb])), dim=1)
    second = F.normalize(model.layer(1, model.adj, x), dim=1)  # layer 2 reads layer 1's normalised rows
    torch.testing.assert_close(torch.cat([emb.users[:, 16:], emb.items[:, 16:]]), second)
