"""train.ema: the moving average of the weights, its warm-up, evaluation on it, resume and config checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from modalrec.callbacks import Callback, TrainerView
from modalrec.config import load_config
from modalrec.data import Dataset
from modalrec.ema import ParameterAverage
from modalrec.errors import ConfigError
from modalrec.train import Trainer, train

FAST = ["train.batch_size=512", "eval.ks=[10,20]", "train.progress=false", "train.threads=1"]


class InterruptAt(Callback):
    """Raises KeyboardInterrupt when epoch ``epoch`` starts (as a kill would), leaving last.pt behind."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def interrupt_at_epoch_2(trainer: Trainer) -> None:
    """Run ``trainer`` until a KeyboardInterrupt at the start of epoch 2, leaving its last.pt behind."""
    trainer.extra_callbacks.append(InterruptAt(2))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


def test_update_follows_the_warmed_up_decay_by_hand() -> None:
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
    average = ParameterAverage(layer, decay=0.9)
    expected = torch.tensor([[1.0, 2.0]])
    for step, value in enumerate([3.0, 5.0, -1.0]):
        with torch.no_grad():
            layer.weight.fill_(value)
        beta = min(0.9, (1 + step) / (10 + step))  # 0.1, 2/11, 0.25: the warm-up, below 0.9
        expected = beta * expected + (1 - beta) * value
        average.update(layer)
        torch.testing.assert_close(average.shadow[0], expected)


def test_applied_swaps_the_average_in_and_restores_the_weights_even_on_error() -> None:
    layer = nn.Linear(3, 1)
    average = ParameterAverage(layer, decay=0.5)
    with torch.no_grad():
        layer.weight.add_(1.0)
    own = layer.weight.detach().clone()
    with pytest.raises(RuntimeError), average.applied(layer):
        torch.testing.assert_close(layer.weight.detach(), average.shadow[0])
        raise RuntimeError("evaluation failed")
    torch.testing.assert_close(layer.weight.detach(), own)


def test_ema_run_evaluates_and_keeps_the_averaged_weights(
    tiny: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[torch.Tensor]] = []
    original = ParameterAverage.applied

    def recording(self: ParameterAverage, model: nn.Module):  # type: ignore[no-untyped-def]
        seen.append([s.clone() for s in self.shadow])
        return original(self, model)

    monkeypatch.setattr(ParameterAverage, "applied", recording)
    plain = train(load_config(None, ["train.epochs=1", *FAST], model_name="mf", seed=2), data=tiny)
    averaged = train(
        load_config(None, ["train.epochs=1", "train.ema=0.95", *FAST], model_name="mf", seed=2), data=tiny
    )
    assert len(seen) == 1  # one validation, on the average
    for param, shadow in zip(averaged.model.parameters(), seen[0], strict=True):
        torch.testing.assert_close(param.detach(), shadow)  # the kept best state is the average
    assert not torch.equal(averaged.model.user_emb, plain.model.user_emb)  # type: ignore[arg-type]
    assert averaged.metrics["valid"] != plain.metrics["valid"]


def test_resume_with_ema_matches_uninterrupted(tiny: Dataset, tmp_path: Path) -> None:
    overrides = ["train.epochs=5", "train.patience=100", "train.ema=0.9", *FAST]
    cfg = load_config(None, overrides, model_name="lightgcn", seed=1)
    full = train(cfg, data=tiny, out=tmp_path / "full").metrics
    interrupt_at_epoch_2(Trainer(cfg, data=tiny, out=tmp_path / "cut"))
    resumed = Trainer(cfg, data=tiny, out=tmp_path / "cut", resume=True).fit().metrics
    assert resumed["test"] == full["test"] and resumed["valid"] == full["valid"]


@pytest.mark.parametrize("value", ["1.0", "-0.1", "nan"])
def test_ema_outside_zero_one_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match=r"train\.ema"):
        load_config(None, [f"train.ema={value}"], model_name="mf")


def test_resuming_a_run_without_average_starts_it_from_the_resumed_weights(
    tiny: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modalrec.checkpoint import load_checkpoint

    plain = load_config(None, ["train.epochs=4", "train.patience=100", *FAST], model_name="mf", seed=1)
    interrupt_at_epoch_2(Trainer(plain, data=tiny, out=tmp_path / "run"))
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["state_dict"]
    starts: list[list[torch.Tensor]] = []
    original = ParameterAverage.__init__

    def recording(self: ParameterAverage, model: nn.Module, decay: float) -> None:
        original(self, model, decay)
        starts.append([s.clone() for s in self.shadow])

    monkeypatch.setattr(ParameterAverage, "__init__", recording)
    averaged = load_config(
        None, ["train.epochs=4", "train.patience=100", "train.ema=0.9", *FAST], model_name="mf", seed=1
    )
    trainer = Trainer(averaged, data=tiny, out=tmp_path / "run", resume=True)
    fresh = trainer.model.user_emb.detach().clone()  # type: ignore[operator]
    trainer.fit()
    assert len(starts) == 1  # one average, created once the resumed weights are in place
    torch.testing.assert_close(starts[0][0], saved["user_emb"])
    assert not torch.equal(fresh, saved["user_emb"])  # ... which are not the fresh initialisation
