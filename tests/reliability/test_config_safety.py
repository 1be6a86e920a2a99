"""Bad configuration is caught before training starts, with one error line that lists the valid choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from modalrec.cli import main
from modalrec.config import load_config
from modalrec.data import Dataset, SyntheticConfig, make_synthetic
from modalrec.errors import ConfigError, ModalrecError
from modalrec.models import MODELS
from modalrec.train import Trainer

SMALL = [
    "--set",
    "data.synthetic.n_users=40",
    "--set",
    "data.synthetic.n_items=30",
    "--set",
    "data.synthetic.n_interactions=400",
    "--set",
    "train.epochs=1",
    "--set",
    "train.threads=1",
    "--set",
    "eval.ks=[5]",
    "--set",
    "eval.metric=recall@5",
]


def run_cli(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``modalrec -q train ... --out tmp/run``; require exit 2, one error line and no run folder."""
    out = tmp_path / "run"
    code = main(["-q", "train", "--data", "synthetic", *SMALL, *argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert not out.exists(), "a run folder was written although the configuration was rejected"
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # unknown keys list the valid ones
        (["--model", "lightgcn", "--set", "train.epochz=3"], ["unknown key 'train.epochz'", "train.epochs"]),
        (["--model", "lightgcn", "--set", "model.n_layer=2"], ["model.n_layer", "model.n_layers"]),
        (["--model", "lightgcn", "--set", "evaluation.ks=[5]"], ["unknown config section", "eval"]),
        (["--model", "lightgcn", "--set", "data.synthetic.users=5"], ["data.synthetic.users", "n_users"]),
        (["--model", "nosuchmodel"], ["unknown model 'nosuchmodel'", "lightgcn", "vbpr"]),
        # wrong types
        (["--model", "lightgcn", "--set", "train.epochs=ten"], ["train.epochs", "expected an integer"]),
        (["--model", "lightgcn", "--set", "train.lr=fast"], ["train.lr", "expected a number"]),
        (["--model", "lightgcn", "--set", "eval.ks=20"], ["eval.ks", "expected a list"]),
        (["--model", "lightgcn", "--set", "model.embed_dim=1.5"], ["model.embed_dim", "expected an integer"]),
        (["--model", "lightgcn", "--set", "train.progress=maybe"], ["train.progress", "true or false"]),
        # impossible values, with the valid choices
        (["--model", "lightgcn", "--set", "train.optimizer=sgd"], ["train.optimizer", "'adam' or 'adamw'"]),
        (["--model", "lightgcn", "--set", "eval.protocol=x"], ["eval.protocol", "standard", "paper"]),
        (["--model", "lightgcn", "--set", "train.lr=-1"], ["train.lr must be a finite number in (0, "]),
        (["--model", "lightgcn", "--set", "eval.metric=auc@5"], ["eval.metric", "recall|precision|ndcg|hit"]),
        # K larger than the catalogue (30 items)
        (
            ["--model", "lightgcn", "--set", "eval.ks=[5,50]"],
            ["eval.ks contains 50", "catalogue has only 30 items"],
        ),
        # a modality the data lacks; the valid ones are listed
        (
            ["--model", "vbpr", "--set", "data.modalities=[nope]"],
            ["no modality ['nope']", "visual", "textual"],
        ),
        # an empty modality list for a model that needs one
        (
            ["--model", "vbpr", "--set", "data.modalities=[]"],
            ["needs at least one item modality", "lightgcn"],
        ),
        # a model that needs features on a dataset without any
        (
            ["--model", "micro", "--set", "data.synthetic.modality_dims={}"],
            ["needs at least one item modality", "no feature files", "mf"],
        ),
    ],
)
def test_bad_config_exits_2_before_training(
    argv: list[str], expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run_cli(argv, tmp_path, capsys)
    for text in expected:
        assert text in line, line


@pytest.fixture(scope="module")
def featureless() -> Dataset:
    return make_synthetic(
        SyntheticConfig(
            n_users=40, n_items=30, n_interactions=400, latent_dim=4, n_clusters=3, modality_dims={}
        )
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_on_featureless_data(name: str, featureless: Dataset) -> None:
    """Every registered model either builds on ID-only data or refuses with a ConfigError naming the fix."""
    cfg = load_config(None, ["eval.ks=[5]", "eval.metric=recall@5", "train.epochs=0"], model_name=name)
    needs_features = MODELS[name].modalities == "any"
    if needs_features:
        with pytest.raises(
            ConfigError, match=r"needs at least one item modality.*pick a model that needs none"
        ):
            Trainer(cfg, data=featureless)
    else:
        try:
            Trainer(cfg, data=featureless)
        except ModalrecError as exc:  # pragma: no cover - would be a bug in the model's declared modalities
            pytest.fail(f"ID-only model {name} refused featureless data: {exc}")


def test_config_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Malformed or non-mapping YAML config files give one line naming the file."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1,\n")
    assert main(["-q", "train", "--model", "mf", "--config", str(bad)]) == 2
    assert "bad.yaml: malformed YAML" in capsys.readouterr().err
    bad.write_text("- just\n- a list\n")
    assert main(["-q", "train", "--model", "mf", "--config", str(bad)]) == 2
    assert "must be a mapping" in capsys.readouterr().err
    assert main(["-q", "train", "--model", "mf", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: cannot read config" in capsys.readouterr().err
