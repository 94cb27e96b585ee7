"""The FastAPI application: the JSON API, the page, the probes, the guards, and the index registry's lifecycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from serving import api, page
from serving.catalog import NotFoundError, UnavailableError
from serving.registry import IndexRegistry
from serving.security import BearerTokenMiddleware, BodySizeLimitMiddleware
from serving.settings import ServingSettings

logger = logging.getLogger(__name__)


def create_app(settings: ServingSettings | None = None, registry: IndexRegistry | None = None) -> FastAPI:
    """The service over `settings.data_dir`'s published indexes; the registry starts and stops with the app."""
    settings = settings or ServingSettings.from_env()
    registry = registry or IndexRegistry(settings.indexes_root, settings.checkpoints_root, settings.poll_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry.start()
        logger.info("serving %s from %s", sorted(registry.served()) or "no dataset yet", settings.indexes_root)
        yield
        registry.stop()

    app = FastAPI(title="llmrec recommendations", version="1",
                  description="Top-k recommendations and similar items from the pipeline's published faiss "
                              "indexes; every answer names the index version and model that made it.",
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.include_router(api.router)
    app.include_router(page.router)

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, error: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(UnavailableError)
    async def unavailable(_: Request, error: UnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        if error.status_code == 405:
            # Starlette's Allow names only the first route of the path; GET and POST /v1/recommendations are two.
            methods = {method for route in app.router.routes if route.matches(request.scope)[0] == Match.PARTIAL
                       for method in getattr(route, "methods", None) or ()}
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=headers)

    # The last middleware added runs first: the token is checked before a body is read.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.token is not None:
        app.add_middleware(BearerTokenMiddleware, token=settings.token.get_secret_value())
    return app
