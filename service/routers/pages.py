"""The web pages: the coverage map (``/``) and the review page (``/review``).

Static HTML, CSS and JavaScript served by the service itself (offices may be offline; no CDN,
no build step). The pages hold no data and no business logic: they are clients of the public
API with the token the user pastes in (kept in the browser's session storage), so the API's
role guards apply to every call. The HTML is public. Every HTML page of the service (these
two, the capture and Collect pages, ``/docs``) sends the same headers (:func:`page_headers`):
a strict Content-Security-Policy allows only the service's own scripts (no inline script or
handler, bar Swagger UI's one by its hash) and, when configured, the basemap.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Sequence
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


def content_security_policy(basemap_url: str | None, *, script_hashes: Sequence[str] = ()) -> str:
    """Only this origin, plus the basemap's origin for images when one is configured.

    MapLibre runs its worker from a ``blob:`` URL and sets element styles from script.
    ``script_hashes`` (``sha256-…``) allow given inline scripts, and only those (Swagger UI).
    """
    images = "'self' data: blob:"
    connect = "'self'"
    if basemap_url:
        parts = urlsplit(basemap_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        images, connect = f"{images} {origin}", f"{connect} {origin}"
    scripts = " ".join(["'self'", *(f"'{h}'" for h in script_hashes)])
    return (
        f"default-src 'self'; script-src {scripts}; worker-src 'self' blob:; "
        f"style-src 'self' 'unsafe-inline'; img-src {images}; connect-src {connect}; "
        f"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def page_headers(settings: Settings, *, script_hashes: Sequence[str] = ()) -> dict[str, str]:
    """The headers every HTML page of the service sends (map, review, capture, Collect, /docs);
    ``nosniff`` every response gets (``service.middleware``).

    ``no-cache``: revalidate, so a new release reaches browsers and phones at the next online
    load. No referrer leaves the service (a basemap server is not told which page asked).
    """
    return {
        "Content-Security-Policy": content_security_policy(
            settings.basemap_url, script_hashes=script_hashes
        ),
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }


_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def inline_script_hashes(body: bytes) -> list[str]:
    """CSP source expressions (``sha256-…``) of the inline ``<script>`` elements in ``body``."""
    return [
        "sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode()
        for script in _INLINE_SCRIPT.findall(body)
    ]


def _page(request: Request) -> HTMLResponse:
    """A page with the configured basemap URL in a meta tag (empty: no basemap)."""
    settings: Settings = request.app.state.settings
    basemap = settings.basemap_url or ""
    body = _template(PAGES[request.url.path]).replace(
        "{{BASEMAP_URL}}", html.escape(basemap, quote=True)
    )
    return HTMLResponse(body, headers=page_headers(settings))


# Plain routes, not API operations: no token is needed for the HTML (its data calls carry one),
# and they stay out of the OpenAPI schema.
for _path in PAGES:
    router.add_route(_path, _page, methods=["GET"], include_in_schema=False)
