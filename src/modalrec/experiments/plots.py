"""Figures of the papers, from finished runs (matplotlib, headless Agg backend).

* :func:`plot_validation_curves` — MMSSL Figure 3: validation metric per epoch, one colour per model (thin lines:
  single seeds; thick line: mean over the seeds that reached that epoch).
* :func:`plot_groups` — MMSSL Table 4 as grouped bars: test metric per user group (by number of training
  interactions), error bars = std over seeds.
* :func:`plot_sensitivity` — MMSSL Figure 4: validation metric against each tuned hyper-parameter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modalrec.atomic import atomic_path
from modalrec.experiments.results import RunRecord, labels_in_order
from modalrec.experiments.stats import summarize
from modalrec.experiments.tables import group_names, group_users, group_values, metric_title


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        _plt().close(fig)


def plot_validation_curves(
    records: Sequence[RunRecord], path: Path, metric: str = "recall@20", title: str = ""
) -> bool:
    """Validation ``metric`` per epoch for every label; False (nothing written) when no history has it."""
    plt = _plt()
    key = f"val_{metric}"
    labels = labels_in_order(list(records))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = False
    for i, lab in enumerate(labels):
        colour = colours[i % len(colours)]
        per_epoch: dict[int, list[float]] = {}
        runs = [r for r in records if r.label == lab]
        for r in runs:
            pts = [(int(h["epoch"]), h[key]) for h in r.history if math.isfinite(h.get(key, math.nan))]
            if not pts:
                continue
            for e, v in pts:
                per_epoch.setdefault(e, []).append(v)
            if len(runs) > 1:
                ax.plot([p[0] + 1 for p in pts], [p[1] for p in pts], color=colour, alpha=0.3, linewidth=0.8)
        if per_epoch:
            epochs = sorted(per_epoch)
            n = len(runs)
            ax.plot(
                [e + 1 for e in epochs],
                [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs],
                color=colour,
                linewidth=2,
                label=f"{lab} (mean of {n} seeds)" if n > 1 else lab,
            )
            drawn = True
    if not drawn:
        plt.close(fig)
        return False
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric_title(metric)}")
    ax.set_title(title or f"Validation {metric_title(metric)} per training epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)
    return True


def plot_groups(records: Sequence[RunRecord], path: Path, metric: str = "recall@20", title: str = "") -> bool:
    """Grouped bars: test ``metric`` per user-interaction group and label; False when no run has groups."""
    plt = _plt()
    groups = group_names(records)
    labels = labels_in_order(list(records))
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(max(6.5, 1.2 * len(groups) * max(1, len(labels)) / 2 + 3), 4.5))
    width = 0.8 / max(1, len(labels))
    for j, lab in enumerate(labels):
        means, stds = [], []
        for g in groups:
            m, s = summarize(group_values(records, lab, g, metric))
            means.append(0.0 if not math.isfinite(m) else m)
            stds.append(0.0 if not math.isfinite(s) else s)
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(groups))]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=lab)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{g}\n{group_users(records, g)} users" for g in groups])
    ax.set_xlabel("user group: number of training interactions")
    ax.set_ylabel(f"test {metric_title(metric)} (mean over users)")
    ax.set_title(
        title or f"Test {metric_title(metric)} by user interaction count (error bars: std over seeds)"
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(4, len(labels)))
    _save(fig, path)
    return True


def plot_sensitivity(
    trials: Sequence[dict[str, Any]],
    params: Sequence[str],
    path: Path,
    metric: str = "recall@20",
    log_params: Sequence[str] = (),
    title: str = "",
) -> bool:
    """One panel per parameter: the validation ``metric`` of each trial at its value of that parameter.

    ``trials`` rows hold "params" (dict), "value" (validation metric or None) and "state" ("COMPLETE", "PRUNED").
    Pruned trials are drawn hollow at their last reported validation value.
    """
    plt = _plt()
    if not params or not trials:
        return False
    n = len(params)
    fig, axes = plt.subplots(1, n, figsize=(4.0 * n, 3.6), squeeze=False)
    for ax, p in zip(axes[0], params, strict=True):
        done = [(t["params"][p], t["value"]) for t in trials if t["state"] == "COMPLETE" and p in t["params"]]
        pruned = [
            (t["params"][p], t["value"])
            for t in trials
            if t["state"] == "PRUNED" and p in t["params"] and t["value"] is not None
        ]
        categorical = any(isinstance(v, str | bool) for v, _ in done + pruned)
        if categorical:
            cats = sorted({str(v) for v, _ in done + pruned})
            pos = {c: i for i, c in enumerate(cats)}

            def to_x(v: Any, pos: dict[str, int] = pos) -> float:
                return float(pos[str(v)])

            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats)
        else:

            def to_x(v: Any, pos: dict[str, int] = {}) -> float:  # noqa: B006 - same signature as above
                return float(v)

        if done:
            ax.scatter([to_x(v) for v, _ in done], [y for _, y in done], label="completed", zorder=3)
        if pruned:
            ax.scatter(
                [to_x(v) for v, _ in pruned],
                [y for _, y in pruned],
                facecolors="none",
                edgecolors="grey",
                label="pruned (last value)",
                zorder=2,
            )
        from matplotlib.ticker import MaxNLocator, NullFormatter

        if p in log_params and not categorical:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
        elif not categorical and all(isinstance(v, int) for v, _ in done + pruned):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(p)
        ax.set_ylabel(f"validation {metric_title(metric)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or f"Sensitivity: validation {metric_title(metric)} per trial")
    fig.tight_layout()
    _save(fig, path)
    return True
