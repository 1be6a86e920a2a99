"""The missing-content sweep's report: folders per setting, mean ± std per model and fill."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.missing_sweep import main, setting_dir  # noqa: E402


def _run(folder: Path, model: str, seed: int, r20: float) -> None:
    run = folder / "runs" / model / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"test": {"recall@20": r20}}))


def test_report_only_tabulates_finished_runs(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    assert setting_dir(out, 0.0, "zeros") == out / "v0" and setting_dir(out, 1.0, "mask") == out / "v1"
    _run(out / "v0", "lattice", 0, 0.09)
    _run(out / "v0", "lattice", 1, 0.07)
    _run(out / "v0", "lightgcn", 0, 0.08)
    _run(out / "v0.3-zeros", "lattice", 0, 0.06)
    _run(out / "v1", "lattice", 0, 0.05)
    argv = ["--config", "c.yaml", "--data", "d", "--models", "lattice", "--fills", "zeros,mask"]
    assert main([*argv, "--fractions", "0,0.3,1", "--out", str(out), "--report-only"]) == 0
    table = (out / "sweep.md").read_text()
    # mean 0.08, sample std of (0.09, 0.07) = 0.0141; the 30% mask setting has no run
    assert "| lattice | zeros | 0.0800 ± 0.0141 (2 seeds) | 0.0600 (1 seed) | 0.0500 (1 seed) |" in table
    assert "| lattice | mask | 0.0800 ± 0.0141 (2 seeds) | – | 0.0500 (1 seed) |" in table
    assert "| lightgcn (no content) |" in table
