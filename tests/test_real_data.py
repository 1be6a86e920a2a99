"""Checks on the real datasets beside the project (skipped when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modalrec.config import load_config
from modalrec.data import load_dataset
from modalrec.train import train

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize(
    ("name", "counts", "modalities"),
    [
        ("tiktok", (9308, 6710, 59541, 3051, 6130), {"visual": 128, "acoustic": 128}),
        ("amazon-baby", (19445, 7050, 118551, 21682, 20559), {}),
    ],
)
def test_shipped_splits_load_with_published_counts(
    shared_data: Path, name: str, counts: tuple[int, ...], modalities: dict[str, int]
) -> None:
    data = load_dataset(shared_data / name)
    assert (data.n_users, data.n_items, data.train.nnz, data.val.nnz, data.test.nnz) == counts
    assert {m: f.shape[1] for m, f in data.features.items()} == modalities


def test_one_epoch_on_tiktok_under_the_paper_protocol(shared_data: Path) -> None:
    data = load_dataset(shared_data / "tiktok")
    cfg = load_config(None, ["train.epochs=1", "train.threads=2"], model_name="mf", protocol="paper")
    metrics = train(cfg, data=data).metrics
    assert metrics["protocol"]["ndcg"] == "ngcf" and not metrics["protocol"]["mask_val_at_test"]
    assert metrics["test"]["users"] == int((data.test.getnnz(axis=1) > 0).sum())
    assert 0.0 < metrics["test"]["recall@20"] < 0.2
