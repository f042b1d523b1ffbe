"""Vector tiles: decoded with mapbox-vector-tile and checked against the tables and coverage."""

from __future__ import annotations

from typing import Any

import mapbox_vector_tile
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo.tiles import tile_of, world_xy
from service import tiles
from service.app import create_app
from service.settings import Settings
from tests.service.coverage.conftest import Campaign, coverage

MVT = "application/vnd.mapbox-vector-tile"


def get_tile(
    client: TestClient,
    headers: dict[str, str],
    layer: str,
    zxy: tuple[int, int, int],
    **params: Any,
) -> Any:
    z, x, y = zxy
    return client.get(f"/api/v1/tiles/{layer}/{z}/{x}/{y}.mvt", params=params, headers=headers)


def features(response: Any, layer: str) -> list[dict[str, Any]]:
    """The decoded features of one layer of a 200 tile."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == MVT
    decoded = mapbox_vector_tile.decode(response.content)
    return list(decoded[layer]["features"]) if layer in decoded else []


CENTRE = (105.62, 10.41)  # on the line between the two communes


def test_units_tiles_carry_the_coverage_of_the_level_drawn_at_each_zoom(
    client: TestClient, campaign: Campaign
) -> None:
    communes = features(get_tile(client, campaign.reviewer, "units", tile_of(*CENTRE, 9)), "units")
    by_code = {f["properties"]["code"]: f for f in communes}
    assert set(by_code) == {"98001", "98002"}
    api = coverage(client, campaign.reviewer, level="commune")
    for code, feature in by_code.items():
        props = feature["properties"]
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
        for field in ("expected", "captured", "accepted", "flagged", "rejected", "open_duplicates"):
            assert props[field] == api[code][field], (code, field)
        assert props["coverage_pct"] == pytest.approx(api[code]["coverage_pct"])
        assert props["level"] == "commune" and props["drafted"] is False
    province = features(get_tile(client, campaign.reviewer, "units", tile_of(*CENTRE, 6)), "units")
    assert [f["properties"]["code"] for f in province] == ["98"]
    forced = get_tile(client, campaign.reviewer, "units", tile_of(*CENTRE, 6), level="commune")
    assert {f["properties"]["code"] for f in features(forced, "units")} == {"98001", "98002"}


def test_a_hamlet_without_polygon_is_drawn_from_its_households_and_marked_drafted(
    client: TestClient, campaign: Campaign
) -> None:
    hamlets = features(get_tile(client, campaign.reviewer, "units", tile_of(*CENTRE, 13)), "units")
    by_code = {f["properties"]["code"]: f["properties"] for f in hamlets}
    assert set(by_code) == {"98001-01", "98001-02", "98002-01"}
    assert by_code["98002-01"]["drafted"] is True and by_code["98002-01"]["captured"] == 3
    assert by_code["98001-01"]["drafted"] is False
    assert "coverage_pct" not in by_code["98001-02"]  # no target: the attribute is absent (null)
    drafted = next(f for f in hamlets if f["properties"]["code"] == "98002-01")
    assert drafted["geometry"]["type"] == "Polygon"


def test_households_tiles_have_status_and_code_only_at_high_zoom(
    client: TestClient, campaign: Campaign, db: Session
) -> None:
    zxy = tile_of(105.6030, 10.41, 15)
    points = features(get_tile(client, campaign.reviewer, "households", zxy), "households")
    assert points and all(set(f["properties"]) <= {"status", "code"} for f in points)
    z, x, y = zxy
    in_tile = db.execute(
        text(
            "SELECT id, status FROM households WHERE status IN ('accepted', 'flagged', 'rejected') "
            "AND geom && ST_Transform(ST_TileEnvelope(:z, :x, :y, margin => 64.0 / 4096), 4326)"
        ),
        {"z": z, "x": x, "y": y},
    ).all()
    assert {(f["id"], f["properties"]["status"]) for f in points} == {tuple(r) for r in in_tile}
    # Each point is where its household is, in tile coordinates (y down from the top edge).
    raw = mapbox_vector_tile.decode(
        get_tile(client, campaign.reviewer, "households", zxy).content,
        default_options={"y_coord_down": True},
    )["households"]["features"]
    places = dict(
        db.execute(
            text("SELECT id, ARRAY[ST_X(geom), ST_Y(geom)] FROM households WHERE id = ANY(:ids)"),
            {"ids": [f["id"] for f in raw]},
        ).all()
    )
    for feature in raw:
        wx, wy = world_xy(*places[feature["id"]])
        expected = ((wx * 2**z - x) * 4096, (wy * 2**z - y) * 4096)
        got = feature["geometry"]["coordinates"]
        assert abs(got[0] - expected[0]) <= 0.5 and abs(got[1] - expected[1]) <= 0.5
    coded = [f for f in points if f["properties"]["status"] == "accepted"]
    assert coded and all(f["properties"]["code"].startswith("98101") for f in coded)


def test_households_are_clusters_with_counts_by_status_at_low_zoom(
    client: TestClient, campaign: Campaign, db: Session
) -> None:
    clusters = features(
        get_tile(client, campaign.reviewer, "households", tile_of(*CENTRE, 10)), "households"
    )
    assert clusters and all(
        set(f["properties"]) == {"count", "accepted", "flagged", "rejected"} for f in clusters
    )
    totals = {
        k: sum(f["properties"][k] for f in clusters) for k in ("count", "accepted", "flagged")
    }
    live = dict(db.execute(text("SELECT status, count(*) FROM households GROUP BY 1")).all())
    assert totals == {
        "count": live.get("accepted", 0) + live.get("flagged", 0) + live.get("rejected", 0),
        "accepted": live.get("accepted", 0),
        "flagged": live.get("flagged", 0),
    }
    for f in clusters:
        p = f["properties"]
        assert p["count"] == p["accepted"] + p["flagged"] + p["rejected"]


def test_surveyors_get_only_their_teams_households(
    client: TestClient, campaign: Campaign, surveyor_b: dict[str, str]
) -> None:
    points = features(
        get_tile(client, surveyor_b, "households", tile_of(105.6307, 10.4103, 14)), "households"
    )
    assert {f["id"] for f in points} == set(campaign.team_b_households)
    # Next tile west: team A's households, visible to a reviewer only.
    west = tile_of(*CENTRE, 14)
    seen = {
        f["id"]
        for f in features(get_tile(client, campaign.reviewer, "households", west), "households")
    }
    assert campaign.flagged in seen and not seen & set(campaign.team_b_households)
    assert get_tile(client, surveyor_b, "households", west).status_code == 204
    clusters = features(
        get_tile(client, surveyor_b, "households", tile_of(*CENTRE, 9)), "households"
    )
    assert sum(f["properties"]["count"] for f in clusters) == 3


def test_tiles_reflect_changes_when_no_staleness_is_allowed(
    settings: Settings, campaign: Campaign
) -> None:
    strict = settings.model_copy(update={"tiles_max_stale_s": 0.0})
    with TestClient(create_app(strict)) as client:
        zxy = tile_of(*CENTRE, 13)

        def h1() -> dict[str, Any]:
            found = features(get_tile(client, campaign.reviewer, "units", zxy), "units")
            return next(f["properties"] for f in found if f["properties"]["code"] == "98001-01")

        assert h1()["open_duplicates"] == 1
        response = client.post(
            f"/api/v1/duplicates/{campaign.pair}/resolve",
            json={"action": "merge", "keep": campaign.held - 1},
            headers=campaign.reviewer,
        )
        assert response.status_code == 200, response.text
        assert (h1()["open_duplicates"], h1()["captured"]) == (0, 4)


def test_outline_is_drafted_exactly_where_the_tiles_draw_one(
    settings: Settings, campaign: Campaign, db: Session
) -> None:
    from service.dedupe import add_version

    strict = settings.model_copy(update={"tiles_max_stale_s": 0.0})
    with TestClient(create_app(strict)) as client:
        zxy = tile_of(*CENTRE, 13)

        def drawn() -> dict[str, bool]:
            found = features(get_tile(client, campaign.reviewer, "units", zxy), "units")
            return {f["properties"]["code"]: f["properties"]["drafted"] for f in found}

        def outlines() -> dict[str, str]:
            items = coverage(client, campaign.reviewer, level="hamlet")
            return {code: item["outline"] for code, item in items.items()}

        assert drawn()["98002-01"] is True and outlines()["98002-01"] == "drafted"
        # Its households rejected: none is live, so there is no hull to draw.
        for hid in campaign.team_b_households:
            db.execute(
                text("UPDATE households SET status = 'rejected' WHERE id = :id"), {"id": hid}
            )
            add_version(db, hid, reason="correction", actor=None)
        db.commit()
        assert "98002-01" not in drawn() and outlines()["98002-01"] == "none"
        assert outlines()["98001-01"] == "polygon"


def test_cache_headers_and_conditional_requests(client: TestClient, campaign: Campaign) -> None:
    first = get_tile(client, campaign.reviewer, "units", tile_of(*CENTRE, 9))
    assert first.status_code == 200
    assert first.headers["cache-control"] == "private, max-age=30"
    etag = first.headers["etag"]
    again = get_tile(client, campaign.reviewer, "units", tile_of(*CENTRE, 9), **{})
    assert again.headers["etag"] == etag  # same data, same bytes
    z, x, y = tile_of(*CENTRE, 9)
    unchanged = client.get(
        f"/api/v1/tiles/units/{z}/{x}/{y}.mvt",
        headers={**campaign.reviewer, "If-None-Match": etag},
    )
    assert unchanged.status_code == 304 and not unchanged.content
    # Tiles differ by who asks (a surveyor's households are its team's): caches must key on it.
    for response in (first, unchanged):
        assert response.headers["vary"] == "Authorization"
    among = client.get(
        f"/api/v1/tiles/units/{z}/{x}/{y}.mvt",
        headers={**campaign.reviewer, "If-None-Match": f'"other", {etag}'},
    )
    assert among.status_code == 304
    stale = client.get(
        f"/api/v1/tiles/units/{z}/{x}/{y}.mvt",
        headers={**campaign.reviewer, "If-None-Match": '"other"'},
    )
    assert stale.status_code == 200 and stale.content == first.content


def test_an_empty_tile_is_204(client: TestClient, campaign: Campaign) -> None:
    hanoi = tile_of(105.85, 21.03, 12)
    for layer in ("units", "households"):
        response = get_tile(client, campaign.reviewer, layer, hanoi)
        assert response.status_code == 204 and not response.content


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/tiles/units/23/0/0.mvt", 422, "tile_invalid"),
        ("/api/v1/tiles/units/3/8/0.mvt", 422, "tile_invalid"),
        ("/api/v1/tiles/units/3/0/-1.mvt", 422, "tile_invalid"),
        ("/api/v1/tiles/units/-1/0/0.mvt", 422, "tile_invalid"),
        ("/api/v1/tiles/units/99999999999999999999/0/0.mvt", 422, "tile_invalid"),
        ("/api/v1/tiles/units/a/0/0.mvt", 422, "request_invalid"),
        ("/api/v1/tiles/roads/3/0/0.mvt", 404, "layer_unknown"),
        ("/api/v1/tiles/units/3/0/0.mvt?level=village", 422, "request_invalid"),
        ("/api/v1/tiles/units/3/0/0.png", 404, "not_found"),
        (f"/api/v1/tiles/{'u' * 33}/3/0/0.mvt", 422, "request_invalid"),
    ],
)
def test_bad_tile_requests_are_clear_problems(
    client: TestClient, admin_headers: dict[str, str], path: str, status: int, code: str
) -> None:
    response = client.get(path, headers=admin_headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


def test_an_oversized_if_none_match_is_a_problem_not_a_500(
    client: TestClient, campaign: Campaign
) -> None:
    z, x, y = tile_of(*CENTRE, 9)
    response = client.get(
        f"/api/v1/tiles/units/{z}/{x}/{y}.mvt",
        headers={**campaign.reviewer, "If-None-Match": '"' + "x" * 300 + '"'},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "request_invalid"


@pytest.mark.parametrize(
    ("layer", "z"), [("units", 9), ("units", 13), ("households", 10), ("households", 15)]
)
def test_the_bare_tile_queries_of_the_benchmark_run_and_hold_the_layer(
    campaign: Campaign, db: Session, layer: str, z: int
) -> None:
    """scripts/bench_tiles times these against the server: they must stay runnable."""
    sql, params = tiles.bare_tile_query(layer, *tile_of(*CENTRE, z))
    mvt = db.execute(text(sql), params).one()[-1]  # points: (how many, tile)
    decoded = mapbox_vector_tile.decode(bytes(mvt))
    assert decoded[layer]["features"]


def _same_cells(one: tiles.CellPoints, other: tiles.CellPoints) -> None:
    assert one.points.tolist() == other.points.tolist()  # id, status, lon, lat of each
    for name in ("cx", "cy", "counts"):
        assert getattr(one.cells, name).tolist() == getattr(other.cells, name).tolist(), name
    assert one.cells.sum_x.tolist() == pytest.approx(other.cells.sum_x.tolist())
    assert one.cells.sum_y.tolist() == pytest.approx(other.cells.sum_y.tolist())


def test_cells_brought_up_to_date_equal_cells_read_in_full(campaign: Campaign, db: Session) -> None:
    # The cache re-reads only households written after its snapshot: a move, a status that
    # is no longer drawn (merged), another status and a new household must
    # all come out as a full read sees them.
    snapshot = db.scalar(text("SELECT pg_current_snapshot()::text"))
    before = tiles.load_cells(db)
    db.commit()
    ids = before.points["id"].tolist()
    assert len(ids) >= 4
    db.execute(
        text("UPDATE households SET geom = ST_Translate(geom, 0.05, 0.02) WHERE id = :id"),
        {"id": ids[0]},
    )
    db.execute(text("UPDATE households SET status = 'merged' WHERE id = :id"), {"id": ids[1]})
    db.execute(text("UPDATE households SET status = 'flagged' WHERE id = :id"), {"id": ids[2]})
    db.execute(
        text(
            "INSERT INTO households (status, geom, commune_code, hamlet_code, captured_at) "
            "SELECT 'accepted', ST_Translate(geom, 0.01, 0), commune_code, hamlet_code, "
            "captured_at "
            "FROM households WHERE id = :id"
        ),
        {"id": ids[3]},
    )
    db.commit()
    updated = tiles.update_cells(db, before, snapshot)
    full = tiles.load_cells(db)
    db.commit()
    _same_cells(updated, full)
    assert len(updated.points) == len(before.points)  # one merged away, one new
    assert updated.cells.counts.sum() == before.cells.counts.sum()
    assert not np.array_equal(updated.cells.cx, before.cells.cx) or not np.array_equal(
        updated.cells.counts, before.cells.counts
    )
    # Nothing written since: the very same value.
    later = db.scalar(text("SELECT pg_current_snapshot()::text"))
    assert tiles.update_cells(db, full, later) is full


def test_drafts_brought_up_to_date_equal_drafts_read_in_full(
    campaign: Campaign, db: Session
) -> None:
    # 98002-01 has no polygon: its outline is drawn from its households. Moving one of them
    # changes it; a change in a mapped hamlet redraws nothing.
    snapshot = db.scalar(text("SELECT pg_current_snapshot()::text"))
    before = tiles.load_drafts(db)
    db.commit()
    assert [d.code for d in before] == ["98002-01"]
    mapped = db.scalar(text("SELECT min(id) FROM households WHERE hamlet_code = '98001-01'"))
    db.execute(text("UPDATE households SET street = 'Đường Mới' WHERE id = :id"), {"id": mapped})
    db.commit()
    assert tiles.update_drafts(db, before, snapshot) == before
    db.execute(
        text("UPDATE households SET geom = ST_Translate(geom, 0.004, 0.003) WHERE id = :id"),
        {"id": campaign.team_b_households[0]},
    )
    db.commit()
    updated = tiles.update_drafts(db, before, snapshot)
    assert updated == tiles.load_drafts(db)
    assert updated[0].bounds != before[0].bounds
