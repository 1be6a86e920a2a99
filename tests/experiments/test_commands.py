"""`modalrec compare | ablate | tune | report` end to end on tiny synthetic data (in-process runs, --jobs 1)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from modalrec.cli import main

TINY = [
    "--data",
    "synthetic",
    "--set",
    "data.synthetic.n_users=120",
    "--set",
    "data.synthetic.n_items=80",
    "--set",
    "data.synthetic.n_interactions=1500",
    "--set",
    "train.epochs=2",
    "--set",
    "eval.ks=[10,20]",
    "--set",
    "train.batch_size=512",
]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    rc = main(
        ["-q", "compare", "--models", "mf,lightgcn", "--seeds", "2", "--jobs", "1", "--out", str(out), *TINY]
    )
    assert rc == 0
    return out


def test_compare_writes_report(compared: Path) -> None:
    for name in ("results.csv", "table.md", "report.html", "curves.png", "groups.png"):
        assert (compared / name).is_file(), name
    with (compared / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    runs = {(r["label"], r["seed"]) for r in rows}
    assert runs == {("mf", "0"), ("mf", "1"), ("lightgcn", "0"), ("lightgcn", "1")}
    assert {r["metric"] for r in rows if r["split"] == "test"} >= {"recall@20", "ndcg@10"}
    table = (compared / "table.md").read_text()
    assert "| mf | 2 |" in table and "| lightgcn | 2 |" in table
    assert table.count("**") >= 2 and "<u>" in table and "p-value (paired t-test)" in table
    assert "Recall@20 by the user's number of training interactions" in table
    page = (compared / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page


def test_compare_resume_reuses_finished_runs(compared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = compared / "runs" / "mf" / "seed1" / "metrics.json"
    stamps = {p: p.stat().st_mtime_ns for p in compared.rglob("metrics.json")}
    (compared / "runs" / "lightgcn" / "seed0" / "metrics.json").unlink()
    capsys.readouterr()
    rc = main(
        ["compare", "--models", "mf,lightgcn", "--seeds", "2", "--jobs", "1", "--out", str(compared), *TINY]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("reused") == 3 and out.count("trained ") == 1
    assert done.stat().st_mtime_ns == stamps[done]
    # the same folder with different settings is refused instead of mixing configurations
    other = [*TINY[:-2], "--set", "train.batch_size=256"]
    rc = main(["compare", "--models", "mf", "--seeds", "1", "--jobs", "1", "--out", str(compared), *other])
    assert rc == 2
    assert "different configuration" in capsys.readouterr().err


def test_runs_written_before_a_new_setting_existed_are_reused(
    compared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A setting added to the config later (here train.max_batches) takes its default for old run folders."""
    import yaml

    marker = compared / "runs" / "mf" / "seed0" / "experiment.yaml"
    stored = yaml.safe_load(marker.read_text())
    stored["config"]["train"].pop("max_batches")  # as written by a version without the setting
    marker.write_text(yaml.safe_dump(stored))
    capsys.readouterr()
    rc = main(["compare", "--models", "mf", "--seeds", "1", "--jobs", "1", "--out", str(compared), *TINY])
    assert rc == 0
    assert capsys.readouterr().out.count("reused") == 1


def test_report_rebuilds_from_run_folders(compared: Path, tmp_path: Path) -> None:
    rc = main(["-q", "report", str(compared / "runs"), "--out", str(tmp_path / "rep")])
    assert rc == 0
    table = (tmp_path / "rep" / "table.md").read_text()
    assert "| mf | 2 |" in table and "| lightgcn | 2 |" in table
    assert (tmp_path / "rep" / "report.html").is_file()


def test_tune_three_trials(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        "train.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n"
        "model.reg_weight: {type: categorical, choices: [1.0e-5, 1.0e-4]}\n"
    )
    out = tmp_path / "tune"
    args = ["-q", "tune", "--model", "mf", "--trials", "3", "--threads", "1", "--space", str(space)]
    assert main([*args, "--out", str(out), *TINY]) == 0
    lines = (out / "trials.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 3
    for name in ("best.yaml", "tune.md", "sensitivity.png", "report.html", "study.db"):
        assert (out / name).is_file(), name
    md = (out / "tune.md").read_text()
    assert "Test (reported once, for this configuration only)" in md
    # resuming the study with the same total runs no new trial
    assert main([*args, "--out", str(out), *TINY]) == 0
    assert len((out / "trials.csv").read_text().strip().splitlines()) == 1 + 3


def test_tune_reuses_a_repeated_configuration(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        "model.reg_weight: {type: categorical, choices: [1.0e-4]}\n"
    )  # one point: every trial repeats
    out = tmp_path / "tune"
    args = [
        "-q",
        "tune",
        "--model",
        "mf",
        "--trials",
        "3",
        "--threads",
        "1",
        "--space",
        str(space),
        "--out",
        str(out),
    ]
    assert main([*args, *TINY]) == 0
    rows = (out / "trials.csv").read_text().strip().splitlines()[1:]
    assert len({row.split(",")[2] for row in rows}) == 1  # the same validation value three times
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["000"]  # trained once


def test_user_mistakes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--models", "mf,nosuch", "--out", str(tmp_path), *TINY]) == 2
    assert "unknown model 'nosuch'" in capsys.readouterr().err
    assert main(["ablate", "--model", "mf", "--out", str(tmp_path), *TINY]) == 2
    assert "has no ablation variants" in capsys.readouterr().err
    assert main(["compare", "--models", "mf", "--out", str(tmp_path), *TINY, "--set", "model.nope=1"]) == 2
    assert "model.nope" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("train.lr: {type: float, low: 1, high: 0}\n")
    assert main(["tune", "--model", "mf", "--trials", "1", "--space", str(bad), *TINY]) == 2
    assert "low > high" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2


def test_tune_without_optuna_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ImportError
    out = tmp_path / "tune"
    assert main(["tune", "--model", "mf", "--trials", "1", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "modalrec[tune]" in err[0]
    assert not out.exists()  # nothing written


def test_ablate_variant_vs_full(tmp_path: Path) -> None:
    out = tmp_path / "ablate"
    args = ["-q", "ablate", "--model", "lattice", "--variants", "CF", "--seeds", "1", "--jobs", "1"]
    assert main([*args, "--out", str(out), *TINY, "--set", "train.epochs=1"]) == 0
    assert {p.parent.parent.name for p in out.rglob("metrics.json")} == {"CF", "lattice"}
    table = (out / "table.md").read_text()
    assert "| CF | 1 |" in table and "| lattice | 1 |" in table
    assert "Each row against `lattice`" in table
