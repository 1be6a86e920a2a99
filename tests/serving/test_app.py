"""The HTTP service end to end: a real uvicorn server on a free loopback port, spoken to over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from modalrec.config import load_config  # noqa: E402
from modalrec.data import Dataset  # noqa: E402
from modalrec.models import build_model  # noqa: E402
from modalrec.recommend import Recommender  # noqa: E402
from modalrec.serving.app import create_app  # noqa: E402


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """uvicorn in a background thread, bound to 127.0.0.1 on a free port."""

    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=20)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _recommender(tiny: Dataset, model: str) -> Recommender:
    cfg = load_config(None, [], model_name=model)
    return Recommender(build_model(cfg, tiny, torch.device("cpu")), tiny)


@pytest.fixture(scope="module")
def lightgcn_server(tiny: Dataset) -> Iterator[tuple[httpx.Client, Recommender]]:
    torch.manual_seed(0)
    rec = _recommender(tiny, "lightgcn")
    with _Server(create_app(rec)) as client:
        yield client, rec


def test_health_and_docs(lightgcn_server: tuple[httpx.Client, Recommender], tiny: Dataset) -> None:
    client, _ = lightgcn_server
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model"] == "lightgcn"
    assert body["users"] == tiny.n_users and body["items"] == tiny.n_items and body["can_add_items"] is False
    schema = client.get("/openapi.json").json()
    assert {"/health", "/recommend", "/similar", "/items"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200


def test_recommend_matches_python_api(
    lightgcn_server: tuple[httpx.Client, Recommender], tiny: Dataset
) -> None:
    client, rec = lightgcn_server
    user = str(tiny.user_ids[3])
    r = client.get("/recommend", params={"user": user, "k": 7})
    assert r.status_code == 200
    got = [(x["item"], x["score"]) for x in r.json()["items"]]
    want = rec.recommend([user], k=7)[0]
    assert [i for i, _ in got] == [i for i, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    seen = {str(tiny.item_ids[j]) for j in tiny.train[3].indices}
    assert not seen & {i for i, _ in got}  # training items excluded by default
    # batch endpoint returns the same lists in request order
    users = [str(tiny.user_ids[j]) for j in (5, 3, 9)]
    r = client.post("/recommend", json={"users": users, "k": 7})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["user"] for x in results] == users
    assert [x["item"] for x in results[1]["items"]] == [i for i, _ in want]


def test_similar(lightgcn_server: tuple[httpx.Client, Recommender], tiny: Dataset) -> None:
    client, rec = lightgcn_server
    item = str(tiny.item_ids[0])
    r = client.get("/similar", params={"item": item, "k": 5})
    assert r.status_code == 200
    items = r.json()["items"]
    assert len(items) == 5 and item not in {x["item"] for x in items}
    assert [x["item"] for x in items] == [i for i, _ in rec.similar_items(item, 5)]


def test_errors(lightgcn_server: tuple[httpx.Client, Recommender]) -> None:
    client, _ = lightgcn_server
    r = client.get("/recommend", params={"user": "nobody", "k": 5})
    assert r.status_code == 404 and "unknown user id 'nobody'" in r.json()["detail"]
    assert client.get("/similar", params={"item": "nothing"}).status_code == 404
    assert client.get("/recommend", params={"user": "u1", "k": 0}).status_code == 422
    assert client.get("/recommend", params={"user": "u1", "k": "many"}).status_code == 422
    assert client.get("/recommend").status_code == 422
    bad = client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422
    assert client.post("/recommend", json={"users": [], "k": 5}).status_code == 422
    assert client.post("/recommend", json={"users": ["u1", "nobody"]}).status_code == 404
    # LightGCN has no content encoder: adding items is refused with a clear message
    r = client.post("/items", json={"items": [{"id": "new", "features": {"visual": [0.0] * 16}}]})
    assert r.status_code == 501 and "cannot embed items" in r.json()["detail"]


def test_new_items_are_recommendable_at_once(tiny: Dataset) -> None:
    """A content model (LATTICE) embeds a posted item; a user's top list can then contain it."""
    torch.manual_seed(0)
    rec = _recommender(tiny, "lattice")
    user = str(tiny.user_ids[0])
    with _Server(create_app(rec)) as client:
        assert client.get("/health").json()["can_add_items"] is True
        feats = {name: tiny.features[name][:3].tolist() for name in tiny.modalities}
        body = {
            "items": [{"id": f"new{j}", "features": {n: v[j] for n, v in feats.items()}} for j in range(3)]
        }
        r = client.post("/items", json=body)
        assert r.status_code == 201, r.text
        assert r.json() == {
            "added": ["new0", "new1", "new2"],
            "n_items": tiny.n_items + 3,
            "missing": {},
            "missing_fill": "none",
        }
        # every item is scored: with k = all items the new ones are in the list
        r = client.get("/recommend", params={"user": user, "k": 1000, "exclude_seen": False})
        assert {"new0", "new1", "new2"} <= {x["item"] for x in r.json()["items"]}
        assert client.get("/similar", params={"item": "new1", "k": 3}).status_code == 200
        # the new item's score equals the dot product with the content embedding
        emb = rec.emb.items[-2]
        score = next(x["score"] for x in r.json()["items"] if x["item"] == "new1")
        assert score == pytest.approx(float(rec.emb.users[0] @ emb), abs=1e-4)
        # errors: duplicate id 409, wrong width or no modality at all 422
        assert client.post("/items", json=body).status_code == 409
        one = {n: v[0] for n, v in feats.items()}
        wrong = {**one, tiny.modalities[0]: [0.0, 1.0]}
        r = client.post("/items", json={"items": [{"id": "x", "features": wrong}]})
        assert r.status_code == 422 and "must have" in r.json()["detail"]
        r = client.post("/items", json={"items": [{"id": "y", "features": {}}]})
        assert r.status_code == 422 and "none of the modalities" in r.json()["detail"]


def test_faiss_search_agrees_with_exact(tiny: Dataset) -> None:
    pytest.importorskip("faiss")
    torch.manual_seed(0)
    rec = _recommender(tiny, "lightgcn")
    users = [str(u) for u in tiny.user_ids[:20]]
    exact = rec.recommend(users, k=10)
    with _Server(create_app(rec, ann="faiss")) as client:
        assert client.get("/health").json()["ann"] == "faiss"
        r = client.post("/recommend", json={"users": users, "k": 10})
        assert r.status_code == 200
        got = [[x["item"] for x in res["items"]] for res in r.json()["results"]]
    overlap = np.mean([len(set(g) & {i for i, _ in e}) / 10 for g, e in zip(got, exact, strict=True)])
    assert overlap >= 0.9  # HNSW on 200 items is near exact


def test_loadtest_refuses_non_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    from modalrec.serving.loadtest import main, percentile

    assert main(["--url", "http://10.1.2.3:8000", "--run", "unused"]) == 2
    assert "only targets loopback" in capsys.readouterr().err
    assert percentile(list(range(1, 101)), 99) == 99 and percentile([7.0], 50) == 7.0
