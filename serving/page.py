"""The page at `/`: a user's history beside what the served model recommends, rendered on the server."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from serving.api import dataset_info
from serving.catalog import NotFoundError, UnavailableError
from serving.schemas import DEFAULT_K, MAX_ID_LENGTH

PAGE_K_LIMIT = 100  # a page of more than 100 rows is not looked at

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def page(
    request: Request,
    dataset: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
    user_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
    k: Annotated[int, Query(ge=1, le=PAGE_K_LIMIT)] = DEFAULT_K,
    pick: Annotated[str | None, Query(max_length=10, description="'random': a random user of the dataset.")] = None,
) -> Response:
    """Choose a dataset and a user (typed or random); see their history, newest first, and their top k."""
    registry = request.app.state.registry
    served_all = registry.served()
    names = sorted(served_all)
    dataset = dataset if dataset in served_all else (names[0] if names else None)
    context: dict[str, object] = {"datasets": names, "dataset": dataset, "user_id": user_id or "", "k": k,
                                  "error": None, "info": None, "history": [], "items": []}
    if dataset is None:
        context["error"] = "No published index yet: run the pipeline (make run) first."
        return templates.TemplateResponse(request, "index.html", context, status_code=503)
    served = served_all[dataset]
    context["info"] = dataset_info(served, request.app.state.settings)
    if pick == "random":
        users = served.user_ids()
        if users:
            # A fresh pick each time is the point of the button; the page is not an evaluation.
            chosen = random.choice(users)  # noqa: S311
            return RedirectResponse(f"/?{urlencode({'dataset': dataset, 'user_id': chosen, 'k': k})}", status_code=303)
        context["error"] = f"The {dataset} index has no users to pick from."
    if user_id:
        try:
            answer = served.for_user(user_id, k)
            context["history"] = [{"item_id": item, "title": served.title(item)}
                                  for item in reversed(served.history(user_id))]
            context["items"] = answer.items
        except (NotFoundError, UnavailableError) as error:
            context["error"] = str(error)
    return templates.TemplateResponse(request, "index.html", context,
                                      status_code=404 if context["error"] and user_id else 200)
