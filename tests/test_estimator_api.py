"""The estimator API (modalrec.api): classes from the registry, checked hyper-parameters, fit on planted data,
recommend / score / save / load / evaluate, and the runnable example of docs/python-api.md."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import modalrec
from modalrec.api import ESTIMATORS, Estimator, NotFittedError
from modalrec.data import Dataset
from modalrec.errors import ConfigError, ModalrecError
from modalrec.models import MODELS
from modalrec.recommend import UnknownIdError

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
FAST = {"lr": 0.01, "patience": 5, "threads": 1, "progress": False, "health_epochs": 0}


def test_one_estimator_class_per_registered_model() -> None:
    assert len(ESTIMATORS) == len(MODELS)
    for key, cls in MODELS.items():
        est = getattr(modalrec, cls.__name__)
        assert issubclass(est, Estimator) and est.model_name == key and est.model_class is cls
    assert modalrec.MMSSL.__name__ == "MMSSL" and "MMSSL" in dir(modalrec)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        modalrec.Nope  # noqa: B018
    with pytest.raises(ModalrecError, match="abstract"):
        Estimator()


def test_hyper_parameters_are_checked_like_the_cli() -> None:
    model = modalrec.MMSSL(n_layers=3, omega=0.3)
    assert repr(model) == "MMSSL(n_layers=3, omega=0.3)"
    params = model.get_params()
    assert params["n_layers"] == 3 and params["omega"] == 0.3 and params["embed_dim"] == 64
    with pytest.raises(ConfigError) as err:
        modalrec.MMSSL(n_layer=3)
    text = str(err.value)
    assert text.startswith("unknown key 'model.n_layer'; valid keys: model.embed_dim")
    assert text.endswith("did you mean 'model.n_layers'?")
    with pytest.raises(ConfigError, match=r"^model\.n_layers: expected an integer, got '3'$"):
        modalrec.LightGCN(n_layers="3")
    with pytest.raises(ConfigError, match=r"model\.embed_dim must be an integer >= 1, got 0"):
        modalrec.LightGCN(embed_dim=0)
    with pytest.raises(ConfigError, match=r"did you mean 'model\.embed_dim'"):
        modalrec.LightGCN(n_layers=2).set_params(embed_dimm=8)


def test_fit_settings_unknown_and_not_fitted(tiny: Dataset) -> None:
    model = modalrec.MF()
    with pytest.raises(NotFittedError, match="not fitted yet"):
        model.recommend(["u1"])
    with pytest.raises(ConfigError, match=r"unknown setting 'lrr'; did you mean 'lr'\?"):
        model.fit(tiny, lrr=0.1)
    with pytest.raises(ConfigError, match=r"train\.lr must be"):
        model.fit(tiny, lr=-1.0)


@pytest.fixture(scope="module")
def fitted(tiny: Dataset) -> Estimator:
    return modalrec.LightGCN(n_layers=2, embed_dim=32).fit(tiny, epochs=40, seed=0, **FAST)


def test_fit_on_planted_data_beats_popularity(tiny: Dataset, fitted: Estimator) -> None:
    ours = modalrec.evaluate(fitted, split="test")
    pop = modalrec.evaluate(modalrec.Popularity().fit(tiny), split="test")
    assert ours["users"] == pop["users"] > 0
    assert ours["recall@20"] > 1.2 * pop["recall@20"], (ours["recall@20"], pop["recall@20"])
    # the run's own test figure (restored best state) is what evaluate computes
    assert ours["recall@20"] == pytest.approx(fitted.metrics_["test"]["recall@20"], abs=1e-9)
    assert 0 <= fitted.metrics_["best_epoch"] < fitted.metrics_["epochs_run"] <= 40
    # evaluation settings through keywords
    at5 = modalrec.evaluate(fitted, split="test", ks=[5], metric="recall@5")
    assert set(at5) == {"recall@5", "precision@5", "ndcg@5", "hit@5", "users"}
    assert at5["recall@5"] <= ours["recall@20"]


def test_recommend_and_score_agree(tiny: Dataset, fitted: Estimator) -> None:
    recs = fitted.recommend(["u3", "u7"], k=5)
    assert len(recs) == 2 and all(len(r) == 5 for r in recs)
    seen = set(tiny.train[tiny.user_index("u3")].indices.tolist())
    assert not seen & {tiny.item_index(i) for i, _ in recs[0]}
    ids = [i for i, _ in recs[0]]
    block = fitted.score(["u3"], ids)
    assert block.shape == (1, 5) and block.dtype == np.float32
    np.testing.assert_allclose(block[0], [s for _, s in recs[0]], rtol=1e-6)
    assert list(block[0]) == sorted(block[0], reverse=True)
    assert fitted.recommend(["u3"], k=5, scores=False) == [ids]
    with pytest.raises(UnknownIdError, match="unknown user id 'nobody'"):
        fitted.recommend(["nobody"])


def test_save_load_gives_identical_recommendations(tmp_path: Path, tiny: Dataset, fitted: Estimator) -> None:
    path = fitted.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["checkpoint.pt", "config.yaml", "data", "metrics.json"]
    restored = modalrec.load(path)
    assert type(restored) is modalrec.LightGCN and restored.get_params() == fitted.get_params()
    assert restored.metrics_["test"] == fitted.metrics_["test"]
    users = [str(u) for u in tiny.user_ids[:50]]
    assert restored.recommend(users, k=10) == fitted.recommend(users, k=10)
    np.testing.assert_array_equal(restored.score(users, ["i0", "i5"]), fitted.score(users, ["i0", "i5"]))
    assert modalrec.evaluate(restored) == modalrec.evaluate(fitted)
    with pytest.raises(ModalrecError, match="exists; pass overwrite=True"):
        fitted.save(path)
    with pytest.raises(ModalrecError, match=r"no checkpoint\.pt"):
        modalrec.load(tmp_path / "elsewhere")


def test_content_model_round_trip_and_fixed_epochs(tmp_path: Path, tiny: Dataset) -> None:
    """A multi-modal model (features rebuilt from the saved data) and valid=False: exactly `epochs` epochs."""
    model = modalrec.VBPR(embed_dim=16).fit(tiny, epochs=3, valid=False, **FAST)
    assert len(model.history_) == 3 and model.metrics_["best_epoch"] == 2
    restored = modalrec.load(model.save(tmp_path / "vbpr"))
    assert restored.recommend(["u1", "u2"], k=10) == model.recommend(["u1", "u2"], k=10)


def test_bare_model_evaluate_keeps_its_old_form(tiny: Dataset, fitted: Estimator) -> None:
    assert fitted.model_ is not None
    old = modalrec.evaluate(fitted.model_, tiny)  # lower-level form: split "val" by default
    assert old["recall@20"] == pytest.approx(modalrec.evaluate(fitted, split="val")["recall@20"])
    with pytest.raises(ModalrecError, match="needs its Dataset"):
        modalrec.evaluate(fitted.model_)


def test_the_documented_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = DOC.read_text(encoding="utf-8")
    source = re.search(r"```python\n(import modalrec\n.*?)```", text, re.S)
    assert source is not None, "docs/python-api.md lost its example"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(source.group(1), str(DOC), "exec"), namespace)
    metrics, baseline = namespace["metrics"], namespace["baseline"]
    assert isinstance(metrics, dict) and isinstance(baseline, dict)
    assert metrics["recall@20"] > baseline["recall@20"]
    assert (tmp_path / "lightgcn-model" / "checkpoint.pt").is_file()
