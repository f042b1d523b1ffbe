"""geo.crs: the pinned VN-2000 shift, CRS parsing, transformers, metric areas."""

from __future__ import annotations

import doctest
import math

import pytest
import shapely
from pyproj import CRS, Geod, Transformer

import geo.crs
from geo.crs import (
    VN2000_TOWGS84,
    area_m2,
    is_vn2000,
    pinned_crs,
    resolve_crs,
    transform_geometry,
    transformer_from_wgs84,
    transformer_to_wgs84,
    utm_crs_for,
)
from geo.errors import CrsError

GEOD = Geod(ellps="WGS84")
# DOMAIN.md check value: WGS84 10.46 N, 105.6325 E → EPSG:5897 with "VN-2000 to WGS 84 (2)".
CHECK_LONLAT = (105.6325, 10.46)
CHECK_EN = (569045.68, 1156800.44)
# Rotation signs flipped: the coordinate-frame string commonly copied from the web.
FLIPPED_TOWGS84 = (
    "-191.90441429,-39.30318279,-111.45032835,-0.00928836,0.01975479,-0.00427372,0.252906278"
)


def hand_built(proj: str, towgs84: str = VN2000_TOWGS84) -> CRS:
    """A CRS written the way the brief verified it: a PROJ string with +towgs84."""
    return CRS.from_proj4(f"{proj} +ellps=WGS84 +towgs84={towgs84} +units=m +no_defs")


TM3_105 = "+proj=tmerc +lat_0=0 +lon_0=105 +k=0.9999 +x_0=500000 +y_0=0"


@pytest.mark.parametrize(
    "crs",
    [
        "EPSG:5897",
        5897,
        "epsg:5897",
        CRS.from_epsg(5897),
        CRS.from_epsg(5897).to_wkt(),
        CRS.from_epsg(5897).to_wkt("WKT1_ESRI"),  # what a Shapefile .prj holds
        f"{TM3_105} +ellps=WGS84 +units=m +no_defs",  # a VN-2000-less PROJ string: not pinned
    ],
    ids=["epsg-text", "epsg-int", "lower-case", "crs-object", "wkt2", "esri-wkt", "bare-proj"],
)
def test_check_value_from_wgs84(crs: object) -> None:
    expected_pinned = not (isinstance(crs, str) and crs.startswith("+proj"))
    east, north = transformer_from_wgs84(crs).transform(*CHECK_LONLAT)  # type: ignore[arg-type]
    error_m = math.dist((east, north), CHECK_EN)
    assert (error_m < 0.01) is expected_pinned, error_m


@pytest.mark.parametrize("crs", ["EPSG:5897", 5897, CRS.from_epsg(5897).to_wkt("WKT1_ESRI")])
def test_check_value_to_wgs84(crs: object) -> None:
    lon, lat = transformer_to_wgs84(crs).transform(*CHECK_EN)  # type: ignore[arg-type]
    _, _, error_m = GEOD.inv(lon, lat, *CHECK_LONLAT)
    assert error_m < 0.01


@pytest.mark.parametrize(
    ("epsg", "proj", "lonlat"),
    [
        (5897, TM3_105, CHECK_LONLAT),
        (9210, "+proj=tmerc +lat_0=0 +lon_0=105.75 +k=0.9999 +x_0=500000 +y_0=0", (106.36, 10.35)),
        (3405, "+proj=utm +zone=48", CHECK_LONLAT),
        (3406, "+proj=utm +zone=49", (108.5, 15.0)),
        (4756, "+proj=longlat", CHECK_LONLAT),
    ],
)
def test_pinned_crs_matches_hand_built_proj_string(
    epsg: int, proj: str, lonlat: tuple[float, float]
) -> None:
    reference = Transformer.from_crs("EPSG:4326", hand_built(proj), always_xy=True)
    got = transformer_from_wgs84(epsg).transform(*lonlat)
    want = reference.transform(*lonlat)
    tolerance = 1e-9 if epsg == 4756 else 0.001  # degrees or metres
    assert math.dist(got, want) < tolerance


@pytest.mark.parametrize(
    ("other", "min_m", "max_m"),
    [
        (CRS.from_epsg(5897), 0.5, 2.0),  # PROJ's automatic choice
        (hand_built(TM3_105, FLIPPED_TOWGS84), 0.4, 1.0),  # web string, rotation signs flipped
    ],
    ids=["proj-automatic", "flipped-rotations"],
)
def test_the_pin_matters(other: CRS, min_m: float, max_m: float) -> None:
    pinned = transformer_from_wgs84(5897).transform(*CHECK_LONLAT)
    unpinned = Transformer.from_crs("EPSG:4326", other, always_xy=True).transform(*CHECK_LONLAT)
    assert min_m < math.dist(pinned, unpinned) < max_m


def test_geographic_vn2000_roundtrip_and_shift() -> None:
    lon, lat = transformer_from_wgs84(4756).transform(*CHECK_LONLAT)
    back = transformer_to_wgs84("EPSG:4756").transform(lon, lat)
    # The inverse Helmert is iterative: sub-millimetre, not bit-exact.
    assert GEOD.inv(*back, *CHECK_LONLAT)[2] < 0.001
    # VN-2000 lat/lon differ from WGS84 by about 226 m in the Mekong delta (DOMAIN.md).
    _, _, shift_m = GEOD.inv(lon, lat, *CHECK_LONLAT)
    assert 200 < shift_m < 250


@pytest.mark.parametrize(
    ("crs", "expected"),
    [
        (4756, True),
        ("EPSG:5897", True),
        (9210, True),
        (3405, True),
        (3406, True),
        (CRS.from_epsg(5897).to_wkt("WKT1_ESRI"), True),
        (pinned_crs(5897), True),  # already bound: still VN-2000 underneath
        (f"{TM3_105} +ellps=WGS84 +towgs84={VN2000_TOWGS84}", False),  # datum unnamed
        (4326, False),
        (32648, False),
        ("EPSG:3857", False),
    ],
)
def test_is_vn2000(crs: object, expected: bool) -> None:
    assert is_vn2000(crs) is expected  # type: ignore[arg-type]


def test_pinned_crs_replaces_an_existing_towgs84() -> None:
    wrong = (
        CRS.from_epsg(5897)
        .to_wkt("WKT1_GDAL")
        .replace('DATUM["Vietnam_2000",', f'DATUM["Vietnam_2000",TOWGS84[{FLIPPED_TOWGS84}],')
    )
    assert "TOWGS84" in wrong
    east_north = transformer_from_wgs84(wrong).transform(*CHECK_LONLAT)
    assert math.dist(east_north, CHECK_EN) < 0.01


@pytest.mark.parametrize(
    "value", ["", "   ", "garbage", "EPSG:999999", "+proj=nonsense", "PROJCS[", None, True, 1.5]
)
def test_resolve_crs_refuses_garbage(value: object) -> None:
    with pytest.raises(CrsError) as caught:
        resolve_crs(value)  # type: ignore[arg-type]
    assert caught.value.code == "crs_unknown"
    assert "hệ tọa độ" in caught.value.message


@pytest.mark.parametrize(
    ("value", "epsg"), [("EPSG:4326", 4326), (5897, 5897), ("EPSG:32648", 32648)]
)
def test_resolve_crs_accepts(value: object, epsg: int) -> None:
    assert resolve_crs(value).to_epsg() == epsg  # type: ignore[arg-type]


def test_transformers_are_cached_across_spellings() -> None:
    assert transformer_to_wgs84("EPSG:5897") is transformer_to_wgs84(5897)
    assert transformer_from_wgs84(CRS.from_epsg(9210)) is transformer_from_wgs84("EPSG:9210")


def test_transform_geometry_keeps_structure_and_missing_values() -> None:
    ring = shapely.box(105.60, 10.40, 105.62, 10.42)
    with_hole = ring.difference(shapely.box(105.605, 10.405, 105.615, 10.415))
    geoms = shapely.from_wkt(["POINT Z (105.6325 10.46 3)", None])
    geoms[1] = with_hole
    out = transform_geometry(geoms, transformer=transformer_from_wgs84(5897))
    assert math.dist((out[0].x, out[0].y), CHECK_EN) < 0.01
    assert not out[0].has_z
    assert len(out[1].interiors) == 1
    assert transform_geometry(None, transformer=transformer_from_wgs84(5897)) is None


def test_transform_geometry_reports_proj_failure() -> None:
    # Latitude 95° does not exist: PROJ refuses it.
    to_utm = transformer_from_wgs84(32648)
    with pytest.raises(CrsError) as caught:
        transform_geometry(shapely.Point(105, 95), transformer=to_utm)
    assert caught.value.code == "transform_failed"


@pytest.mark.parametrize(
    ("lon", "epsg"),
    [(102.1, 32648), (105.63, 32648), (107.999, 32648), (108.0, 32649), (109.4, 32649)],
)
def test_utm_crs_for(lon: float, epsg: int) -> None:
    assert utm_crs_for(lon).to_epsg() == epsg


@pytest.mark.parametrize(
    "geom",
    [
        shapely.box(105.60, 10.40, 105.61, 10.41),  # zone 48, near its central meridian
        shapely.box(102.20, 22.30, 102.25, 22.35),  # far north-west, zone 48 edge
        shapely.box(109.10, 12.20, 109.13, 12.23),  # zone 49 (Nha Trang)
        shapely.MultiPolygon(
            [shapely.box(105.6, 10.4, 105.61, 10.41), shapely.box(105.7, 10.4, 105.71, 10.41)]
        ),
        shapely.box(105.6, 10.4, 105.62, 10.42).difference(
            shapely.box(105.605, 10.405, 105.61, 10.41)
        ),
    ],
    ids=["square", "zone-48-edge", "zone-49", "multipolygon", "with-hole"],
)
def test_area_m2_matches_geodesic_area(geom: shapely.Geometry) -> None:
    geodesic_m2 = abs(GEOD.geometry_area_perimeter(geom)[0])
    assert area_m2(geom) == pytest.approx(geodesic_m2, rel=0.003)


@pytest.mark.parametrize(
    "geom",
    [shapely.Polygon(), shapely.Point(105.6, 10.4), shapely.LineString([(105, 10), (106, 11)])],
)
def test_area_m2_of_arealess_geometries_is_zero(geom: shapely.Geometry) -> None:
    assert area_m2(geom) == 0.0


def test_doctests() -> None:
    result = doctest.testmod(geo.crs)
    assert result.attempted > 0
    assert result.failed == 0
