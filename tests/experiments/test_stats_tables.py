"""Statistics and table formatting against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from modalrec.experiments.report import markdown_to_html
from modalrec.experiments.results import RunRecord, results_rows
from modalrec.experiments.stats import paired_ttest, relative_improvement, summarize
from modalrec.experiments.tables import comparison_table, format_p, group_table, reference_table


def test_summarize_sample_std() -> None:
    mean, std = summarize([0.10, 0.12, 0.14])
    assert mean == pytest.approx(0.12)
    assert std == pytest.approx(0.02)  # sqrt(((-.02)^2 + 0 + .02^2) / 2)
    assert summarize([0.3]) == (0.3, 0.0)
    assert all(math.isnan(x) for x in summarize([]))
    assert summarize([1.0, float("nan"), 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))


def test_paired_ttest_hand_value() -> None:
    # differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01, t = 0.02 / (0.01 / sqrt 3) = 2 sqrt 3, df = 2.
    # For df = 2 the two-sided p-value has the closed form 1 - t / sqrt(2 + t^2) = 1 - sqrt(12 / 14).
    p = paired_ttest([0.10, 0.12, 0.14], [0.09, 0.10, 0.11])
    assert p == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)
    assert paired_ttest([0.09, 0.10, 0.11], [0.10, 0.12, 0.14]) == pytest.approx(p)  # two-sided
    assert math.isnan(paired_ttest([0.1], [0.2]))  # one pair: undefined
    assert math.isnan(paired_ttest([0.2, 0.3], [0.1, 0.2]))  # constant difference: undefined
    with pytest.raises(ValueError):
        paired_ttest([0.1, 0.2], [0.1])


def test_relative_improvement() -> None:
    assert relative_improvement(0.0921, 0.0845) == pytest.approx(0.0076 / 0.0845)
    assert math.isnan(relative_improvement(0.1, 0.0))


def _rec(label: str, seed: int, r20: float, n20: float, groups: list[float] | None = None) -> RunRecord:
    metrics = {
        "model": label,
        "dataset": "toy",
        "seed": seed,
        "protocol": {"name": "standard"},
        "valid": {"recall@20": r20},
        "test": {"recall@20": r20, "ndcg@20": n20},
        "test_groups": [
            {"group": "[0,4)", "users": 10, "recall@20": groups[0]},
            {"group": "[4,inf)", "users": 5, "recall@20": groups[1]},
        ]
        if groups
        else [],
    }
    return RunRecord(label, label, seed, Path(f"/runs/{label}/{seed}"), metrics)


def _records() -> list[RunRecord]:
    return [
        _rec("a", 0, 0.10, 0.050, [0.1, 0.2]),
        _rec("a", 1, 0.12, 0.060, [0.3, 0.4]),
        _rec("a", 2, 0.14, 0.070, [0.2, 0.3]),
        _rec("b", 0, 0.09, 0.055, [0.5, 0.1]),
        _rec("b", 1, 0.10, 0.065, [0.5, 0.1]),
        _rec("b", 2, 0.11, 0.075, [0.5, 0.1]),
        _rec("c", 0, 0.01, 0.001),
    ]


def test_comparison_table_hand_example() -> None:
    md = comparison_table(_records(), metrics=("recall", "ndcg"))
    lines = md.strip().splitlines()
    assert lines[0] == "| model | seeds | Recall@20 | NDCG@20 |"
    assert lines[1] == "|---|---:|---:|---:|"
    # recall: a best (0.12 ± 0.02) bold, b second underlined; ndcg: b best (0.065), a second.
    assert lines[2] == "| a | 3 | **0.1200 ± 0.0200** | <u>0.0600 ± 0.0100</u> |"
    assert lines[3] == "| b | 3 | <u>0.1000 ± 0.0100</u> | **0.0650 ± 0.0100** |"
    assert lines[4] == "| c | 1 | 0.0100 | 0.0010 |"  # one seed: no std shown
    # improvement 0.12 / 0.10 - 1 = +20%; 0.065 / 0.060 - 1 = +8.33%
    assert lines[5] == "| improvement (best vs 2nd) | | +20.00% | +8.33% |"
    p = 1 - math.sqrt(12 / 14)  # recall: the hand example of test_paired_ttest_hand_value
    assert lines[6] == f"| p-value (paired t-test) | | {p:.3f} | n/a |"  # ndcg differences are constant


def test_format_p() -> None:
    assert format_p(0.0741) == "0.074"
    assert format_p(3.14e-5) == "3.1e-05"
    assert format_p(float("nan")) == "n/a"


def test_group_table_hand_example() -> None:
    md = group_table(_records(), "recall@20", labels=["a", "b"])
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert rows[0] == "| model | [0,4) (10 users) | [4,inf) (5 users) |"
    assert rows[2] == "| a | 0.2000 ± 0.1000 | **0.3000 ± 0.1000** |"
    assert rows[3] == "| b | **0.5000 ± 0.0000** | 0.1000 ± 0.0000 |"


def test_results_rows_long_format() -> None:
    rows = results_rows(_records()[:1])
    assert {"label": "a", "model": "a", "dataset": "toy", "seed": 0, "split": "test", "group": "",
            "metric": "ndcg@20", "value": 0.05} in rows  # fmt: skip
    assert sum(r["group"] == "[0,4)" for r in rows) == 1
    assert len(rows) == 1 + 2 + 2  # valid recall; test recall, ndcg; two groups


def test_markdown_to_html_table_and_marks() -> None:
    html = markdown_to_html("# T\n\n| m | x |\n|---|---:|\n| a | **1** |\n| b | <u>2</u> |\n")
    assert "<h1>T</h1>" in html
    assert "<td><b>1</b></td>" in html and "<td><u>2</u></td>" in html
    assert "---" not in html


def test_reference_table_hand_example() -> None:
    md = reference_table(_records()[:6], "a", ("recall@20",))
    row = next(line for line in md.splitlines() if line.startswith("| b "))
    p = 1 - math.sqrt(12 / 14)
    assert row == f"| b | {(0.10 - 0.12) / 0.12 * 100:+.2f}% | {p:.3f} |"  # -16.67%


def test_per_model_train_section_overrides_the_base() -> None:
    from modalrec.experiments.runner import build_run_config

    base = {"train": {"epochs": 60, "batch_size": 2048, "lr": 1e-3}, "eval": {"ks": [20]}}
    cfg = build_run_config(
        base, "mf", {"reg_weight": 0.01, "train": {"batch_size": 1024, "sampler": "users"}}
    )
    assert cfg["train"]["batch_size"] == 1024 and cfg["train"]["sampler"] == "users"
    assert cfg["train"]["epochs"] == 60 and cfg["train"]["lr"] == 1e-3  # the rest of the base stays
    assert cfg["model"]["reg_weight"] == 0.01 and "train" not in cfg["model"]
    other = build_run_config(base, "mf", {})
    assert other["train"]["batch_size"] == 2048
