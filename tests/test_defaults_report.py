"""The defaults report (``python -m benchmarks defaults``) on a tiny planted dataset with two fast models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import defaults as report  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

from modalrec.data import make_synthetic, save_dataset  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    save_dataset(make_synthetic(tiny_config(), name="tiny"), root / "tiny")
    return root


def run(root: Path, out: Path, *extra: str) -> dict[str, dict]:
    args = ["--datasets", "tiny", "--data-root", str(root), "--runs", str(out / "runs")]
    args += ["--report", str(out / "defaults.md"), "--json", str(out / "defaults.json"), *extra]
    assert report.main(args) == 0
    rows = json.loads((out / "defaults.json").read_text())["rows"]
    return {r["model"]: r for r in rows}


@pytest.fixture(scope="module")
def two_models(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    out = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:  # a short run: the report's mechanics, not the defaults' figures
        mp.setattr(report, "BASE_OVERRIDES", [*report.BASE_OVERRIDES, "train.epochs=3"])
        return out, run(data_root, out, "--models", "mf,lightgcn", "--max-minutes", "5")


def test_table_has_every_column_and_the_run_figures(two_models: tuple[Path, dict[str, dict]]) -> None:
    out, rows = two_models
    assert set(rows) == {"mf", "lightgcn"}
    for name, row in rows.items():
        metrics = json.loads((out / "runs" / "tiny" / name / "metrics.json").read_text())
        assert row["test_recall@20"] == metrics["test"]["recall@20"]  # read at the best validation epoch
        assert row["epochs_run"] == 3 and 0 <= row["best_epoch"] < 3 and row["capped"] is None
        assert row["loss"] == "loss_bpr" and row["final_loss"] < row["initial_loss"] < 0.7
    text = (out / "defaults.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")] == report.COLUMNS
    mf_line = next(line for line in text.splitlines() if line.startswith("| mf |"))
    cells = [c.strip() for c in mf_line.strip("|").split("|")]
    assert len(cells) == len(report.COLUMNS)
    assert cells[2] == f"{rows['mf']['test_recall@20']:.4f}" and cells[7] == "1.00"  # MF vs itself
    assert cells[8] == f"{rows['mf']['test_recall@20'] / rows['lightgcn']['test_recall@20']:.2f}"


def test_resume_reuses_finished_runs(data_root: Path, two_models: tuple[Path, dict[str, dict]]) -> None:
    out, rows = two_models
    metrics = out / "runs" / "tiny" / "mf" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    again = run(data_root, out, "--models", "mf,lightgcn", "--resume")
    assert metrics.stat().st_mtime_ns == before  # not retrained
    assert again["mf"]["reused"] and again["lightgcn"]["reused"]
    assert again["mf"]["test_recall@20"] == rows["mf"]["test_recall@20"]
    command = json.loads((out / "defaults.json").read_text())["command"]
    assert str(out) not in command and str(data_root) not in command  # no machine folders in the report
    assert "--data-root DATA --runs RUNS" in command and "--resume" not in command


def test_time_cap_is_recorded(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a run that would go on for 10^5 epochs is stopped after 0.2 min (its first epoch ends within seconds, even on
    # a busy machine) and evaluated at its best epoch so far
    monkeypatch.setattr(
        report, "BASE_OVERRIDES", [*report.BASE_OVERRIDES, "train.epochs=100000", "train.patience=100000"]
    )
    row = run(data_root, tmp_path, "--models", "mf", "--max-minutes", "0.2")["mf"]
    assert row["capped"]["max_minutes"] == 0.2 and row["capped"]["epochs_done"] == row["epochs_run"] >= 1
    assert row["epochs_run"] < 100000 and 0 <= row["best_epoch"] < row["epochs_run"]
    assert "(capped at 0.2 min)" in (tmp_path / "defaults.md").read_text()


def test_ratios_to_mf_lightgcn_and_the_tuned_run() -> None:
    def row(model: str, r20: float, tuned: str | None = None) -> dict:
        return {"model": model, "dataset": "d", "tuned": tuned, "test_recall@20": r20}

    rows = [row("mf", 0.2), row("lightgcn", 0.25), row("sgl", 0.3), row("sgl", 0.4, "sgl.yaml")]
    sgl = next(r for r in report.with_ratios(rows) if r["model"] == "sgl")
    assert sgl["vs_mf"] == pytest.approx(1.5) and sgl["vs_lightgcn"] == pytest.approx(1.2)
    assert sgl["vs_tuned"] == pytest.approx(0.75) and sgl["tuned_config"] == "sgl.yaml"
    assert len(report.with_ratios(rows)) == 3  # the tuned run is a column of its model's row, not a row
