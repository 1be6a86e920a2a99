"""Every shipped config loads, validates and names real options, and none carries a path of one machine.

Shipped configs name no dataset (it is given with ``--data``); a command given such a config without ``--data``
stops with one ``error:`` line instead of quietly training on the synthetic default.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from modalrec.cli import main
from modalrec.config import build_model_config, load_config
from modalrec.data import Dataset, save_dataset
from modalrec.models import MODELS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL_CONFIGS = sorted(CONFIGS.rglob("*.yaml"))
RUN_CONFIGS = sorted(p for p in ALL_CONFIGS if "model" in (yaml.safe_load(p.read_text()) or {}))
DATASETS = {"tiktok", "baby", "sports", "movielens-100k", "synthetic"}


def _name(path: Path) -> str:
    return path.relative_to(CONFIGS).as_posix()


def test_the_configs_folder_has_run_configs() -> None:
    assert len(RUN_CONFIGS) >= 20


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_name)
def test_configs_are_organised_by_dataset_with_a_header(path: Path) -> None:
    """``configs/<dataset>/<file>.yaml``, the file opening with a comment that says what it is."""
    assert path.parent.parent == CONFIGS and path.parent.name in DATASETS, _name(path)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and len(first) > 20, f"{_name(path)}: no header line"


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=_name)
def test_run_config_loads_and_every_model_field_exists(path: Path) -> None:
    cfg = load_config(str(path), [])
    model_cls = MODELS[cfg.model_name]
    model_cfg = build_model_config(model_cls, cfg.model)  # unknown or mistyped fields raise ConfigError
    for key, value in cfg.model.items():
        if key not in ("name", "variant"):
            assert getattr(model_cfg, key) == value, f"{_name(path)}: model.{key}"


# A path outside the repository: parent folders, home folders, or an absolute path under a usual root.
MACHINE_PATH = re.compile(r"\.\./|~/|(?<![\w.~-])/(home|work|tmp|mnt|data|Users|root|opt|var|srv|scratch)\b")


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_name)
def test_no_config_names_a_machine_path(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = MACHINE_PATH.search(text)
    assert found is None, f"{_name(path)}: {text[max(found.start() - 30, 0) : found.end() + 30]!r}"
    raw = yaml.safe_load(text) or {}
    data = raw.get("data") or {}
    # The dataset comes from --data; only the embedded synthetic generator may be named in a config.
    assert data.get("path", "synthetic") == "synthetic", f"{_name(path)}: data.path {data.get('path')!r}"


def test_the_machine_path_rule_catches_what_it_must() -> None:
    for bad in ("path: ../shared/data/tiktok", "--data /work/shared/data", "path: ~/data", "'/tmp/x'"):
        assert MACHINE_PATH.search(bad), bad
    for fine in ("docs/mmssl.md", "--data DATA/tiktok", "(/feats)", "pairs / batch"):
        assert MACHINE_PATH.search(fine) is None, fine


@pytest.fixture(scope="module")
def tiny_folder(tiny: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_dataset(tiny, tmp_path_factory.mktemp("data") / "tiny")


FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=512", "--set", "train.threads=1"]


def test_a_shipped_config_takes_its_data_from_the_command_line(
    tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_config = str(CONFIGS / "tiktok" / "vbpr.yaml")
    run = tmp_path / "run"
    assert main(["-q", "train", "--config", train_config, "--out", str(run), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--data" in err[0]
    assert "tiktok/vbpr.yaml" in err[0]
    assert not run.exists()
    train = ["-q", "train", "--config", train_config, *FAST]
    assert main([*train, "--data", str(tiny_folder), "--out", str(run)]) == 0
    assert (run / "metrics.json").is_file()

    experiment = str(CONFIGS / "movielens-100k" / "compare.yaml")
    out = tmp_path / "compare"
    compare = ["-q", "compare", "--config", experiment, "--models", "mf", "--seeds", "1", "--jobs", "1"]
    assert main([*compare, "--out", str(out), *FAST]) == 2
    assert "compare.yaml names no dataset" in capsys.readouterr().err
    assert not out.exists()
    assert main([*compare, "--out", str(out), "--data", str(tiny_folder), *FAST]) == 0
    assert (out / "runs" / "mf" / "seed0" / "metrics.json").is_file()

    itemknn = str(CONFIGS / "tiktok" / "itemknn.yaml")
    tune = ["-q", "tune", "--model", "mf", "--trials", "1", "--config", itemknn]
    assert main([*tune, "--out", str(tmp_path / "tune")]) == 2
    assert "names no dataset" in capsys.readouterr().err
    # An explicit synthetic dataset is a dataset: the same config runs on the planted data.
    planted = ["--set", "data.synthetic={n_users: 120, n_items: 80, n_interactions: 1500}"]
    assert main([*train, "--data", "synthetic", *planted, "--out", str(tmp_path / "s")]) == 0
