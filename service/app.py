"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.db import Database, open_database
from service.errors import install_error_handlers
from service.middleware import BodyLimitMiddleware, RequestLogMiddleware
from service.routers import accounts, health, units
from service.settings import Settings

#: Every router of the app, in the order they are mounted.
ROUTERS = (health.router, units.router, accounts.router)

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
    )
    app.state.settings = settings
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        upload_max_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(RequestLogMiddleware)
    return app
