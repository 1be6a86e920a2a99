"""MICRO and LATTICE: kNN graphs against a dense oracle, gradients through the learned graph, fusion, the
contrastive loss on a hand case, variants, planted signal and cold-start items on the tiny fixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modalrec.data import BPRSampler, Dataset
from modalrec.data.coldstart import cold_items, cold_start_split
from modalrec.models import MODELS
from modalrec.models.base import Model, TrainSettings
from modalrec.models.item_graphs import (
    Edges,
    ItemGraphs,
    fusion_contrastive_loss,
    knn_normalized_graph,
    propagate_edges,
)
from modalrec.models.lattice import LATTICE
from modalrec.models.micro import MICRO


def dense(g: Edges, n: int) -> np.ndarray:
    out = np.zeros((n, n))
    np.add.at(out, (g.rows.numpy(), g.cols.numpy()), g.vals.detach().numpy())
    return out


def oracle_knn(x: np.ndarray, k: int) -> np.ndarray:
    """Eqs. 1-3 computed naively on a dense matrix."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = unit @ unit.T
    hat = np.zeros_like(s)
    for i in range(len(s)):
        top = np.argsort(-s[i], kind="stable")[:k]
        hat[i, top] = s[i, top]
    hat[hat < 0] = 0.0
    deg = hat.sum(1)
    inv = np.where(deg > 0, deg**-0.5, 0.0)
    return inv[:, None] * hat * inv[None, :]


def test_knn_graph_matches_dense_oracle_and_chunking() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((13, 4)).astype(np.float32)  # 4-d Gaussians: plenty of negative cosines
    x[5] = -x[4]  # an item whose top-k among others includes negative similarities
    expected = oracle_knn(x.astype(np.float64), k=3)
    for chunk in (1, 5, 1024):
        got = dense(knn_normalized_graph(torch.from_numpy(x), 3, chunk_size=chunk), 13)
        np.testing.assert_allclose(got, expected, atol=1e-6)
    assert (expected >= 0).all() and ((expected > 0).sum(1) <= 3).all()


def test_item_graphs_skip_connection_is_eq5() -> None:
    rng = np.random.default_rng(1)
    feats = {"a": rng.standard_normal((10, 6)).astype(np.float32)}
    ig = ItemGraphs(feats, dim=4, k=3, skip=0.7)
    ig.eval()
    with torch.no_grad():
        transformed = ig.transformed()[0].numpy().astype(np.float64)
        got = dense(ig.graphs()[0], 10)
    expected = 0.7 * oracle_knn(feats["a"].astype(np.float64), 3) + 0.3 * oracle_knn(transformed, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_learned_graph_passes_gradients_to_the_transform() -> None:
    rng = np.random.default_rng(2)
    feats = {"a": rng.standard_normal((12, 5)).astype(np.float32)}
    ig = ItemGraphs(feats, dim=4, k=4, skip=0.5)
    ig.train()
    x = torch.randn(12, 3)
    out = propagate_edges(ig.graphs()[0], x, 2)[-1]
    out.pow(2).sum().backward()
    transform = ig.transforms[0]
    assert isinstance(transform, torch.nn.Linear)
    grad = transform.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # Epoch mode: the next training forward reuses a detached graph; a new epoch rebuilds with gradients.
    assert not ig.graphs()[0].vals.requires_grad
    ig.mark_stale()
    assert ig.graphs()[0].vals.requires_grad


def test_micro_forward_gradients_reach_every_part(tiny: Dataset) -> None:
    model = MICRO(tiny, MICRO.Config())
    model.train()
    model.on_epoch_start(0)
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    terms = model.loss(batch, model())
    assert set(terms) == {"bpr", "reg", "cl"}
    torch.stack(list(terms.values())).sum().backward()
    for name in (
        "item_graphs.transforms.0.weight",
        "fusion.proj.weight",
        "fusion.query.weight",
        "backbone.item_emb",
    ):
        param = dict(model.named_parameters())[name]
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_fusion_weights_sum_to_one(tiny: Dataset) -> None:
    micro = MICRO(tiny, MICRO.Config())
    micro.eval()
    with torch.no_grad():
        emb = micro()
    assert emb.extras is not None
    alpha = emb.extras["alpha"]
    assert alpha.shape == (tiny.n_items, 2)
    torch.testing.assert_close(alpha.sum(1), torch.ones(tiny.n_items))
    lattice = LATTICE(tiny, LATTICE.Config())
    with torch.no_grad():
        lattice.modal_weight.copy_(torch.tensor([0.3, -1.2]))
    torch.testing.assert_close(lattice.modality_weights().sum(), torch.tensor(1.0))
    torch.testing.assert_close(lattice.modality_weights(), torch.softmax(torch.tensor([0.3, -1.2]), 0))


def test_contrastive_loss_hand_case() -> None:
    views = [torch.tensor([[1.0, 0.0], [0.0, 2.0]])]
    fused = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    tau = 0.5
    c = 1 / math.sqrt(2)  # cosines: v0·f0 = c, v0·f1 = 0, v1·f0 = c, v1·f1 = 1, v0·v1 = 0, f0·f1 = c

    def mi(pos: float, between_other: float, refl_other: float) -> float:
        e = lambda s: math.exp(s / tau)  # noqa: E731
        return math.log(e(pos) / (e(pos) + e(between_other) + e(refl_other)))

    # I(h^m_i, h_i): negatives h_j (fused) and h^m_j (same view), j != i; and the reverse direction.
    forward = [mi(c, 0.0, 0.0), mi(1.0, c, 0.0)]
    backward = [mi(c, c, c), mi(1.0, 0.0, c)]
    expected = -sum(0.5 * (a + b) for a, b in zip(forward, backward, strict=True)) / 2
    got = fusion_contrastive_loss(views, fused, tau)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    one_way = fusion_contrastive_loss(views, fused, tau, symmetric=False)
    assert one_way.item() == pytest.approx(-sum(forward) / 2, rel=1e-5)
    # Chunking does not change the value; a second identical view leaves the mean over modalities unchanged.
    assert fusion_contrastive_loss(views, fused, tau, chunk_size=1).item() == pytest.approx(
        expected, rel=1e-5
    )
    assert fusion_contrastive_loss(views * 2, fused, tau).item() == pytest.approx(expected, rel=1e-5)
    # Anchor sampling: each anchor's term is exact, so averaging single-anchor losses gives the full loss.
    per_anchor = [
        fusion_contrastive_loss(views, fused, tau, anchors=torch.tensor([i])).item() for i in (0, 1)
    ]
    assert sum(per_anchor) / 2 == pytest.approx(expected, rel=1e-5)


def _dense_fusion_loss(
    views: list[torch.Tensor], fused: torch.Tensor, tau: float, anchors: torch.Tensor
) -> torch.Tensor:
    """L_C of Eqs. 10-12 written out densely, differentiated by autograd (the oracle of the fast blocks)."""
    f, rows, total = F.normalize(fused, dim=1), torch.arange(len(anchors)), fused.new_zeros(())
    for view in views:
        v = F.normalize(view, dim=1)
        for x, o in ((v, f), (f, v)):
            a = x[anchors]
            between, within = a @ o.T / tau, a @ x.T / tau
            within[rows, anchors] = float("-inf")
            mi = between[rows, anchors] - torch.logsumexp(torch.cat([between, within], dim=1), dim=1)
            total = total - 0.5 * mi.sum()
    return total / (len(anchors) * len(views))


@pytest.mark.parametrize("tau", [0.5, 0.02])  # the bounded fast path, and the row-maximum path (1/τ > 30)
def test_contrastive_loss_gradients_match_the_dense_oracle(tau: float) -> None:
    gen = torch.Generator().manual_seed(0)
    views = [torch.randn(40, 8, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    fused = torch.randn(40, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    anchors = torch.tensor([3, 7, 0, 39, 20])
    leaves = [*views, fused]
    want = _dense_fusion_loss(views, fused, tau, anchors)
    want_grads = torch.autograd.grad(want, leaves)
    got = fusion_contrastive_loss(views, fused, tau, chunk_size=2, anchors=anchors)
    got_grads = torch.autograd.grad(got, leaves)
    torch.testing.assert_close(got, want)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)


def _train(model: Model, data: Dataset, epochs: int, lr: float) -> None:
    opts = model.configure_optimizers(TrainSettings(lr=lr))
    sampler = BPRSampler(data.train, 256, seed=0)
    for epoch in range(epochs):
        model.train()
        model.on_epoch_start(epoch)
        for batch in sampler.epoch(epoch):
            model.train_step(batch, opts)
    model.eval()


def _recall(scores: np.ndarray, data: Dataset, k: int = 20, items: np.ndarray | None = None) -> float:
    """Test Recall@k with training items masked (optionally counting only hits among ``items``)."""
    train, test = data.train.toarray(), data.test.toarray()
    if items is not None:
        keep = np.zeros(data.n_items, dtype=bool)
        keep[items] = True
        test = test * keep
    scores = np.where(train > 0, -np.inf, scores)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    users = np.flatnonzero(test.sum(1) > 0)
    hits = np.take_along_axis(test, top, axis=1).sum(1)
    return float((hits[users] / test[users].sum(1)).mean())


def _scores(model: Model, n_users: int) -> np.ndarray:
    with torch.no_grad():
        return model.score(model(), torch.arange(n_users)).numpy()


def test_planted_signal_beats_popularity_and_mf(tiny: Dataset) -> None:
    popularity = np.asarray(tiny.train.sum(axis=0)).ravel().astype(float)
    pop = _recall(np.tile(popularity, (tiny.n_users, 1)), tiny)
    torch.manual_seed(0)
    micro = MICRO(tiny, MICRO.Config())
    _train(micro, tiny, epochs=6, lr=2e-3)
    torch.manual_seed(0)
    mf = MODELS["mf"](tiny, MODELS["mf"].Config())
    _train(mf, tiny, epochs=6, lr=2e-3)
    r_micro, r_mf = _recall(_scores(micro, tiny.n_users), tiny), _recall(_scores(mf, tiny.n_users), tiny)
    assert r_micro > pop + 0.1, (r_micro, pop)
    assert r_micro > r_mf + 0.05, (r_micro, r_mf)
    torch.manual_seed(0)
    lattice = LATTICE(tiny, LATTICE.Config())
    _train(lattice, tiny, epochs=6, lr=2e-3)
    assert _recall(_scores(lattice, tiny.n_users), tiny) > pop + 0.1


def test_variants_build_and_train(tiny: Dataset) -> None:
    assert set(MICRO.variants) >= {"w/o contrast", "/feats", "CF+feats"}
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    for backbone in ("mf", "ngcf", "lightgcn"):
        for overrides in [{}, *MICRO.variants.values()]:
            model = MICRO(tiny, MICRO.Config(backbone=backbone, **overrides))
            opts = model.configure_optimizers(TrainSettings(lr=1e-3))
            terms = model.train_step(batch, opts)
            assert all(math.isfinite(v) for v in terms.values())
            assert ("cl" in terms) == (overrides.get("cl_weight", 0.03) > 0)
    # "CF" is the bare backbone: the item embeddings are the backbone's.
    plain = MICRO(tiny, MICRO.Config(backbone="mf", **MICRO.variants["CF"]))
    torch.testing.assert_close(plain().items, plain.backbone.item_emb)


def test_state_dict_round_trip_gives_same_scores(tiny: Dataset) -> None:
    classes: list[type[Model]] = [MICRO, LATTICE]
    for cls in classes:
        model = cls(tiny, cls.Config())
        _train(model, tiny, epochs=1, lr=1e-2)
        clone = cls(tiny, cls.Config())
        clone.load_state_dict(model.state_dict())
        clone.eval()
        np.testing.assert_allclose(_scores(clone, 5), _scores(model, 5), atol=1e-5)


def test_cold_items_get_content_embeddings(tiny: Dataset) -> None:
    cold = cold_start_split(tiny, seed=0)
    test_items = np.flatnonzero(np.asarray(cold.test.sum(axis=0)).ravel() > 0)
    torch.manual_seed(0)
    micro = MICRO(cold, MICRO.Config())
    _train(micro, cold, epochs=5, lr=2e-3)
    torch.manual_seed(0)
    mf = MODELS["mf"](cold, MODELS["mf"].Config())
    _train(mf, cold, epochs=5, lr=2e-3)
    # Rank only the cold items (as every test item is cold) for each test user.
    only_cold = np.full(cold.n_items, -np.inf)
    only_cold[cold_items(cold)] = 0.0
    r_micro = _recall(_scores(micro, cold.n_users) + only_cold, cold, items=test_items)
    r_mf = _recall(_scores(mf, cold.n_users) + only_cold, cold, items=test_items)
    assert r_micro > r_mf + 0.1, (r_micro, r_mf)

    # Embedding the cold test items as if they were new: close to their in-graph representation.
    new = micro.item_embeddings_from_features({m: cold.features[m][test_items] for m in cold.modalities})
    assert new.shape == (len(test_items), micro.cfg.embed_dim)
    torch.testing.assert_close(new.norm(dim=1), torch.ones(len(test_items)))
    with torch.no_grad():
        emb = micro()
    assert emb.extras is not None
    inside = torch.nn.functional.normalize(emb.extras["fused"][torch.from_numpy(test_items)], dim=1)
    assert (new * inside).sum(1).mean() > 0.8
    lattice = LATTICE(cold, LATTICE.Config())
    assert lattice.item_embeddings_from_features(
        {m: cold.features[m][:3] for m in cold.modalities}
    ).shape == (3, 64)


def test_content_only_cold_ignores_untrained_id_embeddings(tiny: Dataset) -> None:
    cold = cold_start_split(tiny, seed=0)
    idle = torch.from_numpy(cold_items(cold))
    models: list[MICRO | LATTICE] = [
        MICRO(cold, MICRO.Config(content_only_cold=True)),
        LATTICE(cold, LATTICE.Config(content_only_cold=True)),
    ]
    for model in models:
        model.eval()
        with torch.no_grad():
            before = model().items[idle].clone()
            model.backbone.item_emb[idle] += 5.0
            after = model().items[idle]
        torch.testing.assert_close(after, before)
        # ... but they do follow their warm neighbours (x̃_i is the graph-weighted mean of theirs).
        with torch.no_grad():
            model.backbone.item_emb.mul_(2.0)
            moved = model().items[idle]
        assert (moved - after).abs().sum() > 0


def test_micro_samples_its_contrastive_anchors_by_default(tiny: Dataset) -> None:
    """The default L_C averages the per-item terms of ``cl_items`` random anchors (cost O(B·I·d), not O(I²·d));
    ``cl_items=0`` and catalogues of at most ``cl_items`` items keep the exact all-items form (Eq. 10)."""
    assert MICRO.Config().cl_items == 256
    torch.manual_seed(0)
    micro = MICRO(tiny, MICRO.Config(cl_items=16))
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    with torch.no_grad():
        emb = micro()
        views, fused = emb.extras["views"], emb.extras["fused"]
        per_item = torch.stack(
            [
                fusion_contrastive_loss(views, fused, 0.5, anchors=torch.tensor([i]))
                for i in range(tiny.n_items)
            ]
        )
        torch.manual_seed(7)
        sampled = micro.extra_losses(batch, emb)["cl"]
        torch.manual_seed(7)
        anchors = torch.randperm(tiny.n_items)[:16]  # the draw extra_losses made
        assert sampled.item() == pytest.approx(0.03 * per_item[anchors].mean().item(), rel=1e-5)
        # the all-items form: the paper's L_C is the mean of every item's term
        micro.cfg.cl_items = 0
        assert micro.extra_losses(batch, emb)["cl"].item() == pytest.approx(
            0.03 * per_item.mean().item(), rel=1e-5
        )
        micro.cfg.cl_items = 256  # the default, above the 200 items of `tiny`: all of them, exactly
        assert micro.extra_losses(batch, emb)["cl"].item() == pytest.approx(
            0.03 * per_item.mean().item(), rel=1e-5
        )
