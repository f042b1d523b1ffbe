"""Vector tiles: ``units`` (coverage choropleth) and ``households`` (points and clusters)."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from geo.levels import Level
from geo.tiles import check_tile, units_level
from service import accounts, tiles
from service.db import Database
from service.deps import AnyUser, SessionDep, get_database
from service.errors import NotFoundError

router = APIRouter(prefix="/api/v1/tiles", tags=["tiles"])

LAYERS = ("units", "households")
MVT = "application/vnd.mapbox-vector-tile"
#: Browsers may reuse a tile this long without asking; after that, If-None-Match makes the
#: answer a bodiless 304 when nothing changed. Private: households tiles depend on the role.
CACHE_CONTROL = "private, max-age=30"
TileNumber = Annotated[int, Path(description="XYZ tile coordinate")]


@router.get(
    "/{layer}/{z}/{x}/{y}.mvt",
    summary="A vector tile (MVT) of units with coverage, or of households",
    response_class=Response,
    responses={
        200: {"content": {MVT: {}}, "description": "The tile"},
        204: {"description": "Nothing in this tile"},
        304: {"description": "Unchanged since the ETag sent in If-None-Match"},
    },
)
def get_tile(
    request: Request,
    layer: Annotated[str, Path(max_length=32, description="`units` or `households`")],
    z: TileNumber,
    x: TileNumber,
    y: TileNumber,
    session: SessionDep,
    database: Annotated[Database, Depends(get_database)],
    user: AnyUser,
    level: Annotated[
        Level | None, Query(description="units: level to draw (default: by zoom)")
    ] = None,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """``units``: polygons (hamlets without one: a drafted outline) with coverage; the level
    follows the zoom (province < 8 ≤ commune < 12 ≤ hamlet) unless ``level`` is given.
    ``households``: id, status and address code from zoom 14, clusters with counts below.
    Surveyors see their team's households only. An empty tile is a 204.
    """
    if layer not in LAYERS:
        raise NotFoundError(
            f"Không có lớp bản đồ '{layer}' (có: {', '.join(LAYERS)}).", code="layer_unknown"
        )
    check_tile(z, x, y)
    caches: tiles.TileCaches = request.app.state.tile_caches
    if layer == "units":
        tile = tiles.TileRequest(z, x, y)
        body = tiles.units_tile(database, session, caches, tile, level=level or units_level(z))
    else:
        area = (
            tuple(accounts.team_units(session, user.team_id)) if user.role == "surveyor" else None
        )
        body = tiles.households_tile(
            database, session, caches, tiles.TileRequest(z, x, y, area=area)
        )
    return _tile_response(body, if_none_match)


def _tile_response(body: bytes, if_none_match: str | None) -> Response:
    """200 with the tile, 204 when empty, 304 when the client holds the same bytes."""
    headers = {"Cache-Control": CACHE_CONTROL, "Vary": "Authorization"}
    if not body:
        return Response(status_code=204, headers=headers)
    etag = f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'
    headers["ETag"] = etag
    if if_none_match and etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=MVT, headers=headers)
