"""Optuna pruning as a Trainer callback: every validation is reported, and a pruned trial ends fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modalrec.config import load_config
from modalrec.data import Dataset
from modalrec.experiments.tune import OptunaPruning
from modalrec.train import Trainer

optuna = pytest.importorskip("optuna")


class FakeTrial:
    """Records reports; asks to prune once ``prune_at`` values were reported."""

    def __init__(self, prune_at: int) -> None:
        self.prune_at = prune_at
        self.reports: list[tuple[float, int]] = []
        self.user_attrs: dict[str, Any] = {}

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value

    def should_prune(self) -> bool:
        return len(self.reports) >= self.prune_at


def test_pruning_reports_each_validation_and_stops_the_trial(tiny: Dataset, tmp_path: Path) -> None:
    sets = ["train.epochs=6", "train.patience=100", "train.batch_size=512", "eval.ks=[20]", "train.threads=1"]
    cfg = load_config(None, sets, model_name="mf", seed=0)
    trial = FakeTrial(prune_at=3)
    trainer = Trainer(cfg, data=tiny, out=tmp_path / "trial", callbacks=[OptunaPruning(trial, "recall@20")])
    with pytest.raises(optuna.TrialPruned):
        trainer.fit()
    assert [step for _, step in trial.reports] == [0, 1, 2]
    history = trainer.history  # the pruned epoch ends inside its validation: no row for it
    assert [v for v, _ in trial.reports[:2]] == [h["val_recall@20"] for h in history]
    assert trial.user_attrs == {"last_value": trial.reports[-1][0], "epochs": 3}
    assert not (tmp_path / "trial" / "metrics.json").exists()
