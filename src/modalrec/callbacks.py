"""The Trainer's extension points: a small callback protocol and the built-in callbacks.

A callback is an object with some of the hooks of :class:`Callback` (the base class does nothing in each one).
The Trainer calls them in list order, at these points of ``fit``::

    on_fit_start                          once, after a resumed run's state is restored
    for each epoch:
        on_epoch_start(epoch)
        for each batch:
            batch = on_batch(batch)       the batch this process trains on (data parallelism shards it)
            model.train_step(batch)
            on_step_end(terms)            the step's loss terms; a callback may replace their values
        if the epoch is validated:
            with validation_weights():    the weights validation runs on (the moving average, say)
                metrics = around_evaluation(evaluate)
            on_validation_end(epoch, metrics, improved)
        on_epoch_end(epoch, row)          the epoch's history row
    on_fit_end(result)                    always, like ``finally``: ``result`` is None when fit failed

Any hook may call ``trainer.request_stop(reason)``: the current epoch finishes (its checkpoint is written) and
training ends there. Raising from a hook aborts the run (Optuna pruning raises ``TrialPruned``).

A callback that must survive an interruption names a ``state_key`` and implements ``state_dict`` /
``load_state_dict``: its state is written to ``last.pt`` under that key and handed back on ``--resume``.

Callbacks see the trainer through :class:`TrainerView` and the run's mutable state through :class:`FitState`;
they never replace functions or attributes of other modules or of the model.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from modalrec.atomic import atomic_write_text
from modalrec.checkpoint import save_checkpoint
from modalrec.config import RunConfig
from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.ema import ParameterAverage
from modalrec.models.base import Model
from modalrec.optim import Adam, LRSchedule
from modalrec.run_folder import metrics_json

log = logging.getLogger("modalrec.train")

Metrics = dict[str, Any]


@dataclass
class RunResult:
    """What a finished run produced (``primary``: this process reports the run; False on data-parallel ranks > 0)."""

    run_dir: Path | None
    metrics: dict[str, Any]
    model: Model
    data: Dataset
    history: list[dict[str, Any]] = field(default_factory=list)
    primary: bool = True


@dataclass
class FitState:
    """The mutable state of one ``fit``: what ``last.pt`` stores and a resumed run restores."""

    optimizers: list[Adam] = field(default_factory=list)
    schedulers: list[LRSchedule] = field(default_factory=list)
    epoch: int = -1  # the epoch in progress (or last finished)
    best_score: float = float("-inf")
    best_epoch: int = -1
    bad: int = 0  # validations since the last improvement
    best_state: dict[str, torch.Tensor] | None = None  # CPU copy of the selected weights
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_times: list[float] = field(default_factory=list)  # wall seconds of every epoch run (resumed too)
    epoch_pairs: int = 0  # training pairs stepped on so far in the current epoch (all ranks together)
    resumed: dict[str, Any] = field(default_factory=dict)  # callback states read from last.pt, by state_key
    stop_reason: str | None = None


class TrainerView(Protocol):
    """What callbacks may read and call on the Trainer."""

    cfg: RunConfig
    model: Model
    data: Dataset
    device: torch.device
    out: Path | None
    state: FitState

    def request_stop(self, reason: str) -> None: ...

    def payload(
        self, state: dict[str, torch.Tensor], epoch: int, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...

    def resume_payload(self) -> dict[str, Any]: ...


class Callback:
    """Base class of callbacks: every hook does nothing. Override the ones you need."""

    state_key: str | None = None  # set to keep state across --resume (see state_dict)

    def on_fit_start(self, trainer: TrainerView) -> None:
        """Training is about to start (a resumed run's weights and counters are already restored)."""

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        """Epoch ``epoch`` starts (after the epoch seed is set and the model's own ``on_epoch_start``)."""

    def on_batch(self, trainer: TrainerView, batch: Batch) -> Batch:
        """The batch this process trains on next (default: all of it)."""
        return batch

    def on_step_end(self, trainer: TrainerView, terms: dict[str, float]) -> None:
        """After one optimisation step; ``terms`` (the step's named losses) may be updated in place."""

    def validation_weights(self, trainer: TrainerView) -> AbstractContextManager[None]:
        """A context that holds the weights to validate (and, if best, keep) while validation runs."""
        return nullcontext()

    def around_evaluation(self, trainer: TrainerView, run: Callable[[], Metrics]) -> Metrics:
        """Run one evaluation (``run()``) and return its metrics; may share or replace them."""
        return run()

    def on_validation_end(self, trainer: TrainerView, epoch: int, metrics: Metrics, improved: bool) -> None:
        """After a validation: its metrics and whether it is the best so far (the state is updated)."""

    def on_epoch_end(self, trainer: TrainerView, epoch: int, row: dict[str, Any]) -> None:
        """After epoch ``epoch``; ``row`` is its history row (already appended to ``state.history``)."""

    def on_fit_end(self, trainer: TrainerView, result: RunResult | None) -> None:
        """Always called last; ``result`` is None when fit ended with an exception."""

    def state_dict(self) -> Any:
        """State to keep in ``last.pt`` under ``state_key`` (only called when ``state_key`` is set)."""
        return None


# ---- built-ins ------------------------------------------------------------------------------------------------


class EarlyStopping(Callback):
    """Stop when the validation metric has not improved for ``patience`` units (``train.patience_unit``).

    * ``evaluations`` (the default): ``patience`` validations without improvement, whatever an epoch holds.
    * ``pairs``: ``patience`` passes over the training pairs, i.e. ``patience × n_pairs`` training triples
      stepped on since the best validation (each epoch's ``pairs`` column of the history, counted as trained, so
      ``train.max_batches`` and the sampler's epoch length are taken into account). The same patience then means
      the same amount of training for the ``interactions`` sampler (``n_pairs`` per epoch), the ``users``
      sampler (``batch_size × batches`` per epoch) and any ``eval_every``. The check runs at validations, the
      only points where an improvement can show; with the ``interactions`` sampler, whole epochs and
      ``eval_every = 1`` both units stop at the same epoch.

    Args:
        patience: units without improvement before stopping.
        unit: ``"evaluations"`` or ``"pairs"``.
        n_pairs: training interactions of the dataset (one pass), used by the ``pairs`` unit.
    """

    def __init__(self, patience: int, unit: str = "evaluations", n_pairs: int = 0) -> None:
        if unit not in ("evaluations", "pairs"):
            raise ValueError(f"patience unit must be 'evaluations' or 'pairs', not {unit!r}")
        if unit == "pairs" and n_pairs <= 0:
            raise ValueError("the 'pairs' patience unit needs the number of training pairs")
        self.patience = patience
        self.unit = unit
        self.n_pairs = n_pairs

    def on_validation_end(self, trainer: TrainerView, epoch: int, metrics: Metrics, improved: bool) -> None:
        st, metric = trainer.state, trainer.cfg.eval.metric
        if self.unit == "evaluations":
            if st.bad >= self.patience:
                trainer.request_stop(f"no improvement of val {metric} for {st.bad} evaluations")
            return
        if improved:
            return
        passes = self.pairs_since_best(trainer, epoch) / self.n_pairs
        if passes >= self.patience:
            trainer.request_stop(
                f"no improvement of val {metric} for {passes:.2f} passes over the training pairs "
                f"({st.bad} evaluations)"
            )

    def pairs_since_best(self, trainer: TrainerView, epoch: int) -> int:
        """Training pairs stepped on after the best epoch, up to and including ``epoch`` (in progress: its
        history row is appended after validation, so its pairs are read from the trainer's running count)."""
        st = trainer.state
        done = sum(int(h.get("pairs", 0)) for h in st.history if st.best_epoch < int(h["epoch"]) < epoch)
        return done + st.epoch_pairs


class MovingAverage(Callback):
    """``train.ema``: keep θ̄ (:class:`modalrec.ema.ParameterAverage`), validate and select on it, resume it."""

    state_key = "ema"  # the key of last.pt

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.average: ParameterAverage | None = None

    def on_fit_start(self, trainer: TrainerView) -> None:
        # A resumed run started without train.ema averages from the resumed weights on.
        self.average = ParameterAverage(trainer.model, self.decay)
        saved = trainer.state.resumed.get(self.state_key)
        if saved is not None:
            self.average.load_state_dict(saved)

    def on_step_end(self, trainer: TrainerView, terms: dict[str, float]) -> None:
        assert self.average is not None
        self.average.update(trainer.model)

    def validation_weights(self, trainer: TrainerView) -> AbstractContextManager[None]:
        assert self.average is not None
        return self.average.applied(trainer.model)

    def state_dict(self) -> Any:
        return self.average.state_dict() if self.average is not None else None


class RunFolder(Callback):
    """Writes the run folder: checkpoint.pt (best state), last.pt (each epoch), history.csv, curves.png,
    metrics.json; removes last.pt once the run has finished."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.best_written = False

    def on_fit_start(self, trainer: TrainerView) -> None:
        # a resumed run's best state came from its checkpoint.pt
        self.best_written = trainer.state.best_state is not None

    def on_validation_end(self, trainer: TrainerView, epoch: int, metrics: Metrics, improved: bool) -> None:
        if improved and trainer.state.best_state is not None:
            save_checkpoint(self.out / "checkpoint.pt", trainer.payload(trainer.state.best_state, epoch))
            self.best_written = True

    def on_epoch_end(self, trainer: TrainerView, epoch: int, row: dict[str, Any]) -> None:
        save_checkpoint(self.out / "last.pt", trainer.resume_payload())

    def on_fit_end(self, trainer: TrainerView, result: RunResult | None) -> None:
        if result is None:
            return  # keep last.pt and checkpoint.pt for --resume
        st = trainer.state
        if not self.best_written and st.best_state is not None:  # never validated: the final weights
            save_checkpoint(self.out / "checkpoint.pt", trainer.payload(st.best_state, st.best_epoch))
        write_history(st.history, self.out, f"{result.metrics['model']} on {result.metrics['dataset']}")
        atomic_write_text(self.out / "metrics.json", metrics_json(result.metrics))  # strict JSON: NaN -> null
        (self.out / "last.pt").unlink(missing_ok=True)


def write_history(history: list[dict[str, Any]], out: Path, title: str) -> None:
    """history.csv (one row per epoch, the union of the rows' keys) and curves.png."""
    if not history:
        return
    keys: list[str] = []
    for h in history:
        keys += [k for k in h if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out / "history.csv", buf.getvalue())
    from modalrec.plots import plot_curves

    plot_curves(history, out / "curves.png", title)


class EpochLog(Callback):
    """One log line per epoch ("epoch 3 1.20s bpr=0.4123 reg=0.0100 | val recall@20=0.0812 *"), also written
    to the run folder's log.txt when ``out`` is given."""

    def __init__(self, out: Path | None = None) -> None:
        self.out = out
        self.handler: logging.Handler | None = None
        self.val_text = ""

    def on_fit_start(self, trainer: TrainerView) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.out / "log.txt", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        handler.setLevel(logging.INFO)
        log.addHandler(handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)  # the run's log.txt always gets the epoch lines
        self.handler = handler

    def on_validation_end(self, trainer: TrainerView, epoch: int, metrics: Metrics, improved: bool) -> None:
        metric = trainer.cfg.eval.metric
        self.val_text = f" | val {metric}={float(metrics[metric]):.4f}" + (" *" if improved else "")

    def on_epoch_end(self, trainer: TrainerView, epoch: int, row: dict[str, Any]) -> None:
        losses = " ".join(f"{k[5:]}={v:.4f}" for k, v in row.items() if k.startswith("loss_"))
        diag = " ".join(f"{k[5:]}={v:.4g}" for k, v in row.items() if k.startswith("diag_"))
        log.info(
            f"epoch {epoch:4d} {row['seconds']:6.2f}s {losses}{' | ' + diag if diag else ''}{self.val_text}"
        )
        self.val_text = ""

    def on_fit_end(self, trainer: TrainerView, result: RunResult | None) -> None:
        if self.handler is not None:
            log.removeHandler(self.handler)
            self.handler.close()
            self.handler = None


class ProgressBar(Callback):
    """A tqdm bar per epoch on an interactive stderr (``train.progress``)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=f"epoch {epoch}", leave=False)

    def on_step_end(self, trainer: TrainerView, terms: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, trainer: TrainerView, epoch: int, row: dict[str, Any]) -> None:
        self._close()

    def on_fit_end(self, trainer: TrainerView, result: RunResult | None) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def all_entered(contexts: list[AbstractContextManager[None]]) -> Iterator[None]:
    """Enter every context of ``contexts`` in order (exit in reverse, also on errors)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        for ctx in contexts:
            stack.enter_context(ctx)
        yield
