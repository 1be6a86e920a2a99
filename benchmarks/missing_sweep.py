"""How much missing content costs: test Recall@20 as a share of one modality's rows goes missing.

For every (fraction, fill) setting this runs one ``modalrec compare`` (``data.drop_modality=MODALITY:FRACTION``,
``data.missing_fill=FILL``) into ``OUT/v<fraction>-<fill>/``; compare reuses finished runs and resumes interrupted
ones, so the sweep can be stopped and started again. Fraction 0 is run once (no drop, the fill is moot) and so is
fraction 1 (the modality is removed, the fill is moot). Then it writes ``OUT/sweep.md`` (mean ± std over the seeds
found) and ``OUT/sweep.png`` (Recall@20 against the missing share, one line per model and fill, with the ID-only
reference model as a flat line).

    python -m benchmarks.missing_sweep --config configs/tiktok/compare.yaml --data DATA/tiktok \\
        --models lattice,vbpr,freedom --reference lightgcn --modality visual --fractions 0,0.3,0.6,1 \\
        --fills neighbours,zeros,mask --seeds 1 --out runs/missing-sweep
    python -m benchmarks.missing_sweep ... --report-only      # tables and plot from the finished runs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

METRIC = "recall@20"


def setting_dir(out: Path, fraction: float, fill: str) -> Path:
    """Folder of one setting's compare run: fractions 0 and 1 ignore the fill."""
    if fraction in (0.0, 1.0):
        return out / f"v{fraction:g}"
    return out / f"v{fraction:g}-{fill}"


def run_setting(args: argparse.Namespace, fraction: float, fill: str, models: list[str]) -> int:
    """One ``modalrec compare`` for a setting (resumable); returns its exit code."""
    cmd = [sys.executable, "-m", "modalrec", "compare", "--config", args.config, "--data", args.data]
    cmd += ["--models", ",".join(models), "--seeds", str(args.seeds), "--jobs", "1"]
    cmd += ["--out", str(setting_dir(Path(args.out), fraction, fill)), "--set", "train.threads=1"]
    if fraction > 0:
        cmd += [
            "--set",
            f"data.drop_modality={args.modality}:{fraction:g}",
            "--set",
            f"data.missing_fill={fill}",
        ]
    print(" ".join(cmd), flush=True)
    return subprocess.run(cmd, env=os.environ.copy(), check=False).returncode


def collect(folder: Path, model: str) -> list[float]:
    """Test Recall@20 of every finished seed of ``model`` under one setting folder."""
    found = sorted((folder / "runs" / model).glob("seed*/metrics.json"))
    return [float(json.loads(p.read_text())["test"][METRIC]) for p in found]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value; NaN mean for none)."""
    if not values:
        return math.nan, math.nan
    m = sum(values) / len(values)
    if len(values) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def cell(mean: float, std: float, n: int) -> str:
    """One table cell: mean ± std (n seeds); a single seed shows its value alone."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f} (1 seed)" if n == 1 else f"{mean:.4f} ± {std:.4f} ({n} seeds)"


def report(args: argparse.Namespace, fractions: list[float], fills: list[str], models: list[str]) -> str:
    """The markdown table (and the plot when matplotlib is present); returns the table."""
    out = Path(args.out)
    header = "| model | fill | " + " | ".join(f"{f:.0%} missing" for f in fractions) + " |"
    lines = [header, "|---|---|" + "---:|" * len(fractions)]
    curves: dict[str, list[tuple[float, float]]] = {}
    for model in models:
        for fill in fills:
            cells, pts = [], []
            for f in fractions:
                values = collect(setting_dir(out, f, fill), model)
                m, s = mean_std(values)
                cells.append(cell(m, s, len(values)))
                if not math.isnan(m):
                    pts.append((f, m))
            lines.append(f"| {model} | {fill} | " + " | ".join(cells) + " |")
            curves[f"{model} ({fill})"] = pts
    ref = args.reference
    if ref:
        values = collect(setting_dir(out, 0.0, fills[0]), ref)
        m, s = mean_std(values)
        if not math.isnan(m):
            same = [cell(m, s, len(values))] * len(fractions)
            lines.append(f"| {ref} (no content) | – | " + " | ".join(same) + " |")
            curves[f"{ref} (no content)"] = [(fractions[0], m), (fractions[-1], m)]
    table = "\n".join(lines) + "\n"
    note = f"\nTest {METRIC}, mean ± sample std over seeds, {args.modality} rows missing.\n"
    (out / "sweep.md").write_text(table + note)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - the plot is optional
        return table
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in curves.items():
        if pts:
            style = "--" if "no content" in label else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=label)
    ax.set_xlabel(f"share of items missing {args.modality}")
    ax.set_ylabel(f"test {METRIC}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    plt.close(fig)
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.missing_sweep", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="compare config with the models' settings")
    p.add_argument("--data", required=True)
    p.add_argument("--models", required=True, help="comma-separated content models")
    p.add_argument("--reference", default="lightgcn", help="ID-only model run once at 0%% ('' for none)")
    p.add_argument("--modality", default="visual")
    p.add_argument("--fractions", default="0,0.3,0.6,1")
    p.add_argument("--fills", default="neighbours,zeros,mask")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--report-only", action="store_true", help="only write sweep.md/sweep.png from finished runs"
    )
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    fills = [f for f in args.fills.split(",") if f]
    fractions = sorted(float(f) for f in args.fractions.split(","))
    if not args.report_only:
        for f in fractions:
            for fill in fills if 0.0 < f < 1.0 else fills[:1]:
                extra = [args.reference] if f == 0.0 and args.reference else []
                if run_setting(args, f, fill, extra + models) != 0:
                    print(f"error: the compare run for {f:g}/{fill} failed", file=sys.stderr)
                    return 2
    print(report(args, fractions, fills, models))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
