"""geo.boundaries: reading admin-unit layers (every format and refusal) and sibling checks."""

from __future__ import annotations

import doctest
import json
import time
import unicodedata
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import pytest
import shapely
from pyproj import Geod

import geo.boundaries
from geo.boundaries import UnitFeature, UnitLayer, read_units, sibling_gaps, sibling_overlaps
from geo.crs import transform_geometry, transformer_from_wgs84
from geo.errors import CrsError, GeoError, InputFileError, PostcodeError

from .conftest import geojson_bytes, shapefile_members, square, zip_bytes

GEOD = Geod(ellps="WGS84")
COMMUNE_FIELDS = {
    "code_field": "code",
    "name_field": "name",
    "parent_code_field": "district_code",
    "postcode_field": "postcode",
}
CAO_LANH = (105.63, 10.45)  # a spot inside Đồng Tháp


def read_geojson(features: list[tuple[dict[str, Any], Any]], **options: Any) -> UnitLayer:
    """Read synthetic features with the default field names code/name."""
    crs = options.pop("crs", None)
    options.setdefault("code_field", "code")
    options.setdefault("name_field", "name")
    return read_units(geojson_bytes(features, crs=crs), filename="units.geojson", **options)


def unit(code: str, geom: Any, *, parent: str | None = "866") -> UnitFeature:
    polygon = None if geom is None else shapely.MultiPolygon(shapely.get_parts(geom).tolist())
    return UnitFeature(code, f"Xã {code}", parent, None, None, polygon, {})


def geodesic_m2(geom: Any) -> float:
    return abs(GEOD.geometry_area_perimeter(geom)[0])


# --- the real Đồng Tháp layer ------------------------------------------------------------------


@pytest.fixture(scope="module")
def communes(communes_bytes: bytes) -> UnitLayer:
    return read_units(communes_bytes, filename="dong_thap_communes.geojson", **COMMUNE_FIELDS)


def test_real_communes_are_read(communes: UnitLayer) -> None:
    features = communes.features
    assert len(features) == 144
    assert len({f.code for f in features}) == 144
    assert all(f.code.isdigit() and len(f.code) == 5 for f in features)
    assert all(f.name and unicodedata.is_normalized("NFC", f.name) for f in features)
    assert [f.code for f in features if f.postcode is None] == ["29968"]
    assert all(f.postcode is None or len(f.postcode) == 5 for f in features)
    assert {f.parent_code for f in features} >= {"866", "867", "868"}
    assert all(f.target is None for f in features)
    assert communes.source_crs == "EPSG:4326"
    assert communes.repaired == []
    assert communes.warnings == []


def test_real_commune_attributes(communes: UnitLayer) -> None:
    first = next(f for f in communes.features if f.code == "29866")
    assert (first.name, first.parent_code, first.postcode) == ("Phường 1", "866", "81106")
    assert first.geometry is not None
    assert first.geometry.geom_type == "MultiPolygon"
    assert first.geometry.is_valid
    assert not first.geometry.has_z
    # Mapped fields are not repeated in properties; the rest are, JSON-safe.
    assert {"code", "name", "district_code", "postcode"}.isdisjoint(first.properties)
    assert first.properties["type"] == "Phường"
    assert first.properties["code_valid_2025_03_01"] is False
    json.dumps([f.properties for f in communes.features])


def test_real_communes_bounds(communes: UnitLayer) -> None:
    geoms = [f.geometry for f in communes.features]
    bounds = shapely.total_bounds(np.array(geoms, dtype=object))
    assert bounds == pytest.approx((105.187, 10.134, 105.942, 10.973), abs=0.001)


def test_real_communes_read_and_check_fast(communes_bytes: bytes) -> None:
    started = time.perf_counter()
    layer = read_units(communes_bytes, filename="dong_thap_communes.geojson", **COMMUNE_FIELDS)
    sibling_overlaps(layer.features)
    sibling_gaps(layer.features)
    assert time.perf_counter() - started < 2.0


def test_real_communes_slivers_are_reported(communes: UnitLayer) -> None:
    # The 1:250,000 source has slivers between neighbours: reported, not hidden.
    overlaps = sibling_overlaps(communes.features, min_area_m2=1.0)
    assert overlaps
    assert all(a < b and area >= 1.0 for a, b, area in overlaps)
    parents = {f.code: f.parent_code for f in communes.features}
    assert all(parents[a] == parents[b] for a, b, _ in overlaps)


@pytest.fixture(scope="module")
def communes_5897(communes_bytes: bytes) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """The real layer reprojected to VN-2000 / TM-3 105° (EPSG:5897): WKB, columns, names."""
    columns = ["code", "name", "district_code", "postcode"]
    _, _, wkb, data = pyogrio.raw.read(communes_bytes, columns=columns)
    geoms = transform_geometry(shapely.from_wkb(wkb), transformer=transformer_from_wgs84(5897))
    # Shapefile field names are limited to 10 characters.
    return shapely.to_wkb(geoms), list(data), ["code", "name", "district", "postcode"]


def write_layer(
    path: Path, layer: tuple[np.ndarray, list[np.ndarray], list[str]], *, crs: str | None
) -> None:
    wkb, data, fields = layer
    driver = "GPKG" if path.suffix == ".gpkg" else "ESRI Shapefile"
    pyogrio.raw.write(
        str(path),
        geometry=wkb,
        field_data=data,
        fields=fields,
        crs=crs,
        driver=driver,
        geometry_type="MultiPolygon",
        promote_to_multi=True,
        encoding="UTF-8",
    )


def read_5897_file(tmp_path: Path, communes_5897: Any, kind: str, **options: Any) -> UnitLayer:
    if kind == "gpkg":
        path = tmp_path / "communes.gpkg"
        write_layer(path, communes_5897, crs="EPSG:5897")
        data, filename = path.read_bytes(), "communes.gpkg"
    else:
        folder = tmp_path / "shp"
        folder.mkdir()
        write_layer(folder / "xa.shp", communes_5897, crs="EPSG:5897")
        # A subfolder inside the zip, as Windows "Send to → Compressed folder" makes it.
        data, filename = zip_bytes(shapefile_members(folder, prefix="Dong Thap/")), "xa.zip"
    fields = {"code_field": "code", "name_field": "name", "parent_code_field": "district"}
    return read_units(data, filename=filename, postcode_field="postcode", **fields, **options)


def metric_coordinates(geom: Any) -> np.ndarray:
    to_utm = transformer_from_wgs84(32648)
    return shapely.get_coordinates(transform_geometry(shapely.normalize(geom), transformer=to_utm))


@pytest.mark.parametrize("kind", ["gpkg", "shapefile"])
def test_vn2000_file_reads_back_within_a_centimetre(
    tmp_path: Path, communes_5897: Any, communes: UnitLayer, kind: str
) -> None:
    layer = read_5897_file(tmp_path, communes_5897, kind)
    assert layer.source_crs == "EPSG:5897"
    original = {f.code: f for f in communes.features}
    assert sorted(f.code for f in layer.features) == sorted(original)
    worst_m = 0.0
    for feature in layer.features:
        before = original[feature.code]
        assert (feature.name, feature.parent_code) == (before.name, before.parent_code)
        assert feature.postcode == before.postcode
        ours, theirs = metric_coordinates(feature.geometry), metric_coordinates(before.geometry)
        assert ours.shape == theirs.shape
        worst_m = max(worst_m, float(np.hypot(*(ours - theirs).T).max()))
    assert worst_m < 0.01


@pytest.mark.parametrize("kind", ["gpkg", "shapefile"])
def test_vn2000_coordinates_declared_as_degrees_are_refused(
    tmp_path: Path, communes_5897: Any, kind: str
) -> None:
    with pytest.raises(CrsError) as caught:
        read_5897_file(tmp_path, communes_5897, kind, source_crs="EPSG:4326")
    error = caught.value
    assert error.code == "crs_mismatch"
    assert "dạng mét" in error.message
    assert "EPSG:4326" in error.message
    x, y = error.detail["example"]
    assert 400_000 < x < 700_000
    assert 1_000_000 < y < 1_300_000
    assert f"{x:.0f}, {y:.0f}" in error.message


def test_metre_coordinates_in_geojson_without_crs_are_refused() -> None:
    # RFC 7946: a GeoJSON without "crs" is WGS84 degrees, whatever the numbers look like.
    metres = shapely.box(569000, 1156800, 569500, 1157300)
    with pytest.raises(CrsError) as caught:
        read_geojson([({"code": "1", "name": "Xã A"}, metres)])
    assert caught.value.code == "crs_mismatch"
    assert "569500, 1156800" in caught.value.message  # the first vertex of the data


def test_geojson_with_a_vn2000_crs_member_is_pinned() -> None:
    east, north = 569045.68, 1156800.44  # the DOMAIN.md check value
    geom = shapely.box(east - 50, north - 50, east + 50, north + 50)
    layer = read_geojson([({"code": "1", "name": "Xã A"}, geom)], crs="urn:ogc:def:crs:EPSG::5897")
    assert layer.source_crs == "EPSG:5897"
    centre = layer.features[0].geometry.centroid
    _, _, error_m = GEOD.inv(centre.x, centre.y, 105.6325, 10.46)
    assert error_m < 0.01


@pytest.mark.parametrize(
    ("source_crs", "geom"),
    [
        ("EPSG:5897", square(*CAO_LANH, 0.01)),  # degrees declared as metres
        ("EPSG:4326", square(2.35, 48.85, 0.01)),  # Paris
        ("EPSG:9210", shapely.box(569000, 5156800, 569500, 5157300)),  # far north of Vietnam
    ],
    ids=["degrees-as-tm3", "paris", "northing-too-large"],
)
def test_data_ending_outside_vietnam_is_refused(source_crs: str, geom: Any) -> None:
    with pytest.raises(CrsError) as caught:
        read_geojson([({"code": "1", "name": "Xã A"}, geom)], source_crs=source_crs)
    assert caught.value.code == "outside_vietnam"
    assert "ngoài Việt Nam" in caught.value.message


def test_source_crs_overrides_the_file_crs_with_a_warning() -> None:
    geom = shapely.box(569000, 1156800, 569500, 1157300)
    layer = read_geojson(
        [({"code": "1", "name": "Xã A"}, geom)],
        crs="urn:ogc:def:crs:EPSG::9210",
        source_crs="EPSG:5897",
    )
    assert layer.source_crs == "EPSG:5897"
    assert any("EPSG:5897" in warning for warning in layer.warnings)


def test_unknown_source_crs_is_refused() -> None:
    with pytest.raises(CrsError) as caught:
        read_geojson([({"code": "1", "name": "A"}, square(*CAO_LANH, 0.01))], source_crs="EPSG:0")
    assert caught.value.code == "crs_unknown"


# --- zipped Shapefiles ---------------------------------------------------------------------


@pytest.fixture
def shapefile_dir(tmp_path: Path) -> Path:
    """A two-commune WGS84 Shapefile (with .prj and .cpg)."""
    folder = tmp_path / "shp"
    folder.mkdir()
    geoms = [square(*CAO_LANH, 0.01), square(CAO_LANH[0] + 0.01, CAO_LANH[1], 0.01)]
    layer = (
        shapely.to_wkb(np.array(geoms, dtype=object)),
        [
            np.array(["29866", "29869"], dtype=object),
            np.array(["Phường 1", "Phường 2"], dtype=object),
        ],
        ["ma_xa", "ten_xa"],
    )
    write_layer(folder / "xa.shp", layer, crs="EPSG:4326")
    return folder


def read_shapefile_zip(data: bytes, **options: Any) -> UnitLayer:
    return read_units(data, filename="xa.zip", code_field="ma_xa", name_field="ten_xa", **options)


def test_shapefile_zip_is_read(shapefile_dir: Path) -> None:
    layer = read_shapefile_zip(zip_bytes(shapefile_members(shapefile_dir)))
    assert [(f.code, f.name) for f in layer.features] == [
        ("29866", "Phường 1"),
        ("29869", "Phường 2"),
    ]
    assert layer.source_crs == "EPSG:4326"


def test_macos_junk_in_a_zip_is_ignored(shapefile_dir: Path) -> None:
    members = shapefile_members(shapefile_dir, prefix="xa/")
    members |= {f"__MACOSX/xa/._{name[3:]}": b"\x00\x05\x16\x07" for name in members}
    assert len(read_shapefile_zip(zip_bytes(members)).features) == 2


def test_shapefile_without_prj_needs_source_crs(shapefile_dir: Path) -> None:
    data = zip_bytes(shapefile_members(shapefile_dir, skip=[".prj"]))
    with pytest.raises(CrsError) as caught:
        read_shapefile_zip(data)
    assert caught.value.code == "crs_missing"
    assert "source_crs" in caught.value.message
    assert "EPSG:5897" in caught.value.message
    assert read_shapefile_zip(data, source_crs="EPSG:4326").source_crs == "EPSG:4326"


def test_shapefile_without_cpg_is_read_as_utf8_with_a_warning(shapefile_dir: Path) -> None:
    layer = read_shapefile_zip(zip_bytes(shapefile_members(shapefile_dir, skip=[".cpg"])))
    assert layer.features[0].name == "Phường 1"
    assert any(".cpg" in warning for warning in layer.warnings)


def test_unreadable_prj_needs_source_crs(shapefile_dir: Path) -> None:
    data = zip_bytes(shapefile_members(shapefile_dir) | {"xa.prj": b"PROJCS[broken"})
    with pytest.raises(CrsError) as caught:
        read_shapefile_zip(data)
    assert caught.value.code == "crs_unknown"
    assert "source_crs" in caught.value.message
    assert read_shapefile_zip(data, source_crs="EPSG:4326").source_crs == "EPSG:4326"


def test_corrupted_zip_member_is_unreadable(shapefile_dir: Path) -> None:
    members = shapefile_members(shapefile_dir)
    data = bytearray(zip_bytes(members, compression=zipfile.ZIP_STORED))
    at = bytes(data).index(members["xa.dbf"]) + len(members["xa.dbf"]) - 10
    data[at] ^= 0xFF  # the stored CRC no longer matches
    with pytest.raises(InputFileError) as caught:
        read_shapefile_zip(bytes(data))
    assert caught.value.code == "file_unreadable"


@pytest.mark.parametrize(
    ("skip", "fragment"),
    [
        ([".shp"], "không chứa tệp .shp"),
        ([".dbf"], ".dbf"),
        ([".shx"], ".shx"),
        ([".shp", ".shx", ".dbf", ".prj", ".cpg"], "không chứa tệp .shp"),
    ],
    ids=["no-shp", "no-dbf", "no-shx", "empty-zip"],
)
def test_incomplete_shapefile_zip_is_unreadable(
    shapefile_dir: Path, skip: list[str], fragment: str
) -> None:
    with pytest.raises(InputFileError) as caught:
        read_shapefile_zip(zip_bytes(shapefile_members(shapefile_dir, skip=skip)))
    assert caught.value.code == "file_unreadable"
    assert fragment in caught.value.message


def test_zip_with_two_shapefiles_is_unreadable(shapefile_dir: Path) -> None:
    members = shapefile_members(shapefile_dir, prefix="a/") | shapefile_members(
        shapefile_dir, prefix="b/"
    )
    with pytest.raises(InputFileError) as caught:
        read_shapefile_zip(zip_bytes(members))
    assert caught.value.code == "file_unreadable"
    assert "2 tệp .shp" in caught.value.message


@pytest.mark.parametrize(
    "name",
    ["../evil.shp", "xa/../../evil.txt", "/etc/passwd", "C:/Windows/evil.dll", "..\\evil.shp"],
)
def test_zip_with_path_traversal_is_unsafe(shapefile_dir: Path, name: str) -> None:
    members = shapefile_members(shapefile_dir) | {name: b"x"}
    with pytest.raises(InputFileError) as caught:
        read_shapefile_zip(zip_bytes(members))
    assert caught.value.code == "file_unsafe"


def test_zip_with_too_many_members_is_unsafe(shapefile_dir: Path) -> None:
    members = shapefile_members(shapefile_dir) | {f"note{i}.txt": b"x" for i in range(50)}
    with pytest.raises(InputFileError) as caught:
        read_shapefile_zip(zip_bytes(members))
    assert caught.value.code == "file_unsafe"


@pytest.mark.parametrize(
    ("zeros", "limit"),
    [
        (1_000_000, 100_000),  # expands beyond the limit
        (20_000_000, 500_000_000),  # within the limit but ~1000:1 compression
    ],
    ids=["too-large", "ratio"],
)
def test_zip_bomb_is_unsafe(shapefile_dir: Path, zeros: int, limit: int) -> None:
    members = shapefile_members(shapefile_dir) | {"padding.bin": bytes(zeros)}
    with pytest.raises(InputFileError) as caught:
        read_shapefile_zip(zip_bytes(members), max_uncompressed_bytes=limit)
    assert caught.value.code == "file_unsafe"


def test_stored_zip_below_limits_is_accepted(shapefile_dir: Path) -> None:
    members = shapefile_members(shapefile_dir) | {"readme.txt": bytes(2_000_000)}
    data = zip_bytes(members, compression=zipfile.ZIP_STORED)
    assert len(read_shapefile_zip(data).features) == 2


# --- unreadable or unsupported files -----------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "data", "code"),
    [
        ("units.geojson", bytes(range(256)) * 4, "file_unreadable"),
        ("units.geojson", b'{"hello": "world"}', "file_unreadable"),
        ("units.json", b"<html><body>404</body></html>", "file_unreadable"),
        ("units.geojson", b"", "file_unreadable"),
        ("units.geojson", b'{"type": "FeatureCollection", "features": []}', "file_unreadable"),
        ("units.gpkg", b"SQLite format 3\x00" + bytes(2000), "file_unreadable"),
        ("units.gpkg", b'{"type": "FeatureCollection", "features": []}', "file_unreadable"),
        ("units.zip", b"PK\x03\x04" + bytes(100), "file_unreadable"),
        ("units.zip", b"not a zip at all", "file_unreadable"),
        ("units.csv", b"PK\x03\x04 an xlsx renamed", "file_unreadable"),
        ("units.csv", "code,name\n1,Tân Châu\n".encode("cp1258"), "file_unreadable"),
        ("units.csv", b"", "file_unreadable"),
        ("units.csv", b"code,name\n", "file_unreadable"),
        ("units.kml", b"<kml/>", "format_unsupported"),
        ("units", b"{}", "format_unsupported"),
    ],
)
def test_unreadable_files_are_refused(filename: str, data: bytes, code: str) -> None:
    with pytest.raises(InputFileError) as caught:
        read_units(data, filename=filename, code_field="code", name_field="name")
    assert caught.value.code == code
    assert unicodedata.is_normalized("NFC", caught.value.message)


# --- fields, codes, names, postcodes, targets ---------------------------------------------------

TWO_UNITS = [
    ({"ma": "29866", "ten": "Phường 1", "huyen": "866", "mbc": "81106", "ho": 120}, None),
    ({"ma": "29869", "ten": "Phường 2", "huyen": "866", "mbc": None, "ho": None}, None),
]


@pytest.mark.parametrize(
    "role", ["code_field", "name_field", "parent_code_field", "postcode_field", "target_field"]
)
def test_missing_field_lists_the_available_ones(role: str) -> None:
    options = {"code_field": "ma", "name_field": "ten", role: "khong_co"}
    with pytest.raises(InputFileError) as caught:
        read_units(geojson_bytes(TWO_UNITS), filename="u.geojson", **options)
    error = caught.value
    assert error.code == "field_missing"
    assert "khong_co" in error.message
    assert "ma, ten, huyen, mbc, ho" in error.message
    assert error.detail["available"] == ["ma", "ten", "huyen", "mbc", "ho"]


def test_fields_match_case_insensitively() -> None:
    layer = read_units(
        geojson_bytes(TWO_UNITS),
        filename="u.geojson",
        code_field="MA",
        name_field="Ten",
        parent_code_field="huyen",
        postcode_field="MBC",
        target_field="HO",
    )
    first, second = layer.features
    assert (first.code, first.name, first.parent_code, first.postcode, first.target) == (
        "29866",
        "Phường 1",
        "866",
        "81106",
        120,
    )
    assert (second.postcode, second.target) == (None, None)
    assert first.properties == {}
    assert first.geometry is None
    assert layer.warnings == [
        "Đơn vị 29866 không có ranh giới (hình học rỗng).",
        "Đơn vị 29869 không có ranh giới (hình học rỗng).",
    ]


def test_name_defaults_to_the_code() -> None:
    layer = read_units(geojson_bytes(TWO_UNITS), filename="u.geojson", code_field="ma")
    assert [f.name for f in layer.features] == ["29866", "29869"]
    assert "ten" in layer.features[0].properties


@pytest.mark.parametrize(
    ("value", "expected"),
    [("29866", "29866"), (" 87 ", "87"), (87, "87"), (866.0, "866"), ("T-01", "T-01")],
)
def test_codes_keep_their_digits(value: Any, expected: str) -> None:
    layer = read_geojson([({"code": value, "name": "A"}, square(*CAO_LANH, 0.01))])
    assert layer.features[0].code == expected


@pytest.mark.parametrize("value", [None, "", "   "])
def test_empty_code_is_refused_with_its_row(value: Any) -> None:
    features = [
        ({"code": "1", "name": "A"}, square(*CAO_LANH, 0.01)),
        ({"code": value, "name": "B"}, square(CAO_LANH[0] + 0.01, CAO_LANH[1], 0.01)),
    ]
    with pytest.raises(InputFileError) as caught:
        read_geojson(features)
    assert caught.value.code == "code_missing"
    assert "đối tượng thứ 2" in caught.value.message


def test_empty_name_is_refused() -> None:
    with pytest.raises(InputFileError) as caught:
        read_geojson([({"code": "1", "name": "  "}, square(*CAO_LANH, 0.01))])
    assert caught.value.code == "name_missing"


@pytest.mark.parametrize(
    ("codes", "duplicated"),
    [
        (["1", "2", "1"], ["1"]),
        (["87", 87.0], ["87"]),  # the same code, once as text and once as a number
        ([str(i % 30) for i in range(60)], sorted(str(i) for i in range(30))[:20]),
    ],
    ids=["text", "text-and-number", "many"],
)
def test_duplicated_codes_are_refused(codes: list[Any], duplicated: list[str]) -> None:
    features = [({"code": code, "name": f"Xã {code}"}, None) for code in codes]
    with pytest.raises(InputFileError) as caught:
        read_geojson(features)
    error = caught.value
    assert error.code == "code_duplicated"
    assert error.detail["codes"] == duplicated
    assert ", ".join(duplicated) in error.message


@pytest.mark.parametrize("postcode", ["871000", 871000, "8710", "87a10"])
def test_invalid_postcode_names_the_unit(postcode: Any) -> None:
    with pytest.raises(PostcodeError) as caught:
        read_geojson(
            [({"code": "29866", "name": "Phường 1", "pc": postcode}, None)], postcode_field="pc"
        )
    assert caught.value.code == "postcode_invalid"
    assert "29866" in caught.value.message
    assert caught.value.detail["code"] == "29866"


@pytest.mark.parametrize("target", [-1, 1.5, "abc", "12 hộ", True, "-3"])
def test_invalid_target_is_refused(target: Any) -> None:
    with pytest.raises(InputFileError) as caught:
        read_geojson(
            [({"code": "29866", "name": "Phường 1", "ho": target}, None)], target_field="ho"
        )
    assert caught.value.code == "target_invalid"
    assert "29866" in caught.value.message


@pytest.mark.parametrize(
    ("target", "expected"), [(0, 0), (120, 120), (120.0, 120), ("85", 85), (None, None)]
)
def test_valid_targets(target: Any, expected: int | None) -> None:
    layer = read_geojson([({"code": "1", "name": "A", "ho": target}, None)], target_field="ho")
    assert layer.features[0].target == expected


# --- CSV hamlet lists --------------------------------------------------------------------------

HAMLETS = [
    ("29866-01", "Khóm 1", "29866", "120"),
    ("29866-02", "Ấp Hòa Khánh", "29866", "85"),
    ("29869-01", "Khóm  Mỹ   Thuận", "29869", ""),
]


def hamlet_csv(*, delimiter: str, bom: bool, form: str, crlf: bool = True) -> bytes:
    newline = "\r\n" if crlf else "\n"
    lines = [delimiter.join(["ma_ap", "ten_ap", "ma_xa", "so_ho"])]
    lines += [delimiter.join(row) for row in HAMLETS]
    lines.insert(2, delimiter * 3)  # an empty row Excel leaves behind
    text = unicodedata.normalize(form, newline.join(lines) + newline)
    return ("\ufeff" if bom else "").encode() + text.encode()


@pytest.mark.parametrize(
    ("delimiter", "bom", "form", "crlf"),
    [
        (",", False, "NFC", False),
        (",", True, "NFC", True),
        (";", True, "NFC", True),
        (";", False, "NFD", True),
        ("\t", True, "NFD", False),
    ],
)
def test_hamlet_csv_is_read(delimiter: str, bom: bool, form: str, crlf: bool) -> None:
    data = hamlet_csv(delimiter=delimiter, bom=bom, form=form, crlf=crlf)
    layer = read_units(
        data,
        filename="ap.csv",
        code_field="ma_ap",
        name_field="ten_ap",
        parent_code_field="ma_xa",
        target_field="so_ho",
        source_crs="EPSG:5897",  # ignored: a CSV has no geometry
    )
    got = [(f.code, f.name, f.parent_code, f.target) for f in layer.features]
    assert got == [
        ("29866-01", "Khóm 1", "29866", 120),
        ("29866-02", "Ấp Hòa Khánh", "29866", 85),
        ("29869-01", "Khóm Mỹ Thuận", "29869", None),
    ]
    assert all(unicodedata.is_normalized("NFC", f.name) for f in layer.features)
    assert all(f.geometry is None and f.properties == {} for f in layer.features)
    assert (layer.source_crs, layer.repaired, layer.warnings) == (None, [], [])


def test_csv_code_missing_gives_the_line_number() -> None:
    data = "ma_ap,ten_ap\n29866-01,Khóm 1\n,Khóm 2\n".encode()
    with pytest.raises(InputFileError) as caught:
        read_units(data, filename="ap.csv", code_field="ma_ap", name_field="ten_ap")
    assert caught.value.code == "code_missing"
    assert "dòng 3" in caught.value.message


def test_csv_with_a_nul_character_is_unreadable() -> None:
    data = "ma_ap,ten_ap\n29866-01,Khóm 1\n29866-02,Khóm\x002\n".encode()
    with pytest.raises(InputFileError) as caught:
        read_units(data, filename="ap.csv", code_field="ma_ap", name_field="ten_ap")
    assert caught.value.code == "file_unreadable" and "dòng 3" in caught.value.message


@pytest.mark.parametrize(
    ("vertices", "limit", "refused"), [(1_000, 1_001, False), (1_000, 999, True)]
)
def test_boundaries_over_the_vertex_limit_are_refused(
    vertices: int, limit: int, refused: bool
) -> None:
    angles = np.linspace(0, 2 * np.pi, vertices - 1, endpoint=False)  # the ring closes itself
    circle = shapely.Polygon(
        np.c_[CAO_LANH[0] + 0.01 * np.cos(angles), CAO_LANH[1] + 0.01 * np.sin(angles)]
    )
    assert shapely.get_num_coordinates(circle) == vertices
    features = [
        ({"code": "1", "name": "A"}, square(105.6, 10.4, 0.01)),
        ({"code": "2", "name": "B"}, circle),
    ]
    if not refused:
        assert len(read_geojson(features, max_vertices=limit).features) == 2
        return
    with pytest.raises(InputFileError) as caught:
        read_geojson(features, max_vertices=limit)
    assert caught.value.code == "geometry_too_complex"
    assert caught.value.detail == {"code": "2", "vertices": vertices, "limit": limit}


def test_csv_target_invalid() -> None:
    data = "ma_ap;ten_ap;so_ho\n29866-01;Khóm 1;mười\n".encode()
    with pytest.raises(InputFileError) as caught:
        read_units(data, filename="ap.csv", code_field="ma_ap", target_field="so_ho")
    assert caught.value.code == "target_invalid"


def test_csv_keeps_other_columns_as_text_properties() -> None:
    data = "ma_ap,ten_ap,ghi_chu\n29866-01,Khóm 1,Gần chợ\n29866-02,Khóm 2,\n".encode()
    layer = read_units(data, filename="ap.csv", code_field="ma_ap", name_field="ten_ap")
    assert [f.properties for f in layer.features] == [{"ghi_chu": "Gần chợ"}, {"ghi_chu": None}]


# --- geometry -----------------------------------------------------------------------------------

BOWTIE = shapely.Polygon(
    [(105.60, 10.40), (105.62, 10.42), (105.62, 10.40), (105.60, 10.42), (105.60, 10.40)]
)


@pytest.mark.parametrize(
    "geom",
    [
        shapely.Point(*CAO_LANH),
        shapely.LineString([CAO_LANH, (105.64, 10.46)]),
        shapely.MultiPoint([CAO_LANH]),
        shapely.GeometryCollection([square(*CAO_LANH, 0.01), shapely.Point(*CAO_LANH)]),
    ],
    ids=["point", "line", "multipoint", "collection"],
)
def test_non_polygon_geometry_is_refused(geom: Any) -> None:
    features = [
        ({"code": "1", "name": "A"}, square(105.60, 10.40, 0.01)),
        ({"code": "2", "name": "B"}, geom),
    ]
    with pytest.raises(InputFileError) as caught:
        read_geojson(features)
    error = caught.value
    assert error.code == "geometry_type_invalid"
    assert error.detail == {"code": "2", "geometry_type": geom.geom_type}
    assert geom.geom_type in error.message


def test_self_intersecting_bowtie_is_repaired_and_reported() -> None:
    features = [
        ({"code": "1", "name": "A"}, square(105.64, 10.40, 0.01)),
        ({"code": "2", "name": "B"}, BOWTIE),
    ]
    layer = read_geojson(features)
    assert layer.repaired == ["2"]
    assert any("2" in warning and "sửa" in warning for warning in layer.warnings)
    repaired = layer.features[1].geometry
    assert repaired.is_valid
    assert repaired.geom_type == "MultiPolygon"
    assert len(repaired.geoms) == 2  # the two triangles of the bowtie
    assert repaired.area == pytest.approx(0.0002)


@pytest.mark.parametrize(
    "geom",
    [
        shapely.Polygon([(105.60, 10.40), (105.61, 10.41), (105.62, 10.42), (105.60, 10.40)]),
        shapely.Polygon([(105.60, 10.40), (105.61, 10.40), (105.61, 10.40), (105.60, 10.40)]),
    ],
    ids=["collinear", "repeated-points"],
)
def test_degenerate_polygon_that_repairs_to_nothing_is_refused(geom: Any) -> None:
    with pytest.raises(InputFileError) as caught:
        read_geojson([({"code": "7", "name": "A"}, geom)])
    assert caught.value.code == "geometry_type_invalid"
    assert caught.value.detail["code"] == "7"


def test_3d_polygon_becomes_2d() -> None:
    ring = [[105.60, 10.40, 1.5], [105.61, 10.40, 2.0], [105.61, 10.41, 2.5], [105.60, 10.40, 1.5]]
    layer = read_geojson([({"code": "1", "name": "A"}, {"type": "Polygon", "coordinates": [ring]})])
    geom = layer.features[0].geometry
    assert not geom.has_z
    assert geom.geom_type == "MultiPolygon"
    assert shapely.get_coordinates(geom).shape == (4, 2)


@pytest.mark.parametrize(
    "geometry",
    [None, {"type": "Polygon", "coordinates": []}, {"type": "MultiPolygon", "coordinates": []}],
    ids=["null", "empty-polygon", "empty-multipolygon"],
)
def test_missing_geometry_is_kept_as_none_with_a_warning(geometry: Any) -> None:
    features = [
        ({"code": "1", "name": "A"}, square(*CAO_LANH, 0.01)),
        ({"code": "2", "name": "B"}, geometry),
    ]
    layer = read_geojson(features)
    assert layer.features[1].geometry is None
    assert layer.warnings == ["Đơn vị 2 không có ranh giới (hình học rỗng)."]


def test_multipolygon_is_kept() -> None:
    islands = shapely.MultiPolygon([square(105.60, 10.40, 0.01), square(105.65, 10.40, 0.01)])
    layer = read_geojson([({"code": "1", "name": "A"}, islands)])
    assert layer.features[0].geometry.equals(islands)


def test_geometry_error_is_a_geo_error() -> None:
    # The service maps GeoError subclasses to statuses: every refusal must be one.
    with pytest.raises(GeoError):
        read_geojson([({"code": "1", "name": "A"}, shapely.Point(*CAO_LANH))])


# --- sibling checks -----------------------------------------------------------------------------


def test_overlapping_squares_report_the_overlap_in_square_metres() -> None:
    a, b = square(105.60, 10.40, 0.01), square(105.605, 10.402, 0.01)
    expected_m2 = geodesic_m2(a.intersection(b))
    overlaps = sibling_overlaps([unit("29869", b), unit("29866", a)])
    assert len(overlaps) == 1
    first, second, area = overlaps[0]
    assert (first, second) == ("29866", "29869")
    assert area == pytest.approx(expected_m2, rel=0.01)


@pytest.mark.parametrize(
    ("features", "min_area_m2", "expected_pairs"),
    [
        # neighbours sharing a border
        ([unit("a", square(105.60, 10.4, 0.01)), unit("b", square(105.61, 10.4, 0.01))], 1.0, []),
        # overlapping but under different parents
        (
            [
                unit("a", square(105.60, 10.4, 0.01), parent="866"),
                unit("b", square(105.605, 10.4, 0.01), parent="867"),
            ],
            1.0,
            [],
        ),
        # a unit inside another (containment counts)
        (
            [unit("a", square(105.60, 10.4, 0.02)), unit("b", square(105.605, 10.405, 0.005))],
            1.0,
            [("a", "b")],
        ),
        # three-way overlap, and a unit without geometry ignored
        (
            [
                unit("c", square(105.600, 10.4, 0.01)),
                unit("b", square(105.605, 10.4, 0.01)),
                unit("a", square(105.608, 10.4, 0.01)),
                unit("z", None),
            ],
            1.0,
            [("a", "b"), ("a", "c"), ("b", "c")],
        ),
        # a sliver below the threshold (~11 m x 1100 m = 12,000 m²)
        (
            [unit("a", square(105.60, 10.4, 0.01)), unit("b", square(105.6099, 10.4, 0.01))],
            20_000,
            [],
        ),
        # units without a parent are compared among themselves
        (
            [
                unit("a", square(105.60, 10.4, 0.01), parent=None),
                unit("b", square(105.605, 10.4, 0.01), parent=None),
            ],
            1.0,
            [("a", "b")],
        ),
    ],
    ids=["touching", "other-parent", "contained", "three-way", "below-threshold", "no-parent"],
)
def test_sibling_overlap_table(
    features: list[UnitFeature], min_area_m2: float, expected_pairs: list[tuple[str, str]]
) -> None:
    found = sibling_overlaps(features, min_area_m2=min_area_m2)
    assert [(a, b) for a, b, _ in found] == expected_pairs


def ring_of_four(lon: float, lat: float, cell: float) -> list[UnitFeature]:
    """Four siblings around a one-cell hole in a 3 x 3 grid of cells."""
    return [
        unit("top", shapely.box(lon, lat + 2 * cell, lon + 3 * cell, lat + 3 * cell)),
        unit("bottom", shapely.box(lon, lat, lon + 3 * cell, lat + cell)),
        unit("left", shapely.box(lon, lat + cell, lon + cell, lat + 2 * cell)),
        unit("right", shapely.box(lon + 2 * cell, lat + cell, lon + 3 * cell, lat + 2 * cell)),
    ]


def test_hole_enclosed_by_four_siblings_is_a_gap() -> None:
    lon, lat, cell = 105.60, 10.40, 0.01
    hole_m2 = geodesic_m2(shapely.box(lon + cell, lat + cell, lon + 2 * cell, lat + 2 * cell))
    features = ring_of_four(lon, lat, cell)
    assert sibling_overlaps(features) == []
    gaps = sibling_gaps(features)
    assert len(gaps) == 1
    assert gaps[0][0] == "866"
    assert gaps[0][1] == pytest.approx(hole_m2, rel=0.01)


def test_gap_against_a_known_parent_includes_the_border() -> None:
    lon, lat, cell = 105.60, 10.40, 0.01
    parent = shapely.box(lon, lat, lon + 4 * cell, lat + 3 * cell)  # one column wider
    expected_m2 = geodesic_m2(parent) * 4 / 12  # the hole and the uncovered column: 4 of 12 cells
    gaps = sibling_gaps(ring_of_four(lon, lat, cell), parents={"866": parent})
    assert [code for code, _ in gaps] == ["866"]
    assert gaps[0][1] == pytest.approx(expected_m2, rel=0.01)


@pytest.mark.parametrize(
    ("parents", "min_area_m2", "expected"),
    [
        ({}, 2_000_000, []),  # the ~1.2 km² hole is below this threshold
        ({"866": shapely.box(105.60, 10.40, 105.63, 10.43)}, 1.0, ["866"]),
        ({"866": None}, 1.0, ["866"]),  # unknown parent geometry: fall back to holes
        ({"999": shapely.box(105.0, 10.0, 106.0, 11.0)}, 1.0, ["866"]),  # parent without children
    ],
)
def test_sibling_gap_table(
    parents: dict[str, Any], min_area_m2: float, expected: list[str]
) -> None:
    gaps = sibling_gaps(ring_of_four(105.60, 10.40, 0.01), parents=parents, min_area_m2=min_area_m2)
    assert [code for code, _ in gaps] == expected


def test_siblings_that_tile_their_parent_leave_no_gap() -> None:
    lon, lat, cell = 105.60, 10.40, 0.01
    features = [*ring_of_four(lon, lat, cell), unit("centre", square(lon + cell, lat + cell, cell))]
    parent = shapely.box(lon, lat, lon + 3 * cell, lat + 3 * cell)
    assert sibling_gaps(features) == []
    assert sibling_gaps(features, parents={"866": parent}) == []


def test_doctests() -> None:
    result = doctest.testmod(geo.boundaries)
    assert result.attempted > 0
    assert result.failed == 0
