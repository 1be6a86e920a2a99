"""`modalrec demo` end to end on the tiny planted data: the table, the run folders and the comparison plot."""

from __future__ import annotations

from pathlib import Path

from modalrec.data import Dataset
from modalrec.data.synthetic import demo_config, estimated_bytes
from modalrec.demo import run_demo


def test_demo_table_and_plot(tiny: Dataset, tmp_path: Path) -> None:
    text = run_demo(["pop", "mf", "vbpr"], epochs=2, out=tmp_path, data=tiny)
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [r.split("|")[1].strip() for r in rows] == ["pop", "mf", "vbpr"]
    assert [r.split("|")[2].strip() for r in rows] == ["no", "no", "yes"]  # uses content
    assert rows[0].split("|")[7].strip() == "-"  # popularity has nothing to train
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    assert (tmp_path / "mf" / "metrics.json").is_file() and (tmp_path / "vbpr" / "checkpoint.pt").is_file()


def test_demo_preset_is_small() -> None:
    cfg = demo_config()
    assert cfg.unit_items and cfg.popularity_skew == 0.0
    assert estimated_bytes(cfg) < 256 << 20
