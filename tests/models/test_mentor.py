"""MENTOR: the kNN item graph against a dense oracle, the encoder hops, the alignment term by hand, gradients of
every self-supervised term, planted-signal recovery and the ablation variants."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.models.model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.errors import ConfigError
from modalrec.models.mentor import MENTOR, knn_item_graph


def test_knn_item_graph_matches_a_dense_oracle() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((12, 5)).astype(np.float32)  # positive features: every similarity is positive
    k = 3
    got = knn_item_graph([x, x], [0.25, 0.75], k).to_dense()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    s = np.zeros_like(sim)
    for r in range(12):
        s[r, np.argsort(-sim[r])[:k]] = 1.0
    deg = s.sum(1)
    expected = s / np.sqrt(deg)[:, None] / np.sqrt(deg)[None, :]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)  # 0.25 + 0.75 of the same graph


def test_encoder_is_two_hops_over_the_graph(tiny: Dataset) -> None:
    model = MENTOR(tiny, MENTOR.Config())
    enc = model.encoders[0]
    feats = model.feat_0
    x = F.normalize(torch.cat([enc.preference, enc.mlp_out(F.leaky_relu(enc.mlp_in(feats)))]), dim=1)
    a = model.adj.to_dense()
    torch.testing.assert_close(enc(model.adj, feats), x + a @ x + a @ a @ x, rtol=1e-4, atol=1e-5)
    # perturbed hops differ from the clean ones
    torch.manual_seed(0)
    noisy = enc(model.adj, feats, noise=0.1)
    assert not torch.allclose(noisy, x + a @ x + a @ a @ x)


def test_alignment_by_hand_and_every_term_has_gradients(tiny: Dataset) -> None:
    model = MENTOR(tiny, MENTOR.Config())
    model.train()
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    emb = model.forward()
    terms = model.loss(batch, emb)
    assert set(terms) == {"bpr", "reg", "align", "mask_f", "mask_g"}
    assert emb.extras is not None
    # the ID and per-modality views are held as one column block [N, d]; the views are those blocks tiled M times
    m = model.n_modalities
    views = [emb.extras["fused"].detach()]
    views += [torch.cat(v).detach().repeat(1, m) for v in (emb.extras["guide"], *emb.extras["modal"])]
    expected = sum(
        abs(float(views[a].var() - views[b].var())) + abs(float(views[a].mean() - views[b].mean()))
        for a in range(len(views))
        for b in range(a + 1, len(views))
    )
    assert math.isclose(float(terms["align"].detach()), 0.1 * expected, rel_tol=1e-4)
    for name in ("align", "mask_f", "mask_g"):
        model.zero_grad()
        terms = model.loss(batch, model.forward())
        terms[name].backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
        assert grads, name
    # the feature-masking term trains the predictor f (the official code's form would leave it untouched)
    model.zero_grad()
    model.loss(batch, model.forward())["mask_f"].backward()
    assert model.predictor.weight.grad is not None and model.predictor.weight.grad.abs().sum() > 0


def test_planted_signal_recovery(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = MENTOR(tiny, MENTOR.Config())
    train(model, tiny, epochs=6, lr=0.01, batch_size=512)
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.02


@pytest.mark.parametrize("variant", sorted(MENTOR.variants))
def test_variants_run(tiny: Dataset, variant: str) -> None:
    model = MENTOR(tiny, replace(MENTOR.Config(), **MENTOR.variants[variant]))
    history = train(model, tiny, epochs=1, lr=0.01)
    assert all(math.isfinite(v) for row in history for v in row.values())
    if variant == "w/o-SSL":
        assert set(history[0]) == {"bpr", "reg"}


def test_official_options_single_modality_and_bad_config(tiny: Dataset) -> None:
    one = tiny.select_modalities([tiny.modalities[0]])
    cfg = replace(MENTOR.Config(), tied_noise_views=False, cl_scope="all", mask_f_grad=False)
    history = train(MENTOR(one, cfg), one, epochs=1, lr=0.01)
    assert all(math.isfinite(v) for v in history[0].values())
    with pytest.raises(ConfigError):
        MENTOR(tiny, replace(MENTOR.Config(), graph_weights=(1.0,)))
