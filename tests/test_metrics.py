"""Metric functions against hand-computed values and a naive per-user oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modalrec.metrics import all_metrics, hit_at_k, ndcg_at_k, precision_at_k, recall_at_k


def test_hand_computed_single_user() -> None:
    # ranking: hit, miss, hit, miss, miss; the user has 3 held-out positives
    hits = torch.tensor([[True, False, True, False, False]])
    n_pos = torch.tensor([3])
    assert recall_at_k(hits, n_pos, 3).item() == pytest.approx(2 / 3)
    assert precision_at_k(hits, 3).item() == pytest.approx(2 / 3)
    assert hit_at_k(hits, 1).item() == 1.0
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg_std = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    idcg_ngcf = 1 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(hits, n_pos, 3, "standard").item() == pytest.approx(dcg / idcg_std)
    assert ndcg_at_k(hits, n_pos, 3, "ngcf").item() == pytest.approx(dcg / idcg_ngcf)


def test_no_hits_and_no_positives_score_zero() -> None:
    hits = torch.zeros(2, 4, dtype=torch.bool)
    n_pos = torch.tensor([2, 0])
    for k in (1, 4):
        assert recall_at_k(hits, n_pos, k).tolist() == [0.0, 0.0]
        assert ndcg_at_k(hits, n_pos, k, "standard").tolist() == [0.0, 0.0]
        assert ndcg_at_k(hits, n_pos, k, "ngcf").tolist() == [0.0, 0.0]


def test_ngcf_ndcg_is_one_when_hits_lead() -> None:
    # one hit in first place of three positives: ngcf NDCG = 1, standard NDCG < 1
    hits = torch.tensor([[True, False, False]])
    n_pos = torch.tensor([3])
    assert ndcg_at_k(hits, n_pos, 3, "ngcf").item() == pytest.approx(1.0)
    assert ndcg_at_k(hits, n_pos, 3, "standard").item() < 1.0


def _oracle(ranked: list[int], positives: set[int], k: int) -> dict[str, float]:
    top = ranked[:k]
    rel = [1.0 if i in positives else 0.0 for i in top]
    dcg = sum(r / math.log2(p + 2) for p, r in enumerate(rel))
    idcg = sum(1 / math.log2(p + 2) for p in range(min(len(positives), k)))
    idcg_ngcf = sum(1 / math.log2(p + 2) for p in range(int(sum(rel))))
    return {
        "recall": sum(rel) / len(positives),
        "precision": sum(rel) / k,
        "ndcg": dcg / idcg if idcg else 0.0,
        "ndcg_ngcf": dcg / idcg_ngcf if idcg_ngcf else 0.0,
        "hit": float(sum(rel) > 0),
    }


def test_against_naive_oracle_on_random_rankings() -> None:
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 30
    rankings = [list(rng.permutation(n_items)) for _ in range(n_users)]
    positives = [
        set(rng.choice(n_items, size=rng.integers(1, 8), replace=False).tolist()) for _ in range(n_users)
    ]
    kmax = 10
    hits = torch.tensor([[i in positives[u] for i in rankings[u][:kmax]] for u in range(n_users)])
    n_pos = torch.tensor([len(p) for p in positives])
    for variant in ("standard", "ngcf"):
        got = all_metrics(hits, n_pos, [1, 5, 10], variant)
        for k in (1, 5, 10):
            oracle = [_oracle(rankings[u], positives[u], k) for u in range(n_users)]
            assert got[f"recall@{k}"].numpy() == pytest.approx([o["recall"] for o in oracle])
            assert got[f"precision@{k}"].numpy() == pytest.approx([o["precision"] for o in oracle])
            assert got[f"hit@{k}"].numpy() == pytest.approx([o["hit"] for o in oracle])
            key = "ndcg" if variant == "standard" else "ndcg_ngcf"
            assert got[f"ndcg@{k}"].numpy() == pytest.approx([o[key] for o in oracle])
