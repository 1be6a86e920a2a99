"""Shared fixtures: tiny planted datasets and the optional real data beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from modalrec.data import Dataset, SyntheticConfig, make_synthetic

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real datasets: $MODALREC_SHARED_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("MODALREC_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip("real data (../shared/data) is not present")
    return path


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


def tiny_config(seed: int = 0) -> SyntheticConfig:
    """A planted dataset small enough for a model to train in seconds."""
    return SyntheticConfig(
        n_users=300,
        n_items=200,
        n_interactions=6000,
        latent_dim=8,
        n_clusters=6,
        modality_dims={"visual": 16, "textual": 12},
        seed=seed,
        # pinned, so the generator's defaults may move: clustered, popularity-skewed, noisy content
        cluster_spread=0.6,
        temperature=0.35,
        popularity_skew=1.0,
        modality_noise=0.3,
    )


@pytest.fixture(scope="session")
def tiny() -> Dataset:
    return make_synthetic(tiny_config(), name="tiny")
