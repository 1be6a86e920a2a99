"""Benchmark suite entry point.

    python -m benchmarks run [--models mf,lightgcn,...] [--datasets tiktok,amazon-baby,syn:10000,...]
                             [--epochs 3] [--threads 2] [--timeout 1800]
    python -m benchmarks defaults [--datasets movielens-100k,...] [--max-minutes 30] [--resume]

Each (model, dataset) pair runs in its own process (``benchmarks.measure``); results are appended to
``benchmarks/results.json`` (machine-readable) and summarised in ``BENCHMARKS.md`` with a log-log plot of epoch time
and peak memory against training interactions (``benchmarks/scaling.png``). Real datasets are read from
``$MODALREC_SHARED_DATA`` (or the data folder beside the repository) and skipped when absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"
REPORT = ROOT / "BENCHMARKS.md"
DEFAULT_MODELS = "mf,lightgcn,vbpr,ngcf,sgl,lightgcn_m,slmrec,lattice,micro,mmssl"
DEFAULT_DATASETS = "tiktok,amazon-baby,syn:10000,syn:100000,syn:1000000"


def shared_data() -> Path:
    env = os.environ.get("MODALREC_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def resolve(spec: str) -> str | None:
    if spec.startswith("syn:"):
        return spec
    path = shared_data() / spec
    return str(path) if path.is_dir() else None


def machine() -> dict[str, Any]:
    import torch

    return {
        "cores": os.cpu_count(),
        # a run pinned with taskset may see fewer; each row's own thread count is recorded with it
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def scrub(text: str) -> str:
    """Drop this machine's folders from a message before it goes into the committed report."""
    return text.replace(str(shared_data()), "<data>").replace(str(ROOT.parent), "<root>")


def clean_rows(results: list[dict[str, Any]]) -> None:
    """Rows written by older versions named a failed dataset by its full path: keep names only."""
    for r in results:
        if "error" in r:
            r["dataset"], r["error"] = dataset_label(str(r["dataset"])), scrub(str(r["error"]))


def dataset_label(data: str) -> str:
    """A dataset's name for the report: the folder name (never a machine path) or the syn:N spec."""
    return data if data.startswith("syn:") else Path(data).name


def run_one(
    model: str,
    data: str,
    epochs: int,
    threads: int,
    timeout: int,
    max_batches: int = 0,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.measure",
        "--model",
        model,
        "--data",
        data,
        "--epochs",
        str(epochs),
        "--threads",
        str(threads),
        "--max-batches",
        str(max_batches),
    ]
    for item in overrides or []:
        cmd += ["--set", item]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"model": model, "dataset": dataset_label(data), "error": f"timeout after {timeout}s"}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"model": model, "dataset": dataset_label(data), "error": scrub(tail)[:300]}
    row: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if overrides:
        row["overrides"] = list(overrides)  # shown beside the model name in the report
    row["load_average_after"] = round(load, 2) if load is not None else None  # 1-min load when it finished
    return row


def store_row(row: dict[str, Any], info: dict[str, Any]) -> list[dict[str, Any]]:
    """Replace this (model, spec) row in results.json, re-reading the file first so that suites running at the
    same time (e.g. one per core on different datasets) keep each other's rows. Returns all rows."""
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"results": []}
    key = (row.get("model"), row.get("spec"))
    results = [r for r in stored["results"] if (r.get("model"), r.get("spec")) != key] + [row]
    clean_rows(results)
    tmp = RESULTS.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"machine": info, "results": results}, indent=1))
    tmp.replace(RESULTS)
    return results


def write_report(results: list[dict[str, Any]], info: dict[str, Any]) -> None:
    ok = [r for r in results if "error" not in r]
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {info['cores']} cores, torch {info['torch']}, Python {info['python']}; "
        f"1-minute load at start {info['load_average']}. Produced by `python -m benchmarks run` "
        "(see `benchmarks/__main__.py`); raw numbers in `benchmarks/results.json`.",
        "",
        "Wall seconds include waiting for a core when the machine is busy; CPU seconds (all threads) do not.",
        "",
        "| model | dataset | train pairs | threads | epoch s (median) | epoch CPU s | eval s | eval / roofline "
        "| peak RSS MiB | val R@20 after budget | load avg |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ok:
        epoch_s = r["epoch_seconds_median"]
        if r.get("batches_run"):  # a capped epoch: show the extrapolation and what it rests on
            epoch_s = f"~{epoch_s} (est. from {r['batches_run']} of {r['batches_per_epoch']} batches)"
        name = r["model"] + (f" ({', '.join(r['overrides'])})" if r.get("overrides") else "")
        lines.append(
            f"| {name} | {r['dataset']} | {r['train_interactions']:,} | {r['threads']} | "
            f"{epoch_s} | {r['epoch_cpu_seconds_median']} | {r['eval_seconds']} | "
            f"{r['eval_over_roofline']} | {r['peak_rss_mib']} | {r['val_recall@20']} (after {r['epochs']} ep) | "
            f"{r.get('load_average_after', '')} |"
        )
    lines += targets_section(ok)
    failed = [r for r in results if "error" in r]
    no_features = [r for r in failed if "needs at least one item modality" in r["error"]]
    for dataset in sorted({r["dataset"] for r in no_features}):
        names = ", ".join(r["model"] for r in no_features if r["dataset"] == dataset)
        lines += ["", f"Not applicable on {dataset} (no item feature files): {names}."]
    failed = [r for r in failed if r not in no_features]
    if failed:
        lines += ["", "Not measured:", ""]
        lines += [f"- {r['model']} on {r['dataset']}: {r['error']}" for r in failed]
    exponents = scaling_plot(ok)
    if exponents:
        lines += [
            "",
            "Scaling on synthetic data: fitted log-log exponent of epoch seconds, and of seconds per training "
            "step, against training interactions (1.0 = linear). A model that propagates the whole graph at "
            "every step of a fixed-size batch does O(interactions) work per step and O(interactions / batch) "
            "steps per epoch, so its epoch exponent is near 2 by construction; the per-step exponent is the one "
            "that shows whether the implementation itself scales linearly.",
            "",
            "| model | epoch exponent | per-step exponent |",
            "|---|---:|---:|",
        ]
        lines += [f"| {m} | {e:.2f} | {s:.2f} |" for m, (e, s) in sorted(exponents.items())]
        lines += [
            "",
            "These rows use each model's defaults. MICRO's default is the paper's L_C over all item pairs at every "
            "step (O(I² d)); with its `cl_items` option (1,024 anchor items per step) its per-step exponent is "
            "0.79 (10k -> 100k) and 1.10 (100k -> 1M): docs/performance.md.",
            "",
            "![scaling](benchmarks/scaling.png)",
        ]
    REPORT.write_text("\n".join(lines) + "\n", encoding="utf-8")


# Speed and memory targets on 2 CPU cores: (model, dataset, field, bound, what).
TARGETS = [
    ("lightgcn", "amazon-baby", "epoch_seconds_median", 2.0, "LightGCN amazon-baby epoch <= 2 s"),
    (
        "lightgcn",
        "amazon-baby",
        "peak_rss_mib",
        471.0,
        "LightGCN amazon-baby peak < 471 MiB (half of MMRec's 942)",
    ),
    (
        "lightgcn",
        "amazon-baby",
        "eval_over_roofline",
        1.5,
        "LightGCN amazon-baby evaluation <= 1.5x roofline",
    ),
    ("mmssl", "tiktok", "epoch_seconds_median", 39.0, "MMSSL tiktok epoch <= 39 s (10x the official 387 s)"),
    ("mmssl", "tiktok", "peak_rss_mib", 1024.0, "MMSSL tiktok peak < 1 GiB"),
]


# Epoch-time ratios on Tiktok: (model, baseline, bound).
RATIO_TARGETS = [("diffmm", "mmssl", 2.0)]


def targets_section(ok: list[dict[str, Any]]) -> list[str]:
    """A met / not met line per target whose measurement is present, plus the 1M-interaction memory check."""
    lines = ["", "Targets:", ""]
    for model, dataset, field, bound, what in TARGETS:
        rows = [r for r in ok if r["model"] == model and r["dataset"] == dataset and r.get(field) is not None]
        if rows:
            value = rows[-1][field]
            lines.append(f"- {what}: measured {value} ({'met' if value <= bound else 'NOT met'})")
    for model, base, bound in RATIO_TARGETS:
        rows = {
            m: [
                r
                for r in ok
                if r["model"] == m and r["dataset"] == "tiktok" and r.get("epoch_seconds_median")
            ]
            for m in (model, base)
        }
        if rows[model] and rows[base]:
            a, b = rows[model][-1], rows[base][-1]
            ratio = a["epoch_cpu_seconds_median"] / b["epoch_cpu_seconds_median"]
            lines.append(
                f"- {model} tiktok epoch within {bound:g}x of {base}'s (CPU seconds, one thread each): "
                f"{a['epoch_cpu_seconds_median']} / {b['epoch_cpu_seconds_median']} s = {ratio:.2f}x "
                f"({'met' if ratio <= bound else 'NOT met'})"
            )
    big = [r for r in ok if r["dataset"] == "syn-1000000"]
    if big:
        worst = max(big, key=lambda r: r["peak_rss_mib"])
        full = [r["model"] for r in big if not r.get("batches_run")]
        capped = [r["model"] for r in big if r.get("batches_run")]
        lines.append(
            f"- 1M-interaction synthetic, one epoch + evaluation under 8 GB: {len(big)} models measured, "
            f"largest peak {worst['peak_rss_mib']} MiB ({worst['model']}); whole epochs: {', '.join(full) or '-'}"
            f"; capped epochs (peak over the first batches and a full evaluation): {', '.join(capped) or '-'}"
        )
        over = [r for r in big if r["peak_rss_mib"] >= 2048]
        lines.append(
            f"- 1M-interaction synthetic, peak under 2 GiB: {len(big) - len(over)} of {len(big)} models; over: "
            + (", ".join(f"{r['model']} ({r['peak_rss_mib']} MiB)" for r in over) or "none")
        )
        from modalrec.models import MODELS

        missing = sorted(set(MODELS) - {r["model"] for r in big})
        lines.append(
            f"- 1M-interaction synthetic, models without a measurement: {', '.join(missing) or 'none'}"
        )
    return lines


def batches_per_epoch(row: dict[str, Any]) -> int:
    """Training steps in one epoch of a row (rows written before it was recorded used the default batch of
    2,048 pairs)."""
    return int(row.get("batches_per_epoch") or -(-int(row["train_interactions"]) // 2048))


def scaling_plot(results: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Draw benchmarks/scaling.png; returns per model the fitted log-log exponents of (epoch seconds, seconds
    per training step) against training interactions."""
    # models without training epochs (pop, itemknn) have no epoch time to plot
    syn = [
        r
        for r in results
        if str(r["dataset"]).startswith("syn-") and (r.get("epoch_seconds_median") or 0) > 0
    ]
    if not syn:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    exponents: dict[str, tuple[float, float]] = {}
    for model in sorted({r["model"] for r in syn}):
        rows = sorted((r for r in syn if r["model"] == model), key=lambda r: r["train_interactions"])
        x = np.array([r["train_interactions"] for r in rows], dtype=float)
        t = np.array([r["epoch_seconds_median"] for r in rows], dtype=float)
        m = np.array([r["peak_rss_mib"] for r in rows], dtype=float)
        ax_t.plot(x, t, marker="o", label=model)
        ax_m.plot(x, m, marker="o", label=model)
        if len(rows) >= 2:
            steps = np.array([batches_per_epoch(r) for r in rows], dtype=float)
            exponents[model] = (
                float(np.polyfit(np.log(x), np.log(t), 1)[0]),
                float(np.polyfit(np.log(x), np.log(t / steps), 1)[0]),
            )
    for ax, label in ((ax_t, "seconds per epoch"), (ax_m, "peak RSS (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training interactions")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax_t.set_title("epoch time vs data size")
    ax_m.set_title("peak memory vs data size")
    fig.tight_layout()
    fig.savefig(ROOT / "benchmarks" / "scaling.png", dpi=110)
    plt.close(fig)
    return exponents


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["defaults"]:  # the defaults report (benchmarks/defaults.py) has options of its own
        from benchmarks.defaults import main as defaults_main

        return defaults_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[1])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the suite")
    run.add_argument("--models", default=DEFAULT_MODELS)
    run.add_argument("--datasets", default=DEFAULT_DATASETS)
    run.add_argument("--epochs", type=int, default=3)
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("--timeout", type=int, default=1800, help="seconds allowed per measurement")
    run.add_argument(
        "--max-batches",
        type=int,
        default=0,
        help="cap each epoch at this many batches and extrapolate the epoch time (0 = whole epochs)",
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="a configuration override (e.g. model.KEY=VALUE) for every model of this run, recorded with its rows",
    )
    run.add_argument("--fresh", action="store_true", help="discard earlier results instead of updating them")
    sub.add_parser("report", help="rewrite BENCHMARKS.md from benchmarks/results.json")
    sub.add_parser("defaults", help="every model at its defaults (python -m benchmarks defaults --help)")
    args = parser.parse_args(argv)
    stored: dict[str, Any] = (
        json.loads(RESULTS.read_text()) if RESULTS.exists() else {"machine": machine(), "results": []}
    )
    if args.command == "report":
        clean_rows(stored["results"])
        RESULTS.write_text(json.dumps(stored, indent=1))
        write_report(stored["results"], stored["machine"])
        return 0
    info = machine()
    if args.fresh:
        RESULTS.write_text(json.dumps({"machine": info, "results": []}, indent=1))
    for spec in args.datasets.split(","):
        data = resolve(spec)
        if data is None:
            print(f"skip {spec}: not found under {shared_data()}", file=sys.stderr)
            continue
        for model in args.models.split(","):
            print(f"measuring {model} on {spec} ...", file=sys.stderr, flush=True)
            row = run_one(
                model, data, args.epochs, args.threads, args.timeout, args.max_batches, args.overrides
            )
            row["spec"] = spec
            print(json.dumps(row), file=sys.stderr, flush=True)
            results = store_row(row, info)
            write_report(results, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
