"""A property-based fuzz of the OpenAPI schema (schemathesis): no input gets a 500, every response fits the schema."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from serving.app import create_app
from serving.settings import ServingSettings
from tests.serving.shop import PublishedShop

# The schema does not depend on what is published, so it is read (at collection) from an app over an empty
# folder; each case is then sent to the app over the real published index.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(ServingSettings(data_dir=Path(tempfile.mkdtemp(prefix="llmrec-schema-")))))


@pytest.fixture
def served_app(shop: PublishedShop) -> FastAPI:
    """The app over the shop's published index."""
    return create_app(shop.settings())


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_api_or_its_schema(case: schemathesis.Case, served_app: FastAPI) -> None:
    case.call_and_validate(app=served_app)
