"""Parse one submission item and apply the validation rules that need no boundaries.

``parse_item`` never raises on bad input: every problem becomes an issue from ``geo.issues``
(``item_invalid`` names the field), and the service adds the spatial rules. The payload helpers
define "the same payload" for a re-sent id: equal JSON after parsing.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeGuard

import orjson

from geo.issues import Issue, make_issue
from geo.text import fold_name, house_number_invalid, normalise_phone, normalise_text

KINDS = frozenset({"residence", "business", "ocop", "public", "other"})
DEFAULT_KIND = "residence"
TEXT_MAX_LENGTH = 500
# The database column is varchar(32).
HAMLET_CODE_MAX_LENGTH = 32
MEMBERS_MAX = 100
# household_id refers to a bigint key.
_BIGINT_MAX = 2**63 - 1

_UUID_CANONICAL = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_UUID_HEX = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
# The other forms uuid.UUID reads: hyphen-less, in braces, as a URN.
_UUID_ANY = re.compile(rf"(?:urn:uuid:)?(?:{_UUID_HEX}|\{{{_UUID_HEX}\}})")
_SECONDS_PER_DAY = 86_400.0

# Vietnamese hints appended to the item_invalid message, by field.
_HINT_TEXT = f"cần chuỗi ký tự, tối đa {TEXT_MAX_LENGTH} ký tự"
_HINTS = {
    "item": "mỗi mục phải là một đối tượng JSON",
    "id": "cần UUID do ứng dụng tạo",
    "captured_at": (
        "cần thời điểm ISO 8601 kèm múi giờ (+07:00 hoặc Z), ví dụ 2026-11-20T08:31:05+07:00"
    ),
    "location.accuracy_m": "cần số mét không âm",
    "location.mock": "cần true hoặc false",
    "hamlet_code": f"cần mã ấp/khóm, tối đa {HAMLET_CODE_MAX_LENGTH} ký tự",
    "household": "cần đối tượng JSON",
    "household.phone": f"cần chuỗi ký tự (số JSON mất số 0 đầu), tối đa {TEXT_MAX_LENGTH} ký tự",
    "household.kind": "một trong " + ", ".join(sorted(KINDS)),
    "household.members": f"số nguyên từ 0 đến {MEMBERS_MAX}",
    "household_id": "số nguyên dương",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Thresholds of the non-spatial rules (metres, seconds, days)."""

    accuracy_warn_m: float = 30.0
    accuracy_hard_m: float = 100.0
    future_tolerance_s: float = 300.0
    max_age_days: float = 90.0


@dataclass(slots=True)
class HouseholdFields:
    """The household part of an item, normalised for storage."""

    head_name: str | None
    head_name_folded: str | None
    house_number: str | None
    street: str | None
    phone: str | None
    phone_raw: str | None
    kind: str
    members: int | None
    note: str | None


@dataclass(slots=True)
class ParsedItem:
    """One submission item: parsed values (None where unusable) and its non-spatial issues."""

    id: uuid.UUID | None
    captured_at: datetime | None
    lat: float | None
    lon: float | None
    swapped: tuple[float, float] | None
    accuracy_m: float | None
    mock: bool
    hamlet_code: str | None
    household_ref: int | None
    household: HouseholdFields | None
    issues: list[Issue]


# lat, lon, swapped, accuracy_m, mock: a plain tuple, several times cheaper than a NamedTuple.
_Location = tuple[float | None, float | None, tuple[float, float] | None, float | None, bool]
_NO_LOCATION: _Location = (None, None, None, None, False)


class _Findings:
    """The issues of one item; ``item_invalid`` at most once per field."""

    __slots__ = ("invalid_fields", "issues")

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.invalid_fields: list[str] = []

    def add(self, code: str, detail: dict[str, Any] | None = None) -> None:
        self.issues.append(make_issue(code, detail))

    def invalid(self, field: str, *, hint: str | None = None) -> None:
        if field in self.invalid_fields:
            return
        self.invalid_fields.append(field)
        issue = make_issue("item_invalid", {"field": field})
        hint = hint or _HINTS.get(field)
        if hint:
            issue = replace(issue, message=f"{issue.message.removesuffix('.')} ({hint}).")
        self.issues.append(issue)


def parse_item(raw: object, *, now: datetime, limits: Limits = Limits()) -> ParsedItem:
    """Parse one submission item and collect its non-spatial issues, in field order.

    Parameters
    ----------
    raw : object
        One element of the ``submissions`` array, as parsed from JSON.
    now : datetime
        The server clock, timezone-aware; the capture-time rules are judged against it.
    limits : Limits
        Accuracy and capture-time thresholds.

    Returns
    -------
    ParsedItem
        Never raises on bad input: a field that cannot be used is None and named by an
        ``item_invalid`` issue (``coordinates_invalid`` for the point).

    Raises
    ------
    ValueError
        ``now`` is naive.

    Examples
    --------
    >>> from datetime import UTC
    >>> now = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    >>> [i.code for i in parse_item([], now=now).issues]
    ['item_invalid']
    >>> parse_item({"location": {"lat": 105.6, "lon": 10.46}}, now=now).swapped
    (10.46, 105.6)
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    found = _Findings()
    if not isinstance(raw, dict):
        found.invalid("item")
        return ParsedItem(None, None, None, None, None, None, False, None, None, None, found.issues)
    item_id = _parse_id(raw.get("id"), found)
    captured_at = _parse_captured_at(raw.get("captured_at"), found, now=now, limits=limits)
    location = _parse_location(raw.get("location"), found, limits=limits)
    hamlet_code = _text(raw.get("hamlet_code"), "hamlet_code", found, HAMLET_CODE_MAX_LENGTH)
    if hamlet_code is None:
        found.invalid("hamlet_code")
    household = _parse_household(raw.get("household"), raw.get("note"), found)
    household_ref = _parse_household_ref(raw.get("household_id"), found)
    lat, lon, swapped, accuracy_m, mock = location
    return ParsedItem(
        item_id,
        captured_at,
        lat,
        lon,
        swapped,
        accuracy_m,
        mock,
        hamlet_code,
        household_ref,
        household,
        found.issues,
    )


def _parse_id(value: object, found: _Findings) -> uuid.UUID | None:
    # uuid.UUID alone also takes signs and underscores (it ends in int(text, 16)): match first.
    if isinstance(value, str) and (_UUID_CANONICAL.fullmatch(value) or _UUID_ANY.fullmatch(value)):
        parsed = uuid.UUID(value)
        # The nil UUID is a client bug, and every device sending it would collide.
        if parsed.int:
            return parsed
    found.invalid("id")
    return None


_MAX_UTC_OFFSET = timedelta(hours=14)


def _parse_captured_at(
    value: object, found: _Findings, *, now: datetime, limits: Limits
) -> datetime | None:
    moment = _aware_datetime(value)
    if moment is None:
        found.invalid("captured_at")
        return None
    # One subtraction in seconds: cheaper than building and comparing timedeltas.
    ahead_s = (moment - now).total_seconds()
    if ahead_s > limits.future_tolerance_s:
        found.add("captured_in_future")
    elif -ahead_s > limits.max_age_days * _SECONDS_PER_DAY:
        found.add("captured_too_old", {"max_age_days": _tidy(limits.max_age_days)})
    return moment


def _aware_datetime(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    # RFC 3339 allows a lower-case "z"; fromisoformat only takes "Z".
    if text[-1:] == "z":
        text = text[:-1] + "Z"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    # Without an offset the phone's local time is ambiguous: refuse rather than guess +07:00.
    offset = moment.utcoffset()
    if offset is None or abs(offset) > _MAX_UTC_OFFSET:
        return None  # no clock on Earth is more than 14 hours from UTC
    return moment


def _parse_location(value: object, found: _Findings, *, limits: Limits) -> _Location:
    if not isinstance(value, dict):
        found.add("coordinates_invalid", {"fields": ["location"]})
        return _NO_LOCATION
    lat, lon, swapped = _parse_point(value.get("lat"), value.get("lon"), found)
    accuracy_m = _parse_accuracy(value.get("accuracy_m"), found, limits=limits)
    mock = value.get("mock")
    if mock is True:
        found.add("mock_location")
    elif mock is not None and mock is not False:
        found.invalid("location.mock")
    return lat, lon, swapped, accuracy_m, mock is True


def _parse_point(
    raw_lat: object, raw_lon: object, found: _Findings
) -> tuple[float | None, float | None, tuple[float, float] | None]:
    lat, lon = _finite(raw_lat), _finite(raw_lon)
    lat_ok = lat is not None and -90.0 <= lat <= 90.0
    lon_ok = lon is not None and -180.0 <= lon <= 180.0
    swapped = None
    # Only a swap that is itself a valid point is worth testing against the service area
    # (geography casts in PostGIS raise on latitudes beyond ±90).
    if lat is not None and lon is not None and -90.0 <= lon <= 90.0 and -180.0 <= lat <= 180.0:
        swapped = (lon, lat)
    if lat_ok and lon_ok:
        return lat, lon, swapped
    bad = [name for name, ok in (("location.lat", lat_ok), ("location.lon", lon_ok)) if not ok]
    found.add("coordinates_invalid", {"fields": bad})
    return None, None, swapped


def _finite(value: object) -> float | None:
    """A finite float from a JSON number; None for bools, strings, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        return None
    return number if math.isfinite(number) else None


def _parse_accuracy(value: object, found: _Findings, *, limits: Limits) -> float | None:
    if value is None:
        found.add("accuracy_missing")
        return None
    accuracy_m = _finite(value)
    if accuracy_m is None or accuracy_m < 0:
        found.invalid("location.accuracy_m")
        return None
    if accuracy_m > limits.accuracy_hard_m:
        found.add("accuracy_unusable", _accuracy_detail(accuracy_m, limits.accuracy_hard_m))
    elif accuracy_m > limits.accuracy_warn_m:
        found.add("accuracy_poor", _accuracy_detail(accuracy_m, limits.accuracy_warn_m))
    return accuracy_m


def _accuracy_detail(accuracy_m: float, limit_m: float) -> dict[str, Any]:
    return {"accuracy_m": _tidy(accuracy_m), "limit_m": _tidy(limit_m)}


def _tidy(number: float) -> float | int:
    """30.0 → 30, so that messages read "30 m"; huge values stay floats (JSON-safe)."""
    if float(number).is_integer() and abs(number) < 2**53:
        return int(number)
    return number


def _text(value: object, field: str, found: _Findings, max_length: int) -> str | None:
    try:
        return normalise_text(value, max_length=max_length)
    except (TypeError, ValueError):
        found.invalid(field, hint=_HINTS.get(field, _HINT_TEXT))
        return None


def _parse_household(value: object, note: object, found: _Findings) -> HouseholdFields | None:
    if not isinstance(value, dict):
        found.invalid("household")
        _text(note, "note", found, TEXT_MAX_LENGTH)
        return None
    invalid_before = len(found.invalid_fields)
    head_name = _parse_head_name(value.get("head_name"), found)
    house_number = _parse_house_number(value.get("house_number"), found)
    street = _text(value.get("street"), "household.street", found, TEXT_MAX_LENGTH)
    phone, phone_raw = _parse_phone(value.get("phone"), found)
    kind = _parse_kind(value.get("kind"), found)
    members = _parse_members(value.get("members"), found)
    note_text = _text(note, "note", found, TEXT_MAX_LENGTH)
    if len(found.invalid_fields) > invalid_before:
        return None
    folded = fold_name(head_name) or None
    fields = (head_name, folded, house_number, street, phone, phone_raw, kind, members)
    return HouseholdFields(*fields, note_text)


def _parse_head_name(value: object, found: _Findings) -> str | None:
    field = "household.head_name"
    invalid_before = len(found.invalid_fields)
    head_name = _text(value, field, found, TEXT_MAX_LENGTH)
    if head_name is None and len(found.invalid_fields) == invalid_before:
        found.add("name_missing")
    return head_name


def _parse_house_number(value: object, found: _Findings) -> str | None:
    house_number = _text(value, "household.house_number", found, TEXT_MAX_LENGTH)
    # Judge the text as sent (NFC, trimmed): normalise_text has already dropped the controls.
    as_sent = unicodedata.normalize("NFC", value).strip() if isinstance(value, str) else None
    if house_number is not None and house_number_invalid(as_sent):
        found.add("house_number_invalid")
    return house_number


def _parse_phone(value: object, found: _Findings) -> tuple[str | None, str | None]:
    if value is not None and not isinstance(value, str):
        found.invalid("household.phone")
        return None, None
    phone_raw = _text(value, "household.phone", found, TEXT_MAX_LENGTH)
    if phone_raw is None:
        return None, None
    phone = normalise_phone(phone_raw)
    if phone is None:
        found.add("phone_invalid")
    return phone, phone_raw


def _parse_kind(value: object, found: _Findings) -> str:
    if value is None:
        return DEFAULT_KIND
    if isinstance(value, str) and value in KINDS:
        return value
    found.invalid("household.kind")
    return DEFAULT_KIND


def _parse_members(value: object, found: _Findings) -> int | None:
    if value is None:
        return None
    if _is_int(value) and 0 <= value <= MEMBERS_MAX:
        return value
    found.invalid("household.members")
    return None


def _parse_household_ref(value: object, found: _Findings) -> int | None:
    if value is None:
        return None
    if _is_int(value) and 0 < value <= _BIGINT_MAX:
        return value
    found.invalid("household_id")
    return None


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int subclass: true is not one member.
    return isinstance(value, int) and not isinstance(value, bool)


def canonical_json(value: object) -> bytes:
    """Compact JSON with sorted keys: equal bytes for equal JSON whatever the key order.

    Numbers keep their JSON type (``10`` and ``10.0`` differ, ``10.46`` and ``10.460`` parse to
    the same float and do not); NaN and infinities, which are not JSON, serialise as null.

    Raises
    ------
    TypeError
        ``value`` is not JSON-serialisable (orjson.JSONEncodeError), e.g. an int over 64 bits.

    Examples
    --------
    >>> canonical_json({"b": [1, 2.5], "a": "Đ"})
    b'{"a":"\\xc4\\x90","b":[1,2.5]}'
    >>> deep = []
    >>> for _ in range(999):
    ...     deep = [deep]
    >>> canonical_json(deep).count(b"["), canonical_json({"b": deep, "a": 1})[:10]
    (1000, b'{"a":1,"b"')
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        # orjson writes at most 255 levels but reads 1,024: a hostile item nested deeper
        # still needs its identity (and the log its text) so it can be rejected, not a 500.
        if "Recursion limit" not in str(exc):
            raise
        return _canonical_deep(value)


def _canonical_deep(value: object) -> bytes:
    """``canonical_json`` without a nesting limit: an explicit stack instead of recursion."""
    out: list[bytes] = []
    stack: list[Any] = [value]
    while stack:
        top = stack.pop()
        if isinstance(top, bytes):  # punctuation queued below (bytes never occur in JSON)
            out.append(top)
        elif isinstance(top, dict):
            pairs = sorted(top.items(), key=lambda pair: pair[0])
            stack.append(b"}")
            for index in range(len(pairs) - 1, -1, -1):
                stack += [pairs[index][1], orjson.dumps(pairs[index][0]) + b":"]
                if index:
                    stack.append(b",")
            stack.append(b"{")
        elif isinstance(top, list):
            stack.append(b"]")
            for index in range(len(top) - 1, -1, -1):
                stack.append(top[index])
                if index:
                    stack.append(b",")
            stack.append(b"[")
        else:
            out.append(orjson.dumps(top))
    return b"".join(out)


def payload_sha256(value: object) -> str:
    """Hex SHA-256 of ``canonical_json(value)``: the identity of a submitted payload."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def payload_diff(before: object, after: object, *, limit: int = 50) -> list[dict[str, Any]]:
    """The leaf differences between two parsed JSON values, in sorted-path order, at most ``limit``.

    Each difference is ``{"path", "change", "before", "after"}``; ``change`` is ``"changed"``,
    ``"added"`` (``before`` None) or ``"removed"`` (``after`` None). Paths join object keys
    with ``.`` and list indexes as ``[i]``; the whole value is the path ``""``. Leaves compare
    with their JSON type (``true`` differs from ``1``, ``10`` from ``10.0``).

    Examples
    --------
    >>> payload_diff({"household": {"phone": "1"}, "x": [1]}, {"household": {"phone": "2"}})
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'path': 'household.phone', 'change': 'changed', 'before': '1', 'after': '2'},
     {'path': 'x', 'change': 'removed', 'before': [1], 'after': None}]
    >>> payload_diff({"a": 1}, {"a": 1.0})[0]["change"], payload_diff([1], [1])
    ('changed', [])
    """
    out: list[dict[str, Any]] = []
    if limit > 0:
        _diff(before, after, "", out, limit, _MAX_DIFF_DEPTH)
    return out


_MISSING = object()
#: Below this depth a differing subtree is one difference: no real item nests this deep, and
#: a hostile one (up to 1,024 levels) must not exhaust Python's recursion limit.
_MAX_DIFF_DEPTH = 32


def _diff(
    before: object, after: object, path: str, out: list[dict[str, Any]], limit: int, depth: int
) -> None:
    if depth and isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys(), key=str):
            child = f"{path}.{key}" if path else str(key)
            old, new = before.get(key, _MISSING), after.get(key, _MISSING)
            _diff(old, new, child, out, limit, depth - 1)
            if len(out) >= limit:
                return
    elif depth and isinstance(before, list) and isinstance(after, list):
        for index in range(max(len(before), len(after))):
            old = before[index] if index < len(before) else _MISSING
            new = after[index] if index < len(after) else _MISSING
            _diff(old, new, f"{path}[{index}]", out, limit, depth - 1)
            if len(out) >= limit:
                return
    elif not _same_leaf(before, after):
        out.append(_difference(path, before, after))


def _same_leaf(before: object, after: object) -> bool:
    if isinstance(before, dict | list) and isinstance(after, dict | list):
        return canonical_json(before) == canonical_json(after)  # no recursion in ==
    # type() too: Python says True == 1 and 10 == 10.0, JSON (and the payload hash) does not.
    return type(before) is type(after) and before == after


def _difference(path: str, before: object, after: object) -> dict[str, Any]:
    before, after = _shown(before), _shown(after)
    if before is _MISSING:
        return {"path": path, "change": "added", "before": None, "after": after}
    if after is _MISSING:
        return {"path": path, "change": "removed", "before": before, "after": None}
    return {"path": path, "change": "changed", "before": before, "after": after}


def _shown(value: object) -> object:
    return value if value is _MISSING else shallow_json(value)


def shallow_json(value: object, *, max_depth: int = _MAX_DIFF_DEPTH) -> object:
    """``value``, or a copy in which whatever lies ``max_depth`` levels down is its JSON text.

    Responses echo stored payloads, and JSON writers stop near 255 levels (orjson, pydantic):
    a hostile payload nested deeper is shown as text from that depth on, so one bad item
    cannot break the submission log for everyone who reads it.

    Examples
    --------
    >>> shallow_json({"a": [[1]]}, max_depth=2)
    {'a': ['[1]']}
    >>> value = {"a": 1}
    >>> shallow_json(value) is value
    True
    """
    if not _deeper_than(value, max_depth):
        return value
    return _cut(value, max_depth)


def _cut(value: object, levels: int) -> object:
    if not isinstance(value, dict | list):
        return value
    if levels == 0:
        return canonical_json(value).decode()
    if isinstance(value, dict):
        return {key: _cut(child, levels - 1) for key, child in value.items()}
    return [_cut(child, levels - 1) for child in value]


def _deeper_than(value: object, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        top, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(top, dict):
            stack += [(child, depth + 1) for child in top.values()]
        elif isinstance(top, list):
            stack += [(child, depth + 1) for child in top]
    return False
