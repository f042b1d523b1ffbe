"""Web-Mercator tile arithmetic: tile checks, zoom → unit level, and household clusters.

Tiles follow the XYZ scheme (EPSG:3857, y down from the north-west corner). Positions are
*world* coordinates: lon/lat mapped to the unit square, ``x = (lon + 180) / 360`` and
``y = (1 − asinh(tan φ) / π) / 2``, so a tile ``(z, x, y)`` covers world
``[x / 2^z, (x + 1) / 2^z) × [y / 2^z, (y + 1) / 2^z)`` and tile coordinates are an affine image
of world coordinates. Clusters are counted on a fixed grid of *cells* (a quadtree level), so a
coarser tile only adds up finer cells: no per-request pass over households.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from geo.errors import GeoError

#: Tiles exist from zoom 0 to this; deeper requests are refused (nothing is finer than a house).
MAX_ZOOM = 22
#: MVT tile extent (integer coordinates per tile side) and the buffer drawn around it.
EXTENT = 4096
BUFFER = 64
#: Clusters per tile side at low zoom (one every 16 screen pixels of a 512-pixel tile).
GRID = 32
#: Quadtree level of the finest cluster cells (2^19 per world side: ~76 m at the equator,
#: ~75 m at 10° N). Tiles up to zoom 14 get the full GRID; deeper tiles coarser clusters.
CELL_LEVEL = 19
#: Half the Web-Mercator world width in metres (EPSG:3857).
HALF_WORLD_M = 20037508.342789244
#: Default unit level drawn at each zoom: the province, then communes, then hamlets.
LEVEL_ZOOMS = (("province", 0), ("commune", 8), ("hamlet", 12))

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


class TileError(GeoError):
    """Tile coordinates outside the XYZ pyramid."""

    code = "tile_invalid"


def check_tile(z: int, x: int, y: int) -> None:
    """Refuse a tile outside zoom 0–22 or outside its zoom's 2^z × 2^z grid.

    >>> check_tile(0, 0, 0)
    >>> check_tile(3, 8, 0)
    Traceback (most recent call last):
    ...
    geo.tiles.TileError: Ô bản đồ 3/8/0 không tồn tại: x và y phải từ 0 đến 7.
    """
    if not 0 <= z <= MAX_ZOOM:
        raise TileError(f"Mức thu phóng {z} không hợp lệ: phải từ 0 đến {MAX_ZOOM}.")
    side = 1 << z
    if not (0 <= x < side and 0 <= y < side):
        raise TileError(f"Ô bản đồ {z}/{x}/{y} không tồn tại: x và y phải từ 0 đến {side - 1}.")


def units_level(z: int) -> str:
    """The unit level a tile of zoom ``z`` shows by default.

    >>> units_level(6), units_level(8), units_level(11), units_level(12), units_level(18)
    ('province', 'commune', 'commune', 'hamlet', 'hamlet')
    """
    level = LEVEL_ZOOMS[0][0]
    for name, first_zoom in LEVEL_ZOOMS:
        if z >= first_zoom:
            level = name
    return level


def world_xy(lon: float, lat: float) -> tuple[float, float]:
    """World coordinates (unit square, y down) of a WGS84 point.

    >>> world_xy(0.0, 0.0)
    (0.5, 0.5)
    """
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2
    return (lon + 180) / 360, y


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    """``(z, x, y)`` of the XYZ tile holding a WGS84 point; outside the pyramid, the edge tile.

    A point on a tile boundary belongs to the tile east / south of it. Points beyond the
    Mercator square (lon outside ±180°, |lat| above ~85.0511°) get the tile at the nearest
    edge, as ``count_cells`` places them in cells: floored, then clamped on both sides
    (``int`` truncates towards zero, so -0.5 would give tile 0 but -1.5 tile -1).

    Parameters
    ----------
    lon, lat : float
        WGS84 degrees.
    z : int
        Zoom level (0 to MAX_ZOOM).

    Returns
    -------
    tuple of int
        ``(z, x, y)``, with ``0 <= x, y < 2**z``.

    Examples
    --------
    >>> tile_of(105.6, 10.4, 12)
    (12, 3249, 1929)
    >>> tile_of(180.0, 0.0, 2), tile_of(-180.0, 0.0, 2)  # the antimeridian: last, first column
    ((2, 3, 2), (2, 0, 2))
    >>> tile_of(-180.5, 0.0, 12), tile_of(-190.0, 0.0, 12)  # west of the pyramid
    ((12, 0, 2048), (12, 0, 2048))
    >>> tile_of(0.0, 89.0, 12), tile_of(0.0, -90.0, 12)  # beyond the Mercator limit
    ((12, 2048, 0), (12, 2048, 4095))
    """
    wx, wy = world_xy(lon, lat)
    side = 1 << z
    return z, _clamp_index(wx * side, side), _clamp_index(wy * side, side)


def _clamp_index(position: float, side: int) -> int:
    """The tile (or cell) index holding ``position`` (in tile units), clamped to ``[0, side)``."""
    return min(max(math.floor(position), 0), side - 1)


def mercator_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` of a tile in EPSG:3857 metres (what ST_TileEnvelope gives).

    >>> [round(v) for v in mercator_bounds(1, 1, 0)]
    [0, 0, 20037508, 20037508]
    """
    size = 2 * HALF_WORLD_M / (1 << z)
    xmin = -HALF_WORLD_M + x * size
    ymax = HALF_WORLD_M - y * size
    return xmin, ymax - size, xmin + size, ymax


@dataclass(frozen=True, slots=True)
class Cells:
    """Households counted per quadtree cell of CELL_LEVEL, with their coordinate sums.

    ``counts`` has one column per status of ``statuses``; ``sum_x``/``sum_y`` add up the world
    coordinates of the households of each cell (a cluster is drawn at their mean).
    """

    cx: IntArray
    cy: IntArray
    counts: IntArray
    sum_x: FloatArray
    sum_y: FloatArray
    statuses: tuple[str, ...]

    @classmethod
    def empty(cls, statuses: tuple[str, ...]) -> Cells:
        """No households at all."""
        none = np.zeros(0, dtype=np.int64)
        no_sums = np.zeros(0, dtype=np.float64)
        return cls(none, none, np.zeros((0, len(statuses)), np.int64), no_sums, no_sums, statuses)


def count_cells(
    lon: FloatArray, lat: FloatArray, status: IntArray, statuses: tuple[str, ...]
) -> Cells:
    """Households (WGS84 points, ``status`` an index into ``statuses``) counted per cell.

    >>> cells = count_cells(np.array([105.0, 105.0, -10.0]), np.array([10.0, 10.0, 0.0]),
    ...                     np.array([0, 1, 0]), ("accepted", "flagged"))
    >>> cells.counts.tolist(), len(cells.cx)
    ([[1, 0], [1, 1]], 2)
    """
    if not len(lon):
        return Cells.empty(statuses)
    wx = (lon + 180.0) / 360.0
    wy = (1.0 - np.arcsinh(np.tan(np.radians(lat))) / math.pi) / 2.0
    side = 1 << CELL_LEVEL
    cx = np.clip(np.floor(wx * side), 0, side - 1).astype(np.int64)
    cy = np.clip(np.floor(wy * side), 0, side - 1).astype(np.int64)
    keys, group = np.unique(cx * side + cy, return_inverse=True)
    n = len(keys)
    counts = np.zeros((n, len(statuses)), np.int64)
    np.add.at(counts, (group, status), 1)
    return Cells(
        cx=keys // side,
        cy=keys % side,
        counts=counts,
        sum_x=np.bincount(group, weights=wx, minlength=n).astype(np.float64, copy=False),
        sum_y=np.bincount(group, weights=wy, minlength=n).astype(np.float64, copy=False),
        statuses=statuses,
    )


@dataclass(frozen=True, slots=True)
class Clusters:
    """Clusters of one tile: tile coordinates (0–EXTENT, y down) and counts per status."""

    px: IntArray
    py: IntArray
    counts: IntArray
    statuses: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.px)


def clusters(cells: Cells, z: int, x: int, y: int, *, grid: int = GRID) -> Clusters:
    """The cells inside tile ``(z, x, y)`` added up on a ``grid`` × ``grid`` lattice (or coarser).

    A cluster sits at the mean position of its households, so a cluster of one household is
    drawn where the household is.

    >>> cells = Cells(np.array([0, 1, 1 << 18]), np.array([0, 0, 0]), np.array([[1], [2], [5]]),
    ...               np.array([0.0, 2 * 2**-19, 5 * 0.5]), np.zeros(3), ("accepted",))
    >>> found = clusters(cells, 0, 0, 0, grid=2)
    >>> found.counts.tolist(), found.px.tolist()
    ([[3], [5]], [0, 2048])
    """
    shift = CELL_LEVEL - z
    if shift < 0:
        raise ValueError(f"zoom {z} is finer than the cell level {CELL_LEVEL}")
    inside = ((cells.cx >> shift) == x) & ((cells.cy >> shift) == y)
    # Grid cells per tile side is at most what the cell level resolves.
    per_side = min(grid, 1 << shift)
    step = shift - int(math.log2(per_side))
    key = (cells.cx[inside] >> step) * (1 << 40) + (cells.cy[inside] >> step)
    _, group = np.unique(key, return_inverse=True)
    n_groups = int(group.max()) + 1 if len(group) else 0
    counts = np.zeros((n_groups, len(cells.statuses)), np.int64)
    np.add.at(counts, group, cells.counts[inside])
    total = counts.sum(axis=1)
    mean_x = np.bincount(group, weights=cells.sum_x[inside], minlength=n_groups) / total
    mean_y = np.bincount(group, weights=cells.sum_y[inside], minlength=n_groups) / total
    scale = (1 << z) * EXTENT
    px = np.rint(mean_x * scale - x * EXTENT).astype(np.int64)
    py = np.rint(mean_y * scale - y * EXTENT).astype(np.int64)
    return Clusters(px, py, counts, cells.statuses)
