"""Items without some modalities: masked rows never reach a model's output, fusion weights renormalise over the
present modalities, a catalogue with complete masks builds the unchanged model, and a planted signal survives
half the items losing one modality."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from tests.models.model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.models import MODELS
from modalrec.models.base import TrainSettings
from modalrec.models.missing_content import (
    MissingEmbedding,
    masked_knn_edges,
    masked_mean,
    masked_softmax,
    presence_matrix,
    renormalise,
    row_renormalised_edges,
)

CONTENT_MODELS = sorted(n for n, cls in MODELS.items() if cls.modalities)

# small settings so every model builds and propagates in well under a second on `tiny`
SMALL = {"embed_dim": 16, "knn_k": 5, "n_layers": 1}


def small_config(name: str) -> object:
    cfg = MODELS[name].Config()
    fields = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: v for k, v in SMALL.items() if k in fields})


def with_masks(data: Dataset, masks: dict[str, np.ndarray], fill: float | None = None) -> Dataset:
    """A copy of ``data`` whose items lack content where ``masks`` is False; their rows then hold ``fill``
    draws (arbitrary numbers, as an imputation would leave) instead of the zeros the Dataset stores."""
    out = Dataset(
        data.name,
        data.user_ids,
        data.item_ids,
        data.train,
        data.val,
        data.test,
        {m: f.copy() for m, f in data.features.items()},
        dict(masks),
    )
    if fill is not None:
        rng = np.random.default_rng(int(fill))
        for m, mask in masks.items():
            x = out.features[m]
            x[~mask] = rng.normal(0.0, 5.0, size=(int((~mask).sum()), x.shape[1])).astype(np.float32)
    return out


def half_masks(data: Dataset, seed: int = 0) -> dict[str, np.ndarray]:
    """visual missing for a random 40% of items, textual for another 30% (some items lack both)."""
    rng = np.random.default_rng(seed)
    return {
        "visual": rng.random(data.n_items) >= 0.4,
        "textual": rng.random(data.n_items) >= 0.3,
    }


def embeddings(name: str, data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of all users for all items [U, I] and item embeddings, in eval mode, from seed 0."""
    torch.manual_seed(0)
    model = MODELS[name](data, small_config(name))
    model.eval()
    with torch.no_grad():
        emb = model()
        scores = model.score(emb, torch.arange(data.n_users))
    return scores, emb.items


# ---- the shared pieces ------------------------------------------------------------------------------------


def test_renormalise_oracle() -> None:
    present = torch.tensor(
        [[True, True, True], [True, False, True], [False, False, True], [False, False, False]]
    )
    w = torch.tensor([0.5, 0.3, 0.2])
    got = renormalise(w, present)
    want = torch.tensor([[0.5, 0.3, 0.2], [0.5 / 0.7, 0.0, 0.2 / 0.7], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(got, want)
    per_item = torch.tensor([[1.0, 3.0, 0.0], [2.0, 2.0, 4.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    want2 = torch.tensor([[0.25, 0.75, 0.0], [1 / 3, 0.0, 2 / 3], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(renormalise(per_item, present), want2)


def test_masked_mean_oracle() -> None:
    views = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]]])
    present = torch.tensor([[True, True], [False, True], [False, False]])
    want = torch.tensor([[4.0, 5.0], [9.0, 10.0], [0.0, 0.0]])
    torch.testing.assert_close(masked_mean(views, present), want)


def test_masked_knn_edges_span_present_items_only() -> None:
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.05], [0.1, 0.9]])
    present = torch.tensor([True, False, True, True, True])
    rows, cols, vals = masked_knn_edges(x, present, k=2)
    assert 1 not in rows.tolist() and 1 not in cols.tolist()
    pairs = {(int(r), int(c)) for r, c in zip(rows, cols, strict=True)}
    # item 0's two nearest present items are itself and 3 (item 1 is nearer but absent)
    assert {(0, 0), (0, 3), (2, 2), (2, 4), (3, 3), (3, 0), (4, 4), (4, 2)} == pairs
    assert torch.all(vals > 0)


def test_row_renormalised_edges_rows_keep_unit_weight() -> None:
    # two modalities, each a self-loop graph over the items that have it: row sums are Σ_m w̃_im = 1
    present = torch.tensor([[True, True], [True, False], [False, True]])
    parts = []
    for m in range(2):
        idx = torch.nonzero(present[:, m], as_tuple=True)[0]
        parts.append((idx, idx, torch.ones(len(idx))))
    rows, _, vals = row_renormalised_edges(parts, torch.tensor([0.25, 0.75]), present)
    sums = torch.zeros(3).index_add(0, rows, vals)
    torch.testing.assert_close(sums, torch.ones(3))
    rows0, _, vals0 = row_renormalised_edges(parts, torch.tensor([0.25, 0.75]), None)
    torch.testing.assert_close(torch.zeros(3).index_add(0, rows0, vals0), torch.tensor([1.0, 0.25, 0.75]))


def test_missing_embedding_substitutes_and_moves_with_the_module(tiny: Dataset) -> None:
    masks = half_masks(tiny)
    data = with_masks(tiny, masks)
    emb = MissingEmbedding(data, ["visual", "textual"], [3, 4])
    with torch.no_grad():
        emb.vectors["0"].copy_(torch.tensor([1.0, 2.0, 3.0]))
    z = torch.randn(tiny.n_items, 3)
    out = emb(0, z)
    present = torch.from_numpy(masks["visual"])
    torch.testing.assert_close(out[present], z[present])
    assert torch.equal(out[~present], torch.tensor([1.0, 2.0, 3.0]).expand(int((~present).sum()), 3))
    assert torch.equal(emb.matrix(), presence_matrix(data, ["visual", "textual"]))
    complete = MissingEmbedding(tiny, ["visual", "textual"], 3)
    assert not complete.active and len(list(complete.parameters())) == 0 and len(complete.state_dict()) == 0


# ---- every content model ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONTENT_MODELS)
def test_masked_rows_never_reach_the_output(name: str, tiny: Dataset) -> None:
    """Whatever numbers the masked rows hold, every user's scores for every item are the same."""
    masks = half_masks(tiny)
    scores_a, items_a = embeddings(name, with_masks(tiny, masks, fill=1))
    scores_b, items_b = embeddings(name, with_masks(tiny, masks, fill=2))
    assert torch.isfinite(scores_a).all()
    torch.testing.assert_close(scores_a, scores_b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(items_a, items_b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CONTENT_MODELS)
def test_complete_masks_build_the_unchanged_model(name: str, tiny: Dataset) -> None:
    """All-True masks: the same parameters and bit-identical scores as a dataset without masks."""
    complete = {m: np.ones(tiny.n_items, dtype=bool) for m in tiny.modalities}
    scores_a, _ = embeddings(name, tiny)
    scores_b, _ = embeddings(name, with_masks(tiny, complete))
    assert torch.equal(scores_a, scores_b)
    torch.manual_seed(0)
    keys_a = set(MODELS[name](tiny, small_config(name)).state_dict())
    torch.manual_seed(0)
    keys_b = set(MODELS[name](with_masks(tiny, complete), small_config(name)).state_dict())
    assert keys_a == keys_b


@pytest.mark.parametrize("name", ["lattice", "micro", "vbpr", "freedom"])
def test_planted_signal_survives_half_the_items_missing_visual(name: str, tiny: Dataset) -> None:
    """Half the items lack the visual modality; the model still trains and beats popularity on `tiny`."""
    rng = np.random.default_rng(1)
    data = with_masks(tiny, {"visual": rng.random(tiny.n_items) >= 0.5})
    torch.manual_seed(0)
    model = MODELS[name](data, MODELS[name].Config())
    history = train(model, data, epochs=6, lr=0.01 if name == "freedom" else 0.03)
    assert all(np.isfinite(v) for row in history for v in row.values())
    assert recall_at(model, data) > popularity_recall(data)


@pytest.mark.parametrize("name", ["lattice", "micro", "vbpr", "clcrec"])
@pytest.mark.parametrize("masked_training", [False, True])
def test_new_items_with_some_modalities(name: str, masked_training: bool, tiny: Dataset) -> None:
    """Serving items that lack a modality: an all-True mask changes nothing, absent rows are never read, and
    a modality left out entirely equals passing it with every row absent."""
    data = with_masks(tiny, half_masks(tiny)) if masked_training else tiny
    torch.manual_seed(0)
    cfg = small_config(name)
    if name == "micro":
        cfg = dataclasses.replace(cfg, item_input="features")  # new items' ẽ^m enter the views
    model = MODELS[name](data, cfg)
    model.eval()
    rng = np.random.default_rng(3)
    feats = {m: rng.normal(size=(6, f.shape[1])).astype(np.float32) for m, f in tiny.features.items()}
    full = model.item_embeddings_from_features(feats)
    ones = {m: np.ones(6, dtype=bool) for m in feats}
    torch.testing.assert_close(model.item_embeddings_from_features(feats, present=ones), full)
    lacks = {"visual": np.array([True, False, True, False, False, True]), "textual": np.ones(6, dtype=bool)}
    a = model.item_embeddings_from_features(feats, present=lacks)
    noisy = {m: f.copy() for m, f in feats.items()}
    noisy["visual"][~lacks["visual"]] = 100.0
    b = model.item_embeddings_from_features(noisy, present=lacks)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[lacks["visual"]], full[torch.from_numpy(lacks["visual"])])
    no_visual = {"textual": feats["textual"]}
    c = model.item_embeddings_from_features(no_visual, present={"textual": np.ones(6, dtype=bool)})
    d = model.item_embeddings_from_features(feats, present={"visual": np.zeros(6, dtype=bool)})
    torch.testing.assert_close(c, d)
    assert torch.isfinite(c).all()


def test_fusion_weights_have_finite_gradients_for_items_without_content() -> None:
    present = torch.tensor([[True, False], [False, False], [True, True]])
    scores = torch.randn(3, 2, requires_grad=True)
    alpha = masked_softmax(scores, present)
    torch.testing.assert_close(alpha[0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(alpha[1], torch.zeros(2))
    torch.testing.assert_close(alpha[2], torch.softmax(scores[2].detach(), dim=0))
    w = torch.tensor([0.3, 0.7], requires_grad=True)
    (alpha.sum() + renormalise(w, present).pow(2).sum()).backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
    assert w.grad is not None and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("name", [n for n in CONTENT_MODELS if MODELS[n].trainable])
def test_a_training_step_with_contentless_items_stays_finite(name: str, tiny: Dataset) -> None:
    """Some items lack both modalities: one optimisation step gives finite losses and finite parameters."""
    data = with_masks(tiny, half_masks(tiny), fill=4)
    torch.manual_seed(0)
    model = MODELS[name](data, small_config(name))
    model.train()
    model.on_epoch_start(0)
    batch = next(iter(BPRSampler(data.train, 256, seed=0).epoch(0)))
    terms = model.train_step(batch, model.configure_optimizers(TrainSettings(lr=1e-2)))
    assert all(np.isfinite(v) for v in terms.values()), terms
    assert all(torch.isfinite(p).all() for p in model.parameters())
