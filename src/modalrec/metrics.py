"""Pure tensor ranking metrics over a batch of users.

Inputs are ``hits`` [B, K] (bool: is the item at rank r a held-out positive of the user, ranks sorted by score)
and ``n_pos`` [B] (number of held-out positives per user). Every function returns a per-user tensor [B].

NDCG has two definitions:
  * ``standard``: IDCG@K = Σ_{r < min(n_pos, K)} 1/log2(r+2) — the textbook ideal ranking.
  * ``ngcf``: IDCG@K = DCG of the retrieved hits moved to the top ranks, i.e. Σ_{r < hits@K} 1/log2(r+2), as in
    the NGCF/LATTICE/MICRO/MMSSL evaluation code; a user with no hit scores 0. Use it to compare with their tables.
"""

from __future__ import annotations

import torch

NDCG_VARIANTS = ("standard", "ngcf")


def _discounts(k: int, device: torch.device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float64))


def recall_at_k(hits: torch.Tensor, n_pos: torch.Tensor, k: int) -> torch.Tensor:
    """|top-k ∩ positives| / |positives| (0 for users without positives)."""
    found = hits[:, :k].sum(dim=1).double()
    return torch.where(n_pos > 0, found / n_pos.clamp_min(1).double(), torch.zeros_like(found))


def precision_at_k(hits: torch.Tensor, k: int) -> torch.Tensor:
    """|top-k ∩ positives| / k."""
    return hits[:, :k].sum(dim=1).double() / k


def hit_at_k(hits: torch.Tensor, k: int) -> torch.Tensor:
    """1 if any of the top-k is a positive, else 0."""
    return hits[:, :k].any(dim=1).double()


def ndcg_at_k(hits: torch.Tensor, n_pos: torch.Tensor, k: int, variant: str = "standard") -> torch.Tensor:
    """Normalised discounted cumulative gain at k (binary relevance); see the module docstring for variants."""
    if variant not in NDCG_VARIANTS:
        raise ValueError(f"unknown NDCG variant {variant!r}; choose one of {NDCG_VARIANTS}")
    h = hits[:, :k].double()
    disc = _discounts(h.shape[1], hits.device)
    dcg = (h * disc).sum(dim=1)
    ideal_len = h.sum(dim=1) if variant == "ngcf" else n_pos.double().clamp(max=h.shape[1])
    cum = torch.cat([torch.zeros(1, dtype=torch.float64, device=hits.device), disc.cumsum(0)])
    idcg = cum[ideal_len.long()]
    return torch.where(idcg > 0, dcg / idcg.clamp_min(1e-12), torch.zeros_like(dcg))


def all_metrics(
    hits: torch.Tensor, n_pos: torch.Tensor, ks: list[int], ndcg: str = "standard"
) -> dict[str, torch.Tensor]:
    """Every metric at every k: {"recall@20": [B], "precision@20": [B], "ndcg@20": [B], "hit@20": [B], ...}."""
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(hits, n_pos, k)
        out[f"precision@{k}"] = precision_at_k(hits, k)
        out[f"ndcg@{k}"] = ndcg_at_k(hits, n_pos, k, ndcg)
        out[f"hit@{k}"] = hit_at_k(hits, k)
    return out
