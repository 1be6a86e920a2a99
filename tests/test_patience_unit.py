"""Early-stopping patience counted in validations or in passes over the training pairs (train.patience_unit)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from modalrec.callbacks import Callback, EarlyStopping, Metrics, TrainerView
from modalrec.config import load_config
from modalrec.data import Dataset
from modalrec.errors import ConfigError
from modalrec.train import train

FAST = ["eval.ks=[10,20]", "train.progress=false", "train.threads=1", "train.lr=0.05"]


class ScriptedValidation(Callback):
    """Replaces the validations during training by a fixed curve: the metric improves until epoch ``peak`` and
    is flat after it, so the stopping epoch depends only on the patience rule (the final evaluation is real)."""

    def __init__(self, peak: int) -> None:
        self.peak = peak
        self.training = False

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        self.training = True

    def on_epoch_end(self, trainer: TrainerView, epoch: int, row: dict) -> None:
        self.training = False

    def around_evaluation(self, trainer: TrainerView, run: Callable[[], Metrics]) -> Metrics:
        if not self.training:
            return run()
        return {"recall@20": 0.1 * min(trainer.state.epoch, self.peak) + 0.1}


def stop_epoch(data: Dataset, *overrides: str, peak: int = 2) -> tuple[int, list[dict]]:
    cfg = load_config(None, ["train.epochs=60", *FAST, *overrides], model_name="mf")
    result = train(cfg, data=data, callbacks=[ScriptedValidation(peak)])
    assert result.metrics["best_epoch"] == peak
    return result.metrics["epochs_run"] - 1, result.history


def test_pairs_equal_evaluations_for_whole_interaction_epochs(tiny: Dataset) -> None:
    """Real validation: with the interactions sampler, each epoch is one pass, so both units stop alike."""
    base = ["train.epochs=60", "train.patience=2", "train.batch_size=512", *FAST]
    runs = [
        train(load_config(None, [*base, f"train.patience_unit={unit}"], model_name="mf"), data=tiny)
        for unit in ("evaluations", "pairs")
    ]
    assert runs[0].metrics["epochs_run"] < 60
    assert runs[0].metrics["epochs_run"] == runs[1].metrics["epochs_run"]
    assert runs[0].metrics["test"] == runs[1].metrics["test"]
    assert all(h["pairs"] == tiny.train.nnz for h in runs[1].history)


def test_same_pairs_per_epoch_same_stopping_point_for_both_samplers(tiny: Dataset) -> None:
    # 2 full batches of 512 per epoch for both samplers (max_batches), fewer pairs than one pass (nnz)
    common = ["train.batch_size=512", "train.max_batches=2", "train.patience=2", "train.patience_unit=pairs"]
    stops = {}
    for sampler in ("interactions", "users"):
        stops[sampler], history = stop_epoch(tiny, *common, f"train.sampler={sampler}")
        assert all(h["pairs"] == 1024 for h in history)
    # 2 passes = 2 nnz pairs after the best epoch 2, at 1024 pairs an epoch
    assert stops["interactions"] == stops["users"] == 2 + math.ceil(2 * tiny.train.nnz / 1024)


def test_users_sampler_waits_in_proportion_to_the_pairs_it_sees(tiny: Dataset) -> None:
    nnz = tiny.train.nnz
    users = ["train.sampler=users", "train.patience=2"]
    # whole users epochs draw batch_size × (nnz // batch_size + 1) ≥ nnz pairs: one epoch is one pass or more
    whole, history = stop_epoch(tiny, *users, "train.batch_size=512", "train.patience_unit=pairs")
    assert history[0]["pairs"] == 512 * (nnz // 512 + 1)
    assert whole == 2 + 2
    # a users epoch of 3 batches of 256 sees 768 pairs: the pairs unit waits nnz / 768 times longer
    short = [*users, "train.batch_size=256", "train.max_batches=3"]
    by_evaluations, _ = stop_epoch(tiny, *short, "train.patience_unit=evaluations")
    by_pairs, _ = stop_epoch(tiny, *short, "train.patience_unit=pairs")
    assert by_evaluations == 2 + 2
    assert by_pairs == 2 + math.ceil(2 * nnz / 768)


def test_pairs_unit_ignores_eval_every(tiny: Dataset) -> None:
    """Validated every 3rd epoch, the pairs unit stops at the first validation 2 passes after the best."""
    common = ["train.batch_size=512", "train.eval_every=3", "train.patience=2"]
    by_pairs, _ = stop_epoch(tiny, *common, "train.patience_unit=pairs")
    by_evaluations, _ = stop_epoch(tiny, *common, "train.patience_unit=evaluations")
    assert by_pairs == 2 + 3  # validations at epochs 2, 5, 8, ...: 3 passes at epoch 5
    assert by_evaluations == 2 + 2 * 3


def test_bad_patience_unit() -> None:
    with pytest.raises(ConfigError, match="patience_unit"):
        load_config(None, ["train.patience_unit=epochs"], model_name="mf")
    with pytest.raises(ValueError, match="number of training pairs"):
        EarlyStopping(3, "pairs", 0)
