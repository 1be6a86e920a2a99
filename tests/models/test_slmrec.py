"""SLMRec: equations on tiny hand cases, every SSL task, any modality count, and a learned planted signal."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modalrec.data import Dataset, SyntheticConfig, make_synthetic
from modalrec.data.sampling import Batch, BPRSampler
from modalrec.errors import ConfigError
from modalrec.graph import lightgcn_readout
from modalrec.models import MODELS
from modalrec.models.base import TrainSettings
from modalrec.models.slmrec import SSL_TASKS, SLMRec


def small(n_modalities: int, seed: int = 0) -> Dataset:
    dims = dict(list({"visual": 10, "acoustic": 7, "textual": 5}.items())[:n_modalities])
    cfg = SyntheticConfig(
        n_users=40, n_items=30, n_interactions=300, latent_dim=4, n_clusters=3, modality_dims=dims, seed=seed
    )
    return make_synthetic(cfg, name=f"small{n_modalities}")


def a_batch(data: Dataset, size: int = 32, seed: int = 0) -> Batch:
    return next(iter(BPRSampler(data.train, size, seed=seed).epoch(0)))


def test_registered_and_variants_are_valid_configs() -> None:
    assert MODELS["slmrec"] is SLMRec
    assert set(SLMRec.variants) == {"FD", "FM", "FD+FM", "FAC"}
    data = small(2)
    for name, overrides in SLMRec.variants.items():
        model = SLMRec(data, replace(SLMRec.Config(), **overrides))
        assert model.cfg.ssl_task == name.lower()


def test_bad_options_raise() -> None:
    data = small(2)
    with pytest.raises(ConfigError, match="ssl_task"):
        SLMRec(data, SLMRec.Config(ssl_task="xyz"))
    with pytest.raises(ConfigError, match="fac_order"):
        SLMRec(data, SLMRec.Config(fac_order="visual,nope"))


def test_encoder_equals_one_lightgcn_per_modality() -> None:
    """Eqs. 1-4: the joint propagation equals LightGCN run on each modality graph separately."""
    data = small(2)
    model = SLMRec(data, SLMRec.Config(embed_dim=6, n_layers=2))
    items_in = model.item_inputs()
    users, items = model.encode(items_in)
    assert users.shape == (data.n_users, 3, 6) and items.shape == (data.n_items, 3, 6)
    for m in range(3):
        ego = torch.cat([model.user_emb, items_in[:, m]])
        ref = lightgcn_readout(model.adj, ego, 2)
        torch.testing.assert_close(users[:, m], ref[: data.n_users])
        torch.testing.assert_close(items[:, m], ref[data.n_users :])
    # modality inputs: ID table, then a linear map of the L2-normalised features
    feats = F.normalize(torch.from_numpy(data.features["visual"]), dim=1)
    torch.testing.assert_close(items_in[:, 1], model.proj[0](feats))
    torch.testing.assert_close(items_in[:, 0], model.item_emb)


def test_fusion_and_prediction() -> None:
    """Eq. 5 (concat + linear, or mean) and Eq. 6 (inner product)."""
    data = small(2)
    model = SLMRec(data, SLMRec.Config(embed_dim=4))
    emb = model()
    users, items = model.encode(model.item_inputs())
    assert model.item_head is not None
    torch.testing.assert_close(emb.items, model.item_head(items.reshape(data.n_items, 12)))
    torch.testing.assert_close(model.score(emb, torch.tensor([3])), emb.users[3:4] @ emb.items.T)
    mean = SLMRec(data, SLMRec.Config(embed_dim=4, fusion="mean"))
    users, items = mean.encode(mean.item_inputs())
    torch.testing.assert_close(mean().users, users.mean(dim=1))


def test_main_infonce_matches_hand_formula() -> None:
    """Eq. 13 with the batch's sampled negatives; a negative the user has interacted with is excluded."""
    data = small(1)
    model = SLMRec(data, SLMRec.Config(embed_dim=4, temperature=0.5))
    with torch.no_grad():
        emb = model()
    user = int(np.flatnonzero(data.train.getnnz(axis=1) >= 2)[0])
    pos_a, pos_b = data.train[user].indices[:2]
    negs = [j for j in range(data.n_items) if data.train[user, j] == 0][:2]
    # second row's negative is a training positive of the first user: a false negative for that user only
    batch = Batch(torch.tensor([user, user]), torch.tensor([pos_a, pos_a]), torch.tensor([negs[0], pos_b]))
    got = model.main_loss(batch, emb)
    u = F.normalize(emb.users[user], dim=0)

    def s(i: int) -> float:
        return float(u @ F.normalize(emb.items[i], dim=0)) / 0.5

    expected = -s(pos_a) + math.log(math.exp(s(pos_a)) + math.exp(s(negs[0])))
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("n_modalities", [1, 2, 3])
@pytest.mark.parametrize("task", SSL_TASKS)
def test_every_task_any_modality_count(n_modalities: int, task: str) -> None:
    data = small(n_modalities)
    model = SLMRec(data, SLMRec.Config(embed_dim=8, ssl_task=task))
    emb = model()
    assert emb.users.shape == (data.n_users, 8) and emb.items.shape == (data.n_items, 8)
    batch = a_batch(data)
    terms = model.loss(batch, emb)
    assert ("ssl" in terms) == (task != "none")
    assert all(torch.isfinite(t) for t in terms.values())
    opt = model.configure_optimizers(TrainSettings(lr=0.01))
    out = model.train_step(batch, opt)
    assert set(out) == set(terms)


def test_fm_masks_exactly_one_modality() -> None:
    """FM: a view that masks modality m does not depend on m's inputs; the other modalities still matter."""
    data = small(2)
    model = SLMRec(data, SLMRec.Config(embed_dim=4, ssl_task="fm"))
    items_in = model.item_inputs()
    u1, i1 = model.augmented_view(items_in, mask_modality=1)
    perturbed = items_in.clone()
    perturbed[:, 1] += torch.randn_like(perturbed[:, 1])
    u2, i2 = model.augmented_view(perturbed, mask_modality=1)
    torch.testing.assert_close(i1, i2)
    torch.testing.assert_close(u1, u2)
    _, i3 = model.augmented_view(perturbed, mask_modality=2)
    assert not torch.allclose(i1, i3)
    # the masked modality's graph sees zero item inputs; a masking of the ID works the same way
    zeroed = items_in.clone()
    zeroed[:, 0] = 0
    torch.testing.assert_close(model.augmented_view(items_in, 0)[1], model.fuse(*model.encode(zeroed))[1])
    picks = {model.masked_modalities() for _ in range(50)}
    assert all(a != b for a, b in picks) and {x for p in picks for x in p} == {0, 1, 2}


def test_fd_views_drop_factors() -> None:
    """FD: t(E) = M ⊙ E, a Bernoulli mask of rate p on every input factor; p = 0 gives the plain encoder."""
    data = small(2)
    model = SLMRec(data, SLMRec.Config(embed_dim=16, ssl_task="fd", dropout=0.0))
    items_in = model.item_inputs()
    _, i0 = model.augmented_view(items_in, None)
    torch.testing.assert_close(i0, model().items)
    model.cfg.dropout = 0.5
    seen: list[torch.Tensor] = []
    orig = F.dropout

    def spy(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
        out = orig(x, p, training, inplace)
        seen.append(out)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "dropout", spy)
        _, i1 = model.augmented_view(items_in, None)
        _, i2 = model.augmented_view(items_in, None)
    assert i1.shape == (data.n_items, 16) and not torch.allclose(i1, i2)
    dropped = (seen[0] == 0).float().mean().item()
    assert seen[0].shape == items_in.shape and 0.4 < dropped < 0.6
    kept = seen[0] != 0
    torch.testing.assert_close(seen[0][kept], 2 * items_in[kept])
    # the code's variant drops each propagated layer instead; it also yields two different views
    model.cfg.fd_on = "layers"
    assert not torch.allclose(
        model.augmented_view(items_in, None)[1], model.augmented_view(items_in, None)[1]
    )


def test_view_loss_is_infonce_between_two_views() -> None:
    """Eq. 9 with identical views (p = 0 FD) equals the hand InfoNCE of a representation with itself."""
    data = small(2)
    model = SLMRec(data, SLMRec.Config(embed_dim=8, ssl_task="fd", dropout=0.0, ssl_temperature=0.5))
    batch = a_batch(data)
    got = model.view_loss(batch)
    z = F.normalize(model().items[torch.unique(batch.pos)], dim=1)
    logits = z @ z.T / 0.5
    expected = (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("n_modalities", [1, 3])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@torch.no_grad()
def test_fac_loss_matches_naive_eq_11(n_modalities: int, similarity: str) -> None:
    """Eqs. 10-11: in space k the ID chain g_k ∘ ... ∘ g_1 (z_id) is contrasted with g'_k (z_{m_k})."""
    data = small(n_modalities)
    cfg = SLMRec.Config(embed_dim=4, ssl_task="fac", ssl_temperature=0.3, fac_similarity=similarity)
    model = SLMRec(data, cfg)
    assert len(model.id_heads) == n_modalities == len(model.modal_heads)
    modal = model()[2]["modal_items"]
    items = torch.tensor([0, 3, 5, 7])
    got = model.fac_loss(modal, items)
    expected = 0.0
    for k in range(n_modalities):
        x = modal[items, 0]
        for j in range(k + 1):
            x = x @ model.id_heads[j].weight.T + model.id_heads[j].bias
        head = model.modal_heads[k]
        y = modal[items, k + 1] @ head.weight.T + head.bias
        for a in range(len(items)):

            def sim(p: torch.Tensor, q: torch.Tensor) -> float:
                if similarity == "cosine":
                    return float(F.cosine_similarity(p, q, dim=0)) / 0.3
                return float(p @ q) / 0.3

            denom = sum(math.exp(sim(x[a], y[b])) for b in range(len(items)))
            expected += (-sim(x[a], y[a]) + math.log(denom)) / len(items)
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_fac_order_sets_the_space_hierarchy() -> None:
    data = small(3)
    model = SLMRec(data, SLMRec.Config(ssl_task="fac", fac_order="textual, visual,acoustic"))
    assert model.fac_modal == [data.modalities.index(m) + 1 for m in ("textual", "visual", "acoustic")]


@pytest.mark.parametrize("task", ["fac", "fm", "fd"])
def test_losses_decrease(task: str) -> None:
    data = small(2)
    model = SLMRec(data, SLMRec.Config(embed_dim=16, ssl_task=task, ssl_weight=1.0))
    opt = model.configure_optimizers(TrainSettings(lr=0.01))
    batch = a_batch(data, size=64)
    with torch.no_grad():
        before = model.loss(batch, model())
    for _ in range(30):
        model.train_step(batch, opt)
    with torch.no_grad():
        after = model.loss(batch, model())
    assert after["infonce"] < before["infonce"] - 0.1
    assert after["ssl"] < before["ssl"]


def test_bpr_option() -> None:
    data = small(2)
    model = SLMRec(data, SLMRec.Config(main_loss="bpr", ssl_task="none"))
    emb = model()
    batch = a_batch(data)
    u = emb.users[batch.users]
    expected = F.softplus((u * emb.items[batch.neg]).sum(1) - (u * emb.items[batch.pos]).sum(1)).mean()
    torch.testing.assert_close(model.loss(batch, emb)["bpr"], expected)
    in_batch = SLMRec(data, SLMRec.Config(main_negatives="in_batch"))
    assert torch.isfinite(in_batch.loss(batch, in_batch())["infonce"])


def recall_at_20(scores: np.ndarray, data: Dataset) -> float:
    scores = np.where(data.train.toarray() > 0, -np.inf, scores)
    test = data.test.toarray()
    top = np.argsort(-scores, axis=1)[:, :20]
    users = np.flatnonzero(test.sum(axis=1))
    return float(np.mean([test[u, top[u]].sum() / test[u].sum() for u in users]))


def test_learns_planted_signal_beats_popularity(tiny: Dataset) -> None:
    model = SLMRec(tiny, SLMRec.Config())
    opt = model.configure_optimizers(TrainSettings(lr=0.01))
    sampler = BPRSampler(tiny.train, 256, seed=0)
    for epoch in range(8):
        for batch in sampler.epoch(epoch):
            model.train_step(batch, opt)
    with torch.no_grad():
        scores = model.score(model(), torch.arange(tiny.n_users)).numpy()
    pop = np.tile(np.asarray(tiny.train.sum(axis=0)).ravel(), (tiny.n_users, 1)).astype(np.float64)
    ours, popularity = recall_at_20(scores, tiny), recall_at_20(pop, tiny)
    assert ours > popularity + 0.15, (ours, popularity)
