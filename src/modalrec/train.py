"""The training loop: BPR batches, named loss terms, validation early stopping, best-state restore, one test.

Honest evaluation: epochs are selected on the validation split only; the test split is evaluated once, on the
restored best state, after training ends.

Reproducibility: the initial weights come from the run seed; epoch e's batches and random draws (dropout,
augmentations) come from streams seeded by (seed, e), so a run resumed from its last epoch checkpoint continues
exactly as an uninterrupted one would.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modalrec import run_folder
from modalrec.checkpoint import atomic_write_text, load_checkpoint, load_state, save_checkpoint
from modalrec.config import RunConfig, build_model_config, check_against_data, dump_config
from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch, BPRSampler
from modalrec.data.source import dataset_from_config
from modalrec.ema import ParameterAverage
from modalrec.errors import ConfigError, ModalrecError
from modalrec.evaluate import evaluate, group_breakdown
from modalrec.models import MODELS
from modalrec.models.base import Model, TrainSettings
from modalrec.optim import Adam, LRSchedule
from modalrec.runtime import set_threads, training_phase, tune_allocator

log = logging.getLogger("modalrec.train")


class TrainingError(ModalrecError):
    """Training cannot go on (e.g. a loss became NaN); the best checkpoint so far is kept."""


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path | None
    metrics: dict[str, Any]
    model: Model
    data: Dataset
    history: list[dict[str, Any]] = field(default_factory=list)


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


def build_model(cfg: RunConfig, data: Dataset, device: torch.device) -> Model:
    """Instantiate the configured model on ``data`` with the run seed's initial weights."""
    model_cls = MODELS[cfg.model_name]
    model_cfg = build_model_config(model_cls, cfg.model)
    torch.manual_seed(cfg.seed)
    return model_cls(data, model_cfg).to(device)


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

    Args:
        cfg: the run configuration.
        data: a dataset to use instead of loading ``cfg.data``.
        out: the run folder (None: do not write files).
        resume: continue from ``out/last.pt`` when present (a finished run is re-reported, not retrained).
    """

    def __init__(
        self, cfg: RunConfig, data: Dataset | None = None, out: Path | None = None, resume: bool = False
    ):
        self.cfg = cfg
        self.out = Path(out) if out is not None else None
        self.resume = resume
        set_threads(cfg.train.threads)
        tune_allocator()
        self.device = resolve_device(cfg.device)
        self.data = data if data is not None else dataset_from_config(cfg.data, cfg.seed)
        check_against_data(cfg, self.data.n_items, self.data.modalities)  # before the model is built
        self.model = build_model(cfg, self.data, self.device)
        self.history: list[dict[str, Any]] = []
        self._file_handler: logging.Handler | None = None

    # ---- helpers --------------------------------------------------------------------------------------------
    def _settings(self) -> TrainSettings:
        t = self.cfg.train
        return TrainSettings(lr=t.lr, weight_decay=t.weight_decay, optimizer=t.optimizer)

    def _schedulers(self, optimizers: list[Adam]) -> list[LRSchedule]:
        t = self.cfg.train
        if t.lr_schedule in ("step", "cosine"):
            return [LRSchedule(o, t.lr_schedule, t.lr_step, t.lr_gamma, max(1, t.epochs)) for o in optimizers]
        return []

    def _start_logging(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.out / "log.txt", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        handler.setLevel(logging.INFO)
        log.addHandler(handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)  # the run's log.txt always gets the epoch lines
        self._file_handler = handler

    def _stop_logging(self) -> None:
        if self._file_handler is not None:
            log.removeHandler(self._file_handler)
            self._file_handler.close()

    def _payload(
        self, state: dict[str, torch.Tensor], epoch: int, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
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

    # ---- the loop -------------------------------------------------------------------------------------------
    def fit(self) -> RunResult:
        """Train with early stopping, restore the best state, evaluate test once, write the run folder."""
        from modalrec.distributed import maybe_distribute

        maybe_distribute(self)  # one rank of a data-parallel run when started by torchrun; else nothing
        self._start_logging()
        try:
            return self._fit()
        finally:
            self._stop_logging()

    def _fit(self) -> RunResult:
        cfg, t, model = self.cfg, self.cfg.train, self.model
        if self.out is not None:
            finished = self.out / "metrics.json"
            if self.resume and finished.exists():
                log.info("run in %s already finished; reporting its metrics", self.out)
                # [run_folder] a truncated metrics.json is a clear error, not a JSONDecodeError
                metrics = run_folder.read_metrics(finished)
                load_state(model, load_checkpoint(self.out / "checkpoint.pt")["state_dict"], self.out)
                return RunResult(self.out, metrics, model, self.data)
            # [run_folder] the run really starts: config.yaml is written now (atomically), not before
            run_folder.start(self.out, dump_config(cfg), fresh=not self.resume)
        optimizers = model.configure_optimizers(self._settings()) if model.trainable else []
        schedulers = self._schedulers(optimizers)
        sampler = BPRSampler(self.data.train, t.batch_size, cfg.seed, t.sampler)
        average = ParameterAverage(model, t.ema) if t.ema > 0 and model.trainable else None
        best_score, best_epoch, bad = -math.inf, -1, 0
        best_state: dict[str, torch.Tensor] | None = None
        start = 0
        last_path = self.out / "last.pt" if self.out is not None else None
        if self.resume and last_path is not None and last_path.exists():
            # [run_folder] a last.pt without the whole training state is a clear error, not a KeyError
            ckpt = run_folder.resume_state(
                load_checkpoint(last_path), last_path, len(optimizers), len(schedulers)
            )
            load_state(model, ckpt["state_dict"], last_path)
            for opt, st in zip(optimizers, ckpt["optimizers"], strict=True):
                opt.load_state_dict(st)
            for sch, st in zip(schedulers, ckpt["schedulers"], strict=True):
                sch.load_state_dict(st)
            if average is not None and ckpt.get("ema") is not None:
                average.load_state_dict(ckpt["ema"])
            elif average is not None:  # a run started without train.ema: average from the resumed weights on
                average = ParameterAverage(model, t.ema)
            start = ckpt["epoch"] + 1
            best_score, best_epoch, bad = ckpt["best_score"], ckpt["best_epoch"], ckpt["bad"]
            self.history = ckpt["history"]
            best_path = self.out / "checkpoint.pt"  # type: ignore[operator]
            if best_path.exists():
                best_state = load_checkpoint(best_path)["state_dict"]
            log.info("resumed from %s at epoch %d", last_path, start)
        metric = cfg.eval.metric
        epoch_times = [h["seconds"] for h in self.history]
        epochs = t.epochs if model.trainable else 0
        show_bar = t.progress and sys.stderr.isatty()
        for epoch in range(start, epochs):
            tic, tic_cpu = time.perf_counter(), time.process_time()
            torch.manual_seed(epoch_seed(cfg.seed, epoch))
            model.train()
            model.on_epoch_start(epoch)
            sums: dict[str, float] = {}
            n_batches = 0
            batches: Iterable[Batch] = sampler.epoch(epoch)
            if show_bar:
                from tqdm import tqdm

                batches = tqdm(batches, total=len(sampler), desc=f"epoch {epoch}", leave=False)
            with training_phase():
                for batch in batches:
                    if t.max_batches and n_batches >= t.max_batches:
                        break
                    terms = model.train_step(batch.to(self.device), optimizers, t.grad_clip or None)
                    if average is not None:
                        average.update(model)
                    for k, v in terms.items():
                        if not math.isfinite(v):
                            raise TrainingError(
                                f"loss term '{k}' became {v} in epoch {epoch}; lower train.lr or set "
                                f"train.grad_clip (the best checkpoint so far is kept"
                                f"{' in ' + str(self.out) if self.out else ''})"
                            )
                        sums[k] = sums.get(k, 0.0) + v
                    n_batches += 1
            for sch in schedulers:
                sch.step()
            seconds = time.perf_counter() - tic
            cpu_seconds = time.process_time() - tic_cpu  # CPU time of all threads: robust to a busy machine
            epoch_times.append(seconds)
            row: dict[str, Any] = {
                "epoch": epoch,
                "seconds": round(seconds, 4),
                "cpu_seconds": round(cpu_seconds, 4),
                "batches": n_batches,
            }
            row.update({f"loss_{k}": v / max(1, n_batches) for k, v in sums.items()})
            line = f"epoch {epoch:4d} {seconds:6.2f}s " + " ".join(
                f"{k}={v / max(1, n_batches):.4f}" for k, v in sums.items()
            )
            if (epoch + 1) % t.eval_every == 0 or epoch == epochs - 1:
                # with train.ema the averaged weights are evaluated and, if best, kept (copied inside the block)
                with average.applied(model) if average is not None else nullcontext():
                    val = evaluate(model, self.data, "val", cfg.eval)
                    score = float(val[metric])  # type: ignore[arg-type]
                    if score > best_score:
                        best_state = copy.deepcopy(
                            {k: v.detach().cpu() for k, v in model.state_dict().items()}
                        )
                for k in (metric, "recall@20", "ndcg@20"):
                    if k in val:
                        row[f"val_{k}"] = val[k]
                line += f" | val {metric}={score:.4f}"
                if score > best_score:
                    best_score, best_epoch, bad = score, epoch, 0
                    assert best_state is not None
                    if self.out is not None:
                        save_checkpoint(self.out / "checkpoint.pt", self._payload(best_state, epoch))
                    line += " *"
                else:
                    bad += 1
            self.history.append(row)
            log.info(line)
            if last_path is not None:
                save_checkpoint(
                    last_path,
                    self._payload(
                        model.state_dict(),
                        epoch,
                        {
                            "optimizers": [o.state_dict() for o in optimizers],
                            "schedulers": [s.state_dict() for s in schedulers],
                            "ema": average.state_dict() if average is not None else None,
                            "best_score": best_score,
                            "best_epoch": best_epoch,
                            "bad": bad,
                            "history": json.dumps(self.history),
                        },
                    ),
                )
            if bad >= t.patience:
                log.info("early stop: no improvement of val %s for %d evaluations", metric, bad)
                break
        train_seconds = sum(epoch_times)
        if best_state is None:
            best_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            best_epoch = max(-1, len(self.history) - 1)
            if self.out is not None:
                save_checkpoint(self.out / "checkpoint.pt", self._payload(best_state, best_epoch))
        load_state(model, best_state, "best state")
        tic = time.perf_counter()
        valid = evaluate(model, self.data, "val", cfg.eval)
        eval_seconds = time.perf_counter() - tic
        test = evaluate(model, self.data, "test", cfg.eval, per_user=True)
        groups = group_breakdown(test, self.data, cfg.eval.group_bins)
        metrics = {
            "model": cfg.model_name,
            "dataset": self.data.name,
            "seed": cfg.seed,
            "best_epoch": best_epoch,
            "epochs_run": len(self.history),
            "train_seconds": round(train_seconds, 3),
            "epoch_seconds_median": round(statistics.median(epoch_times), 4) if epoch_times else 0.0,
            "eval_seconds": round(eval_seconds, 4),
            "protocol": cfg.eval.describe(),
            "valid": {k: v for k, v in valid.items() if k not in ("per_user", "user_index")},
            "test": {k: v for k, v in test.items() if k not in ("per_user", "user_index")},
            "test_groups": groups,
            "model_config": dict(cfg.model),
        }
        log.info(
            "best epoch %d | test %s",
            best_epoch,
            " ".join(f"{k}={test[k]:.4f}" for k in ("recall@20", "precision@20", "ndcg@20") if k in test),
        )
        if self.out is not None:
            self._write_outputs(metrics)
            if last_path is not None and last_path.exists():
                last_path.unlink()
        return RunResult(self.out, metrics, model, self.data, self.history)

    def _write_outputs(self, metrics: dict[str, Any]) -> None:
        assert self.out is not None
        if self.history:
            keys: list[str] = []
            for h in self.history:
                keys += [k for k in h if k not in keys]
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
            atomic_write_text(self.out / "history.csv", buf.getvalue())
            from modalrec.plots import plot_curves

            plot_curves(self.history, self.out / "curves.png", f"{metrics['model']} on {metrics['dataset']}")
        # [run_folder] strict JSON: a metric of an empty user group is null, not a bare NaN
        atomic_write_text(self.out / "metrics.json", run_folder.metrics_json(metrics))


def train(
    cfg: RunConfig, data: Dataset | None = None, out: str | Path | None = None, resume: bool = False
) -> RunResult:
    """Convenience wrapper: ``Trainer(cfg, data, out, resume).fit()``."""
    return Trainer(cfg, data, Path(out) if out is not None else None, resume).fit()
