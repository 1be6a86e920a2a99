"""The training-health monitor: one clear warning when a run is not learning, recorded in metrics.json.

After ``train.health_epochs`` epochs (and at least one validation), :class:`HealthMonitor` runs two checks once:

* **stuck loss**: the main ranking loss (the ``bpr`` term) has not moved from its initial value: its epoch mean is
  within ``tolerance`` (relative, 1 %) of the loss of the very first step, or of ln 2 (the BPR loss
  ``-log σ(s⁺ - s⁻)`` when positive and negative scores are equal, i.e. when nothing separates them);
* **below popularity**: the best validation value of ``eval.metric`` so far is not above the value the
  most-popular baseline (:class:`modalrec.models.popularity.Popularity`) reaches on the same data under the same
  :class:`~modalrec.config.EvalConfig` (computed once, at the check).

When either fails, one warning names what was seen, the likely cause and overrides to try; the findings (each with
``check``, ``epoch``, the figures compared, ``message``, ``cause`` and ``suggestion``) are added to the run's
metrics as ``"health"`` (a list, empty for a healthy run), which the run folder writes to metrics.json.
The checks only read the history and the trainer's state; they never change training.
"""

from __future__ import annotations

import logging
import math
from dataclasses import fields, is_dataclass
from typing import Any

from modalrec.callbacks import Callback, RunResult, TrainerView
from modalrec.evaluate import evaluate
from modalrec.models.popularity import Popularity

log = logging.getLogger("modalrec.train")

LN2 = math.log(2.0)  # the BPR loss at equal positive and negative scores
MAIN_LOSS = "bpr"  # the term whose movement shows that the ranking is being learned


class HealthMonitor(Callback):
    """Checks once, after ``epochs`` epochs, that the main loss moved and that validation beats popularity.

    Args:
        epochs: epochs to wait before checking (0 disables the monitor).
        tolerance: relative distance from the initial loss (and from ln 2) that still counts as "not moved".

    Must run before :class:`~modalrec.callbacks.RunFolder` (``on_fit_end`` adds ``"health"`` to the metrics that
    RunFolder writes); ``Trainer.default_callbacks`` installs it so.
    """

    state_key = "health"  # the findings and the initial loss survive --resume

    def __init__(self, epochs: int, tolerance: float = 0.01) -> None:
        self.epochs = epochs
        self.tolerance = tolerance
        self.initial_loss: float | None = None  # the main loss of the first step of the run
        self.checked = False
        self.findings: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: TrainerView) -> None:
        saved = trainer.state.resumed.get(self.state_key)
        if isinstance(saved, dict):
            self.initial_loss = saved.get("initial_loss")
            self.checked = bool(saved.get("checked", False))
            self.findings = list(saved.get("findings", []))

    def on_step_end(self, trainer: TrainerView, terms: dict[str, float]) -> None:
        if self.initial_loss is None and MAIN_LOSS in terms:
            self.initial_loss = float(terms[MAIN_LOSS])

    def on_epoch_end(self, trainer: TrainerView, epoch: int, row: dict[str, Any]) -> None:
        st = trainer.state
        if self.checked or self.epochs <= 0 or len(st.history) < self.epochs or st.best_epoch < 0:
            return  # too early, or nothing validated yet: wait for the first validation after `epochs`
        self.checked = True
        self.findings = self.check(trainer, row)
        if self.findings:  # one warning: what was seen, then the first finding's cause and the overrides
            seen = " ".join(f["message"] for f in self.findings)
            first = self.findings[0]
            log.warning(
                "training health: %s Likely cause: %s; try %s.", seen, first["cause"], first["suggestion"]
            )

    def on_fit_end(self, trainer: TrainerView, result: RunResult | None) -> None:
        if result is not None:
            result.metrics["health"] = self.findings

    def state_dict(self) -> Any:
        return {"initial_loss": self.initial_loss, "checked": self.checked, "findings": self.findings}

    # ---- the checks ---------------------------------------------------------------------------------------------
    def check(self, trainer: TrainerView, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The findings after epoch ``row["epoch"]`` (empty when the run looks healthy)."""
        findings: list[dict[str, Any]] = []
        epoch, n_epochs = int(row["epoch"]), len(trainer.state.history)
        loss = row.get(f"loss_{MAIN_LOSS}")
        if loss is not None and self.loss_stuck(float(loss)):
            findings.append(
                {
                    "check": "loss_stuck",
                    "epoch": epoch,
                    "loss": float(loss),
                    "initial_loss": self.initial_loss,
                    "message": (
                        f"The {MAIN_LOSS.upper()} loss is {float(loss):.4f} after {n_epochs} epochs, within "
                        f"{self.tolerance:.0%} of its initial value "
                        f"{self.initial_loss if self.initial_loss is not None else LN2:.4f} (ln 2 = {LN2:.4f} "
                        "means positives and negatives still score alike): the model is not learning."
                    ),
                    "cause": "a learning rate too small for this data, or regularisation too strong",
                    "suggestion": suggestions(trainer),
                }
            )
        metric = trainer.cfg.eval.metric
        if trainer.cfg.model_name != Popularity.name:
            baseline: dict[str, Any] = evaluate(
                Popularity(trainer.data, Popularity.Config()), trainer.data, "val", trainer.cfg.eval
            )
            popular = float(baseline[metric])
            best = trainer.state.best_score
            if best <= popular:
                findings.append(
                    {
                        "check": "below_popularity",
                        "epoch": epoch,
                        "val": best,
                        "popularity_val": popular,
                        "message": (
                            f"The best validation {metric} after {n_epochs} epochs is {best:.4f}, not above the "
                            f"most-popular baseline's {popular:.4f} on the same data: the model ranks no better "
                            "than item popularity."
                        ),
                        "cause": "under-training (a learning rate too small for this data), or regularisation "
                        "too strong",
                        "suggestion": suggestions(trainer),
                    }
                )
        return findings

    def loss_stuck(self, loss: float) -> bool:
        """Whether ``loss`` is within ``tolerance`` of the initial loss or of ln 2 (relative)."""
        refs = [LN2] + ([self.initial_loss] if self.initial_loss is not None else [])
        return any(abs(loss - ref) <= self.tolerance * abs(ref) for ref in refs if ref > 0)


def suggestions(trainer: TrainerView) -> str:
    """Overrides to try: ten times the learning rate (1e-3 when it is 0) and a tenth of each positive
    regularisation weight of the model's configuration (fields named ``reg*`` or ``*decay*``)."""
    lr = trainer.cfg.train.lr
    parts = [f"--set train.lr={lr * 10:g}" if lr > 0 else "--set train.lr=1e-3"]
    cfg = trainer.model.cfg
    if is_dataclass(cfg):
        for f in fields(cfg):
            value = getattr(cfg, f.name)
            regularising = f.name.startswith("reg") or "decay" in f.name
            if regularising and isinstance(value, float) and value > 0:
                parts.append(f"--set model.{f.name}={value / 10:g}")
    if trainer.cfg.train.weight_decay > 0:
        parts.append(f"--set train.weight_decay={trainer.cfg.train.weight_decay / 10:g}")
    return " or ".join(parts)
