"""Hyper-parameter search with Optuna: TPE sampling, median pruning on the validation metric per epoch.

Honesty: trials are compared on the validation split only (the trainer's early stopping also uses validation
only). The chosen configuration's test metrics are reported once, at the end. (Each trial's run folder also holds
the test metrics the trainer computes when a run ends; the search never reads them.)

Search spaces are YAML mappings from ``--set`` keys to distributions::

    train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    model.n_layers: {type: int, low: 1, high: 4}
    model.knn_k: {type: categorical, choices: [5, 10, 20, 50]}

Each model has a default space taken from its paper's tuning ranges (:data:`DEFAULT_SPACES`); models without one
get a generic space over the learning rate, the L2 weight and the depth when the model has them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modalrec.callbacks import Callback, Metrics, TrainerView
from modalrec.config import RunConfig, dump_config, load_config, read_yaml
from modalrec.data.dataset import Dataset
from modalrec.errors import ConfigError, ModalrecError
from modalrec.experiments.plots import plot_sensitivity
from modalrec.experiments.report import _CSS, atomic_write, markdown_to_html
from modalrec.experiments.tables import metric_title

log = logging.getLogger("modalrec.experiments")

Space = dict[str, dict[str, Any]]

#: Default search spaces from the papers' stated tuning ranges.
DEFAULT_SPACES: dict[str, Space] = {
    # MMSSL Sec. 4.1.4 and 4.4: generator lr, discriminator lr, L2 decay, GNN depth; zeta (Fig. 4).
    "mmssl": {
        "model.lr": {"type": "categorical", "choices": [4.5e-4, 5e-4, 5.4e-3, 5.6e-3]},
        "model.d_lr": {"type": "categorical", "choices": [2.5e-4, 3e-4, 3.5e-4]},
        "model.weight_decay": {"type": "categorical", "choices": [1.2e-2, 1.4e-2, 1.6e-2]},
        "model.n_layers": {"type": "int", "low": 1, "high": 4},
        "model.zeta": {"type": "categorical", "choices": [0.0, 10.0, 20.0, 50.0, 100.0, 150.0]},
    },
    # SLMRec Sec. IV-A4: lr and weight decay in {1e-4, ..., 0.1}, tau_ssl in {0.1, 0.2, 0.5, 1}, alpha grid.
    "slmrec": {
        "train.lr": {"type": "categorical", "choices": [1e-4, 1e-3, 1e-2, 1e-1]},
        "model.weight_decay": {"type": "categorical", "choices": [1e-4, 1e-3, 1e-2, 1e-1]},
        "model.ssl_temperature": {"type": "categorical", "choices": [0.1, 0.2, 0.5, 1.0]},
        "model.ssl_weight": {"type": "categorical", "choices": [0.01, 0.05, 0.1, 0.5, 1.0]},
    },
    # MICRO Sec. 4.4: kNN k, skip-connection lambda, contrastive weight beta, item-graph layers L.
    "micro": {
        "model.knn_k": {"type": "categorical", "choices": [5, 10, 20, 50]},
        "model.skip_lambda": {"type": "float", "low": 0.1, "high": 0.9},
        "model.cl_weight": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
        "model.n_item_layers": {"type": "int", "low": 1, "high": 5},
    },
    # LATTICE (same graph-learning knobs, no contrastive task).
    "lattice": {
        "model.knn_k": {"type": "categorical", "choices": [5, 10, 20, 50]},
        "model.skip_lambda": {"type": "float", "low": 0.1, "high": 0.9},
        "model.n_item_layers": {"type": "int", "low": 1, "high": 5},
    },
}


def default_space(model: str) -> Space:
    """The paper's space for ``model``, else lr + L2 weight + depth (whichever the model's Config has)."""
    if model in DEFAULT_SPACES:
        return DEFAULT_SPACES[model]
    from modalrec.models import MODELS

    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; available: {', '.join(MODELS)}")
    fields = {f.name for f in dataclasses.fields(MODELS[model].Config)}
    space: Space = {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    if "reg_weight" in fields:
        space["model.reg_weight"] = {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}
    if "n_layers" in fields:
        space["model.n_layers"] = {"type": "int", "low": 1, "high": 4}
    return space


def read_space(path: str | Path) -> Space:
    """Read and check a search-space YAML file (see the module docstring)."""
    raw = read_yaml(path)
    check_space(raw, str(path))
    return raw


def check_space(space: dict[str, Any], where: str = "search space") -> None:
    """Raise ConfigError naming the key when a distribution is malformed."""
    if not space:
        raise ConfigError(f"{where}: empty search space")
    for key, dist in space.items():
        if not isinstance(dist, dict) or dist.get("type") not in ("float", "int", "categorical"):
            raise ConfigError(f"{where}: '{key}' needs a mapping with type float|int|categorical")
        if dist["type"] == "categorical":
            if not isinstance(dist.get("choices"), list) or not dist["choices"]:
                raise ConfigError(f"{where}: '{key}' needs a non-empty 'choices' list")
        else:
            if "low" not in dist or "high" not in dist:
                raise ConfigError(f"{where}: '{key}' needs 'low' and 'high'")
            try:
                lo, hi = float(dist["low"]), float(dist["high"])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: '{key}' low/high must be numbers") from None
            if lo > hi:
                raise ConfigError(f"{where}: '{key}' has low > high")
            if dist.get("log") and lo <= 0:
                raise ConfigError(f"{where}: '{key}' is log-scaled and needs low > 0")


def _suggest(trial: Any, key: str, dist: dict[str, Any]) -> Any:
    if dist["type"] == "categorical":
        return trial.suggest_categorical(key, list(dist["choices"]))
    if dist["type"] == "int":
        return trial.suggest_int(key, int(dist["low"]), int(dist["high"]), log=bool(dist.get("log", False)))
    return trial.suggest_float(key, float(dist["low"]), float(dist["high"]), log=bool(dist.get("log", False)))


@dataclass
class TuneResult:
    """Outcome of a search."""

    best_params: dict[str, Any]
    best_value: float  # validation metric of the chosen configuration
    test: dict[str, float]  # the chosen configuration's test metrics (reported once)
    trials: list[dict[str, Any]]
    out: Path


def tune(
    model: str,
    data: str | None,
    trials: int,
    out: Path | str,
    space: Space | None = None,
    config: str | None = None,
    overrides: Sequence[str] = (),
    seed: int = 0,
    protocol: str | None = None,
    threads: int = 1,
    warmup_epochs: int = 5,
    command: str = "",
) -> TuneResult:
    """Run ``trials`` Optuna trials (resumable: the study lives in ``out/study.db``) and write the report.

    Args:
        model: model name.
        data: dataset path or "synthetic" (None: from the config).
        trials: total number of trials wanted in the study (finished ones count).
        out: output folder: study.db, trials/NNN run folders, trials.csv, best.yaml, tune.md, sensitivity.png,
            report.html.
        space: the search space (default: :func:`default_space`).
        config, overrides, seed, protocol: the base run configuration, as for ``modalrec train``.
        threads: torch threads per trial.
        warmup_epochs: epochs before a trial may be pruned.
    """
    from modalrec.data.source import dataset_from_config

    require_optuna()
    if trials < 1:
        raise ConfigError("--trials must be >= 1")
    space = space or default_space(model)
    check_space(space)
    out = Path(out)
    base = [*overrides, f"train.threads={threads}", "train.progress=false"]

    def make_cfg(params: dict[str, Any]) -> RunConfig:
        sets = base + [f"{k}={json.dumps(v)}" for k, v in params.items()]
        return load_config(config, sets, model_name=model, data_path=data, seed=seed, protocol=protocol)

    base_cfg = make_cfg({})
    for key in space:  # fail now on keys the model does not have
        make_cfg({key: _probe(space[key])})
    dataset = dataset_from_config(base_cfg.data, base_cfg.seed)
    study = _open_study(out, seed, warmup_epochs)
    done = len([t for t in study.trials if t.state.is_finished()])
    if trials > done:
        objective = _Objective(study, space, make_cfg, dataset, out, base_cfg.eval.metric)
        hide = _HideTest()
        train_log = logging.getLogger("modalrec.train")
        train_log.addFilter(hide)  # trials are judged on validation; keep their test figures off the console
        try:
            study.optimize(objective, n_trials=trials - done, catch=())
        finally:
            train_log.removeFilter(hide)
    return _report(study, model, space, base_cfg, make_cfg, out, command)


def require_optuna() -> None:
    """Fail with one clear line when Optuna (the optional ``tune`` extra) is not installed."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ModalrecError(
            "tune needs Optuna, an optional dependency: pip install 'modalrec[tune]' (or pip install optuna)"
        ) from None


def _open_study(out: Path, seed: int, warmup_epochs: int) -> Any:
    """The study in ``out/study.db`` (created, or loaded to resume): TPE sampling, median pruning."""
    import optuna

    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name="modalrec-tune",
        storage=f"sqlite:///{(out / 'study.db').resolve()}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup_epochs),
    )


def _probe(dist: dict[str, Any]) -> Any:
    """One value of a distribution (its first choice or its lower bound), to check the key early."""
    probe = dist["choices"][0] if dist["type"] == "categorical" else dist["low"]
    return int(probe) if dist["type"] == "int" else probe


class OptunaPruning(Callback):
    """Reports each validation to an Optuna trial and prunes the trial when the median rule says so.

    Raises ``optuna.TrialPruned`` from ``on_validation_end``, which ends ``Trainer.fit`` (Optuna records the
    trial as pruned, with its last reported value).
    """

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_validation_end(self, trainer: TrainerView, epoch: int, metrics: Metrics, improved: bool) -> None:
        import optuna

        value = float(metrics[self.metric])
        self.trial.report(value, epoch)
        self.trial.set_user_attr("last_value", value)
        self.trial.set_user_attr("epochs", epoch + 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned()


class _Objective:
    """One Optuna trial: train the suggested configuration in trials/NNN and return its validation metric."""

    def __init__(
        self,
        study: Any,
        space: Space,
        make_cfg: Callable[[dict[str, Any]], RunConfig],
        dataset: Dataset,
        out: Path,
        metric: str,
    ) -> None:
        self.study, self.space, self.make_cfg = study, space, make_cfg
        self.dataset, self.out, self.metric = dataset, out, metric

    def __call__(self, trial: Any) -> float:
        import optuna

        from modalrec.train import Trainer

        params = {k: _suggest(trial, k, d) for k, d in self.space.items()}
        repeat = self._earlier_value(params)
        if repeat is not None:
            log.info("trial %d repeats an earlier trial; reusing its value", trial.number)
            return repeat
        run_dir = self.out / "trials" / f"{trial.number:03d}"
        trainer = Trainer(
            self.make_cfg(params),
            data=self.dataset,
            out=run_dir,
            callbacks=[OptunaPruning(trial, self.metric)],
        )
        try:
            result = trainer.fit()
        except optuna.TrialPruned:
            log.info("trial %d pruned at epoch %s", trial.number, trial.user_attrs.get("epochs"))
            (run_dir / "last.pt").unlink(missing_ok=True)
            raise
        value = float(result.metrics["valid"][self.metric])
        trial.set_user_attr("epochs", int(result.metrics["epochs_run"]))
        trial.set_user_attr("best_epoch", int(result.metrics["best_epoch"]))
        log.info("trial %d: val %s=%.4f %s", trial.number, self.metric, value, params)
        return value

    def _earlier_value(self, params: dict[str, Any]) -> float | None:
        """The value of a finished trial with the same parameters, if any.

        TPE re-proposes finished configurations once a categorical space narrows (seen on Tiktok: 2 of 12
        trials were repeats); a repeat would only retrain the same seed, so it takes the earlier value.
        """
        import optuna

        for earlier in self.study.trials:
            if (
                earlier.state == optuna.trial.TrialState.COMPLETE
                and earlier.value is not None
                and earlier.params == params
            ):
                return float(earlier.value)
        return None


def _report(
    study: Any,
    model: str,
    space: Space,
    base_cfg: RunConfig,
    make_cfg: Callable[[dict[str, Any]], RunConfig],
    out: Path,
    command: str,
) -> TuneResult:
    """Write best.yaml, trials.csv, sensitivity.png, tune.md and report.html; the chosen trial's result."""
    import optuna

    metric = base_cfg.eval.metric
    rows = _trial_rows(study)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ModalrecError(f"no trial completed in {out} (all pruned or failed)")
    best = study.best_trial
    best_dir = out / "trials" / f"{best.number:03d}"
    best_metrics = json.loads((best_dir / "metrics.json").read_text(encoding="utf-8"))
    best_cfg = make_cfg(dict(best.params))
    best_cfg.train.threads = 0
    atomic_write(out / "best.yaml", dump_config(best_cfg))
    atomic_write(out / "trials.csv", _trials_csv(rows, list(space)))
    log_params = [k for k, d in space.items() if d.get("log")]
    has_plot = plot_sensitivity(
        rows,
        list(space),
        out / "sensitivity.png",
        metric,
        log_params,
        title=f"{model}: validation {metric_title(metric)} per trial (Figure 4 analogue)",
    )
    md = _tune_markdown(model, base_cfg, space, rows, best.number, best_metrics, metric, command, out)
    atomic_write(out / "tune.md", md)
    _write_html(out, f"tune {model}", md, has_plot)
    return TuneResult(dict(best.params), float(best.value or 0.0), best_metrics["test"], rows, out)


class _HideTest(logging.Filter):
    """Drops the trainer's end-of-run "best epoch ... | test ..." line while trials run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("best epoch")


def _trial_rows(study: Any) -> list[dict[str, Any]]:
    rows = []
    for t in study.trials:
        value = t.value if t.value is not None else t.user_attrs.get("last_value")
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": dict(t.params),
                "value": value,
                "epochs": t.user_attrs.get("epochs"),
            }
        )
    return rows


def _trials_csv(rows: list[dict[str, Any]], keys: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["trial", "state", "val_value", "epochs", *keys])
    for r in rows:
        writer.writerow(
            [r["number"], r["state"], r["value"], r["epochs"], *(r["params"].get(k) for k in keys)]
        )
    return buf.getvalue()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "n/a"
    return "–" if v is None else str(v)


def _tune_markdown(
    model: str,
    cfg: RunConfig,
    space: Space,
    rows: list[dict[str, Any]],
    best: int,
    best_metrics: dict[str, Any],
    metric: str,
    command: str,
    out: Path,
) -> str:
    keys = list(space)
    lines = [f"# Hyper-parameter search: {model} on {best_metrics.get('dataset', '')}", ""]
    if command:
        lines += ["Command:", "", "```bash", command, "```", ""]
    lines += [
        f"Selection on validation {metric_title(metric)} only (TPE sampler, median pruning per epoch); "
        f"protocol: {cfg.eval.describe()}.",
        "",
        "## Search space",
        "",
        "```yaml",
        yaml.safe_dump(space, sort_keys=False).strip(),
        "```",
        "",
        "## Trials",
        "",
        f"| trial | state | val {metric_title(metric)} | epochs | " + " | ".join(keys) + " |",
        "|---:|---|---:|---:|" + "---:|" * len(keys),
    ]
    for r in rows:
        mark = "**" if r["number"] == best else ""
        lines.append(
            f"| {mark}{r['number']}{mark} | {r['state'].lower()} | {mark}{_fmt(r['value'])}{mark} | "
            f"{_fmt(r['epochs'])} | " + " | ".join(_fmt(r["params"].get(k)) for k in keys) + " |"
        )
    test = best_metrics["test"]
    shown = [k for k in test if k.endswith("@20")] or list(test)
    lines += [
        "",
        "## Chosen configuration (by validation)",
        "",
        f"Trial {best}: " + ", ".join(f"`{k}={v}`" for k, v in _best_params(rows, best).items()),
        "",
        f"Validation {metric_title(metric)}: {best_metrics['valid'][metric]:.4f}. "
        f"Run folder: `{out / 'trials' / f'{best:03d}'}`; full config: `{out / 'best.yaml'}`.",
        "",
        "Test (reported once, for this configuration only): "
        + ", ".join(f"{metric_title(k)} {test[k]:.4f}" for k in shown),
        "",
    ]
    return "\n".join(lines)


def _best_params(rows: list[dict[str, Any]], best: int) -> dict[str, Any]:
    return next(r["params"] for r in rows if r["number"] == best)


def _write_html(out: Path, title: str, md: str, has_plot: bool) -> None:
    import base64
    import html

    img = ""
    if has_plot:
        data = base64.b64encode((out / "sensitivity.png").read_bytes()).decode("ascii")
        img = (
            f'<figure><img alt="sensitivity" src="data:image/png;base64,{data}"><figcaption>Validation metric '
            "of every trial against each searched hyper-parameter (hollow: pruned trials at their last "
            "reported value).</figcaption></figure>"
        )
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>\n{markdown_to_html(md)}\n{img}\n</body></html>\n"
    )
    atomic_write(out / "report.html", page)
