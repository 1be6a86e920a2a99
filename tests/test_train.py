"""The trainer: run folder contents, metrics.json schema, resume = uninterrupted, determinism, NaN guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modalrec.callbacks import Callback, TrainerView
from modalrec.config import load_config
from modalrec.data import Dataset
from modalrec.train import Trainer, TrainingError, train

FAST = ["train.batch_size=512", "eval.ks=[10,20]", "train.progress=false", "train.threads=1"]


class InterruptAt(Callback):
    """Raises KeyboardInterrupt when epoch ``epoch`` starts (as a kill would), leaving last.pt behind."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_run_folder_and_metrics_schema(tiny: Dataset, tmp_path: Path) -> None:
    cfg = load_config(None, ["train.epochs=4", *FAST], model_name="lightgcn")
    result = train(cfg, data=tiny, out=tmp_path)
    for name in ("config.yaml", "checkpoint.pt", "metrics.json", "history.csv", "curves.png", "log.txt"):
        assert (tmp_path / name).exists(), name
    assert not (tmp_path / "last.pt").exists()
    m = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "model",
        "dataset",
        "seed",
        "best_epoch",
        "epochs_run",
        "train_seconds",
        "protocol",
        "valid",
        "test",
    ):
        assert key in m
    for k in (10, 20):
        for metric in ("recall", "precision", "ndcg", "hit"):
            assert 0.0 <= m["test"][f"{metric}@{k}"] <= 1.0
    assert m["epochs_run"] == 4 and 0 <= m["best_epoch"] < 4
    assert m["test"] == pytest.approx({k: v for k, v in result.metrics["test"].items()})
    assert "bpr" in (tmp_path / "log.txt").read_text()


def test_early_stopping_restores_best_epoch(tiny: Dataset) -> None:
    cfg = load_config(None, ["train.epochs=60", "train.patience=2", "train.lr=0.05", *FAST], model_name="mf")
    result = train(cfg, data=tiny)
    m = result.metrics
    assert m["epochs_run"] < 60
    assert m["epochs_run"] - 1 - m["best_epoch"] == 2
    vals = [h["val_recall@20"] for h in result.history]
    assert m["valid"]["recall@20"] == pytest.approx(max(vals))


def test_same_seed_same_metrics(tiny: Dataset) -> None:
    cfg = load_config(None, ["train.epochs=3", *FAST], model_name="lightgcn", seed=3)
    a = train(cfg, data=tiny).metrics
    b = train(cfg, data=tiny).metrics
    assert a["test"] == b["test"] and a["valid"] == b["valid"]


def test_resume_after_interruption_matches_uninterrupted(tiny: Dataset, tmp_path: Path) -> None:
    cfg = load_config(None, ["train.epochs=6", "train.patience=100", *FAST], model_name="lightgcn", seed=1)
    full = train(cfg, data=tiny, out=tmp_path / "full").metrics

    trainer = Trainer(cfg, data=tiny, out=tmp_path / "cut", callbacks=[InterruptAt(3)])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert (tmp_path / "cut" / "last.pt").exists() and not (tmp_path / "cut" / "metrics.json").exists()
    resumed = Trainer(cfg, data=tiny, out=tmp_path / "cut", resume=True).fit().metrics
    assert resumed["test"] == full["test"]
    assert resumed["best_epoch"] == full["best_epoch"] and resumed["epochs_run"] == 6


def test_nan_loss_stops_with_named_term(tiny: Dataset) -> None:
    cfg = load_config(None, ["train.epochs=3", *FAST], model_name="mf")
    trainer = Trainer(cfg, data=tiny)
    original = trainer.model.loss

    def broken(batch, emb):  # type: ignore[no-untyped-def]
        terms = original(batch, emb)
        terms["reg"] = terms["reg"] * float("nan")
        return terms

    trainer.model.loss = broken  # type: ignore[method-assign]
    with pytest.raises(TrainingError, match="loss term 'reg' became nan in epoch 0"):
        trainer.fit()


def test_max_batches_caps_each_epoch(tiny: Dataset) -> None:
    full = train(load_config(None, ["train.epochs=1", *FAST], model_name="mf"), data=tiny)
    capped = train(
        load_config(None, ["train.epochs=2", "train.max_batches=2", *FAST], model_name="mf"), data=tiny
    )
    assert full.history[0]["batches"] > 2
    assert [h["batches"] for h in capped.history] == [2, 2]


def test_negative_max_batches_is_a_config_error() -> None:
    from modalrec.errors import ConfigError

    with pytest.raises(ConfigError, match="max_batches"):
        load_config(None, ["train.max_batches=-1"], model_name="mf")
