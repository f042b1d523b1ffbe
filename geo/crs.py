"""Coordinate reference systems: resolving user input, the pinned VN-2000 datum shift, metric work.

Everything is stored in WGS84 (EPSG:4326, lon/lat). Official boundary data usually comes in
VN-2000 (EPSG:4756 and its TM-3/UTM projections). PROJ's automatic VN-2000 → WGS84 choice in the
Mekong delta is a different parameter set (~0.8 m off), so every transformer built here pins EPSG
"VN-2000 to WGS 84 (2)".
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.crs import BoundCRS
from pyproj.crs.coordinate_operation import ToWGS84Transformation
from pyproj.exceptions import CRSError as ProjCRSError
from pyproj.exceptions import ProjError

from geo.errors import CrsError

# EPSG "VN-2000 to WGS 84 (2)" in position-vector form (metres, arc-seconds, ppm). The string
# commonly copied from the web has the rotation signs flipped (coordinate-frame form): ~0.55 m off.
VN2000_TOWGS84 = (
    "-191.90441429,-39.30318279,-111.45032835,0.00928836,-0.01975479,0.00427372,0.252906278"
)
VN2000_DATUM_NAME = "Vietnam 2000"

WGS84 = CRS.from_epsg(4326)
UTM_48N = 32648
UTM_49N = 32649
# Zone 48N spans 102–108 E, 49N spans 108–114 E.
UTM_ZONE_SPLIT_LON = 108.0

CrsLike = str | int | CRS
GeomT = TypeVar("GeomT")


def resolve_crs(crs: CrsLike) -> CRS:
    """Turn an EPSG code, "EPSG:xxxx", WKT or PROJ string into a pyproj CRS.

    Parameters
    ----------
    crs : str, int or pyproj.CRS

    Returns
    -------
    pyproj.CRS, as given (not pinned; see ``pinned_crs``).

    Raises
    ------
    CrsError
        code ``crs_unknown`` when the value is not a coordinate reference system.

    Examples
    --------
    >>> resolve_crs(5897).name
    'VN-2000 / TM-3 zone 482'
    >>> resolve_crs("EPSG:4326").to_epsg()
    4326
    >>> resolve_crs("không phải CRS")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geo.errors.CrsError: Không nhận ra hệ tọa độ 'không phải CRS'. Hãy dùng mã EPSG ...
    """
    if isinstance(crs, CRS):
        return crs
    if isinstance(crs, bool) or not isinstance(crs, int | str) or not str(crs).strip():
        raise _unknown_crs(crs)
    try:
        return CRS.from_epsg(crs) if isinstance(crs, int) else CRS.from_user_input(crs.strip())
    except ProjCRSError as exc:
        raise _unknown_crs(crs) from exc


def _unknown_crs(crs: object) -> CrsError:
    shown = str(crs)[:80]
    return CrsError(
        f"Không nhận ra hệ tọa độ '{shown}'. Hãy dùng mã EPSG (ví dụ EPSG:5897 cho VN-2000 "
        "Đồng Tháp, EPSG:4326 cho WGS84) hoặc chuỗi WKT.",
        code="crs_unknown",
        detail={"crs": shown},
    )


def _horizontal(crs: CRS) -> CRS:
    # A BoundCRS carries its own datum shift: the datum is that of the CRS it is bound from.
    # A compound CRS (horizontal + height) is judged by its horizontal part.
    if crs.is_bound and crs.source_crs is not None:
        crs = crs.source_crs
    if crs.is_compound and crs.sub_crs_list:
        crs = crs.sub_crs_list[0]
    return crs


def is_vn2000(crs: CrsLike) -> bool:
    """Tell whether a CRS is on the VN-2000 datum (geographic, TM-3 or UTM).

    Examples
    --------
    >>> [is_vn2000(code) for code in (4756, 5897, 9210, 3405, 4326, 32648)]
    [True, True, True, True, False, False]
    """
    geodetic = _horizontal(resolve_crs(crs)).geodetic_crs
    datum = geodetic.datum if geodetic is not None else None
    return datum is not None and datum.name == VN2000_DATUM_NAME


def pinned_crs(crs: CrsLike) -> CRS:
    """Return the CRS bound to "VN-2000 to WGS 84 (2)" if it is VN-2000, else unchanged.

    A BoundCRS keeps the original name, axes and units; it is what a PROJ string with
    ``+towgs84=`` produces, without losing the metadata. An existing (possibly wrong) TOWGS84 on a
    VN-2000 CRS is replaced: the pinned shift is the one this project trusts.

    Examples
    --------
    >>> pinned = pinned_crs("EPSG:5897")
    >>> pinned.name, pinned.is_bound
    ('VN-2000 / TM-3 zone 482', True)
    >>> pinned_crs(4326).is_bound
    False
    """
    resolved = resolve_crs(crs)
    if not is_vn2000(resolved):
        return resolved
    base = _horizontal(resolved)
    params = [float(value) for value in VN2000_TOWGS84.split(",")]
    shift = ToWGS84Transformation(base.geodetic_crs, *params)
    return BoundCRS(source_crs=base, target_crs=WGS84, transformation=shift)


@functools.lru_cache(maxsize=64)
def _transformer(source_wkt: str, target_wkt: str) -> Transformer:
    # Keyed on WKT strings: two spellings of one CRS ("EPSG:5897", 5897) share one transformer,
    # and building one costs milliseconds (PROJ database look-ups).
    source, target = CRS.from_wkt(source_wkt), CRS.from_wkt(target_wkt)
    return Transformer.from_crs(source, target, always_xy=True)


def transformer_to_wgs84(crs: CrsLike) -> Transformer:
    """Return a cached lon/lat-ordered transformer from ``crs`` to WGS84 (VN-2000 pinned).

    Examples
    --------
    >>> x, y = transformer_to_wgs84("EPSG:5897").transform(569045.68, 1156800.44)
    >>> round(x, 7), round(y, 7)
    (105.6325, 10.46)
    """
    return _transformer(pinned_crs(crs).to_wkt(), WGS84.to_wkt())


def transformer_from_wgs84(crs: CrsLike) -> Transformer:
    """Return a cached lon/lat-ordered transformer from WGS84 to ``crs`` (VN-2000 pinned).

    Examples
    --------
    >>> x, y = transformer_from_wgs84(5897).transform(105.6325, 10.46)
    >>> round(x, 2), round(y, 2)
    (569045.68, 1156800.44)
    """
    return _transformer(WGS84.to_wkt(), pinned_crs(crs).to_wkt())


def transform_geometry(geom: GeomT, *, transformer: Transformer) -> GeomT:
    """Transform a geometry (or an array of geometries) with one vectorised PROJ call.

    Z values are dropped: everything here is 2D.

    Raises
    ------
    CrsError
        code ``transform_failed`` when PROJ cannot transform a coordinate (a CRS that does not
        fit the data).

    Examples
    --------
    >>> from shapely import Point
    >>> p = transform_geometry(Point(105.6325, 10.46), transformer=transformer_from_wgs84(5897))
    >>> round(p.x, 2), round(p.y, 2)
    (569045.68, 1156800.44)
    """

    def project(coords: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        x, y = transformer.transform(coords[:, 0], coords[:, 1], errcheck=True)
        out = np.column_stack((np.asarray(x, dtype=float), np.asarray(y, dtype=float)))
        if not np.isfinite(out).all():
            raise ProjError("non-finite coordinate")
        return out

    try:
        result: GeomT = shapely.transform(geom, project)
    except ProjError as exc:
        raise CrsError(
            "Không chuyển được tọa độ sang hệ tọa độ đích: hệ tọa độ khai báo có lẽ không khớp "
            "với dữ liệu. Hãy kiểm tra lại hệ tọa độ (source_crs).",
            code="transform_failed",
            detail={"reason": str(exc)},
        ) from exc
    return result


@functools.lru_cache(maxsize=4)
def _utm(epsg: int) -> CRS:
    return CRS.from_epsg(epsg)


def utm_crs_for(lon: float) -> CRS:
    """Return the WGS84 UTM zone for a longitude in Vietnam: 48N west of 108° E, else 49N.

    Examples
    --------
    >>> utm_crs_for(105.63).to_epsg(), utm_crs_for(108.0).to_epsg()
    (32648, 32649)
    """
    return _utm(UTM_48N if lon < UTM_ZONE_SPLIT_LON else UTM_49N)


def area_m2(geom_wgs84: Any) -> float:
    """Return the area in square metres of a WGS84 geometry, measured in its UTM zone.

    Areas in degrees² are meaningless (a degree of longitude shrinks with latitude), so the
    geometry is projected to UTM first; within Vietnam the UTM area scale error stays within
    about 0.2 % (0.08 % on the central meridian, more towards the zone edges).

    Examples
    --------
    >>> from shapely import box
    >>> round(area_m2(box(105.60, 10.40, 105.61, 10.41)) / 1e6, 2)
    1.21
    >>> area_m2(box(105.6, 10.4, 105.6, 10.4))
    0.0
    """
    if geom_wgs84 is None or geom_wgs84.is_empty:
        return 0.0
    min_x, _, max_x, _ = geom_wgs84.bounds
    utm = utm_crs_for((min_x + max_x) / 2)
    return float(transform_geometry(geom_wgs84, transformer=transformer_from_wgs84(utm)).area)
