"""SMORE: the spectral filters (identity round trip, fusion = circular convolution), the max-pooled item graph
against a dense oracle, gradients, planted signal, ablation variants and a single modality."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from tests.models.model_helpers import popularity_recall, recall_at, train

from modalrec.data import BPRSampler, Dataset
from modalrec.models.base import TrainSettings
from modalrec.models.homogeneous_graphs import max_pool_graph
from modalrec.models.item_graphs import Edges
from modalrec.models.smore import SMORE, spectral_filter, spectral_fusion


@pytest.mark.parametrize("d", [8, 7])
def test_identity_filters_return_the_input(d: int) -> None:
    x = torch.randn(5, d, dtype=torch.float64)
    ones = torch.ones(d // 2 + 1, dtype=torch.complex128)
    torch.testing.assert_close(spectral_filter(x, ones), x)
    # with a single modality the fused spectrum is that modality's, so an identity kernel returns it too
    torch.testing.assert_close(spectral_fusion([x], ones), x)


def test_filter_scales_frequencies() -> None:
    x = torch.randn(3, 8, dtype=torch.float64)
    kernel = torch.zeros(5, dtype=torch.complex128)
    kernel[0] = 1.0  # keep only the DC component: every entry becomes its row mean
    torch.testing.assert_close(spectral_filter(x, kernel), x.mean(1, keepdim=True).expand(-1, 8))


def test_fusion_is_a_scaled_circular_convolution() -> None:
    d = 6
    a, b = torch.randn(4, d, dtype=torch.float64), torch.randn(4, d, dtype=torch.float64)
    ones = torch.ones(d // 2 + 1, dtype=torch.complex128)
    want = torch.zeros(4, d, dtype=torch.float64)
    for k in range(d):
        for j in range(d):
            want[:, k] += a[:, j] * b[:, (k - j) % d]
    # orthonormal transforms: irFFT_o(rFFT_o(a) rFFT_o(b)) = (a ⊛ b) / sqrt(d)
    torch.testing.assert_close(spectral_fusion([a, b], ones), want / math.sqrt(d))


def test_max_pool_graph_matches_dense_oracle() -> None:
    n = 6
    rng = np.random.default_rng(0)
    dense_graphs, edge_graphs = [], []
    for _ in range(3):
        mask = rng.random((n, n)) < 0.4
        vals = rng.random((n, n)) * mask
        rows, cols = np.nonzero(mask)
        dense_graphs.append(np.where(mask, vals, -np.inf))
        edge_graphs.append(
            Edges(torch.from_numpy(rows), torch.from_numpy(cols), torch.from_numpy(vals[rows, cols]).float())
        )
    want = np.max(np.stack(dense_graphs), axis=0)
    got = np.full((n, n), -np.inf)
    pooled = max_pool_graph(edge_graphs, n)
    got[pooled.rows.numpy(), pooled.cols.numpy()] = pooled.vals.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert len(pooled.rows) == int(np.isfinite(want).sum())  # the union, each edge once


def test_gradients_reach_every_part(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = SMORE(tiny, SMORE.Config(dropout=0.1))
    model.train()
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    terms = model.loss(batch, model())
    assert set(terms) == {"bpr", "reg", "cl"}
    torch.stack(list(terms.values())).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_planted_signal(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = SMORE(tiny, SMORE.Config())
    train(model, tiny, epochs=8, lr=3e-3, batch_size=256)
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.05


def test_variants_and_one_modality(tiny: Dataset) -> None:
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    for overrides in [{}, *SMORE.variants.values(), {"finetune_features": True}]:
        model = SMORE(tiny, SMORE.Config(**overrides))
        terms = model.train_step(batch, model.configure_optimizers(TrainSettings(lr=1e-3)))
        assert all(math.isfinite(v) for v in terms.values())
        assert ("cl" in terms) == (overrides.get("cl_weight", 0.01) > 0)
    # without preference, the side view is the plain mean of the M + 1 graph views
    plain = SMORE(tiny, SMORE.Config(use_preference=False))
    plain.eval()
    with torch.no_grad():
        emb = plain()
        signals, fused = plain.spectral_views()
        assert fused is not None
        views = [plain._graph_view(m, c) for m, c in enumerate([*signals, fused])]
        assert emb.extras is not None
        torch.testing.assert_close(emb.extras["side"], torch.stack(views).mean(0))
    one = dataclasses.replace(tiny, features={"textual": tiny.features["textual"]})
    model = SMORE(one, SMORE.Config())
    assert model().items.shape == (tiny.n_items, 64)
