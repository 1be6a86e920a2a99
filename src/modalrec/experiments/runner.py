"""Run a grid of trainings (model or variant x seed) as separate ``modalrec train`` processes.

Each run gets its own folder ``<out>/runs/<label>/seed<N>/`` holding ``experiment.yaml`` (the exact run config
this experiment asked for, passed to ``modalrec train --config``), ``driver.log`` (the process's output) and what
``modalrec train`` writes (``metrics.json``, ``history.csv``, ``checkpoint.pt``, ...).

Resuming: a folder whose ``metrics.json`` exists and whose ``experiment.yaml`` matches is reused as is; a folder
with an interrupted run (``last.pt``) continues with ``--resume``; a finished run with a *different* configuration
is an error (it would silently mix settings in one table).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modalrec.atomic import atomic_write_text
from modalrec.config import merge, parse_overrides
from modalrec.errors import ConfigError, ModalrecError

log = logging.getLogger("modalrec.experiments")

#: Keys that do not change a run's results, ignored when deciding whether a finished run can be reused.
_VOLATILE = (("train", "threads"), ("train", "progress"), ("device",))


def available_cores() -> int:
    """CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def slug(text: str) -> str:
    """A folder-safe form of a run label: "w/o-ASL" -> "wo-ASL", "CF+feats" -> "CF+feats"."""
    s = re.sub(r"[^A-Za-z0-9_.+-]+", "", text.replace(" ", "-"))
    return s or "run"


@dataclass
class RunSpec:
    """One training of the grid.

    Attributes:
        label: row name in tables ("lightgcn", or an ablation variant such as "w/o-CL").
        seed: the run seed (split, sampling, initialisation).
        config: the run configuration as a nested dict (sections model/data/train/eval/device), without the seed.
        run_dir: where the run is written.
    """

    label: str
    seed: int
    config: dict[str, Any]
    run_dir: Path
    group: str = ""  # e.g. the model an ablation belongs to; informational

    def full_config(self) -> dict[str, Any]:
        return {**self.config, "seed": self.seed}


@dataclass
class RunOutcome:
    """What happened to one run."""

    spec: RunSpec
    status: str  # "reused", "trained", "resumed" or "failed"
    seconds: float = 0.0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _strip_volatile(cfg: dict[str, Any]) -> dict[str, Any]:
    out = yaml.safe_load(yaml.safe_dump(cfg))
    for path in _VOLATILE:
        node = out
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


def _canonical(cfg: dict[str, Any]) -> dict[str, Any]:
    """A stored run config in today's canonical form: settings added to the config since the run was written
    take their defaults (which is what that run used), so older finished runs stay reusable."""
    try:
        return dict(load_config_from_dict(cfg).to_dict())
    except ConfigError:
        return cfg  # a setting that no longer exists: compare as written (and differ)


def build_run_config(
    base: dict[str, Any], model: str, model_params: dict[str, Any], overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Merge a base config (sections data/train/eval/device), model params and ``--set`` overrides into one dict.

    ``model_params`` may hold ``train`` and ``eval`` mappings that override the base's sections for this model.

    The result is validated by :func:`modalrec.config.load_config` (unknown keys and wrong types are
    ConfigErrors naming the key) and returned in canonical form (every section fully spelled out).
    """
    model_params = dict(model_params)
    # a per-model entry may carry its own train/eval sections (e.g. MMSSL's user batches) on top of the base
    sections = {k: model_params.pop(k) for k in ("train", "eval") if isinstance(model_params.get(k), dict)}
    raw = merge(dict(base), {"model": {**model_params, "name": model}})
    raw = merge(raw, sections)
    raw = merge(raw, parse_overrides(list(overrides)))
    raw.get("model", {})["name"] = model
    raw.pop("seed", None)
    try:
        cfg = load_config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{model}: {exc}") from None
    d = cfg.to_dict()
    d.pop("seed", None)
    return d


def load_config_from_dict(raw: dict[str, Any]) -> Any:
    from modalrec.config import config_from_dict

    return config_from_dict(raw)


def _prepare(spec: RunSpec) -> str | None:
    """Write experiment.yaml; return "reuse", "resume", "fresh"; raise when a different finished run is there."""
    run_dir = spec.run_dir
    wanted = spec.full_config()
    marker = run_dir / "experiment.yaml"
    finished = (run_dir / "metrics.json").exists()
    if finished:
        if marker.exists():
            old = yaml.safe_load(marker.read_text(encoding="utf-8")) or {}
            if _strip_volatile(_canonical(old.get("config", {}))) != _strip_volatile(wanted):
                raise ModalrecError(
                    f"{run_dir} holds a finished run with a different configuration; "
                    "choose another --out or delete that folder"
                )
        return "reuse"
    run_dir.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({"label": spec.label, "group": spec.group, "config": wanted}, sort_keys=False)
    atomic_write_text(marker, text)
    return "resume" if (run_dir / "last.pt").exists() else "fresh"


def _train_command(spec: RunSpec) -> list[str]:
    cfg_path = spec.run_dir / "run-config.yaml"
    atomic_write_text(cfg_path, yaml.safe_dump(spec.full_config(), sort_keys=False))
    return [
        sys.executable,
        "-m",
        "modalrec",
        "train",
        "--model",
        str(spec.config["model"]["name"]),
        "--config",
        str(cfg_path),
        "--seed",
        str(spec.seed),
        "--out",
        str(spec.run_dir),
    ]


def _run_one(spec: RunSpec, mode: str, threads: int) -> RunOutcome:
    cmd = _train_command(spec)
    if mode == "resume":
        cmd.append("--resume")
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    tic = time.perf_counter()
    with (spec.run_dir / "driver.log").open("a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.perf_counter() - tic
    if proc.returncode != 0 or not (spec.run_dir / "metrics.json").exists():
        tail = (
            (spec.run_dir / "driver.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()
        )
        last = tail[-1] if tail else ""
        return RunOutcome(spec, "failed", seconds, f"exit code {proc.returncode}: {last}")
    return RunOutcome(spec, "resumed" if mode == "resume" else "trained", seconds)


def _run_in_process(spec: RunSpec, mode: str, cache: dict[str, Any]) -> RunOutcome:
    """Train one spec in this process (``jobs == 1``): no interpreter start-up, datasets loaded once."""
    import json

    from modalrec.config import config_from_dict
    from modalrec.data.source import dataset_from_config
    from modalrec.train import Trainer

    tic = time.perf_counter()
    try:
        cfg = config_from_dict(spec.full_config())
        key = json.dumps([cfg.to_dict()["data"], cfg.seed], sort_keys=True, default=str)
        if key not in cache:
            cache.clear()  # keep at most one dataset in memory
            cache[key] = dataset_from_config(cfg.data, cfg.seed)
        Trainer(cfg, data=cache[key], out=spec.run_dir, resume=mode == "resume").fit()
    except ModalrecError as exc:
        return RunOutcome(spec, "failed", time.perf_counter() - tic, str(exc))
    return RunOutcome(spec, "resumed" if mode == "resume" else "trained", time.perf_counter() - tic)


def run_grid(
    specs: Sequence[RunSpec],
    jobs: int | None = None,
    on_done: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Train every spec (finished runs are reused) with up to ``jobs`` concurrent processes.

    With ``jobs == 1`` the runs are trained one after another in this process (same results, no start-up cost).
    Each process gets ``max(1, cores // jobs)`` threads unless the spec sets ``train.threads`` itself.

    Returns:
        one outcome per spec, in the order given. Failures do not stop the other runs.
    """
    jobs = max(1, jobs or available_cores())
    threads = max(1, available_cores() // jobs)
    outcomes: list[RunOutcome | None] = [None] * len(specs)
    todo: list[tuple[int, RunSpec, str]] = []
    for i, spec in enumerate(specs):
        train = spec.config.setdefault("train", {})
        if not train.get("threads"):
            train["threads"] = threads
        train["progress"] = False
        mode = _prepare(spec)
        if mode == "reuse":
            outcomes[i] = RunOutcome(spec, "reused")
            if on_done:
                on_done(outcomes[i])  # type: ignore[arg-type]
        else:
            todo.append((i, spec, str(mode)))

    def work(item: tuple[int, RunSpec, str]) -> None:
        i, spec, mode = item
        if (spec.run_dir / "metrics.json").exists():  # finished meanwhile (e.g. by another invocation)
            outcome = RunOutcome(spec, "reused")
        else:
            outcome = _run_one(spec, mode, int(spec.config["train"]["threads"]))
        outcomes[i] = outcome
        if on_done:
            on_done(outcome)

    if todo and jobs == 1:
        cache: dict[str, Any] = {}
        for i, spec, mode in todo:
            if (spec.run_dir / "metrics.json").exists():  # finished meanwhile (e.g. by another invocation)
                outcomes[i] = RunOutcome(spec, "reused")
            else:
                outcomes[i] = _run_in_process(spec, mode, cache)
            if on_done:
                on_done(outcomes[i])  # type: ignore[arg-type]
    elif todo:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(work, todo))
    return [o for o in outcomes if o is not None]


def validate_specs(specs: Sequence[RunSpec]) -> None:
    """Check every run config before launching anything (a typo fails in a second, not after an hour)."""
    for spec in specs:
        load_config_from_dict(spec.full_config())


__all__ = [
    "RunOutcome",
    "RunSpec",
    "available_cores",
    "build_run_config",
    "run_grid",
    "slug",
    "validate_specs",
]
