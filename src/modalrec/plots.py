"""Training-curve plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modalrec.atomic import atomic_path


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Two panels: every loss term per epoch (left) and the validation metrics per evaluated epoch (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.8))
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
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
