"""Open Location Code (plus codes): encode, decode, validate, shorten and recover short codes.

Google's algorithm (github.com/google/open-location-code, Apache-2.0), re-implemented with
integer arithmetic as in its current reference implementations. Coordinates are WGS84
(EPSG:4326) degrees, latitude first as in the codes themselves.

A float is taken at its shortest decimal form (``repr``): ``20.3700625`` lies on a cell edge as
written, not a hair south of it as stored in binary. So every row of Google's test vectors passes
exactly (the reference implementations tolerate a few floating-point misses), and a point always
lies inside the cell its code decodes to.

The ``openlocationcode`` 1.0.1 package is not used: it adds 90 in floating point (a point just
south of a cell edge gets the cell north of it), encodes NaN as the south pole, loops forever on an
infinite longitude and has no integer API to check the vectors' integer columns against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Context, Decimal

import numpy as np
import numpy.typing as npt

from geo.errors import CodeFormatError

ALPHABET = "23456789CFGHJMPQRVWX"
SEPARATOR = "+"
PADDING = "0"
SEPARATOR_POSITION = 8
MIN_DIGITS = 2
PAIR_DIGITS = 10
MAX_DIGITS = 15
# The 11-digit cell of address codes: 0.000025° × 0.00003125°, ≈ 2.8 m × 3.4 m at 10.5° N.
CELL_DIGITS = 11

_BASE = len(ALPHABET)
_GRID_ROWS = 5
_GRID_COLUMNS = 4
_GRID_DIGITS = MAX_DIGITS - PAIR_DIGITS
# Integer units per degree: the cell of a 15-digit code is one unit high and one unit wide.
LAT_PRECISION = _BASE**3 * _GRID_ROWS**_GRID_DIGITS  # 25_000_000
LON_PRECISION = _BASE**3 * _GRID_COLUMNS**_GRID_DIGITS  # 8_192_000
_LAT_SPAN = 180 * LAT_PRECISION
_LON_SPAN = 360 * LON_PRECISION
# The first pair digit counts 20°; one step "above" it is 400°.
_FIRST_PLACE_DEG = 400
_PAIR_RESOLUTIONS_DEG = (20.0, 1.0, 0.05, 0.0025, 0.000125)
# Shorten only when the reference is well inside the kept cell (the reference's margin).
_SHORTEN_SAFETY = 0.3

_VALUES = {ch: i for i, ch in enumerate(ALPHABET)} | {
    ch.lower(): i for i, ch in enumerate(ALPHABET)
}
_CODE_CHARACTERS = frozenset(_VALUES) | {SEPARATOR, PADDING}
# Enough digits for a 17-digit float times an 8-digit precision: the product is exact.
_EXACT = Context(prec=40)
# The float fast path of _floor_scaled (and _floor_scaled_many) trusts floor(x × precision)
# unless the product lies this close to an integer.
_ABS_TOLERANCE = 1e-6
_REL_TOLERANCE = 1e-15


@dataclass(frozen=True, slots=True)
class CodeArea:
    """The cell of a code: its bounds in degrees and the number of digits that made it."""

    south: float
    west: float
    north: float
    east: float
    code_length: int

    @property
    def center(self) -> tuple[float, float]:
        """The (lat, lon) of the cell's centre."""
        return ((self.south + self.north) / 2, (self.west + self.east) / 2)

    def contains(self, lat: float, lon: float) -> bool:
        """Whether the point is in the cell, edges included.

        The specification gives the north and east edges to the neighbouring cells; the edges
        here are rounded floats, so a point on one is counted in.
        """
        return self.south <= lat <= self.north and self.west <= lon <= self.east


def is_valid(code: str) -> bool:
    """Whether ``code`` is a well-formed full or short code (any letter case).

    Examples
    --------
    >>> is_valid("7P27FJ6M+222"), is_valid("FJ6M+222"), is_valid("7p27fj00+")
    (True, True, True)
    >>> is_valid("7P27FJ6M222"), is_valid("7P27FJ6M+2"), is_valid("7P27FJ00+22")
    (False, False, False)
    >>> is_valid("7P0027FJ+")  # padding is the rest of the digits
    False
    """
    sep = code.find(SEPARATOR)
    if sep == -1 or code.count(SEPARATOR) > 1 or len(code) == 1:
        return False
    if sep > SEPARATOR_POSITION or sep % 2 == 1 or len(code) - sep - 1 == 1:
        return False
    if not all(ch in _CODE_CHARACTERS for ch in code):
        return False
    return PADDING not in code or _valid_padding(code, sep)


def _valid_padding(code: str, sep: int) -> bool:
    """Padding fills a full code from an even position up to the separator, which ends it.

    Stricter than the Python and JavaScript references, which also accept digits after the
    padding ("C0022C2C+"); the specification says the padding is the rest of the digits.
    """
    first = code.find(PADDING)
    return (
        sep == SEPARATOR_POSITION
        and first > 0
        and first % 2 == 0
        and code[first:] == PADDING * (sep - first) + SEPARATOR
    )


def is_short(code: str) -> bool:
    """Whether ``code`` is a valid short code: fewer than 8 digits before the separator.

    Examples
    --------
    >>> is_short("FJ6M+222"), is_short("+222"), is_short("7P27FJ6M+222")
    (True, True, False)
    """
    return is_valid(code) and code.find(SEPARATOR) < SEPARATOR_POSITION


def is_full(code: str) -> bool:
    """Whether ``code`` is a valid full code whose first pair is on the globe.

    Examples
    --------
    >>> is_full("7P27FJ6M+222"), is_full("FJ6M+222"), is_full("XP27FJ6M+222")
    (True, False, False)
    """
    if not is_valid(code) or is_short(code):
        return False
    return _VALUES[code[0]] * _BASE < 180 and _VALUES[code[1]] * _BASE < 360


def location_to_integers(lat: float, lon: float) -> tuple[int, int]:
    """Convert a point to the integer units that codes are computed from.

    Parameters
    ----------
    lat, lon : float
        Degrees. Latitude is clipped to -90..90 (90 becomes the northernmost unit), longitude
        wrapped into -180..180.

    Returns
    -------
    tuple of int
        Units north of -90° (``LAT_PRECISION`` per degree) and east of -180° (``LON_PRECISION``
        per degree).

    Raises
    ------
    ValueError
        ``lat`` or ``lon`` is not a finite number.

    Examples
    --------
    >>> location_to_integers(20.3700625, 2.7821875)
    (2759251562, 1497351680)
    >>> location_to_integers(90, 181)
    (4499999999, 8192000)
    """
    lat_int = _floor_scaled(lat, LAT_PRECISION) + 90 * LAT_PRECISION
    lat_int = min(max(lat_int, 0), _LAT_SPAN - 1)
    lon_int = (_floor_scaled(lon, LON_PRECISION) + 180 * LON_PRECISION) % _LON_SPAN
    return lat_int, lon_int


def _floor_scaled(degrees: float, precision: int) -> int:
    """floor(degrees × precision), with the float taken at its shortest decimal form."""
    number = float(degrees)
    if not math.isfinite(number):
        raise ValueError(f"coordinate must be a finite number, got {degrees!r}")
    # Fast path: the float product and the decimal one differ by less than the tolerance
    # (half an ulp of the product, plus half an ulp of ``number`` scaled), so unless an integer
    # lies that close, both have the same floor. Only the rare near-edge case pays for Decimal.
    product = number * precision
    low = math.floor(product)
    tolerance = max(_ABS_TOLERANCE, abs(product) * _REL_TOLERANCE)
    if tolerance < product - low < 1.0 - tolerance:
        return int(low)
    scaled = _EXACT.multiply(Decimal(repr(number)), precision)
    return int(scaled.to_integral_value(rounding=ROUND_FLOOR, context=_EXACT))


def encode(lat: float, lon: float, code_length: int = PAIR_DIGITS) -> str:
    """Encode a point as an Open Location Code.

    Parameters
    ----------
    lat, lon : float
        WGS84 degrees; latitude is clipped to -90..90, longitude wrapped.
    code_length : int
        Significant digits: 2, 4, 6, 8, or 10 and more (more than 15 gives 15).
        ``CELL_DIGITS`` (11) is the ≈3 m cell of address codes.

    Returns
    -------
    str
        Upper case, ``+`` after the 8th digit, padded with ``0`` below 8 digits.

    Raises
    ------
    ValueError
        A non-finite coordinate or an impossible ``code_length``.

    Examples
    --------
    >>> encode(10.46001, 105.63251, CELL_DIGITS)
    '7P27FJ6M+222'
    >>> encode(10.46001, 105.63251), encode(10.46001, 105.63251, 4)
    ('7P27FJ6M+22', '7P270000+')
    >>> encode(10.459999999999999, 105.63251, 11)  # a hair south of the cell above
    '7P27FJ5M+X2R'
    """
    lat_int, lon_int = location_to_integers(lat, lon)
    return encode_integers(lat_int, lon_int, code_length)


def encode_many(
    lat: Sequence[float] | npt.NDArray[np.float64],
    lon: Sequence[float] | npt.NDArray[np.float64],
    code_length: int = PAIR_DIGITS,
) -> list[str]:
    """``encode`` of many points at once: the same codes, computed on arrays (numpy).

    A batch of intake encodes a thousand points; one by one, that was 6% of intake's Python
    time. Points near a cell edge still go through ``encode``'s exact path.

    Raises
    ------
    ValueError
        A non-finite coordinate, arrays of different lengths or an impossible ``code_length``.

    Examples
    --------
    >>> encode_many([10.46001, 10.459999999999999, 90.0], [105.63251, 105.63251, 181.0], 11)
    ['7P27FJ6M+222', '7P27FJ5M+X2R', 'C2X3X2X2+X2R']
    """
    _check_code_length(code_length)
    lats = np.asarray(lat, dtype=np.float64)
    lons = np.asarray(lon, dtype=np.float64)
    if lats.shape != lons.shape or lats.ndim != 1:
        raise ValueError(f"one latitude per longitude expected, got {lats.shape} and {lons.shape}")
    if not (np.isfinite(lats).all() and np.isfinite(lons).all()):
        raise ValueError("coordinates must be finite numbers")
    if code_length < SEPARATOR_POSITION:
        return [
            encode(a, b, code_length) for a, b in zip(lats.tolist(), lons.tolist(), strict=True)
        ]
    # Within ±1e6° the scaled units fit int64 exactly; beyond (a longitude many turns round
    # the globe), the point takes location_to_integers' unbounded integers.
    tame = (np.abs(lats) <= _TAME_DEG) & (np.abs(lons) <= _TAME_DEG)
    lat_int = np.empty(len(lats), dtype=np.int64)
    lon_int = np.empty(len(lats), dtype=np.int64)
    lat_int[tame] = np.clip(
        _floor_scaled_many(lats[tame], LAT_PRECISION) + 90 * LAT_PRECISION, 0, _LAT_SPAN - 1
    )
    lon_int[tame] = (
        _floor_scaled_many(lons[tame], LON_PRECISION) + 180 * LON_PRECISION
    ) % _LON_SPAN
    for i in np.flatnonzero(~tame).tolist():
        lat_int[i], lon_int[i] = location_to_integers(float(lats[i]), float(lons[i]))
    pair_lat, grid_lat = np.divmod(lat_int, _GRID_ROWS**_GRID_DIGITS)
    pair_lon, grid_lon = np.divmod(lon_int, _GRID_COLUMNS**_GRID_DIGITS)
    digits = np.empty((len(lats), MAX_DIGITS), dtype=np.int64)
    for k in range(PAIR_DIGITS // 2):  # least significant pair first, as in _pair_digits
        pair_lat, digits[:, PAIR_DIGITS - 2 - 2 * k] = np.divmod(pair_lat, _BASE)
        pair_lon, digits[:, PAIR_DIGITS - 1 - 2 * k] = np.divmod(pair_lon, _BASE)
    for k in range(_GRID_DIGITS):
        grid_lat, row = np.divmod(grid_lat, _GRID_ROWS)
        grid_lon, column = np.divmod(grid_lon, _GRID_COLUMNS)
        digits[:, MAX_DIGITS - 1 - k] = row * _GRID_COLUMNS + column
    letters = _ALPHABET_BYTES[digits[:, : min(code_length, MAX_DIGITS)]]
    plus = np.full((len(lats), 1), ord(SEPARATOR), dtype=np.uint8)
    rows = np.hstack([letters[:, :SEPARATOR_POSITION], plus, letters[:, SEPARATOR_POSITION:]])
    text, width = rows.tobytes().decode("ascii"), rows.shape[1]
    return [text[i : i + width] for i in range(0, len(text), width)]


_ALPHABET_BYTES = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)
_TAME_DEG = 1e6


def _floor_scaled_many(degrees: npt.NDArray[np.float64], precision: int) -> npt.NDArray[np.int64]:
    """``_floor_scaled`` of an array: its fast path on all, its exact path where needed."""
    product = degrees * precision
    low = np.floor(product)
    tolerance = np.maximum(_ABS_TOLERANCE, np.abs(product) * _REL_TOLERANCE)
    fraction = product - low
    result = low.astype(np.int64)
    for i in np.flatnonzero(~((tolerance < fraction) & (fraction < 1.0 - tolerance))).tolist():
        result[i] = _floor_scaled(float(degrees[i]), precision)
    return result


def encode_integers(lat_int: int, lon_int: int, code_length: int = PAIR_DIGITS) -> str:
    """Encode integer units (see ``location_to_integers``) as an Open Location Code.

    Raises
    ------
    ValueError
        Units outside the globe or an impossible ``code_length``.

    Examples
    --------
    >>> encode_integers(2759251562, 1497351680, 10)
    '7FG49QCJ+2V'
    """
    _check_code_length(code_length)
    if not (0 <= lat_int < _LAT_SPAN and 0 <= lon_int < _LON_SPAN):
        raise ValueError(f"integer coordinates out of range: {lat_int}, {lon_int}")
    pair_lat, grid_lat = divmod(lat_int, _GRID_ROWS**_GRID_DIGITS)
    pair_lon, grid_lon = divmod(lon_int, _GRID_COLUMNS**_GRID_DIGITS)
    digits = _pair_digits(pair_lat, pair_lon) + _grid_digits(grid_lat, grid_lon)
    digits = digits[: min(code_length, MAX_DIGITS)]
    if len(digits) < SEPARATOR_POSITION:
        return digits + PADDING * (SEPARATOR_POSITION - len(digits)) + SEPARATOR
    return digits[:SEPARATOR_POSITION] + SEPARATOR + digits[SEPARATOR_POSITION:]


def _check_code_length(code_length: int) -> None:
    if code_length < MIN_DIGITS or (code_length < PAIR_DIGITS and code_length % 2 == 1):
        raise ValueError(f"invalid Open Location Code length: {code_length}")


def _pair_digits(lat: int, lon: int) -> str:
    """The 10 pair digits, lat/lon alternating, from units of 0.000125°."""
    chars: list[str] = []
    for _ in range(PAIR_DIGITS // 2):
        lat, lat_digit = divmod(lat, _BASE)
        lon, lon_digit = divmod(lon, _BASE)
        chars += (ALPHABET[lon_digit], ALPHABET[lat_digit])
    return "".join(reversed(chars))


def _grid_digits(lat: int, lon: int) -> str:
    """The 5 grid digits, each a cell of 5 rows × 4 columns, from the finest units."""
    chars: list[str] = []
    for _ in range(_GRID_DIGITS):
        lat, row = divmod(lat, _GRID_ROWS)
        lon, column = divmod(lon, _GRID_COLUMNS)
        chars.append(ALPHABET[row * _GRID_COLUMNS + column])
    return "".join(reversed(chars))


def decode(code: str) -> CodeArea:
    """Decode a full code into its cell; digits after the 15th are ignored.

    Raises
    ------
    CodeFormatError
        code ``olc_invalid``: not a valid full code (e.g. a short code).

    Examples
    --------
    >>> decode("7P27FJ6M+222")
    CodeArea(south=10.46, west=105.6325, north=10.460025, east=105.63253125, code_length=11)
    >>> decode("7p270000+").code_length
    4
    """
    if not is_full(code):
        raise _invalid(code, reason="not_full")
    south, west, height, width = _cell_integers(_digits(code))
    return CodeArea(
        south=(south - 90 * LAT_PRECISION) / LAT_PRECISION,
        west=(west - 180 * LON_PRECISION) / LON_PRECISION,
        north=(south + height - 90 * LAT_PRECISION) / LAT_PRECISION,
        east=(west + width - 180 * LON_PRECISION) / LON_PRECISION,
        code_length=len(_digits(code)),
    )


def _digits(code: str) -> str:
    """The significant digits of a valid code, upper case, at most 15."""
    return code.replace(SEPARATOR, "").replace(PADDING, "").upper()[:MAX_DIGITS]


def _cell_integers(digits: str) -> tuple[int, int, int, int]:
    """South, west, height and width of the cell of a full code's digits, in integer units."""
    lat = lon = 0
    lat_place, lon_place = _FIRST_PLACE_DEG * LAT_PRECISION, _FIRST_PLACE_DEG * LON_PRECISION
    for i in range(0, min(len(digits), PAIR_DIGITS), 2):
        lat_place, lon_place = lat_place // _BASE, lon_place // _BASE
        lat += _VALUES[digits[i]] * lat_place
        lon += _VALUES[digits[i + 1]] * lon_place
    for ch in digits[PAIR_DIGITS:]:
        lat_place, lon_place = lat_place // _GRID_ROWS, lon_place // _GRID_COLUMNS
        row, column = divmod(_VALUES[ch], _GRID_COLUMNS)
        lat += row * lat_place
        lon += column * lon_place
    return lat, lon, lat_place, lon_place


def shorten(code: str, lat: float, lon: float) -> str:
    """Drop the leading 4, 6 or 8 digits of a full code that a nearby point can restore.

    Parameters
    ----------
    code : str
        A full, unpadded code.
    lat, lon : float
        The reference point (degrees). The more digits it shares with the code's centre,
        with a safety margin, the more are dropped.

    Returns
    -------
    str
        The short code, upper case, or the full code when the point is too far. Unlike the
        reference implementations, an 8-digit code keeps at least 2 digits (never a bare ``+``).

    Raises
    ------
    CodeFormatError
        code ``olc_invalid``: not a full code, or a padded one.

    Examples
    --------
    >>> shorten("7P27FJ6M+222", 10.5, 105.6), shorten("7P27FJ6M+222", 10.46, 105.63)
    ('FJ6M+222', '6M+222')
    >>> shorten("7P27FJ6M+222", 12.0, 105.6), shorten("7P27FJ6M+", 10.4612, 105.6337)
    ('7P27FJ6M+222', '6M+')
    """
    if not is_full(code):
        raise _invalid(code, reason="not_full")
    if PADDING in code:
        raise _invalid(code, reason="padded")
    area = decode(code)
    lat, lon = _clip_latitude(lat), _normalise_longitude(lon)
    distance = max(abs(area.center[0] - lat), abs(area.center[1] - lon))
    for i in range(len(_PAIR_RESOLUTIONS_DEG) - 2, 0, -1):
        trimmed = (i + 1) * 2
        # Keep a digit: the reference implementations shorten an 8-digit code to a bare "+".
        if distance < _PAIR_RESOLUTIONS_DEG[i] * _SHORTEN_SAFETY and trimmed < area.code_length:
            return code.upper()[trimmed:]
    return code.upper()


def _clip_latitude(lat: float) -> float:
    if not math.isfinite(lat):
        raise ValueError(f"latitude must be a finite number, got {lat!r}")
    return min(90.0, max(-90.0, lat))


def _normalise_longitude(lon: float) -> float:
    if not math.isfinite(lon):
        raise ValueError(f"longitude must be a finite number, got {lon!r}")
    return lon if -180 <= lon < 180 else (lon + 180) % 360 - 180


def recover_nearest(short_code: str, ref_lat: float, ref_lon: float) -> str:
    """Restore the full code of a short code: the matching cell nearest the reference point.

    Parameters
    ----------
    short_code : str
        A short code (a full code is returned upper-cased).
    ref_lat, ref_lon : float
        Any point within half the dropped cell (0.5° for 4 dropped digits) of the true one.

    Returns
    -------
    str
        The full code, upper case.

    Raises
    ------
    CodeFormatError
        code ``olc_invalid``: neither a short nor a full code.

    Examples
    --------
    >>> recover_nearest("FJ6M+222", 10.9, 105.9), recover_nearest("fj6m+222", 10.0, 105.3)
    ('7P27FJ6M+222', '7P27FJ6M+222')
    >>> recover_nearest("FJ6M+222", 11.0, 105.6)  # nearer the row of 1° cells to the north
    '7P37FJ6M+222'
    """
    if is_full(short_code):
        return short_code.upper()
    if not is_short(short_code):
        raise _invalid(short_code, reason="not_short")
    code = short_code.upper()
    dropped = SEPARATOR_POSITION - code.index(SEPARATOR)
    ref = location_to_integers(ref_lat, ref_lon)
    digits = _digits(encode_integers(*ref)[:dropped] + code)
    south, west, height, width = _cell_integers(digits)
    step = _BASE ** (dropped // 2)
    south = _nearest_south(south, height, ref[0], _FIRST_PLACE_DEG * LAT_PRECISION // step)
    west = _nearest_west(west, width, ref[1], _FIRST_PLACE_DEG * LON_PRECISION // step)
    return encode_integers(south, west % _LON_SPAN, len(digits))


def _nearest_south(south: int, height: int, ref: int, resolution: int) -> int:
    """Move the candidate cell one resolution north or south if that brings it nearer ``ref``."""
    center2 = 2 * south + height  # doubled, to stay in integers
    if 2 * ref + resolution < center2 and center2 - 2 * resolution >= 0:
        return south - resolution
    if 2 * ref - resolution > center2 and center2 + 2 * resolution <= 2 * _LAT_SPAN:
        return south + resolution
    return south


def _nearest_west(west: int, width: int, ref: int, resolution: int) -> int:
    """Move the candidate cell one resolution east or west if that brings it nearer ``ref``."""
    center2 = 2 * west + width
    if 2 * ref + resolution < center2:
        return west - resolution
    if 2 * ref - resolution > center2:
        return west + resolution
    return west


def _invalid(code: str, *, reason: str) -> CodeFormatError:
    shown = str(code)[:40]
    messages = {
        "not_full": f"'{shown}' không phải là mã Open Location Code đầy đủ (ví dụ 7P27FJ6M+222).",
        "not_short": (
            f"'{shown}' không phải là mã Open Location Code rút gọn hay đầy đủ "
            "(ví dụ FJ6M+222 hoặc 7P27FJ6M+222)."
        ),
        "padded": f"Mã Open Location Code '{shown}' có ký tự đệm '0' nên không rút gọn được.",
    }
    return CodeFormatError(
        messages[reason], code="olc_invalid", detail={"value": shown, "reason": reason}
    )
