"""A model's own training defaults (``Model.train_defaults``): used unless the run sets the value itself."""

from __future__ import annotations

from pathlib import Path

from modalrec.config import TrainConfig, load_config
from modalrec.experiments.runner import build_run_config
from modalrec.models import MODELS


def test_model_default_applies_only_where_the_run_is_silent(tmp_path: Path) -> None:
    own = MODELS["lightgcn"].train_defaults["lr"]
    assert own != TrainConfig().lr
    assert load_config(None, [], model_name="lightgcn").train.lr == own
    # a model without its own value gets the trainer's
    assert load_config(None, [], model_name="mf").train.lr == TrainConfig().lr
    # --set, a config file and a compare config's base or per-model train section all win
    assert load_config(None, ["train.lr=0.001"], model_name="lightgcn").train.lr == 0.001
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: lightgcn}\ntrain: {lr: 0.002, epochs: 3}\n")
    cfg = load_config(path, [])
    assert cfg.train.lr == 0.002 and cfg.train.epochs == 3
    base = {"train": {"lr": 0.003}}
    assert build_run_config(base, "lightgcn", {})["train"]["lr"] == 0.003
    assert build_run_config({}, "lightgcn", {"train": {"lr": 0.004}})["train"]["lr"] == 0.004
    assert build_run_config({}, "lightgcn", {})["train"]["lr"] == own
    # the recorded config holds the value used, so reading it back (resume, registry) keeps it
    recorded = load_config(None, [], model_name="lightgcn").to_dict()
    assert recorded["train"]["lr"] == own
