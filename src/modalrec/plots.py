"""Training-curve plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modalrec.atomic import atomic_path


def epochs_of(history: list[dict[str, Any]]) -> list[int]:
    """The epoch number of each history row."""
    return [h["epoch"] for h in history]


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Every loss term per epoch (left), the validation metrics per evaluated epoch (middle or right) and, when
    the model reports them, its component diagnostics (``diag_*`` columns, right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diag_keys = sorted({k for h in history for k in h if k.startswith("diag_")})
    n_panels = 3 if diag_keys else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(5 * n_panels, 3.8))
    ax_loss, ax_val = axes[0], axes[1]
    if diag_keys:
        ax_diag = axes[2]
        for key in diag_keys:
            ax_diag.plot(epochs_of(history), [h.get(key, float("nan")) for h in history], label=key[5:])
        ax_diag.set_xlabel("epoch")
        ax_diag.set_title("component diagnostics")
        ax_diag.set_yscale("symlog", linthresh=1e-3)
        ax_diag.legend(fontsize=7)
    epochs = [h["epoch"] for h in history]
    loss_keys = sorted({k[5:] for h in history for k in h if k.startswith("loss_")})
    for key in loss_keys:
        ax_loss.plot(epochs, [h.get("loss_" + key, float("nan")) for h in history], label=key)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("mean loss per batch")
    ax_loss.set_title("training loss terms")
    if loss_keys:
        ax_loss.legend(fontsize=8)
        if all(h.get("loss_" + k, 1.0) > 0 for h in history for k in loss_keys):
            ax_loss.set_yscale("log")
    val_keys = sorted({k for h in history for k in h if k.startswith("val_")})
    for key in val_keys:
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        ax_val.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=key[4:])
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("metric value")
    ax_val.set_title("validation")
    if val_keys:
        ax_val.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_comparison(
    curves: dict[str, list[tuple[int, float]]],
    scores: dict[str, float],
    path: Path,
    title: str = "",
    highlight: frozenset[str] = frozenset(),
) -> None:
    """Validation recall@20 per epoch of each model (left) and each model's test recall@20 (right; the models in
    ``highlight``, e.g. those that use content, in another colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_val, ax_test) = plt.subplots(1, 2, figsize=(11, 4))
    for name, pts in curves.items():
        if pts:
            ax_val.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("validation recall@20")
    ax_val.set_title("training to early stopping")
    if any(curves.values()):
        ax_val.legend(fontsize=8)
    names = list(scores)
    colours = ["tab:orange" if n in highlight else "tab:blue" for n in names]
    bars = ax_test.bar(names, [scores[n] for n in names], color=colours)
    ax_test.bar_label(bars, fmt="%.3f", fontsize=8)
    ax_test.set_ylabel("test recall@20 (best validation epoch)")
    ax_test.set_title("test")
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    """Lay out ``fig`` and write it to ``path`` as PNG atomically; the figure is closed either way."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
