"""Boundary import through the API: the real Đồng Tháp communes, VN-2000, refusals, versions."""

from __future__ import annotations

import io
import json
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pytest
import shapely
from fastapi.testclient import TestClient
from pyproj import Transformer
from shapely.geometry import mapping, shape
from sqlalchemy import select
from sqlalchemy.orm import Session

from geo.crs import transformer_from_wgs84
from service.models import AdminUnit, AuditEvent
from tests.service.conftest import count_rows

COMMUNES = "dong_thap_communes.geojson"


def _fc(features: list[dict[str, Any]]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def _feature(props: dict[str, Any], geom: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": props, "geometry": mapping(geom) if geom else None}


def post_import(
    client: TestClient, headers: dict[str, str], data: bytes, filename: str, **form: Any
) -> Any:
    """POST a layer to /units/import."""
    fields = {k: str(v) for k, v in form.items() if v is not None}
    return client.post(
        "/api/v1/units/import", files={"file": (filename, data)}, data=fields, headers=headers
    )


def communes_layer(shared_data: Path) -> dict[str, Any]:
    """The shared commune layer as a GeoJSON dict."""
    return json.loads((shared_data / COMMUNES).read_text(encoding="utf-8"))


def import_province_and_districts(
    client: TestClient, headers: dict[str, str], layer: dict[str, Any]
) -> None:
    """Derive province 87 and its districts from the commune layer and import them."""
    by_district: dict[str, list[Any]] = defaultdict(list)
    names = {}
    for feature in layer["features"]:
        props = feature["properties"]
        by_district[props["district_code"]].append(shape(feature["geometry"]))
        names[props["district_code"]] = props["district_name"]
    districts = {code: shapely.union_all(geoms) for code, geoms in by_district.items()}
    province = shapely.union_all(list(districts.values()))
    response = post_import(
        client,
        headers,
        _fc([_feature({"code": "87", "name": "Đồng Tháp"}, province)]),
        "province.geojson",
        level="province",
        code_field="code",
        name_field="name",
    )
    assert response.status_code == 200, response.text
    features = [
        _feature({"code": code, "name": names[code], "parent": "87"}, geom)
        for code, geom in districts.items()
    ]
    response = post_import(
        client,
        headers,
        _fc(features),
        "districts.geojson",
        level="district",
        code_field="code",
        name_field="name",
        parent_code_field="parent",
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == len(districts)


COMMUNE_FORM = {
    "level": "commune",
    "code_field": "code",
    "name_field": "name",
    "parent_code_field": "district_code",
    "postcode_field": "postcode",
}


@pytest.fixture
def dong_thap(client: TestClient, admin_headers: dict[str, str], shared_data: Path) -> dict:
    """The commune layer, with province and districts already imported."""
    layer = communes_layer(shared_data)
    import_province_and_districts(client, admin_headers, layer)
    return layer


def test_communes_import_then_reimport_is_unchanged(
    client: TestClient,
    admin_headers: dict[str, str],
    dong_thap: dict,
    shared_data: Path,
    db: Session,
) -> None:
    data = (shared_data / COMMUNES).read_bytes()
    first = post_import(client, admin_headers, data, COMMUNES, **COMMUNE_FORM)
    assert first.status_code == 200, first.text
    report = first.json()
    assert (report["created"], report["updated"], report["unchanged"]) == (144, 0, 0)
    assert report["level"] == "commune" and report["source_crs"] == "EPSG:4326"
    assert all(set(o) == {"a", "b", "area_m2"} for o in report["overlaps"])
    second = post_import(client, admin_headers, data, COMMUNES, **COMMUNE_FORM).json()
    assert (second["created"], second["updated"], second["unchanged"]) == (0, 0, 144)
    units = db.scalars(select(AdminUnit).where(AdminUnit.level == "commune")).all()
    assert len(units) == 144
    assert {u.province_code for u in units} == {"87"}
    cao_lanh = next(u for u in units if u.code == "29869")
    assert cao_lanh.postcode and len(cao_lanh.postcode) == 5
    assert sum(u.postcode is None for u in units) == 1
    assert db.scalar(select(AuditEvent).where(AuditEvent.action == "units.import")) is not None


def _write_5897_gpkg(layer: dict[str, Any], path: Path, *, declared: str = "EPSG:5897") -> None:
    to_5897 = transformer_from_wgs84("EPSG:5897")
    geoms = [
        shapely.transform(
            shape(f["geometry"]), lambda xy: np.column_stack(to_5897.transform(xy[:, 0], xy[:, 1]))
        )
        for f in layer["features"]
    ]
    geoms = [shapely.MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in geoms]
    fields = {
        k: [f["properties"][k] for f in layer["features"]]
        for k in ("code", "name", "district_code", "postcode")
    }
    pyogrio.raw.write(
        str(path),
        geometry=np.array(shapely.to_wkb(geoms), dtype=object),
        field_data=[np.array(v, dtype=object) for v in fields.values()],
        fields=list(fields),
        crs=declared,
        geometry_type="MultiPolygon",
        driver="GPKG",
    )


def test_vn2000_layer_imports_within_a_centimetre(
    client: TestClient,
    admin_headers: dict[str, str],
    dong_thap: dict,
    tmp_path: Path,
    db: Session,
) -> None:
    path = tmp_path / "communes_5897.gpkg"
    _write_5897_gpkg(dong_thap, path)
    response = post_import(client, admin_headers, path.read_bytes(), path.name, **COMMUNE_FORM)
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 144
    stored = dict(
        db.execute(
            select(AdminUnit.code, AdminUnit.geom.ST_AsBinary()).where(AdminUnit.level == "commune")
        ).all()
    )
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32648", always_xy=True)
    worst = 0.0
    for feature in dong_thap["features"]:
        original = shapely.get_coordinates(shape(feature["geometry"]))
        back = shapely.get_coordinates(
            shapely.from_wkb(bytes(stored[feature["properties"]["code"]]))
        )
        a = np.column_stack(to_utm.transform(original[:, 0], original[:, 1]))
        b = np.column_stack(to_utm.transform(back[:, 0], back[:, 1]))
        assert a.shape == b.shape
        worst = max(worst, float(np.max(np.hypot(*(a - b).T))))
    assert worst < 0.01, f"worst vertex error {worst:.4f} m"


def test_vn2000_metres_declared_as_degrees_are_refused(
    client: TestClient,
    admin_headers: dict[str, str],
    dong_thap: dict,
    tmp_path: Path,
    db: Session,
) -> None:
    path = tmp_path / "mislabelled.gpkg"
    _write_5897_gpkg(dong_thap, path, declared="EPSG:4326")
    before = count_rows(db, AdminUnit)
    response = post_import(client, admin_headers, path.read_bytes(), path.name, **COMMUNE_FORM)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "crs_mismatch"
    assert "VN-2000" in body["detail"] or "EPSG:5897" in body["detail"]
    assert count_rows(db, AdminUnit) == before


def _square(x: float, y: float, size: float = 0.01) -> shapely.Polygon:
    return shapely.box(x, y, x + size, y + size)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


REFUSALS = [
    pytest.param(
        _fc([_feature({"ma": "1", "name": "A"}, _square(105.6, 10.4))]),
        "a.geojson",
        {},
        422,
        "field_missing",
        id="missing-code-field",
    ),
    pytest.param(
        _fc(
            [
                _feature({"code": "1", "name": "A"}, _square(105.6, 10.4)),
                _feature({"code": "1", "name": "B"}, _square(105.7, 10.4)),
            ]
        ),
        "a.geojson",
        {},
        422,
        "code_duplicated",
        id="duplicated-code",
    ),
    pytest.param(
        _fc([_feature({"code": "1", "name": "A"}, shapely.Point(105.6, 10.4))]),
        "a.geojson",
        {},
        422,
        "geometry_type_invalid",
        id="points-not-polygons",
    ),
    pytest.param(
        b"\x00\x01garbage not a layer", "a.geojson", {}, 422, "file_unreadable", id="broken-file"
    ),
    pytest.param(b"just,some\ntext,1\n", "a.txt", {}, 422, "format_unsupported", id="non-geo-file"),
    pytest.param(
        _zip({"readme.txt": b"hello"}),
        "a.zip",
        {},
        422,
        "file_unreadable",
        id="zip-without-shapefile",
    ),
    pytest.param(_zip({"../evil.shp": b"x"}), "a.zip", {}, 422, "file_unsafe", id="zip-traversal"),
    pytest.param(
        _fc([_feature({"code": "1", "name": "A"}, _square(569000, 1156000, 100))]),
        "a.geojson",
        {},
        422,
        "crs_mismatch",
        id="metres-as-degrees",
    ),
    pytest.param(
        _fc([_feature({"code": "1", "name": "A"}, _square(105.6, 10.4))]),
        "a.geojson",
        {"level": "city"},
        422,
        "request_invalid",
        id="bad-level",
    ),
    pytest.param(
        _fc([_feature({"code": "1", "name": "A", "postcode": "870000"}, _square(105.6, 10.4))]),
        "a.geojson",
        {"postcode_field": "postcode"},
        422,
        "postcode_invalid",
        id="6-digit-postcode",
    ),
    pytest.param(
        _fc([_feature({"code": "1", "name": "A"}, _square(105.6, 10.4))]),
        "a.geojson",
        {"source_crs": "EPSG:999999"},
        422,
        "crs_unknown",
        id="unknown-crs",
    ),
    pytest.param(
        b"x" * (5 * 1024 * 1024), "big.geojson", {}, 413, "payload_too_large", id="over-size-limit"
    ),
]


@pytest.mark.parametrize(("data", "filename", "form", "status", "code"), REFUSALS)
def test_refused_imports_write_nothing(
    client: TestClient,
    admin_headers: dict[str, str],
    db: Session,
    data: bytes,
    filename: str,
    form: dict[str, str],
    status: int,
    code: str,
) -> None:
    fields = {"level": "province", "code_field": "code", "name_field": "name", **form}
    before = (count_rows(db, AdminUnit), count_rows(db, AuditEvent))
    response = post_import(client, admin_headers, data, filename, **fields)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert response.json()["detail"]
    assert (count_rows(db, AdminUnit), count_rows(db, AuditEvent)) == before


def test_invalid_geometry_is_repaired_and_reported(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    bowtie = shapely.Polygon([(105.6, 10.4), (105.7, 10.5), (105.7, 10.4), (105.6, 10.5)])
    assert not bowtie.is_valid
    data = _fc([_feature({"code": "98", "name": "Bowtie"}, bowtie)])
    response = post_import(
        client,
        admin_headers,
        data,
        "p.geojson",
        level="province",
        code_field="code",
        name_field="name",
    )
    assert response.status_code == 200, response.text
    assert response.json()["repaired"] == ["98"]
    unit = client.get("/api/v1/units/98", headers=admin_headers).json()
    assert unit["geometry"]["type"] == "MultiPolygon"


def test_overlaps_and_gaps_between_siblings_are_reported(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    parent = shapely.box(105.60, 10.40, 105.64, 10.42)
    post_import(
        client,
        admin_headers,
        _fc([_feature({"code": "98", "name": "P"}, parent)]),
        "p.geojson",
        level="province",
        code_field="code",
        name_field="name",
    )
    children = [
        _feature(
            {"code": "981", "name": "A", "p": "98"}, shapely.box(105.60, 10.40, 105.62, 10.42)
        ),
        _feature(
            {"code": "982", "name": "B", "p": "98"}, shapely.box(105.619, 10.40, 105.635, 10.42)
        ),
    ]
    response = post_import(
        client,
        admin_headers,
        _fc(children),
        "d.geojson",
        level="district",
        code_field="code",
        name_field="name",
        parent_code_field="p",
    )
    report = response.json()
    assert [(o["a"], o["b"]) for o in report["overlaps"]] == [("981", "982")]
    assert report["overlaps"][0]["area_m2"] == pytest.approx(
        0.001 * 0.02 * 109.5e3 * 110.6e3, rel=0.05
    )
    assert [g["parent"] for g in report["gaps"]] == ["98"]
    assert report["gaps"][0]["area_m2"] == pytest.approx(0.005 * 0.02 * 109.5e3 * 110.6e3, rel=0.05)


def test_a_renamed_unit_becomes_a_new_version(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    geom = shapely.box(105.60, 10.40, 105.64, 10.42)
    form = {"level": "province", "code_field": "code", "name_field": "name"}
    post_import(
        client,
        admin_headers,
        _fc([_feature({"code": "98", "name": "Cũ"}, geom)]),
        "p.geojson",
        **form,
    )
    renamed = post_import(
        client,
        admin_headers,
        _fc([_feature({"code": "98", "name": "Mới"}, geom)]),
        "p.geojson",
        valid_from="2025-07-01T00:00:00+07:00",
        **form,
    ).json()
    assert (renamed["created"], renamed["updated"]) == (0, 1)
    before = client.get("/api/v1/units/98?at=2025-03-01T00:00:00Z", headers=admin_headers).json()
    now = client.get("/api/v1/units/98", headers=admin_headers).json()
    assert (before["name"], now["name"]) == ("Cũ", "Mới")
    assert [v["name"] for v in now["versions"]] == ["Cũ", "Mới"]
    assert now["versions"][0]["valid_to"].startswith("2025-06-30T17:00:00")


def test_hamlet_list_csv_and_targets(
    client: TestClient, admin_headers: dict[str, str], db: Session
) -> None:
    post_import(
        client,
        admin_headers,
        _fc(
            [_feature({"code": "98001", "name": "Xã Thử"}, shapely.box(105.6, 10.4, 105.64, 10.42))]
        ),
        "c.geojson",
        level="commune",
        code_field="code",
        name_field="name",
    )
    csv = "ma,ten,so_ho\n98001-01,Ấp 1,120\n98001-02,Ấp 2,\n".encode("utf-8-sig")
    response = post_import(
        client,
        admin_headers,
        csv,
        "ap.csv",
        level="hamlet",
        code_field="ma",
        name_field="ten",
        target_field="so_ho",
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 2
    hamlet = client.get("/api/v1/units/98001-01", headers=admin_headers).json()
    assert (hamlet["parent_code"], hamlet["expected_households"]) == ("98001", 120)
    assert hamlet["has_geometry"] is False
    orphan = post_import(
        client,
        admin_headers,
        b"ma,ten\n77777-01,Ap\n",
        "x.csv",
        level="hamlet",
        code_field="ma",
        name_field="ten",
    )
    assert orphan.status_code == 422 and orphan.json()["code"] == "parent_unknown"
    targets = post_import(
        client,
        admin_headers,
        b"ma,so_ho\n98001-02,80\n",
        "t.csv",
        level="hamlet",
        code_field="ma",
        target_field="so_ho",
    )
    assert targets.json()["updated"] == 1
    put = client.put(
        "/api/v1/units/98001-01/target", json={"expected_households": 130}, headers=admin_headers
    )
    assert put.status_code == 200 and put.json()["expected_households"] == 130
    bad = client.put(
        "/api/v1/units/98001-01/target", json={"expected_households": -1}, headers=admin_headers
    )
    assert bad.status_code == 422
    missing = client.put(
        "/api/v1/units/nope/target", json={"expected_households": 1}, headers=admin_headers
    )
    assert missing.status_code == 404 and missing.json()["code"] == "unit_not_found"


def test_unit_list_pages_without_gaps_or_repeats(
    client: TestClient, admin_headers: dict[str, str], dong_thap: dict, shared_data: Path
) -> None:
    post_import(
        client, admin_headers, (shared_data / COMMUNES).read_bytes(), COMMUNES, **COMMUNE_FORM
    )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"level": "commune", "limit": 50, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/units", params=params, headers=admin_headers).json()
        seen += [u["code"] for u in page["items"]]
        assert all(u["geometry"] is None for u in page["items"])
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) == 144
    bad = client.get("/api/v1/units", params={"cursor": "!!!"}, headers=admin_headers)
    assert bad.status_code == 422 and bad.json()["code"] == "cursor_invalid"
    with_geom = client.get(
        "/api/v1/units", params={"parent": "866", "geometry": "true"}, headers=admin_headers
    ).json()
    assert with_geom["items"] and with_geom["items"][0]["geometry"]["type"] == "MultiPolygon"


def test_reimport_keeps_what_the_file_does_not_say(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    geom = shapely.box(105.60, 10.40, 105.64, 10.42)
    layer = _fc([_feature({"code": "98001", "name": "Xã Thử", "pc": "98101", "t": 500}, geom)])
    form = {"level": "commune", "code_field": "code", "name_field": "name"}
    post_import(
        client, admin_headers, layer, "c.geojson", postcode_field="pc", target_field="t", **form
    )
    again = post_import(client, admin_headers, layer, "c.geojson", **form).json()
    assert (again["updated"], again["unchanged"]) == (0, 1)
    csv = post_import(
        client, admin_headers, b"code,name\n98001,X\xc3\xa3 Th\xe1\xbb\xad\n", "c.csv", **form
    ).json()
    assert csv["unchanged"] == 1
    unit = client.get("/api/v1/units/98001", headers=admin_headers).json()
    assert (unit["postcode"], unit["expected_households"]) == ("98101", 500)
    assert unit["has_geometry"] is True


def test_overlapping_validity_is_a_clear_refusal(
    client: TestClient, admin_headers: dict[str, str], db: Session
) -> None:
    geom = shapely.box(105.60, 10.40, 105.64, 10.42)
    form = {"level": "province", "code_field": "code", "name_field": "name"}
    future = post_import(
        client,
        admin_headers,
        _fc([_feature({"code": "98", "name": "A"}, geom)]),
        "p.geojson",
        valid_from="2030-01-01",
        **form,
    )
    assert future.status_code == 200
    before = count_rows(db, AdminUnit)
    clash = post_import(
        client,
        admin_headers,
        _fc([_feature({"code": "98", "name": "B"}, geom)]),
        "p.geojson",
        **form,
    )
    assert clash.status_code == 422 and clash.json()["code"] == "valid_from_conflict"
    assert count_rows(db, AdminUnit) == before
    listed = client.get("/api/v1/units", params={"level": "province"}, headers=admin_headers)
    assert listed.json()["items"] == []  # scheduled for 2030: not current yet


def test_targets_file_respects_the_level(client: TestClient, admin_headers: dict[str, str]) -> None:
    geom = shapely.box(105.60, 10.40, 105.64, 10.42)
    post_import(
        client,
        admin_headers,
        _fc([_feature({"code": "98001", "name": "X"}, geom)]),
        "c.geojson",
        level="commune",
        code_field="code",
        name_field="name",
    )
    wrong = post_import(
        client,
        admin_headers,
        b"code,t\n98001,10\n",
        "t.csv",
        level="hamlet",
        code_field="code",
        target_field="t",
    )
    assert wrong.status_code == 422 and wrong.json()["code"] == "unit_unknown"


def test_a_tampered_cursor_is_a_problem(client: TestClient, admin_headers: dict[str, str]) -> None:
    from service.paging import encode_cursor

    response = client.get(
        "/api/v1/units", params={"cursor": encode_cursor({"code": 5})}, headers=admin_headers
    )
    assert response.status_code == 422 and response.json()["code"] == "cursor_invalid"
