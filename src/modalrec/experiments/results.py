"""Finished runs read back from their folders, and ``results.csv`` (one row per run x split x metric)."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modalrec.errors import ModalrecError


@dataclass
class RunRecord:
    """One finished run: its label (table row), seed, metrics.json and history.csv rows."""

    label: str
    model: str
    seed: int
    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return str(self.metrics.get("dataset", ""))


def _float(v: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def read_run(run_dir: Path) -> RunRecord:
    """Read a run folder written by ``modalrec train`` (label from experiment.yaml when an experiment made it)."""
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModalrecError(f"{path}: cannot read metrics ({exc})") from None
    label = str(metrics.get("model", run_dir.name))
    marker = run_dir / "experiment.yaml"
    if marker.exists():
        label = str((yaml.safe_load(marker.read_text(encoding="utf-8")) or {}).get("label", label))
    history: list[dict[str, float]] = []
    hist = run_dir / "history.csv"
    if hist.exists():
        with hist.open(encoding="utf-8", newline="") as fh:
            history = [{k: _float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    return RunRecord(
        label, str(metrics.get("model", "")), int(metrics.get("seed", 0)), run_dir, metrics, history
    )


def collect_runs(paths: list[Path] | list[str]) -> list[RunRecord]:
    """Every finished run in ``paths``: run folders themselves, or folders searched recursively for metrics.json.

    Ordered as found (sorted paths within each folder); a path without any finished run is an error.
    """
    records: list[RunRecord] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise ModalrecError(f"{p}: no such folder")
        found = [p / "metrics.json"] if (p / "metrics.json").exists() else sorted(p.rglob("metrics.json"))
        if not found:
            raise ModalrecError(f"{p}: no finished run (metrics.json) found")
        for m in found:
            d = m.parent.resolve()
            if d not in seen:
                seen.add(d)
                records.append(read_run(m.parent))
    return records


def labels_in_order(records: list[RunRecord]) -> list[str]:
    """Distinct labels in first-seen order."""
    out: list[str] = []
    for r in records:
        if r.label not in out:
            out.append(r.label)
    return out


def results_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    """Long format: one row per run x split (valid/test) x metric; plus the per-group test metrics."""
    rows: list[dict[str, Any]] = []
    for r in records:
        base = {"label": r.label, "model": r.model, "dataset": r.dataset, "seed": r.seed}
        for split in ("valid", "test"):
            for metric, value in (r.metrics.get(split) or {}).items():
                if isinstance(value, int | float):
                    rows.append({**base, "split": split, "group": "", "metric": metric, "value": value})
        for g in r.metrics.get("test_groups") or []:
            for metric, value in g.items():
                if metric not in ("group", "users") and isinstance(value, int | float):
                    rows.append(
                        {**base, "split": "test", "group": g["group"], "metric": metric, "value": value}
                    )
    return rows


def results_csv(records: list[RunRecord]) -> str:
    """``results.csv`` text: label, model, dataset, seed, split, group, metric, value."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=["label", "model", "dataset", "seed", "split", "group", "metric", "value"]
    )
    writer.writeheader()
    writer.writerows(results_rows(records))
    return buf.getvalue()
