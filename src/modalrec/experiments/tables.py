"""Markdown tables in the papers' style.

* :func:`comparison_table` — MMSSL Table 2 / ablation Table 3: mean ± std over seeds per metric and K, the best
  mean in **bold**, the second <u>underlined</u>, then the relative improvement of the best over the runner-up and
  the p-value of a paired t-test (runs paired by seed) between them.
* :func:`group_table` — MMSSL Table 4: a metric per user group (number of training interactions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modalrec.experiments.results import RunRecord, labels_in_order
from modalrec.experiments.stats import paired_ttest, relative_improvement, summarize

METRIC_NAMES = {"recall": "Recall", "precision": "Precision", "ndcg": "NDCG", "hit": "Hit"}


def metric_title(key: str) -> str:
    """ "recall@20" -> "Recall@20"."""
    name, _, k = key.partition("@")
    return METRIC_NAMES.get(name, name) + (f"@{k}" if k else "")


def format_p(p: float) -> str:
    """p-values: 3 decimals, scientific below 0.001, "n/a" when undefined."""
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def values_by_seed(records: Sequence[RunRecord], label: str, split: str, key: str) -> dict[int, float]:
    """seed -> the label's ``split`` metric ``key`` (runs without that metric left out)."""
    out: dict[int, float] = {}
    for r in records:
        if r.label == label:
            v = (r.metrics.get(split) or {}).get(key)
            if isinstance(v, int | float):
                out[r.seed] = float(v)
    return out


def metric_keys(
    records: Sequence[RunRecord], metrics: Sequence[str], ks: Sequence[int] | None, split: str = "test"
) -> list[str]:
    """Metric keys present in the runs, ordered by K then by ``metrics``."""
    present = {k for r in records for k in (r.metrics.get(split) or {}) if "@" in k}
    all_ks = sorted({int(k.split("@")[1]) for k in present})
    use_ks = [k for k in (ks or all_ks) if k in all_ks]
    return [f"{m}@{k}" for k in use_ks for m in metrics if f"{m}@{k}" in present]


def comparison_table(
    records: Sequence[RunRecord],
    metrics: Sequence[str] = ("recall", "precision", "ndcg"),
    ks: Sequence[int] | None = None,
    split: str = "test",
    labels: Sequence[str] | None = None,
    digits: int = 4,
) -> str:
    """Rows = labels (models or variants), columns = metric@K; see the module docstring.

    The p-value compares the best and the runner-up on the seeds both have (paired t-test, two-sided); it needs at
    least two shared seeds, else "n/a".
    """
    labels = list(labels or labels_in_order(list(records)))
    keys = metric_keys(records, metrics, ks, split)
    if not labels or not keys:
        return "_no finished runs with these metrics_\n"
    vals = {(lab, k): values_by_seed(records, lab, split, k) for lab in labels for k in keys}
    stats = {lk: summarize(list(v.values())) for lk, v in vals.items()}
    header = "| model | seeds | " + " | ".join(metric_title(k) for k in keys) + " |"
    lines = [header, "|---|---:|" + "---:|" * len(keys)]
    rank: dict[str, list[str]] = {}
    for k in keys:
        finite = [lab for lab in labels if math.isfinite(stats[(lab, k)][0])]
        rank[k] = sorted(finite, key=lambda lab, k=k: -stats[(lab, k)][0])  # type: ignore[misc]
    for lab in labels:
        n = max(len(vals[(lab, k)]) for k in keys)
        cells = []
        for k in keys:
            mean, std = stats[(lab, k)]
            if not math.isfinite(mean):
                cells.append("–")
                continue
            text = mean_std_text(mean, std, len(vals[(lab, k)]), digits)
            if rank[k] and rank[k][0] == lab:
                text = f"**{text}**"
            elif len(rank[k]) > 1 and rank[k][1] == lab:
                text = f"<u>{text}</u>"
            cells.append(text)
        lines.append(f"| {lab} | {n} | " + " | ".join(cells) + " |")
    if len(labels) > 1:
        imp, pv = [], []
        for k in keys:
            if len(rank[k]) < 2:
                imp.append("n/a")
                pv.append("n/a")
                continue
            best, second = rank[k][0], rank[k][1]
            gain = relative_improvement(stats[(best, k)][0], stats[(second, k)][0])
            imp.append(f"{gain * 100:+.2f}%" if math.isfinite(gain) else "n/a")
            a, b = vals[(best, k)], vals[(second, k)]
            common = sorted(set(a) & set(b))
            pv.append(format_p(paired_ttest([a[s] for s in common], [b[s] for s in common])))
        lines.append("| improvement (best vs 2nd) | | " + " | ".join(imp) + " |")
        lines.append("| p-value (paired t-test) | | " + " | ".join(pv) + " |")
    return "\n".join(lines) + "\n"


def group_names(records: Sequence[RunRecord]) -> list[str]:
    """User groups with at least one test user, in the order of the first run that has them."""
    for r in records:
        groups = r.metrics.get("test_groups") or []
        if groups:
            return [str(g["group"]) for g in groups if int(g.get("users", 1)) > 0]
    return []


def group_values(records: Sequence[RunRecord], label: str, group: str, metric: str) -> list[float]:
    """The metric of one group over the label's seeds (nan for empty groups dropped)."""
    out = []
    for r in records:
        if r.label != label:
            continue
        for g in r.metrics.get("test_groups") or []:
            v = g.get(metric)
            if g.get("group") == group and isinstance(v, int | float) and math.isfinite(v):
                out.append(float(v))
    return out


def group_users(records: Sequence[RunRecord], group: str) -> int:
    """Number of test users in a group (the same for every run on one split)."""
    for r in records:
        for g in r.metrics.get("test_groups") or []:
            if g.get("group") == group:
                return int(g.get("users", 0))
    return 0


def group_table(
    records: Sequence[RunRecord],
    metric: str = "recall@20",
    labels: Sequence[str] | None = None,
    digits: int = 4,
) -> str:
    """MMSSL Table 4: rows = labels, columns = user groups by training interactions; mean ± std over seeds."""
    labels = list(labels or labels_in_order(list(records)))
    groups = group_names(records)
    if not groups:
        return "_no test_groups in these runs_\n"
    cols = [f"{g} ({group_users(records, g)} users)" for g in groups]
    lines = [
        f"Test {metric_title(metric)} by the user's number of training interactions",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(groups),
    ]
    means = {(lab, g): summarize(group_values(records, lab, g, metric)) for lab in labels for g in groups}
    best = {}
    for g in groups:
        finite = [lab for lab in labels if math.isfinite(means[(lab, g)][0])]
        ordered = sorted(finite, key=lambda lab, g=g: -means[(lab, g)][0])  # type: ignore[misc]
        tie = len(ordered) > 1 and means[(ordered[0], g)][0] == means[(ordered[1], g)][0]
        best[g] = ordered[0] if ordered and not tie else None
    for lab in labels:
        cells = []
        for g in groups:
            mean, std = means[(lab, g)]
            if not math.isfinite(mean):
                cells.append("–")
                continue
            text = mean_std_text(mean, std, len(group_values(records, lab, g, metric)), digits)
            cells.append(f"**{text}**" if best[g] == lab and len(labels) > 1 else text)
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def runs_table(records: Sequence[RunRecord], statuses: dict[str, str] | None = None) -> str:
    """One line per run: label, seed, best epoch, epochs run, training seconds, folder."""
    lines = [
        "| model | seed | best epoch | epochs run | train s | s/epoch (median) | run folder |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        m = r.metrics
        lines.append(
            f"| {r.label} | {r.seed} | {m.get('best_epoch', '')} | {m.get('epochs_run', '')} | "
            f"{float(m.get('train_seconds', 0.0)):.1f} | {float(m.get('epoch_seconds_median', 0.0)):.2f} | "
            f"{r.run_dir} |"
        )
    return "\n".join(lines) + "\n"


def reference_table(
    records: Sequence[RunRecord],
    reference: str,
    keys: Sequence[str] = ("recall@20", "ndcg@20"),
    split: str = "test",
) -> str:
    """Ablation view: every other label against ``reference`` (the full model) — relative change of the mean and
    the paired t-test p-value over shared seeds, per metric."""
    labels = [lab for lab in labels_in_order(list(records)) if lab != reference]
    if not labels:
        return ""
    head = " | ".join(f"{metric_title(k)} change | p" for k in keys)
    lines = [
        f"Each row against `{reference}` (change of the mean; two-sided paired t-test over shared seeds)",
        "",
        f"| variant | {head} |",
        "|---|" + "---:|---:|" * len(keys),
    ]
    for lab in labels:
        cells = []
        for k in keys:
            a = values_by_seed(records, lab, split, k)
            ref = values_by_seed(records, reference, split, k)
            change = relative_improvement(summarize(list(a.values()))[0], summarize(list(ref.values()))[0])
            common = sorted(set(a) & set(ref))
            p = paired_ttest([a[s] for s in common], [ref[s] for s in common])
            cells += [f"{change * 100:+.2f}%" if math.isfinite(change) else "n/a", format_p(p)]
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def mean_std_text(mean: float, std: float, n: int, digits: int) -> str:
    """ "mean ± std", or the bare value for a single seed (a sample std of one run is undefined, not 0)."""
    return f"{mean:.{digits}f}" if n < 2 else f"{mean:.{digits}f} ± {std:.{digits}f}"
