"""Fixtures and builders for the pure geo tests (no database)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import shapely
from shapely.geometry import mapping

# ../shared/data beside the repository: read in place, never copied into the repository.
GEO_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
COMMUNES_FILE = "dong_thap_communes.geojson"


@pytest.fixture(scope="session")
def communes_bytes() -> bytes:
    """The 144 Đồng Tháp communes as GeoJSON bytes, or skip when ../shared/data is absent."""
    path = GEO_DATA_DIR / COMMUNES_FILE
    if not path.is_file():
        pytest.skip(f"{path} is not present beside the checkout")
    return path.read_bytes()


def geojson_bytes(
    features: Sequence[tuple[Mapping[str, Any], Any]], *, crs: str | None = None
) -> bytes:
    """A FeatureCollection of (properties, shapely geometry or GeoJSON dict or None)."""
    collection: dict[str, Any] = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": dict(properties),
                "geometry": geometry
                if geometry is None or isinstance(geometry, dict)
                else mapping(geometry),
            }
            for properties, geometry in features
        ],
    }
    if crs is not None:
        collection["crs"] = {"type": "name", "properties": {"name": crs}}
    return json.dumps(collection, ensure_ascii=False).encode()


def zip_bytes(members: Mapping[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive holding ``members`` (name → content)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def shapefile_members(folder: Path, *, prefix: str = "", skip: Sequence[str] = ()) -> dict:
    """The files of a written Shapefile, renamed under ``prefix`` for zipping."""
    return {
        f"{prefix}{path.name}": path.read_bytes()
        for path in sorted(folder.iterdir())
        if path.suffix.lower() not in skip
    }


def square(lon: float, lat: float, size_deg: float) -> Any:
    """An axis-aligned WGS84 square with its south-west corner at (lon, lat)."""
    return shapely.box(lon, lat, lon + size_deg, lat + size_deg)
