"""All-rank evaluation against a naive per-user loop, masking rules and protocol presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalrec.data import Dataset
from modalrec.evaluate import EvalConfig, evaluate, group_breakdown
from modalrec.models.mf import MF


def _naive(model: MF, data: Dataset, split: str, mask_val: bool, k: int) -> tuple[float, float]:
    emb = model()
    scores = (emb.users @ emb.items.T).detach().numpy()
    target = data.val if split == "val" else data.test
    recalls, ndcgs = [], []
    for u in range(data.n_users):
        pos = set(target[u].indices.tolist())
        if not pos:
            continue
        s = scores[u].copy()
        s[data.train[u].indices] = -np.inf
        if mask_val:
            s[data.val[u].indices] = -np.inf
        top = np.argsort(-s, kind="stable")[:k]
        rel = [1.0 if i in pos else 0.0 for i in top]
        recalls.append(sum(rel) / len(pos))
        dcg = sum(r / np.log2(p + 2) for p, r in enumerate(rel))
        idcg = sum(1 / np.log2(p + 2) for p in range(min(len(pos), k)))
        ndcgs.append(dcg / idcg)
    return float(np.mean(recalls)), float(np.mean(ndcgs))


@pytest.mark.parametrize("chunk", [7, 0])
def test_matches_naive_loop(tiny: Dataset, chunk: int) -> None:
    torch.manual_seed(1)
    model = MF(tiny, MF.Config(embed_dim=8))
    cfg = EvalConfig(ks=[5, 20], chunk_size=chunk)
    for split in ("val", "test"):
        got = evaluate(model, tiny, split, cfg)
        recall, ndcg = _naive(model, tiny, split, mask_val=(split == "test"), k=20)
        assert got["recall@20"] == pytest.approx(recall)
        assert got["ndcg@20"] == pytest.approx(ndcg)
        target = tiny.val if split == "val" else tiny.test
        assert got["users"] == int((np.diff(target.indptr) > 0).sum())


def test_paper_protocol_keeps_val_items_rankable(tiny: Dataset) -> None:
    torch.manual_seed(2)
    model = MF(tiny, MF.Config(embed_dim=8))
    paper = EvalConfig(ks=[20], protocol="paper")
    assert paper.ndcg_variant == "ngcf" and not paper.masks_val_at_test
    got = evaluate(model, tiny, "test", paper)
    recall, _ = _naive(model, tiny, "test", mask_val=False, k=20)
    assert got["recall@20"] == pytest.approx(recall)


def test_per_user_results_and_group_breakdown(tiny: Dataset) -> None:
    """Per-user arrays come back with every metric, and the user groups partition the evaluated users."""
    model = MF(tiny, MF.Config(embed_dim=8))
    result = evaluate(model, tiny, "test", EvalConfig(ks=[20]), per_user=True)
    assert set(result["per_user"]) >= {"recall@20", "ndcg@20", "precision@20", "hit@20"}
    groups = group_breakdown(result, tiny, [0, 10, 20])
    assert sum(g["users"] for g in groups) == result["users"]
    assert [g["group"] for g in groups] == ["[0,10)", "[10,20)", "[20,inf)"]
