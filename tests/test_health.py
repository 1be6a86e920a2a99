"""The training-health monitor: one warning when the loss does not move or validation does not beat popularity."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from modalrec.callbacks import Callback, TrainerView
from modalrec.config import load_config
from modalrec.data import Dataset
from modalrec.errors import ConfigError
from modalrec.evaluate import evaluate
from modalrec.health import LN2, HealthMonitor
from modalrec.models.popularity import Popularity
from modalrec.train import Trainer, train

FAST = ["train.batch_size=512", "eval.ks=[10,20]", "train.progress=false", "train.threads=1"]


def health_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "health" in r.getMessage()
    ]


def test_warns_once_when_the_learning_rate_is_effectively_zero(
    tiny: Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # lr = 0 itself is refused (config range, optimiser); 1e-9 moves no weight measurably in 4 epochs
    cfg = load_config(None, ["train.epochs=4", "train.lr=1e-9", *FAST], model_name="mf")
    with caplog.at_level(logging.WARNING, logger="modalrec.train"):
        result = train(cfg, data=tiny, out=tmp_path)
    warnings = health_warnings(caplog)
    assert len(warnings) == 1  # one warning for both findings
    assert "not learning" in warnings[0] and "--set train.lr=1e-08" in warnings[0]
    assert "--set model.reg_weight=" in warnings[0]  # MF's L2 weight is positive: its tenth is suggested

    health = json.loads((tmp_path / "metrics.json").read_text())["health"]
    assert [f["check"] for f in health] == ["loss_stuck", "below_popularity"]
    stuck, below = health
    assert "--set train.lr=1e-08" in stuck["suggestion"] and "learning rate" in stuck["cause"]
    assert stuck["epoch"] == 2 and abs(stuck["loss"] - LN2) <= 0.01 * LN2
    assert stuck["loss"] == pytest.approx(result.history[2]["loss_bpr"])
    popular = evaluate(Popularity(tiny, Popularity.Config()), tiny, "val", cfg.eval)["recall@20"]
    assert below["popularity_val"] == pytest.approx(popular)  # the baseline, on the same data and protocol
    assert below["val"] == pytest.approx(max(h["val_recall@20"] for h in result.history[:3]))
    assert below["val"] <= below["popularity_val"]


def test_silent_on_a_normal_run(tiny: Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(None, ["train.epochs=4", "train.lr=0.01", *FAST], model_name="lightgcn")
    with caplog.at_level(logging.WARNING, logger="modalrec.train"):
        result = train(cfg, data=tiny, out=tmp_path)
    assert health_warnings(caplog) == []
    assert json.loads((tmp_path / "metrics.json").read_text())["health"] == []
    # the run really moved away from ln 2 and beat popularity: the silence is earned
    assert result.history[2]["loss_bpr"] < 0.9 * LN2
    popular = evaluate(Popularity(tiny, Popularity.Config()), tiny, "val", cfg.eval)["recall@20"]
    assert result.metrics["valid"]["recall@20"] > popular


def test_health_epochs_zero_turns_the_check_off(tiny: Dataset, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(
        None, ["train.epochs=4", "train.lr=1e-9", "train.health_epochs=0", *FAST], model_name="mf"
    )
    with caplog.at_level(logging.WARNING, logger="modalrec.train"):
        result = train(cfg, data=tiny)
    assert health_warnings(caplog) == [] and result.metrics["health"] == []


def test_too_short_a_run_is_not_judged(tiny: Dataset) -> None:
    cfg = load_config(None, ["train.epochs=2", "train.lr=1e-9", *FAST], model_name="mf")
    assert train(cfg, data=tiny).metrics["health"] == []  # 2 epochs < health_epochs = 3


def test_stuck_loss_rule() -> None:
    monitor = HealthMonitor(epochs=3)
    assert monitor.loss_stuck(0.6900)  # within 1 % of ln 2 = 0.6931 (0.6862 .. 0.7001)
    assert not monitor.loss_stuck(0.6850)
    monitor.initial_loss = 0.5  # a model whose first step is already below ln 2: stuck means near 0.5
    assert monitor.loss_stuck(0.4960) and monitor.loss_stuck(0.5049)
    assert not monitor.loss_stuck(0.4940)
    assert math.isclose(LN2, 0.6931471805599453)


def test_negative_health_epochs_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="health_epochs"):
        load_config(None, ["train.health_epochs=-1"], model_name="mf")


def test_auxiliary_loss_weights_come_first_when_bpr_is_stuck(tiny: Dataset) -> None:
    # SGL has an InfoNCE term beside BPR: its weight (ssl_weight 0.1) is the first override suggested, at 1/100
    cfg = load_config(
        None, ["train.epochs=3", "train.lr=1e-9", "model.ssl_weight=0.1", *FAST], model_name="sgl"
    )
    stuck = train(cfg, data=tiny).metrics["health"][0]
    assert stuck["check"] == "loss_stuck" and "auxiliary loss (cl)" in stuck["cause"]
    assert stuck["suggestion"] == (
        "--set model.ssl_weight=0.001 or --set train.lr=1e-08 or --set model.reg_weight=1e-05"
    )


@pytest.mark.parametrize("cut", [1, 4])  # interrupted before the check, and after it
def test_resumed_run_keeps_the_findings(tiny: Dataset, tmp_path: Path, cut: int) -> None:
    class InterruptAt(Callback):
        def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
            if epoch == cut:
                raise KeyboardInterrupt

    cfg = load_config(None, ["train.epochs=5", "train.lr=1e-9", "train.patience=100", *FAST], model_name="mf")
    full = train(cfg, data=tiny, out=tmp_path / "full").metrics["health"]
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, data=tiny, out=tmp_path / "cut", callbacks=[InterruptAt()]).fit()
    resumed = Trainer(cfg, data=tiny, out=tmp_path / "cut", resume=True).fit().metrics["health"]
    assert [f["check"] for f in full] == ["loss_stuck", "below_popularity"]
    assert resumed == full


def test_a_slow_start_that_ends_above_popularity_is_not_flagged(
    tiny: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    # MF at lr 3e-3: the loss moves (0.6928 -> 0.673 by epoch 3) while validation is still below popularity
    # (0.14 vs 0.42) after 3 epochs; it passes popularity at epoch 6 and ends at 0.72: judged at the end, not early
    cfg = load_config(None, ["train.epochs=12", "train.lr=0.003", *FAST], model_name="mf")
    with caplog.at_level(logging.WARNING, logger="modalrec.train"):
        result = train(cfg, data=tiny)
    popular = evaluate(Popularity(tiny, Popularity.Config()), tiny, "val", cfg.eval)["recall@20"]
    assert max(h["val_recall@20"] for h in result.history[:3]) < popular  # what an early check would see
    assert result.metrics["valid"]["recall@20"] > popular
    assert health_warnings(caplog) == [] and result.metrics["health"] == []


def test_below_popularity_at_the_end_of_a_learning_run_is_flagged_then(
    tiny: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    # the same run stopped after 5 epochs: the loss moved, but the best validation (0.30) is below popularity
    cfg = load_config(None, ["train.epochs=5", "train.lr=0.003", *FAST], model_name="mf")
    with caplog.at_level(logging.WARNING, logger="modalrec.train"):
        result = train(cfg, data=tiny)
    [below] = result.metrics["health"]
    assert below["check"] == "below_popularity" and below["epoch"] == result.metrics["best_epoch"]
    assert below["val"] == pytest.approx(max(h["val_recall@20"] for h in result.history))
    assert (
        len(health_warnings(caplog)) == 1
        and "ranks no better than item popularity" in health_warnings(caplog)[0]
    )
