"""The training loop: BPR batches, named loss terms, validation early stopping, best-state restore, one test.

Honest evaluation: epochs are selected on the validation split only; the test split is evaluated once, on the
restored best state, after training ends.

Reproducibility: the initial weights come from the run seed; epoch e's batches and random draws (dropout,
augmentations) come from streams seeded by (seed, e), so a run resumed from its last epoch checkpoint continues
exactly as an uninterrupted one would.

The loop only trains, validates and keeps the best state; the run folder, the epoch log, the moving average, early
stopping and data parallelism are callbacks (:mod:`modalrec.callbacks`, docs/architecture.md).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from modalrec import run_folder
from modalrec.callbacks import (
    Callback,
    EarlyStopping,
    EpochLog,
    FitState,
    Metrics,
    MovingAverage,
    ProgressBar,
    RunFolder,
    RunResult,
    all_entered,
)
from modalrec.checkpoint import load_checkpoint, load_state
from modalrec.config import RunConfig, check_against_data, dump_config
from modalrec.data.dataset import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.data.source import dataset_from_config, prepared
from modalrec.distributed import DistributedSync, world_of_this_process
from modalrec.errors import ConfigError, ModalrecError
from modalrec.evaluate import evaluate, group_breakdown
from modalrec.health import HealthMonitor
from modalrec.models import build_model
from modalrec.models.base import TrainSettings
from modalrec.optim import Adam, LRSchedule
from modalrec.runtime import set_threads, training_phase

log = logging.getLogger("modalrec.train")

__all__ = ["RunResult", "Trainer", "TrainingError", "build_model", "train"]


class TrainingError(ModalrecError):
    """Training cannot go on (e.g. a loss became NaN); the best checkpoint so far is kept."""


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


def epoch_seed(seed: int, epoch: int) -> int:
    """The torch seed of one epoch: a fixed mix of the run seed and the epoch number."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**31 - 1)


def default_run_dir(cfg: RunConfig, data_name: str, root: Path = Path("runs")) -> Path:
    """runs/<model>_<dataset>_seed<N>, with -2, -3, ... appended when it already exists."""
    base = root / f"{cfg.model_name}_{data_name}_seed{cfg.seed}"
    path, n = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{n}")
        n += 1
    return path


class Trainer:
    """Runs one configuration end to end and writes the run folder.

    The loop itself only trains, validates and selects the best state; everything else is a callback
    (:mod:`modalrec.callbacks`): the run folder and checkpoints, the epoch log, the progress bar, the moving
    average, early stopping, the training-health monitor and, under torchrun, data parallelism. Extra callbacks
    run after the built-ins.

    Args:
        cfg: the run configuration.
        data: a dataset to use instead of loading ``cfg.data``.
        out: the run folder (None: do not write files).
        resume: continue from ``out/last.pt`` when present (a finished run is re-reported, not retrained).
        callbacks: extra callbacks, called after the built-in ones.
    """

    def __init__(
        self,
        cfg: RunConfig,
        data: Dataset | None = None,
        out: Path | None = None,
        resume: bool = False,
        callbacks: Sequence[Callback] = (),
    ):
        self.cfg = cfg
        self.out = Path(out) if out is not None else None
        self.resume = resume
        set_threads(cfg.train.threads)
        self.rank, self.world, local_rank = world_of_this_process()
        self.device = resolve_device(cfg.device)
        if self.world > 1 and self.device.type == "cuda":  # pragma: no cover - no GPU here
            self.device = torch.device("cuda", local_rank)  # one device per rank
        self.data = (
            prepared(data, cfg.data, cfg.seed)
            if data is not None
            else dataset_from_config(cfg.data, cfg.seed)
        )
        check_against_data(cfg, self.data.n_items, self.data.modalities)  # before the model is built
        self.model = build_model(cfg, self.data, self.device)
        self.extra_callbacks = list(callbacks)
        self.callbacks: list[Callback] = []
        self.state = FitState()

    @property
    def primary(self) -> bool:
        """Whether this process reports and writes the run (always, except data-parallel ranks > 0)."""
        return self.rank == 0

    @property
    def history(self) -> list[dict[str, Any]]:
        """One row per finished epoch (seconds, loss terms, validation metrics)."""
        return self.state.history

    def request_stop(self, reason: str) -> None:
        """End training after the current epoch (the first reason given is kept and logged)."""
        if self.state.stop_reason is None:
            self.state.stop_reason = reason

    # ---- internals --------------------------------------------------------------------------------------------
    def _settings(self) -> TrainSettings:
        t = self.cfg.train
        return TrainSettings(lr=t.lr, weight_decay=t.weight_decay, optimizer=t.optimizer)

    def _schedulers(self, optimizers: list[Adam]) -> list[LRSchedule]:
        t = self.cfg.train
        if t.lr_schedule in ("step", "cosine"):
            return [LRSchedule(o, t.lr_schedule, t.lr_step, t.lr_gamma, max(1, t.epochs)) for o in optimizers]
        return []

    def default_callbacks(self, steps_per_epoch: int) -> list[Callback]:
        """The built-ins for this run; only the primary process logs and writes files."""
        t = self.cfg.train
        callbacks: list[Callback] = []
        if self.world > 1:
            callbacks.append(DistributedSync())  # first: weights are broadcast before anything reads them
        if t.ema > 0 and self.model.trainable:
            callbacks.append(MovingAverage(t.ema))
        if self.primary:
            callbacks.append(EpochLog(self.out))
            if t.progress:
                callbacks.append(ProgressBar(steps_per_epoch))
            if self.model.trainable:  # before RunFolder: it adds "health" to the metrics RunFolder writes
                callbacks.append(HealthMonitor(t.health_epochs))
            if self.out is not None:
                callbacks.append(RunFolder(self.out))
        callbacks.append(EarlyStopping(t.patience, t.patience_unit, self.data.train.nnz))
        return callbacks

    def payload(
        self, state: dict[str, torch.Tensor], epoch: int, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A checkpoint of ``state`` after ``epoch`` (format modalrec-checkpoint-1)."""
        return {
            "format": "modalrec-checkpoint-1",
            "state_dict": {k: v.detach().cpu() for k, v in state.items()},
            "config": self.cfg.to_dict(),
            "model": self.cfg.model_name,
            "epoch": epoch,
            "n_users": self.data.n_users,
            "n_items": self.data.n_items,
            "user_ids": [str(u) for u in self.data.user_ids],
            "item_ids": [str(i) for i in self.data.item_ids],
            **(extra or {}),
        }

    def resume_payload(self) -> dict[str, Any]:
        """What ``last.pt`` holds: the current weights, optimiser state, counters, history, callback states."""
        st = self.state
        extra: dict[str, Any] = {
            "optimizers": [o.state_dict() for o in st.optimizers],
            "schedulers": [s.state_dict() for s in st.schedulers],
            "ema": None,  # the format always has this key; MovingAverage fills it
            "best_score": st.best_score,
            "best_epoch": st.best_epoch,
            "bad": st.bad,
            "history": json.dumps(st.history),
        }
        for cb in self.callbacks:
            if cb.state_key:
                extra[cb.state_key] = cb.state_dict()
        return self.payload(self.model.state_dict(), st.epoch, extra)

    def _model_settings(self) -> dict[str, Any]:
        """{"name": model, hyper-parameter: value, ...} for every field of the model's Config (defaults included)."""
        values = getattr(self.model, "cfg", None)
        if values is None or not dataclasses.is_dataclass(values) or isinstance(values, type):
            return dict(self.cfg.model)
        return {
            "name": self.cfg.model_name,
            **json.loads(json.dumps(dataclasses.asdict(values), default=str)),
        }

    def evaluate_split(self, split: str, per_user: bool = False) -> Metrics:
        """Evaluate the model on ``split`` through the callbacks' ``around_evaluation``."""

        def run() -> Metrics:
            return evaluate(self.model, self.data, split, self.cfg.eval, per_user=per_user)

        for cb in self.callbacks:
            run = functools.partial(cb.around_evaluation, self, run)
        return run()

    # ---- the loop -------------------------------------------------------------------------------------------
    def fit(self) -> RunResult:
        """Train with early stopping, restore the best state, evaluate test once, write the run folder."""
        self.state = FitState()
        if self.out is not None:
            finished = self._prepare_run_dir()
            if finished is not None:
                return finished
        sampler = BPRSampler(
            self.data.train, self.cfg.train.batch_size, self.cfg.seed, self.cfg.train.sampler
        )
        self.callbacks = [*self.default_callbacks(len(sampler)), *self.extra_callbacks]
        result: RunResult | None = None
        try:
            result = self._fit(sampler)
            return result
        finally:
            for cb in self.callbacks:
                cb.on_fit_end(self, result)

    def _prepare_run_dir(self) -> RunResult | None:
        """A finished run being resumed is reported; otherwise the run really starts and config.yaml is written
        (atomically, only now: a refused or failed attempt never leaves one describing a run that did not
        happen; see :mod:`modalrec.run_folder`)."""
        assert self.out is not None
        finished = self.out / "metrics.json"
        if self.resume and finished.exists():
            if self.primary:
                log.info("run in %s already finished; reporting its metrics", self.out)
            metrics = run_folder.read_metrics(finished)  # a truncated metrics.json is a clear error
            load_state(self.model, load_checkpoint(self.out / "checkpoint.pt")["state_dict"], self.out)
            return RunResult(self.out, metrics, self.model, self.data, primary=self.primary)
        if self.primary:  # only rank 0 touches the folder: another rank could remove rank 0's temporary files
            run_folder.start(self.out, dump_config(self.cfg), fresh=not self.resume)
        return None

    def _fit(self, sampler: BPRSampler) -> RunResult:
        st, model = self.state, self.model
        st.optimizers = model.configure_optimizers(self._settings()) if model.trainable else []
        st.schedulers = self._schedulers(st.optimizers)
        start = self._restore() if self.resume else 0
        for cb in self.callbacks:
            cb.on_fit_start(self)
        if start > 0 and self.primary:  # after on_fit_start: the run's log.txt is open
            log.info("resumed from %s at epoch %d", self.out / "last.pt", start)  # type: ignore[operator]
        epochs = self.cfg.train.epochs if model.trainable else 0
        for epoch in range(start, epochs):
            self._run_epoch(
                sampler, epoch, validate=(epoch + 1) % self.cfg.train.eval_every == 0 or epoch == epochs - 1
            )
            if st.stop_reason is not None:
                if self.primary:
                    log.info("early stop: %s", st.stop_reason)
                break
        return self._finish()

    def _restore(self) -> int:
        """Load ``last.pt`` (weights, optimisers, counters, history, callback states); the epoch to start at."""
        st = self.state
        last_path = self.out / "last.pt" if self.out is not None else None
        if last_path is None or not last_path.exists():
            return 0
        # a last.pt without the whole training state is a clear error, not a KeyError
        ckpt = run_folder.resume_state(
            load_checkpoint(last_path), last_path, len(st.optimizers), len(st.schedulers)
        )
        load_state(self.model, ckpt["state_dict"], last_path)
        for opt, saved in zip(st.optimizers, ckpt["optimizers"], strict=True):
            opt.load_state_dict(saved)
        for sch, saved in zip(st.schedulers, ckpt["schedulers"], strict=True):
            sch.load_state_dict(saved)
        st.best_score, st.best_epoch, st.bad = ckpt["best_score"], ckpt["best_epoch"], ckpt["bad"]
        st.history = ckpt["history"]  # already parsed and checked by resume_state
        st.epoch_times = [float(h["seconds"]) for h in st.history]
        st.resumed = {cb.state_key: ckpt.get(cb.state_key) for cb in self.callbacks if cb.state_key}
        best_path = last_path.with_name("checkpoint.pt")
        if best_path.exists():
            st.best_state = load_checkpoint(best_path)["state_dict"]
        return int(ckpt["epoch"]) + 1

    def _run_epoch(self, sampler: BPRSampler, epoch: int, validate: bool) -> None:
        st, model = self.state, self.model
        tic, tic_cpu = time.perf_counter(), time.process_time()
        st.epoch = epoch
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch))
        model.train()
        model.on_epoch_start(epoch)
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch)
        sums, n_batches, pairs = self._train_batches(sampler, epoch)
        for sch in st.schedulers:
            sch.step()
        seconds = time.perf_counter() - tic
        st.epoch_times.append(seconds)
        row: dict[str, Any] = {
            "epoch": epoch,
            "seconds": round(seconds, 4),
            "cpu_seconds": round(time.process_time() - tic_cpu, 4),  # all threads: robust to a busy machine
            "batches": n_batches,
            "pairs": pairs,  # training triples stepped on (all ranks together): what patience_unit=pairs counts
        }
        row.update({f"loss_{k}": v / max(1, n_batches) for k, v in sums.items()})
        # figures that show whether the model's components act (e.g. MMSSL's critic), before validation
        diagnostics = model.epoch_diagnostics() if model.trainable else {}
        row.update({f"diag_{k}": v for k, v in diagnostics.items()})
        if validate:
            row.update(self._validate(epoch))
        st.history.append(row)
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, row)

    def _train_batches(self, sampler: BPRSampler, epoch: int) -> tuple[dict[str, float], int, int]:
        """One pass over the epoch's batches: the summed loss terms, the number of steps and of pairs."""
        t, st = self.cfg.train, self.state
        sums: dict[str, float] = {}
        n_batches = pairs = st.epoch_pairs = 0
        with training_phase():
            for batch in sampler.epoch(epoch):
                if t.max_batches and n_batches >= t.max_batches:
                    break
                pairs += len(batch.users)  # before sharding: the pairs of the step, all ranks together
                st.epoch_pairs = pairs
                for cb in self.callbacks:
                    batch = cb.on_batch(self, batch)
                terms = self.model.train_step(batch.to(self.device), st.optimizers, t.grad_clip or None)
                for cb in self.callbacks:
                    cb.on_step_end(self, terms)
                for k, v in terms.items():
                    if not math.isfinite(v):
                        raise TrainingError(
                            f"loss term '{k}' became {v} in epoch {epoch}; lower train.lr or set "
                            f"train.grad_clip (the best checkpoint so far is kept"
                            f"{' in ' + str(self.out) if self.out else ''})"
                        )
                    sums[k] = sums.get(k, 0.0) + v
                n_batches += 1
                if st.stop_reason is not None:
                    break
        return sums, n_batches, pairs

    def _validate(self, epoch: int) -> dict[str, Any]:
        """Validate, keep the state if best (on the weights the callbacks chose), update the counters."""
        st, metric = self.state, self.cfg.eval.metric
        with all_entered([cb.validation_weights(self) for cb in self.callbacks]):
            val = self.evaluate_split("val")
            improved = float(val[metric]) > st.best_score
            if improved:
                st.best_state = copy.deepcopy(
                    {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
                )
        if improved:
            st.best_score, st.best_epoch, st.bad = float(val[metric]), epoch, 0
        else:
            st.bad += 1
        for cb in self.callbacks:
            cb.on_validation_end(self, epoch, val, improved)
        return {f"val_{k}": val[k] for k in (metric, "recall@20", "ndcg@20") if k in val}

    def _finish(self) -> RunResult:
        """Restore the best state, evaluate validation and test once, and assemble metrics.json."""
        cfg, st, model = self.cfg, self.state, self.model
        if st.best_state is None:  # never validated (no epochs, or a model with nothing to learn)
            st.best_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            st.best_epoch = max(-1, len(st.history) - 1)
        load_state(model, st.best_state, "best state")
        tic = time.perf_counter()
        valid = self.evaluate_split("val")
        eval_seconds = time.perf_counter() - tic
        test = self.evaluate_split("test", per_user=True)
        metrics = {
            "model": cfg.model_name,
            "dataset": self.data.name,
            "seed": cfg.seed,
            "best_epoch": st.best_epoch,
            "epochs_run": len(st.history),
            "train_seconds": round(sum(st.epoch_times), 3),
            "epoch_seconds_median": round(statistics.median(st.epoch_times), 4) if st.epoch_times else 0.0,
            "eval_seconds": round(eval_seconds, 4),
            "protocol": cfg.eval.describe(),
            "valid": {k: v for k, v in valid.items() if k not in ("per_user", "user_index")},
            "test": {k: v for k, v in test.items() if k not in ("per_user", "user_index")},
            "test_groups": group_breakdown(test, self.data, cfg.eval.group_bins),
            # every hyper-parameter the model was built with (defaults included): what the results registry records
            "model_config": self._model_settings(),
            # drop/fill settings and the items lacking each modality (before filling); see data.missing
            "missing_content": self.data.missing_summary,
        }
        if self.primary:
            shown = " ".join(
                f"{k}={test[k]:.4f}" for k in ("recall@20", "precision@20", "ndcg@20") if k in test
            )
            log.info("best epoch %d | test %s", st.best_epoch, shown)
        return RunResult(self.out, metrics, model, self.data, st.history, self.primary)


def train(
    cfg: RunConfig,
    data: Dataset | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Convenience wrapper: ``Trainer(cfg, data, out, resume, callbacks).fit()``."""
    return Trainer(cfg, data, Path(out) if out is not None else None, resume, callbacks).fit()
