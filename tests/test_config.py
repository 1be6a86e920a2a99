"""Config loading, --set overrides and their error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from modalrec.config import load_config, parse_overrides
from modalrec.errors import ConfigError


def test_overrides_are_yaml_typed() -> None:
    assert parse_overrides(["eval.ks=[5, 10]", "train.lr=0.01", "model.name=mf"]) == {
        "eval": {"ks": [5, 10]},
        "train": {"lr": 0.01},
        "model": {"name": "mf"},
    }
    cfg = load_config(None, ["train.lr=1e-2", "eval.ks=[5,20]", "model.n_layers=2"], model_name="lightgcn")
    assert cfg.train.lr == 0.01 and cfg.eval.ks == [5, 20] and cfg.model["n_layers"] == 2


def test_yaml_file_and_precedence(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: mf, embed_dim: 32}\ntrain: {epochs: 3}\nseed: 4\n")
    cfg = load_config(path, ["train.epochs=5"], seed=7)
    assert cfg.model_name == "mf" and cfg.model["embed_dim"] == 32
    assert cfg.train.epochs == 5 and cfg.seed == 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lrr=1"], "unknown key 'train.lrr'; valid keys: train.epochs"),
        (["model.n_layerz=1"], "unknown key 'model.n_layerz'"),
        (["model.n_layers=two"], "model.n_layers: expected an integer"),
        (["train.lr=-1"], "train.lr must be a finite number in (0, "),
        (["eval.metric=recall@7"], "eval.metric"),
        (["eval.protocol=weird"], "eval.protocol must be one of"),
        (["foo.bar=1"], "unknown config section 'foo'"),
        (["model.name=nosuch"], "unknown model 'nosuch'"),
        (["train.epochs"], "--set expects key=value"),
    ],
)
def test_bad_configuration_is_caught(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides, model_name=None if "model.name=nosuch" in overrides else "lightgcn")
    assert message in str(info.value)
