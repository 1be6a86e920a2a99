"""The defaults report: every trainable model at its defaults on each dataset, as a new user would run it.

    python -m benchmarks defaults --datasets movielens-100k,tiktok [--data-root DIR] [--models mf,lightgcn,...]
                                  [--tuned MODEL[@DATASET]=CONFIG ...] [--max-minutes 30] [--runs DIR]
                                  [--resume] [--report PATH.md] [--json PATH.json]

Each (model, dataset) pair is one ``modalrec train --model NAME --data DATA --set train.threads=1`` in its own
process (one training at a time) with nothing else set, so the figures are what the defaults give. Model selection
is the trainer's own: the epoch with the best validation R@20; test R@20 is read at that epoch only.

A run still training after ``--max-minutes`` is stopped and finalised from its best validated epoch so far
(``modalrec train --resume --set train.epochs=N``); the table marks it as capped. ``--tuned`` points a model (on
one dataset, or on all) to a tuned config, trained the same way; the table then shows the default figure as a
share of the tuned one. ``--resume`` reuses every run folder that already holds a finished run.

The table (markdown and JSON) has per model and dataset: test R@20 at defaults, best epoch / epochs run, median
epoch seconds, the main loss (BPR where the model has one) of the first and of the last epoch, the training-health
monitor's verdict, and the ratio of test R@20 to MF-BPR's and LightGCN's at defaults (and to the tuned run's).
Datasets are folder names under ``--data-root`` (default $MODALREC_SHARED_DATA, else the data folder
beside the repository), or a folder path.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The only setting a defaults run changes: one thread, so that the epoch seconds compare across models.
BASE_OVERRIDES = ["train.threads=1", "train.progress=false"]
GRACE_SECONDS = 300  # time allowed for the run that finalises a capped one (two evaluations)
MAIN_LOSS = "loss_bpr"  # the health monitor's main loss; models without it are judged on their total loss


@dataclass
class Job:
    """One training of the report: a model on a dataset, at its defaults or at a tuned config."""

    model: str
    dataset: str  # the label in the table (the folder name)
    data: str  # what --data receives
    out: Path  # the run folder
    config: str | None = None  # a tuned config (None = the defaults)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "modalrec", "train", "--model", self.model, "--data", self.data]
        cmd += ["--config", self.config] if self.config else []
        for override in BASE_OVERRIDES:
            cmd += ["--set", override]
        return [*cmd, "--out", str(self.out)]


def child_env() -> dict[str, str]:
    """The environment of a training process: the same modalrec package as this one, first on the path."""
    import modalrec

    src = str(Path(modalrec.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}


def trainable_models() -> list[str]:
    """Every registered model with something to learn (popularity and the kNN baselines have nothing)."""
    from modalrec.models import MODELS

    return [name for name, cls in MODELS.items() if cls.trainable]


def data_root(arg: str | None) -> Path:
    env = os.environ.get("MODALREC_SHARED_DATA")
    return Path(arg) if arg else Path(env) if env else ROOT.parent / "shared" / "data"


def resolve_dataset(spec: str, root: Path) -> tuple[str, str] | None:
    """(label, --data value) for a dataset name under ``root`` or a folder path; None when absent."""
    path = Path(spec) if os.sep in spec else root / spec
    return (path.name, str(path)) if path.is_dir() else None


def parse_tuned(items: list[str]) -> dict[tuple[str, str | None], str]:
    """``MODEL=CONFIG`` (every dataset) or ``MODEL@DATASET=CONFIG`` -> {(model, dataset or None): config}."""
    tuned: dict[tuple[str, str | None], str] = {}
    for item in items:
        key, sep, config = item.partition("=")
        if not sep or not config or not key:
            raise SystemExit(f"error: --tuned {item!r}: expected MODEL=CONFIG or MODEL@DATASET=CONFIG")
        if not Path(config).is_file():
            raise SystemExit(f"error: --tuned {item!r}: no such config file {config}")
        model, _, dataset = key.partition("@")
        tuned[(model, dataset or None)] = config
    return tuned


def run_job(job: Job, max_minutes: float, resume: bool) -> dict[str, Any]:
    """Train (or, with ``resume``, reuse) one job; returns its row."""
    metrics_path, capped_path = job.out / "metrics.json", job.out / "capped.json"
    if resume and metrics_path.exists():
        capped = json.loads(capped_path.read_text()) if capped_path.exists() else None
        return row_from_run(job, capped, reused=True)
    cmd = [*job.command(), "--overwrite"]
    job.out.parent.mkdir(parents=True, exist_ok=True)
    capped_path.unlink(missing_ok=True)
    tic = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _, err = proc.communicate(timeout=max_minutes * 60 if max_minutes > 0 else None)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGINT (which a background job ignores): last.pt, written atomically after every epoch,
        # holds the last finished one whatever the moment the process stops
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        return finalise_capped(job, max_minutes, time.perf_counter() - tic)
    if proc.returncode != 0:
        return error_row(job, err)
    return row_from_run(job, None, reused=False)


def finalise_capped(job: Job, max_minutes: float, wall: float) -> dict[str, Any]:
    """Evaluate an interrupted run at its best validated epoch: resume it with the epochs it already ran."""
    from modalrec.checkpoint import load_checkpoint

    if (job.out / "metrics.json").exists():  # it finished just as the cap struck
        return row_from_run(job, None, reused=False)
    last = job.out / "last.pt"
    if not last.exists():
        return {
            **error_row(job, ""),
            "error": f"no epoch finished within {max_minutes:g} min",
            "capped": True,
        }
    done = int(load_checkpoint(last)["epoch"]) + 1
    cmd = [*job.command(), "--resume", "--set", f"train.epochs={done}"]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=GRACE_SECONDS, check=False
    )
    if proc.returncode != 0:
        return error_row(job, proc.stderr)
    capped = {"max_minutes": max_minutes, "epochs_done": done, "wall_seconds": round(wall, 1)}
    (job.out / "capped.json").write_text(json.dumps(capped))
    return row_from_run(job, capped, reused=False)


def error_row(job: Job, stderr: str) -> dict[str, Any]:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()] or ["failed"]
    error = next((ln for ln in lines if ln.startswith("error:")), lines[-1])
    return {"model": job.model, "dataset": job.dataset, "tuned": job.config, "error": scrub(error)[:300]}


def scrub(text: str) -> str:
    """No machine folders in the committed table."""
    return text.replace(str(ROOT.parent), "<root>").replace(str(Path("/tmp").resolve()), "<tmp>")


# Options whose values are this machine's folders: the recorded command names them by what they hold.
FOLDER_OPTIONS = {"--data-root": "DATA", "--runs": "RUNS", "--report": "REPORT.md", "--json": "REPORT.json"}


def public_args(argv: list[str]) -> list[str]:
    """The command line as recorded in the report: folders replaced by placeholders, --resume left out."""
    out: list[str] = []
    for arg in argv:
        if arg == "--resume":
            continue
        out.append(FOLDER_OPTIONS[out[-1]] if out and out[-1] in FOLDER_OPTIONS else arg)
    return out


def loss_curve(history: Path) -> tuple[str, list[float]]:
    """The main loss of every epoch: the BPR term where the model has one, else the sum of the loss terms."""
    with history.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return MAIN_LOSS, []
    if MAIN_LOSS in rows[0]:
        return MAIN_LOSS, [float(r[MAIN_LOSS]) for r in rows if r.get(MAIN_LOSS)]
    keys = [k for k in rows[0] if k.startswith("loss_")]
    return "loss_total", [sum(float(r[k] or 0.0) for k in keys) for r in rows]


def row_from_run(job: Job, capped: dict[str, Any] | None, reused: bool) -> dict[str, Any]:
    """The table row of a finished run folder."""
    metrics = json.loads((job.out / "metrics.json").read_text())
    loss_name, curve = loss_curve(job.out / "history.csv")
    health = [str(f.get("check")) for f in metrics.get("health") or []]
    return {
        "model": job.model,
        "dataset": job.dataset,
        "tuned": job.config,
        "test_recall@20": metrics["test"]["recall@20"],
        "val_recall@20": metrics["valid"]["recall@20"],
        "best_epoch": metrics["best_epoch"],
        "epochs_run": metrics["epochs_run"],
        "epoch_seconds": metrics["epoch_seconds_median"],
        "train_seconds": metrics["train_seconds"],
        "loss": loss_name,
        "initial_loss": curve[0] if curve else None,
        "final_loss": curve[-1] if curve else None,
        "health": health,
        "capped": capped,
        "reused": reused,
    }


def ratio(row: dict[str, Any], ref: dict[str, Any] | None) -> float | None:
    if ref is None or "error" in row or "error" in ref or not ref["test_recall@20"]:
        return None
    return float(row["test_recall@20"]) / float(ref["test_recall@20"])


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The default rows, each with its ratios to MF and LightGCN at defaults and to its tuned run."""
    defaults = {(r["model"], r["dataset"]): r for r in rows if not r.get("tuned")}
    tuned = {(r["model"], r["dataset"]): r for r in rows if r.get("tuned")}
    out = []
    for (model, dataset), row in defaults.items():
        t = tuned.get((model, dataset))
        out.append(
            {
                **row,
                "vs_mf": ratio(row, defaults.get(("mf", dataset))),
                "vs_lightgcn": ratio(row, defaults.get(("lightgcn", dataset))),
                "tuned_config": t["tuned"] if t else None,
                "tuned_test_recall@20": t.get("test_recall@20") if t else None,
                "vs_tuned": ratio(row, t) if t else None,
            }
        )
    return out


COLUMNS = [
    "model",
    "dataset",
    "test R@20",
    "best / run epochs",
    "epoch s",
    "loss first → last",
    "health",
    "vs MF",
    "vs LightGCN",
    "vs tuned",
]


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    """The report: one table row per (model, dataset) at defaults."""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---:|" * 3 + "---|---|" + "---:|" * 3,
    ]
    for r in sorted(with_ratios(rows), key=lambda r: (r["dataset"], r["model"])):
        if "error" in r:
            lines.append(f"| {r['model']} | {r['dataset']} | {r['error']} |" + " |" * (len(COLUMNS) - 3))
            continue
        epochs = f"{r['best_epoch']} / {r['epochs_run']}"
        if r["capped"]:
            epochs += f" (capped at {r['capped']['max_minutes']:g} min)"
        loss = f"{fmt(r['initial_loss'], '.4f')} → {fmt(r['final_loss'], '.4f')}"
        loss += "" if r["loss"] == MAIN_LOSS else " (total)"
        tuned = "–"
        if r["tuned_config"]:
            tuned = f"{fmt(r['vs_tuned'], '.2f')} ({fmt(r['tuned_test_recall@20'], '.4f')})"
        lines.append(
            f"| {r['model']} | {r['dataset']} | {r['test_recall@20']:.4f} | {epochs} | "
            f"{r['epoch_seconds']:.2f} | {loss} | {', '.join(r['health']) or 'ok'} | "
            f"{fmt(r['vs_mf'], '.2f')} | {fmt(r['vs_lightgcn'], '.2f')} | {tuned} |"
        )
    return f"Produced by `{command}`.\n\n" + "\n".join(lines) + "\n"


def store(rows: list[dict[str, Any]], row: dict[str, Any]) -> list[dict[str, Any]]:
    key = (row["model"], row["dataset"], row.get("tuned"))
    return [r for r in rows if (r["model"], r["dataset"], r.get("tuned")) != key] + [row]


def write(rows: list[dict[str, Any]], report: Path, table: Path, command: str) -> None:
    for path, text in (
        (table, json.dumps({"command": command, "rows": rows}, indent=1)),
        (report, markdown(rows, command)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks defaults", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--datasets", default="movielens-100k")
    parser.add_argument("--data-root", default=None, help="folder holding the datasets")
    parser.add_argument("--models", default="all", help="comma-separated names, or 'all' trainable models")
    parser.add_argument("--tuned", action="append", default=[], metavar="MODEL[@DATASET]=CONFIG")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="wall minutes per run (0 = no cap)")
    parser.add_argument("--runs", default="runs/defaults", help="folder for the run folders")
    parser.add_argument("--resume", action="store_true", help="reuse run folders that hold a finished run")
    parser.add_argument("--report", default="benchmarks/defaults.md")
    parser.add_argument("--json", default="benchmarks/defaults.json")
    args = parser.parse_args(argv)
    command = "python -m benchmarks defaults " + " ".join(public_args(argv or sys.argv[2:]))
    root, runs = data_root(args.data_root), Path(args.runs)
    models = trainable_models() if args.models == "all" else args.models.split(",")
    tuned = parse_tuned(args.tuned)
    table = Path(args.json)
    rows: list[dict[str, Any]] = (
        json.loads(table.read_text())["rows"] if args.resume and table.exists() else []
    )
    for spec in args.datasets.split(","):
        found = resolve_dataset(spec, root)
        if found is None:
            print(f"skip {spec}: not found under {root}", file=sys.stderr)
            continue
        label, data = found
        for model in models:
            jobs = [Job(model, label, data, runs / label / model)]
            config = tuned.get((model, label)) or tuned.get((model, None))
            if config:
                jobs.append(Job(model, label, data, runs / label / f"{model}-tuned", config))
            for job in jobs:
                print(
                    f"{job.model} on {label}{' (tuned)' if job.config else ''} ...",
                    file=sys.stderr,
                    flush=True,
                )
                row = run_job(job, args.max_minutes, args.resume)
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows = store(rows, row)
                write(rows, Path(args.report), table, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
