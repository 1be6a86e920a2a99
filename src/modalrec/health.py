"""The training-health monitor: one clear warning when a run is not learning, recorded in metrics.json.

After ``train.health_epochs`` epochs (and at least one validation), :class:`HealthMonitor` runs two checks once:
the stuck-loss check then, the popularity check then only when the loss is stuck, and otherwise when the run ends
(a model that is learning, e.g. MF at lr 1e-3 on MovieLens-100k, can still rank below popularity after 3 epochs
and far above it at its best epoch: judging it early would be a false alarm):

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
    """Checks once, after ``epochs`` epochs, that the main loss moved, and that validation beats popularity (then
    too if the loss is stuck, else at the end of the run).

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
        self.checked = False  # the check after `epochs` epochs is done
        self.popularity_checked = False  # the popularity check is done (at that check, or at the end)
        self.findings: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: TrainerView) -> None:
        saved = trainer.state.resumed.get(self.state_key)
        if isinstance(saved, dict):
            self.initial_loss = saved.get("initial_loss")
            self.checked = bool(saved.get("checked", False))
            self.popularity_checked = bool(saved.get("popularity_checked", self.checked))
            self.findings = list(saved.get("findings", []))

    def on_step_end(self, trainer: TrainerView, terms: dict[str, float]) -> None:
        if self.initial_loss is None and MAIN_LOSS in terms:
            self.initial_loss = float(terms[MAIN_LOSS])

    def on_epoch_end(self, trainer: TrainerView, epoch: int, row: dict[str, Any]) -> None:
        st = trainer.state
        if self.checked or self.epochs <= 0 or len(st.history) < self.epochs or st.best_epoch < 0:
            return  # too early, or nothing validated yet: wait for the first validation after `epochs`
        self.checked = True
        self.findings = self.check_loss(trainer, row)
        if self.findings:  # a stuck loss: judge validation now too, so that one warning says both
            self.findings += self.check_popularity(trainer, int(row["epoch"]))
            self.popularity_checked = True
        self.warn(self.findings)

    def on_fit_end(self, trainer: TrainerView, result: RunResult | None) -> None:
        if result is None:
            return
        st = trainer.state
        if self.checked and not self.popularity_checked:  # the best validation of the whole run
            self.popularity_checked = True
            late = self.check_popularity(trainer, st.best_epoch)
            self.warn(late)
            self.findings += late
        result.metrics["health"] = self.findings

    @staticmethod
    def warn(findings: list[dict[str, Any]]) -> None:
        """One warning: what was seen, then the first finding's cause and the overrides."""
        if findings:
            seen = " ".join(f["message"] for f in findings)
            first = findings[0]
            log.warning(
                "training health: %s Likely cause: %s; try %s.", seen, first["cause"], first["suggestion"]
            )

    def state_dict(self) -> Any:
        return {
            "initial_loss": self.initial_loss,
            "checked": self.checked,
            "popularity_checked": self.popularity_checked,
            "findings": self.findings,
        }

    # ---- the checks ---------------------------------------------------------------------------------------------
    def check_loss(self, trainer: TrainerView, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The stuck-loss finding after epoch ``row["epoch"]`` (empty when the loss moved)."""
        findings: list[dict[str, Any]] = []
        epoch, n_epochs = int(row["epoch"]), len(trainer.state.history)
        loss = row.get(f"loss_{MAIN_LOSS}")
        auxiliary = [k[5:] for k in row if k.startswith("loss_") and k[5:] not in (MAIN_LOSS, "reg")]
        if loss is not None and self.loss_stuck(float(loss)):
            cause = "a learning rate too small for this data, or regularisation too strong"
            if auxiliary:  # e.g. SGL's InfoNCE at weight 0.1 holds BPR at ln 2 on MovieLens-100k
                cause = f"an auxiliary loss ({', '.join(auxiliary)}) outweighing the {MAIN_LOSS.upper()} loss, {cause}"
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
                    "cause": cause,
                    "suggestion": suggestions(trainer, auxiliary),
                }
            )
        return findings

    def check_popularity(self, trainer: TrainerView, epoch: int) -> list[dict[str, Any]]:
        """The below-popularity finding (empty when the best validation so far beats the popularity baseline)."""
        findings: list[dict[str, Any]] = []
        metric, n_epochs = trainer.cfg.eval.metric, len(trainer.state.history)
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
                        "suggestion": suggestions(trainer, []),
                    }
                )
        return findings

    def loss_stuck(self, loss: float) -> bool:
        """Whether ``loss`` is within ``tolerance`` of the initial loss or of ln 2 (relative)."""
        refs = [LN2] + ([self.initial_loss] if self.initial_loss is not None else [])
        return any(abs(loss - ref) <= self.tolerance * abs(ref) for ref in refs if ref > 0)


def suggestions(trainer: TrainerView, auxiliary: list[str]) -> str:
    """Overrides to try, most likely first.

    With auxiliary loss terms beside BPR (``auxiliary``, e.g. ``["cl"]``): a hundredth of each positive
    auxiliary weight of the model's configuration (float fields named ``*_weight`` other than ``reg*``; on
    MovieLens-100k SGL's BPR stays at ln 2 with ``ssl_weight`` 0.1 or 0.01 and learns at 0.001). Then ten times
    the learning rate, and a tenth of each positive regularisation weight (fields named ``reg*`` or ``*decay*``).
    """
    cfg = trainer.model.cfg
    weights = {f.name: getattr(cfg, f.name) for f in fields(cfg)} if is_dataclass(cfg) else {}
    positive = {k: v for k, v in weights.items() if isinstance(v, float) and v > 0}
    parts: list[str] = []
    if auxiliary:
        parts += [
            f"--set model.{k}={v / 100:g}"
            for k, v in positive.items()
            if k.endswith("_weight") and not k.startswith("reg")
        ]
    lr = trainer.cfg.train.lr
    parts.append(f"--set train.lr={lr * 10:g}" if lr > 0 else "--set train.lr=1e-3")
    parts += [
        f"--set model.{k}={v / 10:g}" for k, v in positive.items() if k.startswith("reg") or "decay" in k
    ]
    if trainer.cfg.train.weight_decay > 0:
        parts.append(f"--set train.weight_decay={trainer.cfg.train.weight_decay / 10:g}")
    return " or ".join(parts)
