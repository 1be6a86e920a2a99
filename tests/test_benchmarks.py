"""The benchmark suite's measurement and report: capped epochs are extrapolated and labelled as such."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import __main__ as suite  # noqa: E402
from benchmarks.measure import measure  # noqa: E402


@pytest.fixture
def report_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(suite, "REPORT", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(suite, "ROOT", tmp_path)
    (tmp_path / "benchmarks").mkdir()
    return tmp_path / "BENCHMARKS.md"


def test_capped_epochs_are_extrapolated_and_labelled(report_path: Path) -> None:
    row = measure("mf", "syn:10000", epochs=1, threads=1, overrides=["train.batch_size=512"], max_batches=3)
    assert row["batches_run"] == 3 and row["batches_per_epoch"] == 15  # 7,394 pairs / 512
    assert row["epoch_seconds_median"] > 0 and row["peak_rss_mib"] > 0
    full = measure("mf", "syn:10000", epochs=1, threads=1, overrides=["train.batch_size=512"])
    assert "batches_run" not in full
    row["spec"], full["spec"] = "syn:1000000", "syn:10000"
    row["dataset"], row["train_interactions"] = "syn-1000000", 756_758  # posing as the 1M row
    info = {"cores": 2, "torch": "x", "python": "3", "load_average": 0.0}
    suite.write_report([full, row], info)
    text = report_path.read_text()
    assert "(est. from 3 of 15 batches)" in text
    assert "capped epochs (peak over the first batches and a full evaluation): mf" in text


def test_scaling_exponents_separate_steps_from_epochs(report_path: Path) -> None:
    # A full-graph model: each step costs c·n, an epoch has n/2048 steps -> epoch time ∝ n², step time ∝ n.
    rows = []
    for n in (10_000, 100_000, 1_000_000):
        steps = -(-n // 2048)
        rows.append(
            {
                "model": "g",
                "dataset": f"syn-{n}",
                "train_interactions": n,
                "epoch_seconds_median": 1e-6 * n * steps,
                "peak_rss_mib": 100.0,
                "batches_per_epoch": steps,
            }
        )
    del rows[0]["batches_per_epoch"]  # an older row: falls back to the default batch of 2,048
    epoch_exp, step_exp = suite.scaling_plot(rows)["g"]
    assert epoch_exp == pytest.approx(2.0, abs=0.02)
    assert step_exp == pytest.approx(1.0, abs=0.02)


def test_report_names_overrides_and_checks_the_2gib_and_ratio_targets(report_path: Path) -> None:
    def row(model: str, dataset: str, peak: float, cpu: float, **extra: object) -> dict[str, object]:
        return {
            "model": model,
            "dataset": dataset,
            "train_interactions": 1000,
            "threads": 1,
            "epoch_seconds_median": cpu,
            "epoch_cpu_seconds_median": cpu,
            "eval_seconds": 1.0,
            "eval_over_roofline": 1.0,
            "peak_rss_mib": peak,
            "val_recall@20": 0.1,
            "epochs": 1,
            **extra,
        }

    rows = [
        row("a", "syn-1000000", 900.0, 5.0),
        row("b", "syn-1000000", 3000.0, 5.0, overrides=["model.k=2"]),
        row("mmssl", "tiktok", 500.0, 20.0),
        row("diffmm", "tiktok", 600.0, 50.0),
    ]
    suite.write_report(rows, {"cores": 2, "torch": "x", "python": "3", "load_average": 0.0})
    text = report_path.read_text()
    assert "| b (model.k=2) | syn-1000000 |" in text
    assert "peak under 2 GiB: 1 of 2 models; over: b (3000.0 MiB)" in text
    assert (
        "diffmm tiktok epoch within 2x of mmssl's (CPU seconds, one thread each): 50.0 / 20.0 s = 2.50x (NOT met)"
        in text
    )
