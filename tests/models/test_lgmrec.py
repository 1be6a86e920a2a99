"""LGMRec: hyperedge shapes and dependencies, the modality and hypergraph embeddings against dense oracles,
the contrastive loss on a hand case, variants and planted-signal recovery."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.data.sampling import Batch, BPRSampler
from modalrec.models import MODELS
from modalrec.models.base import TrainSettings
from modalrec.models.lgmrec import LGMRec


def dense_parts(data: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary R, R / deg_u and the normalised R̂ as dense float64 arrays (tiny case only)."""
    r = (data.train.toarray() > 0).astype(np.float64)
    du, di = r.sum(1), r.sum(0)
    with np.errstate(divide="ignore"):
        mean = np.where(du[:, None] > 0, r / du[:, None], 0.0)
        su, si = np.where(du > 0, du**-0.5, 0.0), np.where(di > 0, di**-0.5, 0.0)
    return r, mean, su[:, None] * r * si[None, :]


def test_hyperedge_shapes_and_dependencies(tiny: Dataset) -> None:
    model = LGMRec(tiny, LGMRec.Config(n_hyperedges=6))
    r, _, _ = dense_parts(tiny)
    for idx, name in enumerate(tiny.features):
        logits = tiny.features[name].astype(np.float64) @ model.hyper[idx].detach().double().numpy()
        model.eval()
        with torch.no_grad():
            h_u, h_i = model.hyperedges(idx)
        assert h_u.shape == (tiny.n_users, 6) and h_i.shape == (tiny.n_items, 6)
        # users' logits are the sums of their items' logits; evaluation = softmax(logits/τ)
        expected_i = torch.softmax(torch.from_numpy(logits) / 0.2, dim=1)
        expected_u = torch.softmax(torch.from_numpy(r @ logits) / 0.2, dim=1)
        torch.testing.assert_close(h_i.double(), expected_i, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(h_u.double(), expected_u, atol=1e-5, rtol=1e-4)
        # training: Gumbel-Softmax samples (rows sum to one before the dropout), random across calls
        model.train()
        model.dropout.p = 0.0
        with torch.no_grad():
            a_u, a_i = model.hyperedges(idx)
            b_u, _ = model.hyperedges(idx)
        torch.testing.assert_close(a_i.sum(1), torch.ones(tiny.n_items))
        torch.testing.assert_close(a_u.sum(1), torch.ones(tiny.n_users))
        assert not torch.allclose(a_u, b_u)


def test_l2_hyperedge_input_and_modality_weight(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = LGMRec(tiny, LGMRec.Config(hyper_l2=True, mge_weight=0.25, use_ghe=False))
    model.eval()
    r, _, _ = dense_parts(tiny)
    with torch.no_grad():
        for idx, name in enumerate(tiny.features):
            feats = tiny.features[name].astype(np.float64)
            feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
            logits = feats @ model.hyper[idx].double().numpy()
            h_u, h_i = model.hyperedges(idx)
            torch.testing.assert_close(
                h_i.double(), torch.softmax(torch.from_numpy(logits) / 0.2, 1), atol=1e-5, rtol=1e-4
            )
            torch.testing.assert_close(
                h_u.double(), torch.softmax(torch.from_numpy(r @ logits) / 0.2, 1), atol=1e-5, rtol=1e-4
            )
            # rescaling a modality's features leaves the l2 dependencies unchanged
            scaled = model.raw_features(idx).clone()
            model.raw_features(idx).mul_(40.0)
            torch.testing.assert_close(model.hyperedges(idx)[1], h_i)
            model.raw_features(idx).copy_(scaled)
        plain = LGMRec(tiny, LGMRec.Config(use_mge=False, use_ghe=False))
        plain.load_state_dict(model.state_dict())
        plain.eval()
        cge_u, cge_i = plain()[:2]
        mge = [model.modality_graph_embedding(i) for i in range(2)]
        emb = model()
        for side, cge_side, final in ((0, cge_u, emb.users), (1, cge_i, emb.items)):
            torch.testing.assert_close(final, cge_side + 0.25 * sum(F.normalize(m[side], dim=1) for m in mge))


def test_modality_and_hypergraph_embeddings_match_dense_oracle(tiny: Dataset) -> None:
    model = LGMRec(tiny, LGMRec.Config(n_hyper_layers=2))
    model.eval()
    _, mean, r_hat = dense_parts(tiny)
    cge = torch.randn(tiny.n_items, 64, dtype=torch.float32)
    with torch.no_grad():
        for idx, name in enumerate(tiny.features):
            x_i = tiny.features[name].astype(np.float64) @ model.trs[idx].double().numpy()
            x_u = mean @ x_i
            for _ in range(2):  # n_mm_layers = 2, no layer mean
                x_u, x_i = r_hat @ x_i, r_hat.T @ x_u
            users, items = model.modality_graph_embedding(idx)
            np.testing.assert_allclose(users.numpy(), x_u, atol=1e-4)
            np.testing.assert_allclose(items.numpy(), x_i, atol=1e-4)
            h_u, h_i = (h.double().numpy() for h in model.hyperedges(idx))
            z_i = cge.double().numpy()
            for _ in range(2):
                lat = h_i.T @ z_i
                z_i, z_u = h_i @ lat, h_u @ lat
            g_u, g_i = model.hypergraph_embedding(idx, cge)
            np.testing.assert_allclose(g_u.numpy(), z_u, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(g_i.numpy(), z_i, rtol=1e-4, atol=1e-4)
        # the final composition: E^c + Σ_m normalize(E^m) + α normalize(Σ_m Z^m)
        emb = model()
        plain = LGMRec(tiny, LGMRec.Config(use_mge=False, use_ghe=False))
        plain.load_state_dict(model.state_dict())
        plain.eval()
        cge_u, cge_i = plain()[:2]
        mge = [model.modality_graph_embedding(i) for i in range(2)]
        ghe = [model.hypergraph_embedding(i, cge_i) for i in range(2)]
        for side, cge_side, final in ((0, cge_u, emb.users), (1, cge_i, emb.items)):
            expected = cge_side + sum(F.normalize(m[side], dim=1) for m in mge)
            expected = expected + 0.3 * F.normalize(ghe[0][side] + ghe[1][side], dim=1)
            torch.testing.assert_close(final, expected)


def test_contrastive_loss_hand_case(tiny: Dataset) -> None:
    model = LGMRec(tiny, LGMRec.Config())
    a_u, b_u = torch.randn(tiny.n_users, 4), torch.randn(tiny.n_users, 4)
    a_i, b_i = torch.randn(tiny.n_items, 4), torch.randn(tiny.n_items, 4)
    users, pos = torch.tensor([0, 3, 3]), torch.tensor([1, 2, 7])
    batch = Batch(users, pos, torch.tensor([4, 5, 6]))
    got = model.hypergraph_contrast([(a_u, a_i), (b_u, b_i)], batch)

    def naive(a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        total = torch.zeros(())
        for i in idx.tolist():
            logits = b @ a[i] / 0.2
            total = total - (logits[i] - torch.logsumexp(logits, 0))
        return total

    torch.testing.assert_close(got, naive(a_u, b_u, users) + naive(a_i, b_i, pos), rtol=1e-5, atol=1e-5)
    # anchors: b random batch rows, rescaled to the batch sum; its mean over draws is the full value
    sub = LGMRec(tiny, LGMRec.Config(cl_anchors=1))
    torch.manual_seed(0)
    draws = torch.stack([sub.hypergraph_contrast([(a_u, a_i), (b_u, b_i)], batch) for _ in range(600)])
    torch.testing.assert_close(draws.mean(), got, rtol=0.05, atol=0.0)


def test_loss_terms_and_gradients(tiny: Dataset) -> None:
    model = LGMRec(tiny, LGMRec.Config())
    model.train()
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    terms = model.loss(batch, model())
    assert set(terms) == {"bpr", "reg", "cl"} and terms["cl"] > 0
    torch.stack(list(terms.values())).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    single = LGMRec(tiny.select_modalities(["visual"]), LGMRec.Config())
    assert set(single.loss(batch, single())) == {"bpr", "reg"}  # one modality: no pair to contrast


def test_variants_run(tiny: Dataset) -> None:
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    for overrides in [{}, *LGMRec.variants.values()]:
        model = LGMRec(tiny, LGMRec.Config(**overrides))
        terms = model.train_step(batch, model.configure_optimizers(TrainSettings(lr=1e-3)))
        assert all(math.isfinite(v) for v in terms.values())
        assert ("cl" in terms) == (overrides.get("cl_weight", 1e-4) > 0 and overrides.get("use_ghe", True))


def test_planted_signal_beats_popularity(tiny: Dataset) -> None:
    assert MODELS["lgmrec"] is LGMRec
    torch.manual_seed(0)
    model = LGMRec(tiny, LGMRec.Config())
    history = train(model, tiny, epochs=6, lr=0.01)
    assert history[-1]["bpr"] < history[0]["bpr"]
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1
