"""The HTTP recommendation service: a FastAPI app over a ``Recommender`` (optional extra ``serve``).

Endpoints (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):

* ``GET /health`` - model, dataset, counts, search mode.
* ``GET /recommend?user=U&k=K[&exclude_seen=true]`` - top-K items for one raw user id.
* ``POST /recommend`` ``{"users": [...], "k": K, "exclude_seen": true}`` - a batch of users.
* ``GET /similar?item=I&k=K`` - items with the most similar final embeddings (cosine).
* ``POST /items`` ``{"items": [{"id": "new-1", "features": {"visual": [...], ...}}]}`` - embed new items from
  their content; they are recommendable at once. Only for models implementing ``item_embeddings_from_features``
  (501 otherwise). An item may lack modalities (key absent or ``null``), not all of them: its missing vector is
  filled as the run filled its own missing items (``Recommender.add_items``); the response names what each item
  lacked and how it was filled.

Errors: unknown user/item -> 404, invalid parameters or malformed JSON -> 422, an item id that exists -> 409,
a model that cannot embed content -> 501; each with ``{"detail": "<message>"}``. Requests never name files.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from modalrec.errors import ModalrecError
from modalrec.recommend import DuplicateIdError, Recommender, UnknownIdError
from modalrec.serving.ann import make_searcher

MAX_K = 1000
MAX_BATCH = 1000


class ScoredItem(BaseModel):
    item: str = Field(description="raw item id")
    score: float = Field(description="the model's score (cosine similarity for /similar)")


class UserRecommendations(BaseModel):
    user: str
    items: list[ScoredItem]


class BatchRequest(BaseModel):
    users: list[str] = Field(min_length=1, max_length=MAX_BATCH, description="raw user ids")
    k: int = Field(20, ge=1, le=MAX_K)
    exclude_seen: bool = Field(True, description="drop the user's training items")


class BatchResponse(BaseModel):
    results: list[UserRecommendations]


class SimilarResponse(BaseModel):
    item: str
    items: list[ScoredItem]


class NewItem(BaseModel):
    id: str = Field(min_length=1, description="raw id of the new item (must not exist)")
    features: dict[str, list[float] | None] = Field(
        description="one vector per modality the model uses; a modality absent or null is missing for this item"
    )


class NewItemsRequest(BaseModel):
    items: list[NewItem] = Field(min_length=1, max_length=MAX_BATCH)


class NewItemsResponse(BaseModel):
    added: list[str]
    n_items: int
    missing: dict[str, list[str]] = Field(
        default_factory=dict,
        description="item id -> the modalities it lacked (items lacking none are left out)",
    )
    missing_fill: str = Field(
        "none",
        description="how missing vectors were filled, as the run filled its own missing items: 'none', "
        "'catalogue mean', 'catalogue mean, masked' (the model was also told which vectors are missing) or 'zeros'",
    )


class Health(BaseModel):
    status: str
    model: str
    dataset: str
    users: int
    items: int
    ann: str
    can_add_items: bool


def _scored(items: list[tuple[str, float]]) -> list[ScoredItem]:
    return [ScoredItem(item=i, score=s) for i, s in items]


def create_app(rec: Recommender, ann: str = "none") -> FastAPI:
    """Build the FastAPI app serving ``rec`` (exact search, or ``ann="faiss"`` for approximate top-K)."""
    service = _Service(rec, make_searcher(rec, ann))
    app = FastAPI(
        title="modalrec",
        description=f"Recommendations from a trained '{rec.model.name}' model on '{rec.data.name}'.",
        version="1",
    )
    _add_error_handlers(app)
    _add_read_routes(app, service)
    _add_item_routes(app, service)
    return app


class _Service:
    """The recommender, its searcher and the lock that keeps reads consistent while ``add_items`` swaps state."""

    def __init__(self, rec: Recommender, searcher: Any) -> None:
        self.rec = rec
        self.searcher = searcher
        self.lock = threading.Lock()
        self.can_add = type(rec.model).item_embeddings_from_features is not _base_embed()

    def recommend(self, users: list[str], k: int, exclude_seen: bool) -> list[list[tuple[str, float]]]:
        try:
            with self.lock:
                return self.searcher.recommend(users, k, exclude_seen)
        except UnknownIdError as exc:
            raise HTTPException(404, str(exc)) from None


def _json_safe(value: Any) -> Any:
    """Validation details may echo the client's ``inf``/``nan``, which strict JSON cannot encode: quote them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def client_errors(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers 400 when it cannot decode a body at all (not UTF-8, JSON nested too deeply); to the
        # client that is the same mistake as any other malformed body, which this API reports as 422.
        status = 422 if exc.status_code == 400 else exc.status_code
        return JSONResponse({"detail": exc.detail}, status_code=status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The default handler echoes the input; a body like {"k": 1e400} echoes inf and the encoder fails (500).
        return JSONResponse({"detail": _json_safe(list(exc.errors()))}, status_code=422)


def _add_read_routes(app: FastAPI, svc: _Service) -> None:
    rec = svc.rec

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(
            status="ok",
            model=rec.model.name,
            dataset=rec.data.name,
            users=rec.data.n_users,
            items=rec.n_items,
            ann=svc.searcher.name,
            can_add_items=svc.can_add,
        )

    @app.get("/recommend", response_model=UserRecommendations)
    def recommend_one(
        user: str = Query(..., description="raw user id"),
        k: int = Query(20, ge=1, le=MAX_K),
        exclude_seen: bool = Query(True),
    ) -> UserRecommendations:
        (items,) = svc.recommend([user], k, exclude_seen)
        return UserRecommendations(user=user, items=_scored(items))

    @app.post("/recommend", response_model=BatchResponse)
    def recommend_batch(req: BatchRequest) -> BatchResponse:
        lists = svc.recommend(req.users, req.k, req.exclude_seen)
        return BatchResponse(
            results=[
                UserRecommendations(user=u, items=_scored(items))
                for u, items in zip(req.users, lists, strict=True)
            ]
        )

    @app.get("/similar", response_model=SimilarResponse)
    def similar(
        item: str = Query(..., description="raw item id"), k: int = Query(20, ge=1, le=MAX_K)
    ) -> SimilarResponse:
        try:
            with svc.lock:
                items = rec.similar_items(item, k)
        except UnknownIdError as exc:
            raise HTTPException(404, str(exc)) from None
        return SimilarResponse(item=item, items=_scored(items))


def _new_item_features(
    rec: Recommender, req: NewItemsRequest
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """({modality: [n_new, d_m]}, {modality: bool [n_new]}) from the request; a modality an item leaves out (or
    gives as null) is missing for it, its row zero here and False in the mask. 422 for an extra, wrong-width or
    non-finite vector, or an item with no vector at all."""
    expected = rec.data.modalities
    features: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    for name in expected:
        rows = [it.features.get(name) for it in req.items]
        dim = rec.data.features[name].shape[1]
        bad = [it.id for it, r in zip(req.items, rows, strict=True) if r is not None and len(r) != dim]
        if bad:
            raise HTTPException(422, f"item {bad[0]!r}: '{name}' must have {dim} values")
        has = np.array([r is not None for r in rows], dtype=bool)
        arr = np.zeros((len(rows), dim), dtype=np.float32)
        if has.any():
            arr[has] = np.asarray([r for r in rows if r is not None], dtype=np.float32)
        if not np.isfinite(arr).all():
            raise HTTPException(422, f"'{name}' has non-finite values (or values beyond float32)")
        features[name] = arr
        if not has.all():
            present[name] = has
    extra = sorted({n for it in req.items for n in it.features} - set(expected))
    if extra:
        raise HTTPException(422, f"unknown modality {extra[0]!r}; this model uses {expected}")
    if expected and len(present) == len(expected):  # every modality lacks somewhere: may one item lack all?
        empty = np.flatnonzero(~np.stack(list(present.values())).any(axis=0))
        if len(empty):
            raise HTTPException(
                422,
                f"item {req.items[empty[0]].id!r} has none of the modalities {expected}; a new item needs one",
            )
    return features, present


def _add_item_routes(app: FastAPI, svc: _Service) -> None:
    rec = svc.rec

    @app.post("/items", response_model=NewItemsResponse, status_code=201)
    def add_items(req: NewItemsRequest) -> NewItemsResponse:
        if not svc.can_add:
            raise HTTPException(
                501,
                f"model '{rec.model.name}' cannot embed items from content features; "
                "use a model with item_embeddings_from_features (see docs/serving.md)",
            )
        features, present = _new_item_features(rec, req)
        try:
            with svc.lock:
                how = rec.add_items([it.id for it in req.items], features, present)
                svc.searcher.items_added(len(req.items))
        except NotImplementedError as exc:
            raise HTTPException(501, str(exc)) from None
        except DuplicateIdError as exc:
            raise HTTPException(409, str(exc)) from None
        except ModalrecError as exc:
            raise HTTPException(422, str(exc)) from None
        missing = {
            it.id: [name for name, mask in present.items() if not mask[j]] for j, it in enumerate(req.items)
        }
        return NewItemsResponse(
            added=[it.id for it in req.items],
            n_items=rec.n_items,
            missing={k: v for k, v in missing.items() if v},
            missing_fill=how,
        )


def _base_embed() -> Any:
    from modalrec.models.base import Model

    return Model.item_embeddings_from_features
