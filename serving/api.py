"""The versioned JSON API (`/v1`) and the health probes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from ml.index.recommend import Recommendation
from serving.catalog import Answer, ServedIndex
from serving.registry import IndexRegistry
from serving.schemas import (
    DEFAULT_K,
    MAX_ID_LENGTH,
    MAX_K,
    DatasetInfo,
    DatasetList,
    DatasetReadiness,
    Health,
    HistoryRequest,
    Lineage,
    Problem,
    Readiness,
    RecommendationsResponse,
    RecommendedItem,
    SimilarResponse,
)
from serving.settings import ServingSettings

DatasetParam = Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH, description="A served dataset.")]
KParam = Annotated[int, Query(ge=1, le=MAX_K, description="How many items.")]
ERRORS = {404: {"model": Problem, "description": "Unknown dataset, user or item."},
          409: {"model": Problem, "description": "The served version cannot answer this kind of request."}}
BODY_ERRORS = {**ERRORS, 400: {"model": Problem, "description": "The body cannot be parsed (e.g. not UTF-8)."},
               413: {"model": Problem, "description": "The body is over the size limit."}}

router = APIRouter()


def _registry(request: Request) -> IndexRegistry:
    return request.app.state.registry


def _settings(request: Request) -> ServingSettings:
    return request.app.state.settings


def _items(picked: list[Recommendation]) -> list[RecommendedItem]:
    return [RecommendedItem(item_id=item.item_id, title=item.title, score=item.score) for item in picked]


def _answer(served: ServedIndex, answer: Answer, k: int, user_id: str | None = None) -> RecommendationsResponse:
    return RecommendationsResponse(
        dataset=served.dataset, version=served.version, model=served.model, user_id=user_id, k=k,
        query=answer.query, fallback="popularity" if answer.query == "popularity" else None,
        excluded=answer.excluded, unknown_items=answer.unknown_items, items=_items(answer.items))


def dataset_info(served: ServedIndex, settings: ServingSettings, problem: str | None = None) -> DatasetInfo:
    """What a person needs to trust a served version: its model, figures, and the runs that made it."""
    manifest = served.loaded.manifest
    model_run = manifest.get("model_run", {})
    metrics = manifest.get("metrics", {})
    lineage = Lineage(**{key: str(model_run[key]) for key in Lineage.model_fields if model_run.get(key)})
    if settings.mlflow_url and lineage.mlflow_run_id:
        lineage.mlflow_run_url = f"{settings.mlflow_url.rstrip('/')}/#/runs/{lineage.mlflow_run_id}"
    if settings.dagster_url and lineage.dagster_run_id:
        lineage.dagster_run_url = f"{settings.dagster_url.rstrip('/')}/runs/{lineage.dagster_run_id}"
    return DatasetInfo(
        dataset=served.dataset, version=served.version, model=served.model,
        published_at=manifest.get("created_at"), loaded_at=served.loaded_at,
        index_kind=manifest.get("index", {}).get("kind"), item_count=len(served.loaded.item_ids),
        user_count=len(served.loaded.user_rows or {}),
        validation={key.removeprefix("valid_"): value for key, value in metrics.items() if key.startswith("valid_")},
        test={key.removeprefix("test_"): value for key, value in metrics.items() if key.startswith("test_")},
        lineage=lineage,
        history_encoder="model" if served.encoder is not None else f"mean_item_vectors ({served.encoder_problem})",
        problem=problem,
    )


@router.get("/healthz", response_model=Health, tags=["probes"])
def healthz() -> Health:
    """Alive: the process answers."""
    return Health(status="alive")


@router.get("/readyz", response_model=Readiness, tags=["probes"], responses={503: {"model": Readiness}})
def readyz(request: Request) -> Readiness | JSONResponse:
    """Ready when every dataset with a published CURRENT has a version loaded; says why a newer one is refused."""
    registry = _registry(request)
    served, refused = registry.served(), registry.refusals()
    states = []
    for dataset in sorted(set(served) | set(refused) | set(registry.datasets_on_disk())):
        refusal = refused.get(dataset)
        states.append(DatasetReadiness(
            dataset=dataset, version=served[dataset].version if dataset in served else None,
            refused_version=refusal.version if refusal else None, problem=refusal.reason if refusal else None))
    readiness = Readiness(ready=bool(states) and all(state.version for state in states), datasets=states)
    return readiness if readiness.ready else JSONResponse(readiness.model_dump(mode="json"), status_code=503)


@router.get("/v1/datasets", response_model=DatasetList, tags=["datasets"])
def datasets(request: Request) -> DatasetList:
    """Every dataset with a served index: version, model, when published, figures and lineage."""
    registry, settings = _registry(request), _settings(request)
    refused = registry.refusals()
    return DatasetList(datasets=[
        dataset_info(served, settings, refused[name].reason if name in refused else None)
        for name, served in sorted(registry.served().items())])


@router.get("/v1/recommendations", response_model=RecommendationsResponse, tags=["recommendations"],
            responses=ERRORS)
async def recommendations_for_user(
    request: Request, dataset: DatasetParam,
    user_id: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH, description="A user of the index.")],
    k: KParam = DEFAULT_K,
    exclude_seen: Annotated[bool, Query(description="Leave out the items the user interacted with.")] = True,
) -> RecommendationsResponse:
    """A known user's top k from the published index (their history left out by default)."""
    # Async on purpose: one faiss search (well under a millisecond) runs on the event loop, where a thread
    # pool hop per request cost more than the search and queued 32 threads behind the GIL (p99 136 ms).
    served = _registry(request).get(dataset)
    return _answer(served, served.for_user(user_id, k, exclude_seen), k, user_id=user_id)


@router.post("/v1/recommendations", response_model=RecommendationsResponse, tags=["recommendations"],
             responses=BODY_ERRORS)
def recommendations_for_history(request: Request, body: HistoryRequest) -> RecommendationsResponse:
    """The top k for a history, encoded by the published model's user tower; popularity when it is empty."""
    served = _registry(request).get(body.dataset)
    return _answer(served, served.for_history(body.history, body.k, body.exclude), body.k)


@router.get("/v1/items/{item_id}/similar", response_model=SimilarResponse, tags=["items"], responses=ERRORS)
async def similar_items(
    request: Request, item_id: Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH)],
    dataset: DatasetParam, k: KParam = DEFAULT_K,
) -> SimilarResponse:
    """An item's nearest items by cosine of the published item vectors (on the event loop, as by user id)."""
    served = _registry(request).get(dataset)
    picked = served.similar(item_id, k)
    return SimilarResponse(dataset=served.dataset, version=served.version, model=served.model, item_id=item_id,
                           title=served.title(item_id), items=_items(picked))
