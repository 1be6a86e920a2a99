"""The embedded default dataset: planted multi-modal interactions with a known latent structure.

Users and items draw latent factors from a mixture of clusters. Each user's items come from a popularity-skewed
softmax over user-item affinity (sampled without replacement by Gumbel top-k). Each modality is a different noisy,
non-linear view of part of the item factors, so the modalities are complementary rather than copies, and content
carries signal that interaction data alone only reveals slowly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from modalrec.data.dataset import Dataset
from modalrec.data.split import split_interactions


@dataclass
class SyntheticConfig:
    """Sizes and knobs of the generator (defaults: about 3,000 users x 2,000 items x 60,000 interactions)."""

    n_users: int = 3000
    n_items: int = 2000
    n_interactions: int = 60000  # expected total number of interactions
    latent_dim: int = 16  # dimensionality of the planted factors
    n_clusters: int = 12  # mixture components of users and items
    cluster_spread: float = 2.0  # within-cluster noise relative to the cluster centres
    temperature: float = 0.7  # softmax temperature of user-item affinity (lower = more peaked)
    popularity_skew: float = 0.5  # std of the log-popularity bias
    unit_items: bool = (
        False  # True: item factors scaled to unit length, so no item is liked by everyone (no hubs)
    )
    modality_dims: dict[str, int] = field(default_factory=lambda: {"visual": 64, "textual": 48})
    modality_noise: float = 0.05  # Gaussian noise added to each modality view
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    chunk_users: int = 1024  # users per affinity block (keeps memory O(chunk x items))
    candidates: int = (
        0  # >0: each user block draws from this many random candidate items (fast, for huge sizes)
    )


def demo_config(seed: int = 0) -> SyntheticConfig:
    """The preset of ``modalrec demo``: data on which content genuinely helps.

    2,000 users x 3,000 items with about 5 training interactions per user and a third of the items seen at most
    twice. Choices are sharp (temperature 0.25) and follow the direction of the item factors only
    (``unit_items``, no popularity bias), so no hub item is liked by everyone: an ID-only model must learn each
    item from its few interactions, while the modality views reveal every item's factors.
    """
    return SyntheticConfig(
        n_users=2000,
        n_items=3000,
        n_interactions=16000,
        latent_dim=16,
        n_clusters=20,
        cluster_spread=1.0,
        temperature=0.25,
        popularity_skew=0.0,
        unit_items=True,
        seed=seed,
    )


def estimated_bytes(cfg: SyntheticConfig) -> int:
    """Peak memory of ``make_synthetic(cfg)``, estimated from its largest arrays (for checks before generating).

    The [chunk, I] affinity block (float64 logits, uniform draws, Gumbel scores, int64 argsort: 32 bytes per cell)
    dominates; then the factors, the interaction lists (at least 3 per user) and the float32 modality views.
    """
    chunk = max(1, min(cfg.chunk_users, cfg.n_users))
    pool = cfg.candidates if 0 < cfg.candidates < cfg.n_items else cfg.n_items
    interactions = max(cfg.n_interactions, 3 * cfg.n_users)
    dims = (
        sum(max(0, int(d)) for d in cfg.modality_dims.values()) if isinstance(cfg.modality_dims, dict) else 0
    )
    return int(
        32 * chunk * pool
        + 8 * cfg.latent_dim * (cfg.n_users + cfg.n_items)
        + 48 * interactions
        + 8 * cfg.n_items * (dims + 1)
    )


def _planted_factors(rng: np.random.Generator, n: int, centres: np.ndarray, spread: float) -> np.ndarray:
    assignment = rng.integers(0, len(centres), size=n)
    return centres[assignment] + spread * rng.standard_normal((n, centres.shape[1]))


def make_synthetic(cfg: SyntheticConfig | None = None, name: str = "synthetic") -> Dataset:
    """Generate a planted dataset with an 8:1:1 (by default) per-user split."""
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    k = cfg.latent_dim
    centres = rng.standard_normal((cfg.n_clusters, k))
    user_f = _planted_factors(rng, cfg.n_users, centres, cfg.cluster_spread)
    item_f = _planted_factors(rng, cfg.n_items, centres, cfg.cluster_spread)
    log_pop = cfg.popularity_skew * rng.standard_normal(cfg.n_items)
    # the factors that drive choices; the modality views below always see the raw ones
    choice_f = (
        item_f / np.linalg.norm(item_f, axis=1, keepdims=True) * np.sqrt(k) if cfg.unit_items else item_f
    )

    mean_len = cfg.n_interactions / cfg.n_users
    lengths = np.clip(rng.lognormal(np.log(mean_len) - 0.18, 0.6, size=cfg.n_users), 3, cfg.n_items // 2)
    lengths = np.round(lengths).astype(np.int64)
    if 0 < cfg.candidates < cfg.n_items:
        lengths = np.minimum(lengths, cfg.candidates)

    users_out, items_out = [], []
    scale = 1.0 / (cfg.temperature * np.sqrt(k))
    for start in range(0, cfg.n_users, cfg.chunk_users):
        stop = min(start + cfg.chunk_users, cfg.n_users)
        if 0 < cfg.candidates < cfg.n_items:
            pool = np.sort(rng.choice(cfg.n_items, size=cfg.candidates, replace=False))
        else:
            pool = np.arange(cfg.n_items)
        logits = (user_f[start:stop] @ choice_f[pool].T) * scale + log_pop[pool]
        gumbel = logits - np.log(-np.log(rng.random(logits.shape)))
        top = pool[np.argsort(-gumbel, axis=1)[:, : min(len(pool), lengths[start:stop].max())]]
        for row, n_u in enumerate(lengths[start:stop]):
            users_out.append(np.full(n_u, start + row))
            items_out.append(top[row, :n_u])
    users = np.concatenate(users_out)
    items = np.concatenate(items_out)

    features: dict[str, np.ndarray] = {}
    n_mod = max(1, len(cfg.modality_dims))
    for m, (mod_name, dim) in enumerate(cfg.modality_dims.items()):
        # Modality m sees a window of about 2/3 of the latent dimensions, shifted per modality.
        width = max(2, (2 * k) // 3)
        offset = (m * k) // n_mod
        dims = (np.arange(width) + offset) % k
        hidden = np.tanh(item_f[:, dims] @ rng.standard_normal((width, 2 * width)) / np.sqrt(width))
        view = hidden @ rng.standard_normal((2 * width, dim)) / np.sqrt(2 * width)
        view += cfg.modality_noise * rng.standard_normal(view.shape)
        features[mod_name] = view.astype(np.float32)

    train, val, test = split_interactions(
        users, items, cfg.n_users, cfg.n_items, "ratio", cfg.split_ratios, seed=cfg.seed
    )
    return Dataset(
        name=name,
        user_ids=np.array([f"u{i}" for i in range(cfg.n_users)]),
        item_ids=np.array([f"i{i}" for i in range(cfg.n_items)]),
        train=train,
        val=val,
        test=test,
        features=features,
    )
