"""Reading administrative-unit layers (communes, hamlets) for import, and checking siblings.

Accepted files: GeoJSON, GeoPackage, a zipped Shapefile, or a CSV without geometry. Geometry comes
out in WGS84 lon/lat as valid 2D MultiPolygons; VN-2000 input is shifted with the pinned EPSG
transformation (see ``geo.crs``). Every refusal is a ``GeoError`` with a stable code and a
Vietnamese message that says what is wrong and how to fix it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import unicodedata
import warnings
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

import numpy as np
import pyogrio
import pyogrio.errors
import pyogrio.raw
import shapely
from pyproj import CRS
from shapely import MultiPolygon, Polygon, STRtree
from shapely.errors import GEOSException
from shapely.geometry.base import BaseGeometry

from geo.crs import (
    resolve_crs,
    transform_geometry,
    transformer_from_wgs84,
    transformer_to_wgs84,
    utm_crs_for,
)
from geo.errors import CrsError, InputFileError, PostcodeError
from geo.postcodes import normalise_postcode

MAX_ZIP_MEMBERS = 50
#: Default most vertices of one unit's boundary (see ``read_units``).
MAX_FEATURE_VERTICES = 200_000
MAX_ZIP_RATIO = 200
# Below this many uncompressed bytes a high ratio harms no one, and wide, mostly blank DBF text
# columns legitimately compress more than 200:1.
ZIP_RATIO_FLOOR_BYTES = 1_000_000
# Rough WGS84 envelope of Vietnam (lon_min, lat_min, lon_max, lat_max), wide enough for the
# Hoàng Sa and Trường Sa archipelagos: a wrong source CRS moves data by degrees, not metres.
VIETNAM_BOUNDS = (102.0, 6.0, 118.0, 24.0)
_DUPLICATES_SHOWN = 20

_FORMATS = {
    ".geojson": "geojson",
    ".json": "geojson",
    ".gpkg": "gpkg",
    ".zip": "shapefile",
    ".csv": "csv",
}
_FORMAT_NAMES = {
    "geojson": "GeoJSON",
    "gpkg": "GeoPackage",
    "shapefile": "Shapefile nén zip",
    "csv": "CSV",
}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
_POLYGONAL = ("Polygon", "MultiPolygon")
_INTEGRAL_TEXT = re.compile(r"([0-9]+)\.0+")


@dataclass(frozen=True, slots=True)
class UnitFeature:
    """One administrative unit as read from a file."""

    code: str  # trimmed; numbers keep their digits: 87 → "87", 866.0 → "866"
    name: str  # NFC, trimmed, inner whitespace collapsed
    parent_code: str | None
    postcode: str | None  # 5 digits (geo.postcodes)
    target: int | None  # expected household count
    geometry: MultiPolygon | None  # WGS84 lon/lat, valid, 2D
    properties: dict[str, Any]  # the other columns, JSON-safe


@dataclass(frozen=True, slots=True)
class UnitLayer:
    """The units of one file, the CRS they came in, and what was repaired or noticed."""

    features: list[UnitFeature]
    source_crs: str | None  # "EPSG:5897", the WKT if it has no EPSG code, None for CSV
    repaired: list[str]  # codes whose geometry was made valid
    warnings: list[str]  # Vietnamese, for the person importing


@dataclass(slots=True)
class _RawLayer:
    """Attributes and WKB as read, before any domain rule is applied."""

    fields: list[str]
    rows: list[dict[str, Any]]
    row_labels: list[str]
    wkb: list[bytes | None] | None
    crs: str | None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Attributes:
    code: str
    name: str
    parent_code: str | None
    postcode: str | None
    target: int | None
    properties: dict[str, Any]


def read_units(
    data: bytes,
    *,
    filename: str,
    code_field: str,
    name_field: str | None = None,
    parent_code_field: str | None = None,
    postcode_field: str | None = None,
    target_field: str | None = None,
    source_crs: str | None = None,
    max_uncompressed_bytes: int = 500_000_000,
    max_vertices: int = MAX_FEATURE_VERTICES,
) -> UnitLayer:
    """Read administrative units from an uploaded file into WGS84 features.

    Parameters
    ----------
    data : bytes
        The file's content.
    filename : str
        Its name; the extension picks the format (.geojson/.json, .gpkg, .zip, .csv).
    code_field, name_field, parent_code_field, postcode_field, target_field : str
        Column names in the file (exact, else case-insensitive). Without ``name_field`` the
        name is the code.
    source_crs : str, optional
        Overrides the file's CRS, e.g. "EPSG:5897" for VN-2000 Đồng Tháp.
    max_uncompressed_bytes : int
        Largest total a zip may expand to.
    max_vertices : int
        Most vertices one unit's boundary may have: checking and repairing a polygon costs
        more than linearly in its vertices (a jagged 200,000-vertex ring takes GEOS ~12 s).

    Returns
    -------
    UnitLayer

    Raises
    ------
    InputFileError
        codes ``format_unsupported``, ``file_unreadable``, ``file_unsafe``, ``field_missing``,
        ``code_missing``, ``name_missing``, ``code_duplicated``, ``target_invalid``,
        ``geometry_type_invalid``, ``geometry_too_complex``.
    CrsError
        codes ``crs_unknown``, ``crs_missing``, ``crs_mismatch``, ``outside_vietnam``,
        ``transform_failed``.
    PostcodeError
        code ``postcode_invalid``, naming the unit.
    """
    kind = _detect_format(data, filename=filename)
    raw = (
        _read_csv(data)
        if kind == "csv"
        else _read_geo(
            data,
            kind=kind,
            max_uncompressed_bytes=max_uncompressed_bytes,
            keep_prj=source_crs is None,
        )
    )
    columns = _resolve_fields(
        raw.fields,
        code=code_field,
        name=name_field,
        parent=parent_code_field,
        postcode=postcode_field,
        target=target_field,
    )
    units = [
        _attributes(row, columns, label)
        for row, label in zip(raw.rows, raw.row_labels, strict=True)
    ]
    _check_duplicates([unit.code for unit in units])
    if raw.wkb is None:
        return UnitLayer(_features(units, [None] * len(units)), None, [], raw.warnings)
    codes = [unit.code for unit in units]
    geometries, crs_label, repaired, notes = _prepare_geometries(
        raw.wkb, codes=codes, file_crs=raw.crs, source_crs=source_crs, max_vertices=max_vertices
    )
    return UnitLayer(_features(units, geometries), crs_label, repaired, raw.warnings + notes)


def _features(
    units: Sequence[_Attributes], geometries: Sequence[MultiPolygon | None]
) -> list[UnitFeature]:
    return [
        UnitFeature(u.code, u.name, u.parent_code, u.postcode, u.target, geom, u.properties)
        for u, geom in zip(units, geometries, strict=True)
    ]


# --- format detection -------------------------------------------------------------------------


def _detect_format(data: bytes, *, filename: str) -> str:
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    kind = _FORMATS.get(suffix)
    if kind is None:
        raise InputFileError(
            f"Không hỗ trợ loại tệp '{suffix or filename}'. Hãy gửi GeoJSON (.geojson), "
            "GeoPackage (.gpkg), Shapefile nén zip (.zip) hoặc CSV (.csv).",
            code="format_unsupported",
            detail={"filename": filename},
        )
    if not data:
        raise _unreadable("Tệp rỗng (0 byte). Hãy kiểm tra lại tệp đã chọn.", filename=filename)
    if not _magic_matches(data, kind=kind):
        raise _unreadable(
            f"Tệp '{filename}' có đuôi {suffix} nhưng nội dung không phải "
            f"{_FORMAT_NAMES[kind]}. Hãy xuất lại dữ liệu từ phần mềm GIS đúng định dạng.",
            filename=filename,
        )
    return kind


def _magic_matches(data: bytes, *, kind: str) -> bool:
    head = data[:64]
    if kind == "shapefile":
        return head.startswith(_ZIP_MAGIC)
    if kind == "gpkg":
        return head.startswith(_SQLITE_MAGIC)
    if kind == "geojson":
        return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")
    # CSV: anything that is not obviously a zip (xlsx) or a database.
    return not head.startswith((*_ZIP_MAGIC, _SQLITE_MAGIC))


def _unreadable(message: str, **detail: Any) -> InputFileError:
    return InputFileError(message, code="file_unreadable", detail=detail or None)


# --- CSV ----------------------------------------------------------------------------------------


def _read_csv(data: bytes) -> _RawLayer:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _unreadable(
            "Tệp CSV không ở mã hóa UTF-8. Trong Excel hãy chọn Lưu thành → "
            "'CSV UTF-8 (Comma delimited)'.",
            byte_offset=exc.start,
        ) from exc
    if "\x00" in text:  # Excel never writes one; PostgreSQL text cannot hold it
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise _unreadable(f"Tệp CSV chứa ký tự NUL (0x00) ở dòng {line}.", line=line)
    first_line = text.split("\n", 1)[0]
    # Excel in locales with a decimal comma writes ';' between columns.
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [_clean_text(name) for name in next(reader, [])]
        _check_header(header)
        rows, labels = _csv_rows(reader, header)
    except csv.Error as exc:
        raise _unreadable(f"Tệp CSV bị lỗi cấu trúc: {exc}.") from exc
    if not rows:
        raise _unreadable("Tệp CSV không có dòng dữ liệu nào dưới dòng tiêu đề.")
    return _RawLayer([name for name in header if name], rows, labels, None, None)


def _check_header(header: list[str]) -> None:
    if not any(header):
        raise _unreadable("Tệp CSV không có dòng tiêu đề (tên cột) ở dòng đầu tiên.")
    repeated = sorted(name for name, count in Counter(header).items() if name and count > 1)
    if repeated:
        raise _unreadable(
            f"Tệp CSV có cột trùng tên: {', '.join(repeated)}. Hãy đặt tên cột khác nhau.",
            fields=repeated,
        )


def _csv_rows(reader: Any, header: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    labels: list[str] = []
    for cells in reader:
        values = [cell.strip() or None for cell in cells]
        # Excel keeps formatted-but-empty rows as ";;;": not data.
        if not any(values):
            continue
        rows.append({name: value for name, value in zip(header, values, strict=False) if name})
        labels.append(f"dòng {reader.line_num}")
    return rows, labels


# --- geo formats ----------------------------------------------------------------------------------


def _read_geo(data: bytes, *, kind: str, max_uncompressed_bytes: int, keep_prj: bool) -> _RawLayer:
    notes: list[str] = []
    encoding = None
    if kind == "shapefile":
        data, has_cpg = _flatten_shapefile_zip(
            data, max_uncompressed_bytes=max_uncompressed_bytes, keep_prj=keep_prj
        )
        if not has_cpg:
            # Without .cpg GDAL would assume Latin-1 and garble Vietnamese: modern exports are
            # UTF-8 (legacy TCVN3 fonts cannot be recovered anyway).
            encoding = "UTF-8"
            notes.append(
                "Shapefile không có tệp .cpg: đã đọc thuộc tính theo mã hóa UTF-8. Nếu tên bị lỗi "
                "phông chữ, hãy xuất lại Shapefile với mã hóa UTF-8."
            )
    layer = _pick_layer(data, notes=notes) if kind == "gpkg" else None
    meta, wkb, columns = _ogr_read(data, layer=layer, encoding=encoding)
    fields = [str(name) for name in meta["fields"]]
    count = len(wkb) if wkb is not None else len(columns[0]) if columns else 0
    if count == 0:
        raise _unreadable("Tệp không có đối tượng (đơn vị hành chính) nào.")
    values = [[_json_safe(value) for value in column.tolist()] for column in columns]
    rows = [dict(zip(fields, row, strict=True)) for row in zip(*values, strict=True)]
    rows = rows or [{} for _ in range(count)]
    labels = [f"đối tượng thứ {index}" for index in range(1, count + 1)]
    wkb_list = None if wkb is None else list(wkb)
    return _RawLayer(fields, rows, labels, wkb_list, meta.get("crs"), notes)


@contextmanager
def _quiet_gdal() -> Iterator[None]:
    # pyogrio reads bytes through GDAL's /vsimem (zips through /vsizip/vsimem): nothing touches
    # the disk. It names the in-memory file without extension, so GDAL warns about every GPKG.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _ogr_read(
    data: bytes, *, layer: str | None, encoding: str | None
) -> tuple[dict[str, Any], Any, list[Any]]:
    try:
        with _quiet_gdal():
            meta, _fids, wkb, columns = pyogrio.raw.read(
                data, layer=layer, encoding=encoding, datetime_as_string=True
            )
    except pyogrio.errors.CRSError as exc:
        raise CrsError(
            "Không đọc được hệ tọa độ khai báo trong tệp (.prj hoặc SRS bị hỏng). Hãy khai báo "
            "source_crs, ví dụ EPSG:5897 cho VN-2000 Đồng Tháp hoặc EPSG:4326 cho WGS84.",
            code="crs_unknown",
            detail={"reason": str(exc)[:200]},
        ) from exc
    # GDAL and pyogrio raise many types on corrupt input (even IndexError): all mean "unreadable".
    except Exception as exc:
        raise _unreadable(
            "Không đọc được tệp: nội dung bị hỏng hoặc không phải dữ liệu bản đồ. Hãy mở thử tệp "
            "trong QGIS và xuất lại.",
            reason=str(exc)[:200],
        ) from exc
    return meta, wkb, list(columns)


def _pick_layer(data: bytes, *, notes: list[str]) -> str:
    try:
        with _quiet_gdal():
            listed = pyogrio.list_layers(data)
        layers = [(str(name), str(kind)) for name, kind in listed]
    except Exception as exc:  # same reason as in _ogr_read
        raise _unreadable("Không đọc được tệp GeoPackage: tệp bị hỏng.") from exc
    if not layers:
        raise _unreadable("Tệp GeoPackage không có lớp dữ liệu nào.")
    polygonal = [name for name, kind in layers if "Polygon" in kind]
    chosen = polygonal[0] if polygonal else layers[0][0]
    if len(layers) > 1:
        notes.append(
            f"Tệp GeoPackage có {len(layers)} lớp ({', '.join(name for name, _ in layers)}); "
            f"đã đọc lớp '{chosen}'."
        )
    return chosen


# --- zipped Shapefile ------------------------------------------------------------------------


def _flatten_shapefile_zip(
    data: bytes, *, max_uncompressed_bytes: int, keep_prj: bool
) -> tuple[bytes, bool]:
    """Check a zip and repack its one Shapefile at the root (GDAL misses one in a subfolder)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise _unreadable("Tệp zip bị hỏng, không mở được. Hãy nén lại Shapefile.") from exc
    with archive:
        infos = archive.infolist()
        _check_zip_safety(infos, max_uncompressed_bytes=max_uncompressed_bytes)
        parts = _shapefile_parts(infos)
        out = io.BytesIO()
        try:
            with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as flat:
                # With source_crs given the .prj is not needed, and an unreadable one would
                # make GDAL refuse the whole layer.
                for suffix, info in parts.items():
                    if suffix == ".prj" and not keep_prj:
                        continue
                    flat.writestr(f"layer{suffix}", archive.read(info))
        # CRC mismatch, truncated or corrupt deflate stream, encryption, unknown compression.
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, ValueError) as exc:
            raise _unreadable(
                "Tệp zip bị hỏng hoặc có mật khẩu, không giải nén được. Hãy nén lại Shapefile "
                "(không đặt mật khẩu).",
                reason=str(exc)[:200],
            ) from exc
    return out.getvalue(), ".cpg" in parts


def _check_zip_safety(infos: Sequence[zipfile.ZipInfo], *, max_uncompressed_bytes: int) -> None:
    if len(infos) > MAX_ZIP_MEMBERS:
        raise _unsafe(f"Tệp zip chứa {len(infos)} tệp (tối đa {MAX_ZIP_MEMBERS}).")
    for info in infos:
        if _unsafe_member_name(info.filename):
            raise _unsafe(f"Tệp zip chứa đường dẫn không an toàn: '{info.filename[:100]}'.")
    # Declared sizes bound what zipfile will inflate (it stops at file_size and checks the CRC).
    total = sum(info.file_size for info in infos)
    packed = sum(info.compress_size for info in infos)
    if total > max_uncompressed_bytes:
        raise _unsafe(
            f"Tệp zip giải nén ra {total:,} byte, vượt giới hạn {max_uncompressed_bytes:,} byte."
        )
    if total > ZIP_RATIO_FLOOR_BYTES and total > MAX_ZIP_RATIO * max(packed, 1):
        raise _unsafe(f"Tệp zip có tỷ lệ nén bất thường ({total // max(packed, 1)}:1).")


def _unsafe_member_name(name: str) -> bool:
    normalised = name.replace("\\", "/")
    parts = normalised.split("/")
    return (
        "\x00" in name
        or normalised.startswith("/")
        or re.match(r"[A-Za-z]:", normalised) is not None
        or ".." in parts
    )


def _unsafe(message: str) -> InputFileError:
    return InputFileError(
        f"{message} Tệp bị từ chối vì lý do an toàn; hãy nén lại chỉ các tệp của Shapefile.",
        code="file_unsafe",
    )


def _shapefile_parts(infos: Sequence[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    members = [info for info in infos if not info.is_dir() and not _is_mac_junk(info.filename)]
    shps = [info for info in members if info.filename.lower().endswith(".shp")]
    if len(shps) != 1:
        found = ", ".join(info.filename for info in shps[:5])
        raise _unreadable(
            "Tệp zip không chứa tệp .shp nào. Hãy nén đủ các tệp .shp, .shx, .dbf, .prj của lớp."
            if not shps
            else f"Tệp zip chứa {len(shps)} tệp .shp ({found}). Hãy nén mỗi lớp thành một tệp zip.",
            shp_files=[info.filename for info in shps],
        )
    stem = shps[0].filename[:-4].lower()
    parts = {
        info.filename[len(stem) :].lower(): info
        for info in members
        if info.filename.lower() in {stem + suffix for suffix in _SHAPEFILE_PARTS}
    }
    missing = [suffix for suffix in (".shx", ".dbf") if suffix not in parts]
    if missing:
        raise _unreadable(
            f"Shapefile thiếu tệp {', '.join(missing)} (cùng tên với {shps[0].filename}). "
            "Shapefile cần ít nhất .shp, .shx, .dbf (và .prj cho hệ tọa độ): hãy nén tất cả vào "
            "một tệp zip.",
            missing=missing,
        )
    return parts


def _is_mac_junk(name: str) -> bool:
    # macOS Finder adds __MACOSX/._name.shp resource forks that are not shapefiles.
    return name.startswith("__MACOSX/") or PurePosixPath(name).name.startswith("._")


# --- attributes ---------------------------------------------------------------------------------


def _resolve_fields(fields: Sequence[str], **wanted: str | None) -> dict[str, str]:
    """Map each role (code, name, ...) to the file's column, exact name first."""
    folded: defaultdict[str, list[str]] = defaultdict(list)
    for field_name in fields:
        folded[field_name.casefold()].append(field_name)
    columns: dict[str, str] = {}
    for role, name in wanted.items():
        if name is None:
            continue
        matches = [name] if name in fields else folded.get(name.casefold(), [])
        if len(matches) != 1:
            raise InputFileError(
                f"Không tìm thấy cột '{name}' trong tệp. Các cột có trong tệp: "
                f"{', '.join(fields) or '(không có)'}.",
                code="field_missing",
                detail={"field": name, "role": role, "available": list(fields)},
            )
        columns[role] = matches[0]
    return columns


def _attributes(row: Mapping[str, Any], columns: Mapping[str, str], label: str) -> _Attributes:
    code = _code_text(row.get(columns["code"]))
    if code is None:
        raise InputFileError(
            f"Thiếu mã đơn vị ở {label} (cột '{columns['code']}'). Mỗi đơn vị cần một mã.",
            code="code_missing",
            detail={"row": label},
        )
    name = _name_text(row.get(columns["name"])) if "name" in columns else code
    if not name:
        raise InputFileError(
            f"Thiếu tên đơn vị {code} ở {label} (cột '{columns['name']}').",
            code="name_missing",
            detail={"row": label, "code": code},
        )
    used = set(columns.values())
    postcode = row.get(columns["postcode"]) if "postcode" in columns else None
    return _Attributes(
        code=code,
        name=name,
        parent_code=_code_text(row.get(columns["parent"])) if "parent" in columns else None,
        postcode=_postcode(postcode, code=code),
        target=_target(row.get(columns["target"]), code=code) if "target" in columns else None,
        properties={key: _nfc(value) for key, value in row.items() if key not in used},
    )


def _postcode(value: Any, *, code: str) -> str | None:
    try:
        return normalise_postcode(value)
    except PostcodeError as exc:
        raise PostcodeError(
            f"Đơn vị {code}: {exc.message}", code=exc.code, detail={**exc.detail, "code": code}
        ) from exc


def _target(value: Any, *, code: str) -> int | None:
    if value is None:
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"[0-9]+(\.0+)?", value.strip()):
        number = int(float(value.strip()))
    if number is None or number < 0:
        raise InputFileError(
            f"Chỉ tiêu số hộ của đơn vị {code} phải là số nguyên không âm, nhận được '{value}'.",
            code="target_invalid",
            detail={"code": code, "value": str(value)[:40]},
        )
    return number


def _code_text(value: Any) -> str | None:
    """A code as its digits: files store "87", 87, 87.0 (DBF numeric) or "87.0" (GDAL's text)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = unicodedata.normalize("NFC", str(value)).strip()
    # A GeoJSON column mixing "87" and 87.0 is read as text, the number becoming "87.0".
    spreadsheet = _INTEGRAL_TEXT.fullmatch(text)
    return spreadsheet.group(1) if spreadsheet else text or None


def _clean_text(value: Any) -> str:
    # Vietnamese arrives in NFC or NFD depending on the keyboard and OS: compare in NFC.
    return " ".join(unicodedata.normalize("NFC", str(value)).split())


def _name_text(value: Any) -> str | None:
    return None if value is None else _clean_text(value) or None


def _nfc(value: Any) -> Any:
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


def _json_safe(value: Any) -> Any:
    """Make a value read by GDAL storable as JSON (NaN, bytes and lists are not)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, np.ndarray | list | tuple):
        return json.dumps([_json_safe(item) for item in np.asarray(value).tolist()])
    return str(value)


def _check_duplicates(codes: Sequence[str]) -> None:
    repeated = sorted(code for code, count in Counter(codes).items() if count > 1)
    if repeated:
        shown = repeated[:_DUPLICATES_SHOWN]
        more = f" (và {len(repeated) - len(shown)} mã khác)" if len(repeated) > len(shown) else ""
        raise InputFileError(
            f"Mã đơn vị bị trùng trong tệp: {', '.join(shown)}{more}. Mỗi mã chỉ được xuất hiện "
            "một lần.",
            code="code_duplicated",
            detail={"codes": shown, "count": len(repeated)},
        )


# --- geometry ------------------------------------------------------------------------------------


def _prepare_geometries(
    wkb: Sequence[bytes | None],
    *,
    codes: Sequence[str],
    file_crs: str | None,
    source_crs: str | None,
    max_vertices: int,
) -> tuple[list[MultiPolygon | None], str | None, list[str], list[str]]:
    geoms = _parse_wkb(wkb, codes=codes)
    _check_vertices(geoms, codes=codes, max_vertices=max_vertices)
    notes = [
        f"Đơn vị {code} không có ranh giới (hình học rỗng)."
        for code, geom in zip(codes, geoms, strict=True)
        if geom is None
    ]
    present = np.array([geom is not None for geom in geoms], dtype=bool)
    crs, label = _effective_crs(
        file_crs=file_crs, source_crs=source_crs, needed=bool(present.any())
    )
    if crs is None:
        return [None] * len(geoms), label, [], notes
    if source_crs and file_crs and not _same_crs(file_crs, crs):
        notes.append(f"Đã dùng hệ tọa độ {label} thay cho hệ tọa độ khai báo trong tệp.")
    _check_degrees(geoms[present], crs_label=label, is_geographic=crs.is_geographic)
    geoms[present] = transform_geometry(geoms[present], transformer=transformer_to_wgs84(crs))
    _check_inside_vietnam(geoms[present], crs_label=label)
    repaired = _repair(geoms, codes=codes)
    if repaired:
        notes.append(f"Đã sửa ranh giới không hợp lệ của các đơn vị: {', '.join(repaired)}.")
    return [_as_multipolygon(geom) for geom in geoms], label, repaired, notes


def _same_crs(text: str, crs: CRS) -> bool:
    try:
        return resolve_crs(text) == crs
    except CrsError:  # an unreadable .prj is exactly what source_crs is there to override
        return False


def _parse_wkb(wkb: Sequence[bytes | None], *, codes: Sequence[str]) -> np.ndarray[Any, Any]:
    try:
        geoms = shapely.force_2d(shapely.from_wkb(np.array(wkb, dtype=object)))
    except (GEOSException, NotImplementedError, ValueError) as exc:
        raise InputFileError(
            "Có ranh giới không đọc được (kiểu hình học không hỗ trợ, ví dụ đường cong). Hãy "
            "chuyển sang Polygon/MultiPolygon trong QGIS rồi xuất lại.",
            code="geometry_type_invalid",
            detail={"reason": str(exc)[:200]},
        ) from exc
    geoms[shapely.is_empty(geoms)] = None
    for code, geom in zip(codes, geoms, strict=True):
        if geom is not None and geom.geom_type not in _POLYGONAL:
            raise _wrong_type(code, geom.geom_type)
    return geoms


def _check_vertices(
    geoms: np.ndarray[Any, Any], *, codes: Sequence[str], max_vertices: int
) -> None:
    counts = shapely.get_num_coordinates(geoms)
    if not len(counts) or counts.max() <= max_vertices:
        return
    worst = int(counts.argmax())
    raise InputFileError(
        f"Ranh giới của đơn vị {codes[worst]} có {int(counts[worst]):,} đỉnh, vượt giới hạn "
        f"{max_vertices:,}. Hãy đơn giản hóa lớp (QGIS: Vector → Geometry Tools → Simplify, "
        "hoặc ogr2ogr -simplify với dung sai 0.5 m) rồi nhập lại.",
        code="geometry_too_complex",
        detail={"code": codes[worst], "vertices": int(counts[worst]), "limit": max_vertices},
    )


def _wrong_type(code: str, geom_type: str) -> InputFileError:
    return InputFileError(
        f"Đơn vị {code} có hình học kiểu {geom_type}; ranh giới đơn vị hành chính phải là vùng "
        "(Polygon hoặc MultiPolygon). Hãy kiểm tra đúng lớp dữ liệu ranh giới.",
        code="geometry_type_invalid",
        detail={"code": code, "geometry_type": geom_type},
    )


def _effective_crs(
    *, file_crs: str | None, source_crs: str | None, needed: bool
) -> tuple[CRS | None, str | None]:
    """The CRS to read with (source_crs wins; GDAL reports GeoJSON without "crs" as EPSG:4326)."""
    text = source_crs or file_crs
    if text is None and needed:
        raise CrsError(
            "Tệp không khai báo hệ tọa độ (ví dụ Shapefile thiếu tệp .prj). Hãy khai báo "
            "source_crs, ví dụ EPSG:5897 cho VN-2000 Đồng Tháp hoặc EPSG:4326 cho WGS84.",
            code="crs_missing",
        )
    if text is None:
        return None, None
    crs = resolve_crs(text)
    authority = crs.to_authority(min_confidence=90)
    return (crs if needed else None), (":".join(authority) if authority else text)


def _check_degrees(
    geoms: np.ndarray[Any, Any], *, crs_label: str | None, is_geographic: bool
) -> None:
    """Refuse coordinates that cannot be degrees although the CRS says they are."""
    if not is_geographic:
        return
    min_x, min_y, max_x, max_y = shapely.total_bounds(geoms)
    if min_x >= -180 and max_x <= 180 and min_y >= -90 and max_y <= 90:
        return
    x, y = shapely.get_coordinates(geoms[0])[0]
    example = f"{x:.0f}, {y:.0f}"
    metres = max(abs(min_x), abs(max_x), abs(min_y), abs(max_y)) > 1000
    kind = "có dạng mét" if metres else "nằm ngoài phạm vi kinh độ/vĩ độ"
    raise CrsError(
        f"Tọa độ trong tệp {kind} (ví dụ {example}) nhưng hệ tọa độ khai báo là độ ({crs_label}). "
        "Có thể dữ liệu ở VN-2000 (ví dụ EPSG:5897 cho Đồng Tháp): hãy khai báo source_crs đúng.",
        code="crs_mismatch",
        detail={"crs": crs_label, "example": [float(x), float(y)]},
    )


def _check_inside_vietnam(geoms: np.ndarray[Any, Any], *, crs_label: str | None) -> None:
    min_x, min_y, max_x, max_y = (float(value) for value in shapely.total_bounds(geoms))
    west, south, east, north = VIETNAM_BOUNDS
    if west <= min_x and max_x <= east and south <= min_y and max_y <= north:
        return
    raise CrsError(
        f"Sau khi chuyển từ {crs_label} sang WGS84, dữ liệu nằm ngoài Việt Nam (kinh độ "
        f"{min_x:.3f}–{max_x:.3f}, vĩ độ {min_y:.3f}–{max_y:.3f}). Hệ tọa độ khai báo có lẽ "
        "không đúng: hãy kiểm tra source_crs (ví dụ EPSG:5897 cho VN-2000 Đồng Tháp).",
        code="outside_vietnam",
        detail={"crs": crs_label, "bounds": [min_x, min_y, max_x, max_y]},
    )


def _repair(geoms: np.ndarray[Any, Any], *, codes: Sequence[str]) -> list[str]:
    """Make invalid geometries valid in place (validity judged in WGS84, where they are stored)."""
    present = np.array([geom is not None for geom in geoms], dtype=bool)
    invalid = np.flatnonzero(present & ~shapely.is_valid(geoms)).tolist()
    for index in invalid:
        geoms[index] = _polygonal_part(shapely.make_valid(geoms[index]))
        if geoms[index] is None:
            raise _wrong_type(codes[index], "Polygon suy biến (không còn diện tích sau khi sửa)")
    return [codes[index] for index in invalid]


def _polygonal_part(geom: BaseGeometry) -> BaseGeometry | None:
    # make_valid turns a bowtie into two triangles but may also return stray lines or points.
    parts = [part for part in shapely.get_parts(geom) if part.geom_type in _POLYGONAL]
    if not parts:
        return None
    return shapely.union_all(parts)


def _as_multipolygon(geom: BaseGeometry | None) -> MultiPolygon | None:
    if geom is None:
        return None
    if isinstance(geom, Polygon):
        return MultiPolygon([geom])
    return geom


# --- sibling checks -------------------------------------------------------------------------------

_NO_PARENTS: Mapping[str, BaseGeometry | None] = MappingProxyType({})


def sibling_overlaps(
    features: Sequence[UnitFeature], *, min_area_m2: float = 1.0
) -> list[tuple[str, str, float]]:
    """List pairs of units with the same parent whose areas overlap by at least ``min_area_m2``.

    Parameters
    ----------
    features : sequence of UnitFeature
        WGS84 geometries; units without geometry are ignored.
    min_area_m2 : float
        Smallest overlap reported, in square metres (UTM): shared borders have zero area.

    Returns
    -------
    list of (code_a, code_b, area_m2), code_a < code_b, sorted.

    Examples
    --------
    >>> from shapely import MultiPolygon, box
    >>> def unit(code, *bounds):
    ...     return UnitFeature(code, code, "9", None, None, MultiPolygon([box(*bounds)]), {})
    >>> touching = [unit("a", 105.60, 10.4, 105.61, 10.41), unit("b", 105.61, 10.4, 105.62, 10.41)]
    >>> sibling_overlaps(touching)
    []
    >>> [(a, b, round(area, -3)) for a, b, area in sibling_overlaps(
    ...     [unit("a", 105.60, 10.4, 105.61, 10.41), unit("b", 105.605, 10.4, 105.615, 10.41)]
    ... )]
    [('a', 'b', 605000.0)]
    """
    found: list[tuple[str, str, float]] = []
    # Overlays run on the stored WGS84 geometry and only their results are projected for the
    # area: projecting first would bend a border drawn with different vertices on each side
    # (a T-junction) into spurious slivers and gaps.
    for group in _by_parent(features).values():
        codes = [feature.code for feature in group]
        geoms = _valid([feature.geometry for feature in group])
        left, right = STRtree(geoms).query(geoms, predicate="intersects")
        ordered = left < right
        left, right = left[ordered], right[ordered]
        areas = _areas_m2(shapely.intersection(geoms[left], geoms[right]))
        for i, j, area in zip(left, right, areas, strict=True):
            if area >= min_area_m2:
                first, second = sorted((codes[i], codes[j]))
                found.append((first, second, float(area)))
    return sorted(found)


def sibling_gaps(
    features: Sequence[UnitFeature],
    *,
    parents: Mapping[str, BaseGeometry | None] = _NO_PARENTS,
    min_area_m2: float = 1.0,
) -> list[tuple[str | None, float]]:
    """Return, per parent, the area in m² its children leave uncovered, if ≥ ``min_area_m2``.

    With the parent's WGS84 geometry in ``parents`` the gap is parent minus the union of its
    children (slivers along the parent border count); without it, the gap is the holes enclosed
    by the union of the siblings. Parents without any child among ``features`` are not reported.

    Returns
    -------
    list of (parent_code, area_m2), sorted by parent code (None last).

    Examples
    --------
    >>> from shapely import MultiPolygon, box
    >>> west = box(105.60, 10.4, 105.61, 10.41)
    >>> half = UnitFeature("a", "A", "9", None, None, MultiPolygon([west]), {})
    >>> [(parent, round(area, -4)) for parent, area in sibling_gaps(
    ...     [half], parents={"9": box(105.60, 10.4, 105.62, 10.41)}
    ... )]
    [('9', 1210000.0)]
    """
    found: list[tuple[str | None, float]] = []
    for parent_code, group in _by_parent(features).items():
        parent = parents.get(parent_code) if parent_code is not None else None
        if parent is not None and parent.is_empty:
            parent = None
        union = shapely.union_all(_valid([feature.geometry for feature in group]))
        gap = _valid([parent])[0].difference(union) if parent is not None else _holes(union)
        area = float(_areas_m2(np.array([gap], dtype=object))[0])
        if area >= min_area_m2:
            found.append((parent_code, area))
    return sorted(found, key=lambda item: (item[0] is None, item[0] or ""))


def _by_parent(features: Iterable[UnitFeature]) -> dict[str | None, list[UnitFeature]]:
    groups: dict[str | None, list[UnitFeature]] = defaultdict(list)
    for feature in features:
        if feature.geometry is not None and not feature.geometry.is_empty:
            groups[feature.parent_code].append(feature)
    return groups


def _valid(geoms: Sequence[BaseGeometry | None]) -> Any:
    """An object array of the geometries, invalid ones made valid (GEOS overlays need it)."""
    array = np.array(geoms, dtype=object)
    invalid = ~shapely.is_valid(array)
    array[invalid] = shapely.make_valid(array[invalid])
    return array


def _areas_m2(geoms: Any) -> Any:
    """Areas in m² of WGS84 geometries, measured in the UTM zone of the whole array."""
    if len(geoms) == 0:
        return np.zeros(0)
    min_x, _, max_x, _ = shapely.total_bounds(geoms)
    to_utm = transformer_from_wgs84(utm_crs_for((min_x + max_x) / 2))
    return shapely.area(transform_geometry(geoms, transformer=to_utm))


def _holes(union: BaseGeometry) -> BaseGeometry:
    """The areas enclosed by a union but not covered by it, as one geometry."""
    polygons = [part for part in shapely.get_parts(union) if isinstance(part, Polygon)]
    return shapely.MultiPolygon(
        [Polygon(ring) for polygon in polygons for ring in polygon.interiors]
    )
