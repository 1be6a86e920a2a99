"""MGCN: item-item views against a dense oracle, the purifier, the fuser, the loss terms, variants and
planted-signal recovery."""

from __future__ import annotations

import math

import numpy as np
import torch
from model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.models import MODELS
from modalrec.models.base import TrainSettings
from modalrec.models.mgcn import MGCN


def oracle_weighted_knn(x: np.ndarray, k: int) -> np.ndarray:
    """Top-k cosine neighbours (self included) weighted by the cosine, negatives dropped, D^{-1/2} Ŝ D^{-1/2}."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = unit @ unit.T
    hat = np.zeros_like(s)
    for i in range(len(s)):
        top = np.argsort(-s[i], kind="stable")[:k]
        hat[i, top] = np.maximum(s[i, top], 0.0)
    deg = hat.sum(1)
    inv = np.where(deg > 0, deg**-0.5, 0.0)
    return inv[:, None] * hat * inv[None, :]


def normalised_r(data: Dataset) -> np.ndarray:
    r = data.train.toarray().astype(np.float64)
    du, di = r.sum(1), r.sum(0)
    with np.errstate(divide="ignore"):
        su = np.where(du > 0, du**-0.5, 0.0)
        si = np.where(di > 0, di**-0.5, 0.0)
    return su[:, None] * r * si[None, :]


def test_item_item_views_match_dense_oracle(tiny: Dataset) -> None:
    model = MGCN(tiny, MGCN.Config(knn_k=5, n_item_layers=2))
    r = normalised_r(tiny)
    with torch.no_grad():
        for idx, name in enumerate(tiny.features):
            s = oracle_weighted_knn(tiny.features[name].astype(np.float64), 5)
            np.testing.assert_allclose(model.item_graph(idx)[0].to_dense().numpy(), s, atol=1e-6)
            np.testing.assert_allclose(model.item_graph(idx)[1].to_dense().numpy(), s.T, atol=1e-6)
            # purifier: ẽ^m = e ⊙ σ(W^g (W_m f^m + b_m) + b^g), then h_i = S² ẽ, h_u = R̂ h_i
            x = tiny.features[name].astype(np.float64) @ model.proj[idx].weight.double().numpy().T
            x += model.proj[idx].bias.double().numpy()
            gate = model.gate[idx]
            g = 1 / (1 + np.exp(-(x @ gate.weight.double().numpy().T + gate.bias.double().numpy())))
            purified = model.item_emb.double().numpy() * g
            users, items = model.modality_view(idx)
            np.testing.assert_allclose(items.numpy(), s @ s @ purified, atol=1e-5)
            np.testing.assert_allclose(users.numpy(), r @ (s @ s @ purified), atol=1e-5)


def test_fuser_weights_and_single_modality_case(tiny: Dataset) -> None:
    model = MGCN(tiny, MGCN.Config())
    with torch.no_grad():
        emb = model()
    assert emb.extras is not None
    for key, n in (("alpha_users", tiny.n_users), ("alpha_items", tiny.n_items)):
        alpha = emb.extras[key]
        assert alpha.shape == (n, 2)
        torch.testing.assert_close(alpha.sum(1), torch.ones(n))
    torch.testing.assert_close(emb.items, emb.extras["id_items"] + emb.extras["side_items"])
    # one modality: the shared part is the view itself and the specific part is zero, so h_mul = h / 2
    single = MGCN(tiny.select_modalities(["visual"]), MGCN.Config())
    with torch.no_grad():
        out = single()
        users, items = single.modality_view(0)
    assert out.extras is not None
    torch.testing.assert_close(out.extras["side_items"], items / 2)
    torch.testing.assert_close(out.extras["side_users"], users / 2)
    # without the fuser: the plain mean of the views
    plain = MGCN(tiny, MGCN.Config(**MGCN.variants["w/o fuser"]))
    with torch.no_grad():
        out = plain()
        views = [plain.modality_view(i)[1] for i in range(2)]
    assert out.extras is not None
    torch.testing.assert_close(out.extras["side_items"], (views[0] + views[1]) / 2)


def test_loss_terms_and_gradients(tiny: Dataset) -> None:
    model = MGCN(tiny, MGCN.Config())
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    emb = model()
    terms = model.loss(batch, emb)
    assert set(terms) == {"bpr", "reg", "cl"} and terms["cl"] > 0
    # the L2 term is on the batch's final embeddings (official code)
    u, p, n = emb.users[batch.users], emb.items[batch.pos], emb.items[batch.neg]
    expected = 1e-4 * 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(batch.users)
    torch.testing.assert_close(terms["reg"], expected)
    torch.stack(list(terms.values())).sum().backward()
    for name in (
        "user_emb",
        "item_emb",
        "proj.0.weight",
        "gate.1.weight",
        "prefer.0.weight",
        "att.weight",
        "query.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_variants_run(tiny: Dataset) -> None:
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    for overrides in [{}, {"finetune_features": True}, *MGCN.variants.values()]:
        model = MGCN(tiny, MGCN.Config(**overrides))
        terms = model.train_step(batch, model.configure_optimizers(TrainSettings(lr=1e-3)))
        assert all(math.isfinite(v) for v in terms.values())
        assert ("cl" in terms) == (overrides.get("cl_weight", 0.01) > 0)


def test_planted_signal_beats_popularity(tiny: Dataset) -> None:
    assert MODELS["mgcn"] is MGCN
    torch.manual_seed(0)
    model = MGCN(tiny, MGCN.Config())
    history = train(model, tiny, epochs=6, lr=0.01)
    assert history[-1]["bpr"] < history[0]["bpr"]
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1
