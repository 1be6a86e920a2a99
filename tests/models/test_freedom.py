"""FREEDOM: the frozen kNN item graph against a dense oracle, degree-sensitive pruning against a sampling oracle,
the forward pass, gradients, variants and planted-signal recovery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.errors import ConfigError
from modalrec.graph import BipartitePattern, bipartite_layer_mean
from modalrec.models import MODELS
from modalrec.models.base import TrainSettings
from modalrec.models.freedom import FREEDOM
from modalrec.models.modality_graphs import edge_weights, frozen_knn_graph, pruned_keep_mask


def oracle_binary_knn(x: np.ndarray, k: int) -> np.ndarray:
    """Top-k cosine neighbours (self included) as 0/1 entries, then D^{-1/2} Ŝ D^{-1/2} with row-sum degrees."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = unit @ unit.T
    hat = np.zeros_like(s)
    for i in range(len(s)):
        hat[i, np.argsort(-s[i], kind="stable")[:k]] = 1.0
    inv = hat.sum(1) ** -0.5
    return inv[:, None] * hat * inv[None, :]


def test_frozen_graph_matches_dense_oracle() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((13, 5)).astype(np.float32)
    b = rng.standard_normal((13, 3)).astype(np.float32)
    expected = 0.25 * oracle_binary_knn(a.astype(np.float64), 3) + 0.75 * oracle_binary_knn(
        b.astype(np.float64), 3
    )
    for chunk in (1, 4, 1024):
        s, s_t = frozen_knn_graph([a, b], [0.25, 0.75], k=3, weighted=False, chunk_size=chunk)
        np.testing.assert_allclose(s.to_dense().numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(s_t.to_dense().numpy(), expected.T, atol=1e-6)
    # every row has exactly k binary neighbours, so each entry of S^m is 1/k and each row of S sums to Σ α = 1
    np.testing.assert_allclose(expected.sum(1), np.ones(13), atol=1e-12)


def test_model_graph_is_the_uniformly_weighted_frozen_graph(tiny: Dataset) -> None:
    model = FREEDOM(tiny, FREEDOM.Config(knn_k=4))
    feats = [tiny.features[m].astype(np.float64) for m in tiny.features]
    expected = sum(0.5 * oracle_binary_knn(f, 4) for f in feats)
    np.testing.assert_allclose(model.s_graph.to_dense().numpy(), expected, atol=1e-5)
    weighted = FREEDOM(tiny, FREEDOM.Config(knn_k=4, modality_weights={"visual": 1.0, "textual": 3.0}))
    expected = 0.25 * oracle_binary_knn(feats[0], 4) + 0.75 * oracle_binary_knn(feats[1], 4)
    np.testing.assert_allclose(weighted.s_graph.to_dense().numpy(), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="must match"):
        FREEDOM(tiny, FREEDOM.Config(modality_weights={"image": 0.1, "text": 0.9}))
    with pytest.raises(ConfigError, match="prune_ratio"):
        FREEDOM(tiny, FREEDOM.Config(prune_ratio=1.0))


def _small_graph() -> sp.csr_matrix:
    rows = [0, 0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 5]
    cols = [0, 1, 2, 3, 0, 4, 0, 1, 4, 2, 0, 3, 4]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(6, 5))


def test_pruning_weights_and_sampling_match_the_oracle() -> None:
    r = _small_graph()
    pattern = BipartitePattern(r)
    w = edge_weights(pattern).numpy()
    du, di = np.asarray(r.sum(1)).ravel(), np.asarray(r.sum(0)).ravel()
    np.testing.assert_allclose(
        w, 1.0 / np.sqrt(du[pattern.users.numpy()] * di[pattern.items.numpy()]), rtol=1e-6
    )

    n, ratio, trials = len(w), 0.6, 4000
    n_keep = int(n * (1 - ratio))
    gen = torch.Generator().manual_seed(0)
    ours = np.zeros(n)
    for _ in range(trials):
        keep = pruned_keep_mask(torch.from_numpy(w).float(), ratio, generator=gen).numpy()
        assert keep.sum() == n_keep
        ours += keep
    # oracle: successive weighted draws without replacement (torch.multinomial's law)
    rng = np.random.default_rng(0)
    oracle = np.zeros(n)
    for _ in range(trials):
        oracle[rng.choice(n, n_keep, replace=False, p=w / w.sum())] += 1
    np.testing.assert_allclose(ours / trials, oracle / trials, atol=0.04)
    # the kept degree distribution follows: users' expected kept degrees agree with the oracle's
    users = pattern.users.numpy()
    np.testing.assert_allclose(
        np.bincount(users, ours / trials, 6), np.bincount(users, oracle / trials, 6), atol=0.08
    )
    # degree-sensitive: the edge between the two lowest-degree nodes is kept more often than one of the hub user
    low = int(np.argmax(w))
    hub = int(np.argmin(w))
    assert ours[low] > ours[hub] + 0.2 * trials


def test_pruned_graph_is_renormalised(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = FREEDOM(tiny, FREEDOM.Config(prune_ratio=0.7))
    r, _ = model.prune()
    dense = r.to_dense().numpy()
    kept = dense > 0
    assert kept.sum() == int(tiny.train.nnz * 0.3)
    assert not (kept & (tiny.train.toarray() == 0)).any()  # only training interactions survive
    du, di = kept.sum(1), kept.sum(0)
    with np.errstate(divide="ignore"):
        expected = np.where(kept, 1.0 / np.sqrt(np.outer(du, di)), 0.0)
    np.testing.assert_allclose(dense, expected, rtol=1e-5)


def test_forward_uses_pruned_graph_in_training_and_full_graph_in_eval(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = FREEDOM(tiny, FREEDOM.Config())
    model.eval()
    with torch.no_grad():
        emb = model()
        users, items = bipartite_layer_mean(model.r_hat, model.r_hat_t, model.user_emb, model.item_emb, 2)
        h = torch.sparse.mm(model.s_graph, model.item_emb)
    torch.testing.assert_close(emb.users, users)
    torch.testing.assert_close(emb.items, items + h)
    model.train()
    model.on_epoch_start(0)
    with torch.no_grad():
        pruned = model()
        assert model._pruned is not None
        users_p, items_p = bipartite_layer_mean(*model._pruned, model.user_emb, model.item_emb, 2)
    assert not torch.allclose(users_p, users)
    torch.testing.assert_close(pruned.users, users_p)
    torch.testing.assert_close(pruned.items, items_p + h)  # the frozen graph's term is the same
    plain = FREEDOM(tiny, FREEDOM.Config(**FREEDOM.variants["w/o item graph"]))
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            plain().items,
            bipartite_layer_mean(plain.r_hat, plain.r_hat_t, plain.user_emb, plain.item_emb, 2)[1],
        )


def test_gradients_reach_embeddings_and_projections(tiny: Dataset) -> None:
    model = FREEDOM(tiny, FREEDOM.Config(reg_weight=1e-4))
    model.train()
    model.on_epoch_start(0)
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    terms = model.loss(batch, model())
    assert set(terms) == {"bpr", "feat", "reg"}
    torch.stack(list(terms.values())).sum().backward()
    for name, param in model.named_parameters():
        if name.endswith("bias"):  # b_m cancels in e_uᵀ(x_pos - x_neg): its gradient is exactly zero
            assert param.grad is not None and param.grad.abs().max() < 1e-6, name
            continue
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_variants_run(tiny: Dataset) -> None:
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    for overrides in [{}, {"finetune_features": True}, *FREEDOM.variants.values()]:
        model = FREEDOM(tiny, FREEDOM.Config(**overrides))
        model.on_epoch_start(0)
        terms = model.train_step(batch, model.configure_optimizers(TrainSettings(lr=1e-3)))
        assert all(math.isfinite(v) for v in terms.values())
        assert ("feat" in terms) == (overrides.get("feat_weight", 1e-4) > 0)


def test_planted_signal_beats_popularity(tiny: Dataset) -> None:
    assert MODELS["freedom"] is FREEDOM
    torch.manual_seed(0)
    model = FREEDOM(tiny, FREEDOM.Config())
    history = train(model, tiny, epochs=8, lr=0.01)
    assert history[-1]["bpr"] < history[0]["bpr"]
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.1


def test_fine_tuned_features_never_write_into_the_dataset() -> None:
    """RawFeatures(trainable=True) holds copies: an in-place update leaves the dataset's arrays as they were."""
    import numpy as np
    import torch

    from modalrec.data.synthetic import make_synthetic
    from modalrec.models.raw_features import RawFeatures

    data = make_synthetic()
    name = data.modalities[0]
    before = data.features[name].copy()
    feats = RawFeatures(data, [name], trainable=True)
    with torch.no_grad():
        feats[0].add_(1.0)
    assert np.array_equal(data.features[name], before)
    assert torch.allclose(feats[0], torch.from_numpy(before) + 1.0)
