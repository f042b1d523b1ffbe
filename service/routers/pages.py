"""The web pages: the coverage map (``/``) and the review page (``/review``).

Static HTML, CSS and JavaScript served by the service itself (offices may be offline; no CDN,
no build step). The pages hold no data and no business logic: they are clients of the public
API with the token the user pastes in (kept in the browser's session storage), so the API's
role guards apply to every call. The HTML is public; a strict Content-Security-Policy allows
only the service's own scripts (no inline script or handler) and, when configured, the basemap.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

from service.settings import Settings

STATIC = Path(__file__).resolve().parent.parent / "static"
PAGES = {"/": "map.html", "/review": "review.html"}

router = APIRouter()


def mount_static(app: FastAPI) -> None:
    """The pages' own assets and the vendored MapLibre GL JS."""
    app.mount("/static/app", StaticFiles(directory=STATIC / "app"), name="app")
    app.mount("/static/vendor", StaticFiles(directory=STATIC / "vendor"), name="vendor")


@cache
def _template(name: str) -> str:
    return (STATIC / "app" / name).read_text(encoding="utf-8")


def content_security_policy(basemap_url: str | None) -> str:
    """Only this origin, plus the basemap's origin for images when one is configured.

    MapLibre runs its worker from a ``blob:`` URL and sets element styles from script.
    """
    images = "'self' data: blob:"
    connect = "'self'"
    if basemap_url:
        parts = urlsplit(basemap_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        images, connect = f"{images} {origin}", f"{connect} {origin}"
    return (
        f"default-src 'self'; script-src 'self'; worker-src 'self' blob:; "
        f"style-src 'self' 'unsafe-inline'; img-src {images}; connect-src {connect}; "
        f"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def _page(request: Request) -> HTMLResponse:
    """A page with the configured basemap URL in a meta tag (empty: no basemap)."""
    settings: Settings = request.app.state.settings
    basemap = settings.basemap_url or ""
    body = _template(PAGES[request.url.path]).replace(
        "{{BASEMAP_URL}}", html.escape(basemap, quote=True)
    )
    headers = {
        "Content-Security-Policy": content_security_policy(settings.basemap_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }
    return HTMLResponse(body, headers=headers)


# Plain routes, not API operations: no token is needed for the HTML (its data calls carry one),
# and they stay out of the OpenAPI schema.
for _path in PAGES:
    router.add_route(_path, _page, methods=["GET"], include_in_schema=False)
