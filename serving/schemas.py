"""The API's request and response bodies (they are its OpenAPI schema) and its fixed bounds."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from serving.catalog import QueryKind

MAX_K = 1000
DEFAULT_K = 10
MAX_HISTORY = 200  # items in a posted history or exclude list: far beyond any user's, small enough to bound work
MAX_ID_LENGTH = 200  # characters of a dataset, user or item id


class RecommendedItem(BaseModel):
    """One ranked item."""

    item_id: str
    title: str | None
    score: float = Field(description="Inner product with the query (cosine for similar items; "
                                     "interaction count for the popularity fallback).")


class Lineage(BaseModel):
    """The runs that made a published version, as ids and (when the UIs' addresses are set) links."""

    checkpoint_version: str | None = None
    mlflow_run_id: str | None = None
    registered_model: str | None = None
    registered_version: str | None = None
    dagster_run_id: str | None = None
    mlflow_run_url: str | None = None
    dagster_run_url: str | None = None


class DatasetInfo(BaseModel):
    """One dataset's served index version."""

    dataset: str
    version: str
    model: str
    published_at: str | None
    loaded_at: datetime
    index_kind: str | None
    item_count: int
    user_count: int
    validation: dict[str, float]
    test: dict[str, float]
    lineage: Lineage
    history_encoder: str = Field(description="How posted histories are encoded: the model's user tower, or the "
                                             "mean of item vectors when the checkpoint cannot be loaded.")
    problem: str | None = Field(default=None, description="Why a newer CURRENT version is not served, if one is not.")


class DatasetList(BaseModel):
    """Every dataset with a served index."""

    datasets: list[DatasetInfo]


class RecommendationsResponse(BaseModel):
    """A user's or a history's top k and what answered it."""

    dataset: str
    version: str = Field(description="The index version that answered.")
    model: str
    user_id: str | None = None
    k: int
    query: QueryKind = Field(description="What the ranking came from: the user's published vector, the model's "
                                         "user tower over the history, the mean of its items' vectors, or "
                                         "popularity when no known item was given.")
    fallback: str | None = Field(default=None, description="'popularity' when the history held no known item.")
    excluded: int = Field(description="Items left out as seen or asked to be excluded.")
    unknown_items: list[str] = Field(default_factory=list, description="History items the index does not hold "
                                                                       "(skipped).")
    items: list[RecommendedItem]


class HistoryRequest(BaseModel):
    """A history to recommend for, oldest item first."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    history: list[str] = Field(default_factory=list, max_length=MAX_HISTORY,
                               description="Item ids, oldest first; ids the index does not hold are skipped.")
    k: int = Field(default=DEFAULT_K, ge=1, le=MAX_K)
    exclude: list[str] = Field(default_factory=list, max_length=MAX_HISTORY,
                               description="More item ids to leave out (the history is always left out).")


class SimilarResponse(BaseModel):
    """An item's nearest items."""

    dataset: str
    version: str
    model: str
    item_id: str
    title: str | None
    items: list[RecommendedItem]


class Health(BaseModel):
    """Liveness."""

    status: str


class DatasetReadiness(BaseModel):
    """One dataset's state: the version served and, if CURRENT names another that was refused, why."""

    dataset: str
    version: str | None
    refused_version: str | None = None
    problem: str | None = None


class Readiness(BaseModel):
    """Ready when every dataset with a CURRENT has a version serving."""

    ready: bool
    datasets: list[DatasetReadiness]


class Problem(BaseModel):
    """An error: what was wrong with the request, in words."""

    detail: str
