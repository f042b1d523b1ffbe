"""A deterministic synthetic province for the demo: boundaries, hamlet lists and households.

Nothing here copies real data. Province ``99`` does not exist; its outline is a jittered ellipse
of about 40 km × 30 km centred on 106.20 E, 9.75 N (well south-east of old Đồng Tháp, whose
codes are 87/82 and postcodes 81xxx), split into districts, communes and hamlets by Voronoi
cells clipped to their parent. The same seed always gives the same province and households.
"""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

ICT = timezone(timedelta(hours=7))
DEFAULT_NOW = datetime(2026, 11, 20, 17, 0, tzinfo=ICT)
PROVINCE_CODE = "99"
PROVINCE_NAME = "Tỉnh Demo Sông Tiền"
CENTRE_LON, CENTRE_LAT = 106.20, 9.75

# Geometry is built in a local equirectangular frame (metres east/north of the centre). That
# frame is an affine image of lon/lat, so clipped straight edges stay straight and children stay
# exactly inside their parents after conversion; UTM would bend edges by sub-millimetre amounts.
_ORIGIN = np.array([CENTRE_LON, CENTRE_LAT])
_PHI = math.radians(CENTRE_LAT)
_M_PER_DEG = np.array(
    [
        111_412.84 * math.cos(_PHI) - 93.5 * math.cos(3 * _PHI),
        111_132.92 - 559.82 * math.cos(2 * _PHI) + 1.175 * math.cos(4 * _PHI),
    ]
)
_SEMI_AXES_M = (20_000.0, 15_000.0)
_OUTLINE_VERTICES = 180
_LLOYD_ROUNDS = 2  # relaxing the Voronoi seeds twice evens out sibling sizes
_MARGIN_M = 2.0  # keeps households inside their hamlet after rounding to 1e-6 degrees
_COORD_DECIMALS = 6
_UNMAPPED_RADIUS_M = 800.0  # houses of a hamlet without a map cluster within ~1 km
_ROADSIDE_M = (6.0, 14.0)  # houses line both banks: a gap for the road, then a spread
_OFF_ROAD_SHARE = 0.1
_SURVEY_WINDOW_DAYS = 30
_MALE_HEAD_SHARE = 0.7

_SYLLABLES_FIRST = ("Tân", "Mỹ", "An", "Long", "Phú", "Bình", "Hòa", "Vĩnh", "Thạnh", "Hưng")
_SYLLABLES_SECOND = (
    *("Hòa", "Phước", "Bình", "Hưng", "Thuận", "Thạnh", "An", "Lợi", "Long", "Khánh"),
    *("Thới", "Mỹ", "Hiệp", "Đông", "Tây", "Phú", "Nhơn", "Thành"),
)
_FAMILY = {
    **{"Nguyễn": 38.0, "Trần": 11.0, "Lê": 9.5, "Phạm": 7.0, "Huỳnh": 5.0, "Võ": 4.0},
    **{"Phan": 4.5, "Đặng": 2.0, "Bùi": 2.0, "Đỗ": 1.4, "Hồ": 1.3, "Ngô": 1.3, "Dương": 1.0},
    **{"Trương": 1.0, "Đoàn": 0.8, "Lý": 0.6, "Lâm": 0.6, "Châu": 0.5, "Thái": 0.5, "Cao": 0.5},
}
_MIDDLE_MALE = {
    **{"Văn": 60.0, "Minh": 8.0, "Thanh": 6.0, "Hữu": 6.0, "Hoàng": 5.0, "Quốc": 5.0},
    **{"Công": 4.0, "Đức": 3.0, "Ngọc": 3.0},
}
_MIDDLE_FEMALE = {
    **{"Thị": 55.0, "Thị Ngọc": 8.0, "Ngọc": 8.0, "Thị Kim": 6.0, "Thanh": 6.0},
    **{"Thị Mỹ": 5.0, "Kim": 5.0, "Thu": 4.0, "Mỹ": 3.0},
}
_GIVEN_MALE = (
    *("An", "Bình", "Cường", "Dũng", "Hải", "Hùng", "Hưng", "Khánh", "Lâm", "Lộc", "Long"),
    *("Nam", "Phúc", "Phước", "Quang", "Sang", "Tài", "Tâm", "Thành", "Thắng", "Tiến", "Toàn"),
    *("Trí", "Trung", "Tuấn", "Vinh", "Hậu", "Nghĩa", "Tín", "Lợi", "Đạt", "Hiếu", "Nhân"),
)
_GIVEN_FEMALE = (
    *("Anh", "Cúc", "Diễm", "Dung", "Hạnh", "Hằng", "Hoa", "Hồng", "Hương", "Lan", "Liên"),
    *("Linh", "Loan", "Mai", "Nga", "Ngân", "Nhung", "Oanh", "Phượng", "Thảo", "Thủy"),
    *("Trang", "Tuyết", "Vân", "Yến", "Xuân", "Hân", "Nhi", "Trinh", "Tiên"),
)
# Network prefixes of the five mobile ranges (03, 05, 07, 08, 09).
_MOBILE_PREFIXES = (
    *("032", "033", "034", "035", "036", "037", "038", "039", "056", "058", "059"),
    *("070", "076", "077", "078", "079", "081", "082", "083", "084", "085", "086"),
    *("088", "089", "090", "091", "093", "094", "096", "097", "098", "099"),
)
_PHONE_STYLE = {"": 0.12, "plain": 0.5, "grouped": 0.26, "international": 0.12}
_URBAN_STREETS = (
    *("Đường Lê Lợi", "Đường Nguyễn Huệ", "Đường Trần Hưng Đạo", "Đường Hai Bà Trưng"),
    *("Đường 30 Tháng 4", "Đường Lý Thường Kiệt", "Đường Nguyễn Trãi", "Đường Hùng Vương"),
    *("Đường Nguyễn Thị Minh Khai", "Đường Phan Đình Phùng", "Đường Võ Thị Sáu"),
)
_RURAL_WAYS = (
    *("Kênh Xáng", "Kênh Thầy Cai", "Kênh Ông Cả", "Kênh Hai Hạt", "Kênh Tư", "Rạch Cái Sơn"),
    *("Rạch Bà Bèo", "Lộ Bờ Kênh", "Đường liên ấp", "Đường đal", "Đường tỉnh 990"),
    "Đường huyện 12",
)
_RURAL_STREET_BLANK = 0.3  # rural addresses often name no road at all
_URBAN_ALLEY = 0.35
# Styles: "", "12", "12A", "12/3", "Tổ 5".
_NUMBER_STYLE_RURAL = (0.45, 0.3, 0.08, 0.1, 0.07)
_NUMBER_STYLE_URBAN = (0.05, 0.5, 0.15, 0.3, 0.0)
_KINDS = {"residence": 0.85, "business": 0.08, "ocop": 0.02, "public": 0.02, "other": 0.03}
_MEMBERS = {1: 0.06, 2: 0.14, 3: 0.22, 4: 0.25, 5: 0.16, 6: 0.09, 7: 0.05, 8: 0.03}
_NOTES = (
    *("Chủ hộ đi làm ăn xa", "Nhà đóng cửa, hỏi thông tin hàng xóm", "Gần cầu"),
    *("Nhà sau vườn, đi vào hẻm đất", "Hộ mới tách", "Cạnh chợ"),
)
_NOTE_SHARE = 0.06

T = TypeVar("T")
FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
# Metric cells: [(district, [(commune, [hamlet, ...]), ...]), ...]
_Tree = list[tuple[MultiPolygon, list[tuple[MultiPolygon, list[MultiPolygon]]]]]


@dataclass(frozen=True, slots=True)
class DemoUnit:
    """One administrative unit of the demo province; geometry is WGS84 lon/lat or None."""

    code: str
    name: str
    level: str  # "province" | "district" | "commune" | "hamlet"
    parent_code: str | None
    postcode: str | None
    target: int | None
    geometry: MultiPolygon | None


@dataclass(frozen=True, slots=True)
class DemoProvince:
    """The demo province and its units, level by level, parents before children."""

    province: DemoUnit
    districts: list[DemoUnit]
    communes: list[DemoUnit]
    hamlets: list[DemoUnit]

    def units(self) -> list[DemoUnit]:
        """Every unit, the province first, then districts, communes and hamlets."""
        return [self.province, *self.districts, *self.communes, *self.hamlets]


# --- province --------------------------------------------------------------------------------


def generate_province(
    *,
    seed: int = 2026,
    n_districts: int = 3,
    communes_per_district: int = 5,
    hamlets_per_commune: int = 6,
    hamlets_without_polygon: float = 0.2,
    households_per_hamlet: tuple[int, int] = (80, 220),
) -> DemoProvince:
    """Build the fictional province ``99`` with districts, communes, hamlets and targets."""
    _check_province_options(
        n_districts, communes_per_district, hamlets_per_commune, hamlets_without_polygon
    )
    _check_range(households_per_hamlet)
    # Independent streams, so that changing one option does not reshuffle everything else.
    geo_rng, name_rng, pick_rng, target_rng = (
        np.random.default_rng(stream) for stream in np.random.SeedSequence(seed).spawn(4)
    )
    outline = _outline(geo_rng)
    tree = _geometry_tree(outline, n_districts, communes_per_district, hamlets_per_commune, geo_rng)
    n_communes = n_districts * communes_per_district
    names = _place_names(n_districts + n_communes, name_rng)
    n_hamlets = n_communes * hamlets_per_commune
    low, high = households_per_hamlet
    picks = _Picks(
        district_names=names[:n_districts],
        commune_names=names[n_districts:],
        no_postcode=int(pick_rng.integers(n_communes)),
        unmapped=_unmapped_hamlets(n_hamlets, hamlets_without_polygon, pick_rng),
        targets=target_rng.integers(low, high + 1, n_hamlets),
    )
    return _assemble(outline, tree, picks)


def _unmapped_hamlets(count: int, fraction: float, rng: np.random.Generator) -> set[int]:
    """Indexes of the round(fraction × count) hamlets that get no polygon."""
    return set(rng.choice(count, size=round(fraction * count), replace=False).tolist())


@dataclass(frozen=True, slots=True)
class _Picks:
    """The random non-geometric choices: names, the commune without postcode, targets."""

    district_names: list[str]
    commune_names: list[str]
    no_postcode: int  # commune index
    unmapped: set[int]  # hamlet indexes without polygon
    targets: IntArray


def _assemble(outline: MultiPolygon, tree: _Tree, picks: _Picks) -> DemoProvince:
    """Turn the metric geometry tree and the picks into units with codes and names."""
    province = DemoUnit(
        code=PROVINCE_CODE,
        name=PROVINCE_NAME,
        level="province",
        parent_code=None,
        postcode=None,
        target=None,
        geometry=_lonlat(outline),
    )
    result = DemoProvince(province, [], [], [])
    for d, (district_cell, commune_cells) in enumerate(tree):
        district = _district(d, district_cell, picks.district_names[d])
        result.districts.append(district)
        for position, (commune_cell, hamlet_cells) in enumerate(commune_cells):
            commune = _commune(district, position, len(result.communes), commune_cell, picks)
            result.communes.append(commune)
            result.hamlets.extend(_hamlets(commune, hamlet_cells, len(result.hamlets), picks))
    return result


def _check_province_options(
    n_districts: int, communes_per_district: int, hamlets_per_commune: int, unmapped: float
) -> None:
    """Refuse options the code shapes cannot express."""
    if not 1 <= n_districts <= 10:
        raise ValueError("n_districts must be 1-10: district codes are 990-999")
    if not 1 <= communes_per_district <= 99:
        raise ValueError("communes_per_district must be 1-99: postcodes end in 01-99")
    if not 1 <= hamlets_per_commune <= 99:
        raise ValueError("hamlets_per_commune must be 1-99: hamlet codes end in 01-99")
    if not 0.0 <= unmapped <= 1.0:
        raise ValueError("hamlets_without_polygon must be a fraction between 0 and 1")


def _check_range(bounds: tuple[int, int]) -> None:
    """Refuse an empty or negative household range."""
    low, high = bounds
    if not 0 <= low <= high:
        raise ValueError("households_per_hamlet must be (low, high) with 0 <= low <= high")


def _district(index: int, cell: MultiPolygon, name: str) -> DemoUnit:
    """District ``99<index>``; postcodes live on communes only."""
    return DemoUnit(
        code=f"{PROVINCE_CODE}{index}",
        name=f"Huyện Demo {name}",
        level="district",
        parent_code=PROVINCE_CODE,
        postcode=None,
        target=None,
        geometry=_lonlat(cell),
    )


def _commune(
    district: DemoUnit, position: int, index: int, cell: MultiPolygon, picks: _Picks
) -> DemoUnit:
    """Commune ``99NNN``: the district seat is a phường, the others are xã."""
    kind = "Phường" if position == 0 else "Xã"
    # A postcode's first three digits are the district's, so it is district code + 2 digits.
    postcode = None if index == picks.no_postcode else f"{district.code}{position + 1:02d}"
    return DemoUnit(
        code=f"{PROVINCE_CODE}{index + 1:03d}",
        name=f"{kind} {picks.commune_names[index]}",
        level="commune",
        parent_code=district.code,
        postcode=postcode,
        target=None,
        geometry=_lonlat(cell),
    )


def _hamlets(
    commune: DemoUnit, cells: list[MultiPolygon], first: int, picks: _Picks
) -> list[DemoUnit]:
    """Hamlets ``<commune>-NN``: khóm in a phường, ấp in a xã; some without a polygon."""
    word = "Khóm" if commune.name.startswith("Phường") else "Ấp"
    return [
        DemoUnit(
            code=f"{commune.code}-{h + 1:02d}",
            name=f"{word} {h + 1}",
            level="hamlet",
            parent_code=commune.code,
            postcode=None,
            target=int(picks.targets[first + h]),
            geometry=None if first + h in picks.unmapped else _lonlat(cell),
        )
        for h, cell in enumerate(cells)
    ]


def _place_names(count: int, rng: np.random.Generator) -> list[str]:
    """Distinct two-syllable Sino-Vietnamese place names (Tân Hòa, Mỹ Phước...)."""
    pool = [f"{a} {b}" for a in _SYLLABLES_FIRST for b in _SYLLABLES_SECOND if a != b]
    order = rng.permutation(len(pool))
    names = [pool[order[i % len(pool)]] for i in range(count)]
    # Only huge provinces run out of pairs: number the repeats rather than fail.
    return [
        name if i < len(pool) else f"{name} {i // len(pool) + 1}" for i, name in enumerate(names)
    ]


# --- geometry --------------------------------------------------------------------------------


def _outline(rng: np.random.Generator) -> MultiPolygon:
    """A rotated ellipse with smooth bulges (a few harmonics) and a little boundary noise."""
    theta = np.linspace(0.0, 2 * np.pi, _OUTLINE_VERTICES, endpoint=False)
    k = np.arange(2, 7)[:, None]
    amplitude = rng.uniform(0.02, 0.1, k.shape) / np.sqrt(k - 1)
    phase = rng.uniform(0.0, 2 * np.pi, k.shape)
    # Radius stays above ~0.6, so the ring is star-shaped around the centre and thus simple.
    radius = 1 + (amplitude * np.cos(k * theta + phase)).sum(axis=0)
    radius += rng.normal(0.0, 0.006, theta.size)
    x = _SEMI_AXES_M[0] * radius * np.cos(theta)
    y = _SEMI_AXES_M[1] * radius * np.sin(theta)
    tilt = rng.uniform(-0.6, 0.6)
    ring = np.column_stack(
        [x * math.cos(tilt) - y * math.sin(tilt), x * math.sin(tilt) + y * math.cos(tilt)]
    )
    return MultiPolygon([Polygon(ring)])


def _geometry_tree(
    outline: MultiPolygon,
    n_districts: int,
    n_communes: int,
    n_hamlets: int,
    rng: np.random.Generator,
) -> _Tree:
    """Districts, their communes and those communes' hamlet cells, in metres."""
    tree: _Tree = []
    for district in _split(outline, n_districts, rng):
        communes = _split(district, n_communes, rng)
        tree.append(
            (district, [(commune, _split(commune, n_hamlets, rng)) for commune in communes])
        )
    return tree


def _split(parent: MultiPolygon, count: int, rng: np.random.Generator) -> list[MultiPolygon]:
    """Tile the parent with count clipped Voronoi cells of similar size."""
    if count == 1:
        return [parent]
    seeds = _uniform_points(parent, count, rng)
    # Lloyd relaxation: moving each seed to its cell's centre evens out the cell sizes. Straight
    # cell edges are fine here: delta land is cut by straight canals.
    for _ in range(_LLOYD_ROUNDS):
        seeds = np.array([_inner_centre(cell) for cell in _voronoi_cells(parent, seeds)])
    return _voronoi_cells(parent, seeds)


def _voronoi_cells(parent: MultiPolygon, seeds: FloatArray) -> list[MultiPolygon]:
    """The Voronoi cells of the seeds, in seed order, clipped to the parent."""
    regions = shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=parent, ordered=True)
    return [_polygonal(parent.intersection(region)) for region in regions.geoms]


def _polygonal(geometry: BaseGeometry) -> MultiPolygon:
    """The polygon parts of a clip result, as one MultiPolygon (drops stray lines and points)."""
    parts = shapely.get_parts(geometry)
    return MultiPolygon([part for part in parts if isinstance(part, Polygon) and part.area > 0])


def _inner_centre(cell: MultiPolygon) -> tuple[float, float]:
    """The centroid, or a point on the surface when a concave cell's centroid falls outside."""
    centre = cell.centroid
    if not cell.contains(centre):
        centre = cell.point_on_surface()
    return (centre.x, centre.y)


def _uniform_points(region: BaseGeometry, count: int, rng: np.random.Generator) -> FloatArray:
    """count points drawn uniformly inside the region (rejection sampling in its bounds)."""
    low, high = np.array(region.bounds[:2]), np.array(region.bounds[2:])
    shapely.prepare(region)
    found = np.empty((0, 2))
    while len(found) < count:
        xy = rng.uniform(low, high, size=(4 * count, 2))
        found = np.vstack([found, xy[shapely.contains_xy(region, xy[:, 0], xy[:, 1])]])
    return found[:count]


def _lonlat(geometry: BaseGeometry) -> Any:
    """Metres in the local frame to WGS84 lon/lat (EPSG:4326, x = lon)."""
    return shapely.transform(geometry, lambda xy: xy / _M_PER_DEG + _ORIGIN)


def _metres(geometry: BaseGeometry) -> Any:
    """WGS84 lon/lat to metres in the local frame."""
    return shapely.transform(geometry, lambda xy: (xy - _ORIGIN) * _M_PER_DEG)


# --- exports ---------------------------------------------------------------------------------


def feature_collection(units: Sequence[DemoUnit]) -> dict[str, Any]:
    """An RFC 7946 FeatureCollection of the units; a unit without polygon has null geometry."""
    return {"type": "FeatureCollection", "features": [_feature(unit) for unit in units]}


def _feature(unit: DemoUnit) -> dict[str, Any]:
    """One unit as a GeoJSON Feature with the import's property names."""
    geometry = None
    if unit.geometry is not None:
        # RFC 7946 asks for counter-clockwise exterior rings.
        oriented = shapely.orient_polygons(unit.geometry, exterior_cw=False)
        geometry = json.loads(shapely.to_geojson(oriented))
    properties = {
        "code": unit.code,
        "name": unit.name,
        "parent_code": unit.parent_code,
        "postcode": unit.postcode,
        "target": unit.target,
    }
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def hamlet_csv(units: Sequence[DemoUnit]) -> str:
    """The hamlet-list CSV (``code,name,commune_code,target``) of hamlets without a polygon."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("code", "name", "commune_code", "target"))
    writer.writerows(
        (unit.code, unit.name, unit.parent_code, unit.target)
        for unit in units
        if unit.level == "hamlet" and unit.geometry is None
    )
    return out.getvalue()


# --- households ------------------------------------------------------------------------------


def generate_households(
    province: DemoProvince,
    *,
    seed: int = 2026,
    fraction: float = 0.6,
    now: datetime = DEFAULT_NOW,
) -> list[dict[str, Any]]:
    """Demo submission items: round(fraction × target) households per hamlet, oldest first."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be between 0 and 1")
    unmapped = _unmapped_areas(province)
    items: list[dict[str, Any]] = []
    for index, hamlet in enumerate(province.hamlets):
        # One stream per hamlet: a hamlet's households do not depend on its neighbours'.
        rng = np.random.default_rng([seed, index])
        count = round(fraction * (hamlet.target or 0))
        area = _settlement_area(hamlet, unmapped, rng)
        items.extend(_hamlet_items(hamlet, area, count, rng, now=now))
    # All times carry +07:00, so the ISO strings sort chronologically.
    items.sort(key=lambda item: (item["captured_at"], item["id"]))
    return items


def _unmapped_areas(province: DemoProvince) -> dict[str, BaseGeometry]:
    """Per commune with polygon-less hamlets, the metric area no hamlet polygon covers."""
    needy = {hamlet.parent_code for hamlet in province.hamlets if hamlet.geometry is None}
    areas = {}
    for commune in province.communes:
        if commune.code not in needy or commune.geometry is None:
            continue
        mapped = [
            hamlet.geometry
            for hamlet in province.hamlets
            if hamlet.parent_code == commune.code and hamlet.geometry is not None
        ]
        rest = commune.geometry.difference(shapely.union_all(mapped))
        areas[commune.code] = _metres(rest if rest.area > 0 else commune.geometry)
    return areas


def _settlement_area(
    hamlet: DemoUnit, unmapped: dict[str, BaseGeometry], rng: np.random.Generator
) -> BaseGeometry:
    """Where the hamlet's houses go, in metres: its polygon, or a patch of unmapped commune."""
    if hamlet.geometry is not None:
        return _metres(hamlet.geometry)
    if hamlet.parent_code not in unmapped:
        raise ValueError(f"hamlet {hamlet.code} has no polygon and neither has its commune")
    rest = unmapped[hamlet.parent_code]
    # The patch avoids sibling polygons, so a point never lands in a hamlet it was not meant for.
    centre = shapely.points(_uniform_points(rest, 1, rng)[0])
    return rest.intersection(centre.buffer(_UNMAPPED_RADIUS_M))


def _hamlet_items(
    hamlet: DemoUnit, area: BaseGeometry, count: int, rng: np.random.Generator, *, now: datetime
) -> list[dict[str, Any]]:
    """The submission items of one hamlet."""
    urban = hamlet.name.startswith("Khóm")
    xy, road = _settlement(area, count, rng)
    rows = zip(
        _uuids(count, rng),
        _capture_times(count, rng, now=now),
        _locations(xy, rng),
        _households(road, rng, urban=urban),
        _notes(count, rng),
        strict=True,
    )
    return [
        {
            "id": item_id,
            "captured_at": captured_at,
            "location": location,
            "hamlet_code": hamlet.code,
            "household": household,
            "note": note,
        }
        for item_id, captured_at, location, household, note in rows
    ]


def _settlement(
    area: BaseGeometry, count: int, rng: np.random.Generator
) -> tuple[FloatArray, IntArray]:
    """count points in the area, strung along a few roads or canals; road -1 means off-road."""
    inner = area.buffer(-_MARGIN_M)
    if inner.is_empty:
        inner = area
    shapely.prepare(inner)
    roads = _roads(inner, rng)
    xy_parts, road_parts = [np.empty((0, 2))], [np.empty(0, dtype=np.int64)]
    found = 0
    while found < count:
        xy, road = _candidates(roads, inner.bounds, max(2 * count, 16), rng)
        keep = shapely.contains_xy(inner, xy[:, 0], xy[:, 1])
        xy_parts.append(xy[keep])
        road_parts.append(road[keep])
        found += int(keep.sum())
    return np.concatenate(xy_parts)[:count], np.concatenate(road_parts)[:count]


def _roads(area: BaseGeometry, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """One to three roads (a point and a unit direction each): a main one and cross roads."""
    count = int(rng.integers(1, 4))
    anchors = _uniform_points(area, count, rng)
    # Delta villages follow a canal grid: cross roads run roughly at right angles to the main.
    angles = rng.uniform(0.0, np.pi) + np.r_[0.0, rng.normal(np.pi / 2, 0.15, count - 1)]
    return anchors, np.column_stack([np.cos(angles), np.sin(angles)])


def _candidates(
    roads: tuple[FloatArray, FloatArray],
    bounds: tuple[float, float, float, float],
    size: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, IntArray]:
    """Candidate house points: roadside on both banks, a few scattered in the fields."""
    anchors, directions = roads
    weights = 1.0 / np.arange(1, len(anchors) + 1)  # the main road has the most houses
    road = rng.choice(len(anchors), size=size, p=weights / weights.sum())
    road[rng.random(size) < _OFF_ROAD_SHARE] = -1
    low, high = np.array(bounds[:2]), np.array(bounds[2:])
    half_length = 0.5 * float(np.hypot(*(high - low)))
    along = rng.uniform(-half_length, half_length, size)
    side = rng.choice((-1.0, 1.0), size) * (
        _ROADSIDE_M[0] + np.abs(rng.normal(0, _ROADSIDE_M[1], size))
    )
    direction = directions[np.maximum(road, 0)]
    normal = np.column_stack([-direction[:, 1], direction[:, 0]])
    roadside = anchors[np.maximum(road, 0)] + along[:, None] * direction + side[:, None] * normal
    scattered = rng.uniform(low, high, size=(size, 2))
    return np.where((road < 0)[:, None], scattered, roadside), road


def _uuids(count: int, rng: np.random.Generator) -> list[str]:
    """Version-4 UUIDs from the generator's bytes, so they repeat with the seed."""
    raw = rng.bytes(16 * count)
    return [str(uuid.UUID(bytes=raw[i : i + 16], version=4)) for i in range(0, len(raw), 16)]


def _capture_times(count: int, rng: np.random.Generator, *, now: datetime) -> list[str]:
    """Times on a few survey days of the last 30, in working hours, never after now (+07:00)."""
    local_now = now.astimezone(ICT)
    midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    # Days 0-28 back; a time later than now moves one more day back, still inside the window.
    survey_days = rng.choice(_SURVEY_WINDOW_DAYS - 1, size=int(rng.integers(1, 5)), replace=False)
    day = rng.choice(survey_days, size=count)
    morning = rng.random(count) < 0.55
    hour = np.where(morning, rng.uniform(7.0, 11.5, count), rng.uniform(13.5, 17.5, count))
    times = [
        midnight - timedelta(days=int(d)) + timedelta(seconds=int(h * 3600))
        for d, h in zip(day, hour, strict=True)
    ]
    return [
        (t if t <= local_now else t - timedelta(days=1)).isoformat(timespec="seconds")
        for t in times
    ]


def _locations(xy: FloatArray, rng: np.random.Generator) -> list[dict[str, Any]]:
    """GPS fixes: lon/lat to 6 decimals (~0.1 m), accuracy mostly 3-15 m with a tail to 40."""
    lonlat = np.round(xy / _M_PER_DEG + _ORIGIN, _COORD_DECIMALS)
    bulk = np.clip(rng.lognormal(math.log(6.5), 0.4, len(xy)), 3.0, 15.0)
    tail = rng.uniform(15.0, 40.0, len(xy))
    accuracy = np.round(np.where(rng.random(len(xy)) < 0.1, tail, bulk), 1)
    return [
        {"lat": float(lat), "lon": float(lon), "accuracy_m": float(acc), "mock": False}
        for (lon, lat), acc in zip(lonlat, accuracy, strict=True)
    ]


def _households(road: IntArray, rng: np.random.Generator, *, urban: bool) -> list[dict[str, Any]]:
    """The household part of each item."""
    count = len(road)
    rows = zip(
        _head_names(count, rng),
        _house_numbers(count, rng, urban=urban),
        _streets(road, rng, urban=urban),
        _phones(count, rng),
        _pick(_KINDS, count, rng),
        _pick(_MEMBERS, count, rng),
        strict=True,
    )
    return [
        {
            "head_name": name,
            "house_number": number,
            "street": street,
            "phone": phone,
            "kind": kind,
            "members": members,
        }
        for name, number, street, phone, kind, members in rows
    ]


def _pick(choices: Sequence[T] | dict[T, float], count: int, rng: np.random.Generator) -> list[T]:
    """count draws from a sequence (uniform) or a value → weight table."""
    values = list(choices)
    p = None
    if isinstance(choices, dict):
        weights = np.array(list(choices.values()))
        p = weights / weights.sum()
    return [values[i] for i in rng.choice(len(values), size=count, p=p)]


def _head_names(count: int, rng: np.random.Generator) -> list[str]:
    """Heads of household, family name first; most heads are men, as in the census."""
    family = _pick(_FAMILY, count, rng)
    male = rng.random(count) < _MALE_HEAD_SHARE
    middle_m, middle_f = _pick(_MIDDLE_MALE, count, rng), _pick(_MIDDLE_FEMALE, count, rng)
    given_m, given_f = _pick(_GIVEN_MALE, count, rng), _pick(_GIVEN_FEMALE, count, rng)
    return [
        f"{family[i]} {middle_m[i] if male[i] else middle_f[i]} "
        f"{given_m[i] if male[i] else given_f[i]}"
        for i in range(count)
    ]


def _house_numbers(count: int, rng: np.random.Generator, *, urban: bool) -> list[str]:
    """House numbers like "12", "12A", "12/3", "Tổ 5", often none in rural hamlets."""
    style = rng.choice(5, size=count, p=_NUMBER_STYLE_URBAN if urban else _NUMBER_STYLE_RURAL)
    number = rng.integers(1, 300, count)
    sub = rng.integers(1, 30, count)
    letter = _pick("ABC", count, rng)
    return [
        ("", f"{n}", f"{n}{x}", f"{n}/{s}", f"Tổ {s % 12 + 1}")[k]
        for k, n, s, x in zip(style, number, sub, letter, strict=True)
    ]


def _streets(road: IntArray, rng: np.random.Generator, *, urban: bool) -> list[str]:
    """Street of each house: its road's name, an alley off it in town, often none in the fields."""
    pool = _URBAN_STREETS if urban else _RURAL_WAYS
    names = [pool[i] for i in rng.choice(len(pool), size=3, replace=False)]
    alley = rng.integers(1, 40, len(road))
    blank = rng.random(len(road)) < (0.0 if urban else _RURAL_STREET_BLANK)
    in_alley = rng.random(len(road)) < (_URBAN_ALLEY if urban else 0.0)
    return [
        _street(r, names, a, b, h, urban=urban)
        for r, a, b, h in zip(road, alley, blank, in_alley, strict=True)
    ]


def _street(
    road: int, names: list[str], alley: int, blank: bool, in_alley: bool, *, urban: bool
) -> str:
    """One house's street text."""
    if road < 0:
        # Off-road houses: reached by an alley in town, by a field path (no name) in the country.
        return f"Hẻm {alley}, {names[0]}" if urban else ""
    if blank:
        return ""
    return f"Hẻm {alley}, {names[road]}" if in_alley else names[road]


def _phones(count: int, rng: np.random.Generator) -> list[str]:
    """Mobile numbers typed as people type them: plain, grouped, +84, or left empty."""
    prefix = _pick(_MOBILE_PREFIXES, count, rng)
    rest = rng.integers(0, 10_000_000, count)
    style = _pick(_PHONE_STYLE, count, rng)
    return [_phone(f"{p}{r:07d}", s) for p, r, s in zip(prefix, rest, style, strict=True)]


def _phone(digits: str, style: str) -> str:
    """One 10-digit mobile number in the given style."""
    grouped = f"{digits[1:4]} {digits[4:7]} {digits[7:]}"
    forms = {"": "", "plain": digits, "grouped": f"0{grouped}", "international": f"+84 {grouped}"}
    return forms[style]


def _notes(count: int, rng: np.random.Generator) -> list[str]:
    """Free notes: mostly empty, sometimes a surveyor's remark."""
    remark = _pick(_NOTES, count, rng)
    empty = rng.random(count) >= _NOTE_SHARE
    return ["" if e else r for e, r in zip(empty, remark, strict=True)]
