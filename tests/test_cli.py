"""The command line end to end: train, evaluate, recommend, models, data; user mistakes exit with code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modalrec.cli import main
from modalrec.data import Dataset, save_dataset
from modalrec.models import MODELS

FAST = [
    "--set",
    "train.epochs=2",
    "--set",
    "train.batch_size=512",
    "--set",
    "train.threads=1",
    "--set",
    "eval.ks=[10,20]",
]


@pytest.fixture(scope="module")
def tiny_folder(tiny: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_dataset(tiny, tmp_path_factory.mktemp("data") / "tiny")


def test_train_evaluate_recommend(
    tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["-q", "train", "--model", "mf", "--data", str(tiny_folder), "--out", str(run), *FAST]) == 0
    out = capsys.readouterr().out
    assert "recall@20=" in out and str(run) in out
    assert main(["evaluate", "--run", str(run), "--protocol", "paper"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"]["ndcg"] == "ngcf" and 0 <= report["metrics"]["recall@20"] <= 1
    assert main(["recommend", "--run", str(run), "--user", "u3", "--k", "5", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert len(recs["u3"]) == 5 and all(r["item"].startswith("i") for r in recs["u3"])
    assert main(["recommend", "--run", str(run), "--user", "nobody"]) == 2
    assert "unknown user id 'nobody'" in capsys.readouterr().err


def test_models_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in MODELS:
        assert name in out


def test_data_commands(tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", str(tiny_folder), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["users"] == 300 and stats["modalities"]["visual"] == [200, 16]
    assert main(["data", "validate", str(tiny_folder)]) == 0
    assert main(["data", "convert", str(tiny_folder), "--out", str(tmp_path / "conv")]) == 0
    assert main(["data", "split", str(tiny_folder), "--out", str(tmp_path / "loo"), "--method", "loo"]) == 0
    assert (tmp_path / "loo" / "split" / "test.csv").exists()
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(tmp_path / "syn"),
                "--users",
                "50",
                "--items",
                "40",
                "--interactions",
                "500",
            ]
        )
        == 0
    )
    assert (tmp_path / "syn" / "visual.npy").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--model", "nosuch"], "unknown model 'nosuch'"),
        (["train", "--model", "mf", "--set", "train.epochz=1"], "unknown key 'train.epochz'"),
        (["train", "--model", "mf", "--data", "/nonexistent/folder"], "does not exist"),
        (["data", "stats", "/nonexistent/folder"], "does not exist"),
        (["train", "--model", "mf", "--set", "eval.ks=[20,5000]"], "catalogue has only"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_bad_feature_file_exit_2(
    tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    import numpy as np

    bad = tmp_path / "bad"
    shutil.copytree(tiny_folder, bad)
    arr = np.load(bad / "visual.npy")
    arr[7, 2] = np.inf
    np.save(bad / "visual.npy", arr)
    assert main(["-q", "train", "--model", "vbpr", "--data", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "visual.npy" in err and "row 7" in err
    assert not (tmp_path / "r").exists(), "nothing written for bad input"


def test_model_may_come_from_the_config(tiny_folder: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model: {name: mf, embed_dim: 8}\ntrain: {epochs: 1, batch_size: 512, threads: 1}\n")
    run = tmp_path / "run"
    assert main(["-q", "train", "--config", str(config), "--data", str(tiny_folder), "--out", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text())["model"] == "mf"
    assert main(["-q", "train", "--data", str(tiny_folder)]) == 2


def test_version_prints_the_package_version(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata
    import re

    import modalrec
    from modalrec.cli import package_version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"modalrec {package_version()}"
    # The source tree's __version__ (the fallback) matches the version pyproject.toml declares.
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert declared is not None and modalrec.__version__ == declared.group(1)

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert package_version() == modalrec.__version__
