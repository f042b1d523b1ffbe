"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from service.coverage import load_unit_coverage, update_unit_coverage
from service.db import Database, open_database
from service.errors import install_error_handlers
from service.metrics import Metrics
from service.middleware import BodyLimitMiddleware, RequestLogMiddleware
from service.routers import (
    accounts,
    capture,
    codes,
    coverage,
    duplicates,
    exports,
    health,
    households,
    metrics,
    openrosa,
    pages,
    reviews,
    submissions,
    tiles,
    units,
)
from service.schemas import BatchIn
from service.settings import Settings
from service.snapshots import SnapshotCache
from service.tiles import TileCaches
from service.unit_index import UnitIndexCache, keep_out_of_collections

#: Every router of the app, in the order they are mounted.
ROUTERS = (
    health.router,
    metrics.router,
    units.router,
    accounts.router,
    submissions.router,
    households.router,
    duplicates.router,
    exports.router,
    codes.router,
    reviews.router,
    openrosa.router,
    capture.router,
    coverage.router,
    tiles.router,
    pages.router,
)

DESCRIPTION = """Thu thập, kiểm tra và cấp mã địa chỉ số cho hộ gia đình.

Xác thực: `Authorization: Bearer <token>`. Lỗi trả về `application/problem+json` với `code`
ổn định (tiếng Anh) và `detail` tiếng Việt."""


def create_app(settings: Settings | None = None, *, database: Database | None = None) -> FastAPI:
    """Build the app; the database opens in the lifespan unless one is handed in (tests)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = database is None
        app.state.database = database or open_database(settings)
        app.state.intake_limiter = anyio.CapacityLimiter(settings.intake_concurrency)
        keep_out_of_collections()
        try:
            yield
        finally:
            if owned:
                app.state.database.close()

    app = FastAPI(
        title="diachiso",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _mount_api_docs(app, settings)
    pages.mount_static(app)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.unit_cache = UnitIndexCache(commune_tolerance_m=settings.commune_tolerance_m)
    app.state.coverage_cache = SnapshotCache(load_unit_coverage, update=update_unit_coverage)
    app.state.tile_caches = TileCaches(
        app.state.coverage_cache, max_stale_s=settings.tiles_max_stale_s
    )
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        upload_max_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(RequestLogMiddleware, metrics=app.state.metrics)
    app.openapi = lambda: _openapi(app, settings.max_batch_items)  # type: ignore[method-assign]
    return app


def _mount_api_docs(app: FastAPI, settings: Settings) -> None:
    """Swagger UI at /docs from a Python package's files: no CDN (offices may be offline)."""
    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="diachiso API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )
        # The page starts Swagger UI from one inline script: the CSP allows it by its hash.
        body = bytes(page.body)
        headers = pages.page_headers(settings, script_hashes=pages.inline_script_hashes(body))
        return HTMLResponse(body, headers=headers)


def _openapi(app: FastAPI, max_items: int) -> dict[str, Any]:
    """The generated schema plus the submission body (read raw, so not inferred by FastAPI)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    body = BatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(body.pop("$defs", {}))
    body["properties"]["submissions"]["maxItems"] = max_items  # the configured limit
    components["BatchIn"] = body
    app.openapi_schema = schema
    return schema
