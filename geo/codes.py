"""Household address codes: the Vpostcode-compatible default scheme and plain plus codes.

Two schemes behind one interface (docs: DOMAIN "Address codes"):

``vpostcode`` (default)
    The commune's 5-digit postcode + the 11-digit Open Location Code of the point without its
    first 4 characters (the 1° cell, recovered from the commune's location) and without ``+``:
    postcode ``81106`` and OLC ``7P27FJ6M+222`` give ``81106FJ6M222``. Compatible with Vietnam
    Post's Vpostcode as far as it is published; not the official algorithm.
``olc``
    The full 11-digit OLC, ``7P27FJ6M+222``.

A cell is ≈ 2.8 m × 3.4 m, so households can share one: the first keeps the bare code, the next
ones get a sub-index suffix ``-2``, ``-3``… Sub-indexes are counted per ``cell_key``, the code
without its suffix, so equal keys and sub-indexes are exactly equal codes. A code is issued once
from a validated point and stored with its scheme and postcode: a commune's postcode can change
when boundaries are reorganised, the location part does not.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final, Literal

from geo import olc
from geo.errors import CodeFormatError, PostcodeError
from geo.postcodes import normalise_postcode

Scheme = Literal["vpostcode", "olc"]
VPOSTCODE: Final = "vpostcode"
OLC: Final = "olc"
SCHEMES: Final[tuple[Scheme, ...]] = (VPOSTCODE, OLC)
DEFAULT_SCHEME: Final[Scheme] = VPOSTCODE
# Generous for apartment blocks geotagged at their entrance; beyond it the text is a typo.
MAX_SUB_INDEX: Final = 999

_POSTCODE_DIGITS = 5
_LEGACY_POSTCODE_DIGITS = 6
# Characters of the 11-digit OLC that a Vpostcode leaves out: the 20° and 1° pairs.
_DROPPED = 4
_LOCAL_DIGITS = olc.CELL_DIGITS - _DROPPED
VPOSTCODE_LENGTH: Final = _POSTCODE_DIGITS + _LOCAL_DIGITS  # 12
OLC_LENGTH: Final = olc.CELL_DIGITS  # 11, not counting "+"
_SUFFIX = "-"
# Word processors and phone keyboards turn "-" into these.
_DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2212", _SUFFIX))
_TYPED_CHARACTERS = re.compile(r"[0-9A-Z-]*")
_NOT_IN_ALPHABET = sorted(set("ABCDEFGHIJKLMNOPQRSTUVWXYZ") - set(olc.ALPHABET))
_EXAMPLE = "81106FJ6M222"


@dataclass(slots=True)
class IssuedCode:
    """A code issued for a point, with what it was issued under.

    ``code`` is what is printed (``81106FJ6M222-2``); ``olc`` the 11-digit cell of the point;
    ``cell_key`` what sub-indexes are counted on (``vpostcode:81106FJ6M222``).
    """

    code: str
    scheme: Scheme
    olc: str
    postcode: str | None
    sub_index: int
    cell_key: str


@dataclass(frozen=True, slots=True)
class ParsedCode:
    """A code as read from text: its scheme, parts and normalised form.

    ``local`` is the location part: the 7 OLC characters of a Vpostcode (``FJ6M222``) or the
    full OLC (``7P27FJ6M+222``). ``code`` is the normalised code (``81106FJ6M222-2``).
    """

    scheme: Scheme
    postcode: str | None
    local: str
    sub_index: int
    code: str

    @property
    def cell_key(self) -> str:
        """The key sub-indexes are counted on, as in ``IssuedCode.cell_key``."""
        return _cell_key(self.scheme, _base(self.scheme, self.postcode, self.local))

    @property
    def reference_postcode(self) -> str | None:
        """The postcode whose commune reference point ``decode`` needs; None if it needs none."""
        return self.postcode if self.scheme == VPOSTCODE else None


def issue(
    scheme: Scheme,
    lat: float,
    lon: float,
    *,
    postcode: str | int | None = None,
    sub_index: int = 1,
    cell: str | None = None,
) -> IssuedCode:
    """Issue the address code of a validated point.

    Parameters
    ----------
    scheme : {"vpostcode", "olc"}
    lat, lon : float
        WGS84 degrees (EPSG:4326).
    postcode : str or int, optional
        The commune's 5-digit postcode; required by ``vpostcode``, recorded by ``olc``.
    sub_index : int
        1 for the first household of the cell (no suffix), 2, 3… for the next ones: one more
        than the codes already issued with the same ``cell_key``.
    cell : str, optional
        The point's ``olc.CELL_DIGITS`` code when already encoded (``olc.encode_many`` for a
        batch); encoded here otherwise.

    Returns
    -------
    IssuedCode

    Raises
    ------
    PostcodeError
        code ``postcode_invalid``: not a 5-digit postcode (a 6-digit one is the legacy system);
        code ``postcode_required``: ``vpostcode`` without a postcode.
    ValueError
        An unknown scheme, a point off the globe or a sub-index outside 1..``MAX_SUB_INDEX``.

    Examples
    --------
    >>> issue("vpostcode", 10.46001, 105.63251, postcode="81106").code
    '81106FJ6M222'
    >>> issue("vpostcode", 10.46001, 105.63251, postcode=81106, sub_index=2)
    ... # doctest: +NORMALIZE_WHITESPACE
    IssuedCode(code='81106FJ6M222-2', scheme='vpostcode', olc='7P27FJ6M+222', postcode='81106',
               sub_index=2, cell_key='vpostcode:81106FJ6M222')
    >>> issue("olc", 10.46001, 105.63251, sub_index=3).code
    '7P27FJ6M+222-3'
    """
    _check_issue_arguments(scheme, lat, lon, sub_index)
    if cell is None:
        cell = olc.encode(lat, lon, olc.CELL_DIGITS)
    normalised = normalise_postcode(postcode)
    if scheme == VPOSTCODE and normalised is None:
        raise PostcodeError(
            "Thiếu mã bưu chính của xã/phường: mã địa chỉ gồm mã bưu chính 5 chữ số và 7 ký tự "
            f"vị trí (ví dụ {_EXAMPLE}).",
            code="postcode_required",
        )
    local = cell.replace(olc.SEPARATOR, "")[_DROPPED:] if scheme == VPOSTCODE else cell
    base = _base(scheme, normalised, local)
    return IssuedCode(
        code=_with_sub_index(base, sub_index),
        scheme=scheme,
        olc=cell,
        postcode=normalised,
        sub_index=sub_index,
        cell_key=_cell_key(scheme, base),
    )


def _check_issue_arguments(scheme: str, lat: float, lon: float, sub_index: int) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown address code scheme {scheme!r}; one of {SCHEMES}")
    # Encoding would clip the latitude; a code for a point off the globe is a bug upstream.
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"point off the globe: lat={lat!r}, lon={lon!r}")
    if isinstance(sub_index, bool) or not 1 <= sub_index <= MAX_SUB_INDEX:
        raise ValueError(f"sub_index must be 1..{MAX_SUB_INDEX}, got {sub_index!r}")


def _base(scheme: str, postcode: str | None, local: str) -> str:
    return f"{postcode}{local}" if scheme == VPOSTCODE else local


def _cell_key(scheme: str, base: str) -> str:
    return f"{scheme}:{base}"


def _with_sub_index(base: str, sub_index: int) -> str:
    return base if sub_index == 1 else f"{base}{_SUFFIX}{sub_index}"


def parse(text: str | None) -> ParsedCode:
    """Read an address code as typed: any case, spaces, ``+`` and ``-`` between groups.

    A final ``-N`` is the sub-index when what precedes it is a whole code (12 or 11
    characters); any other ``-``, space or ``+`` only separates groups. ``-1`` is the
    first household and normalises to the bare code.

    Parameters
    ----------
    text : str or None

    Returns
    -------
    ParsedCode

    Raises
    ------
    CodeFormatError
        ``code_empty``: nothing typed. ``code_malformed``: a character that no code has, a
        wrong length, a bare 5-digit postcode, or 12 characters not starting with a postcode.
        ``postcode_legacy``: a 6-digit postcode of the system replaced in 2018.
        ``olc_invalid``: the location part has characters outside the OLC alphabet or is off
        the globe. ``sub_index_invalid``: ``-0`` or beyond ``MAX_SUB_INDEX``. Every error's
        ``detail`` has the ``value`` (cut to 40 characters) and a ``reason``.

    Examples
    --------
    >>> parse(" 81106 fj6m+222-2 ")  # doctest: +NORMALIZE_WHITESPACE
    ParsedCode(scheme='vpostcode', postcode='81106', local='FJ6M222', sub_index=2,
               code='81106FJ6M222-2')
    >>> parse("81106-FJ6M-222").code, parse("7p27fj6m 222").code, parse("7P27FJ6M+222-1").code
    ('81106FJ6M222', '7P27FJ6M+222', '7P27FJ6M+222')
    >>> parse("870000")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geo.errors.CodeFormatError: '870000' là mã bưu chính 6 chữ số theo hệ thống cũ, ...
    """
    shown = (text or "").strip()[:40]
    compact = _compact(text or "")
    if not compact.strip(_SUFFIX):
        raise _error("code_empty", "empty", shown, "Chưa nhập mã địa chỉ (ví dụ 81106FJ6M222).")
    _check_characters(compact, shown)
    _check_legacy_postcode(compact.replace(_SUFFIX, ""), shown)
    body, sub_index = _split_sub_index(compact, shown)
    if len(body) == VPOSTCODE_LENGTH:
        return _parse_vpostcode(body, sub_index, shown)
    if len(body) == OLC_LENGTH:
        return _parse_olc(body, sub_index, shown)
    raise _length_error(body, shown)


def _compact(text: str) -> str:
    """Upper case without spaces or ``+``; full-width forms and typographic dashes folded."""
    folded = unicodedata.normalize("NFKC", text).translate(_DASHES)
    return "".join(folded.split()).replace(olc.SEPARATOR, "").upper()


def _check_characters(compact: str, shown: str) -> None:
    if _TYPED_CHARACTERS.fullmatch(compact):
        return
    bad = next(ch for ch in compact if not _TYPED_CHARACTERS.fullmatch(ch))
    raise _error(
        "code_malformed",
        "characters",
        shown,
        f"Mã địa chỉ '{shown}' có ký tự không dùng được '{bad}': mã chỉ gồm chữ số và chữ cái "
        f"Latinh không dấu, có thể kèm dấu '+' và '-' (ví dụ {_EXAMPLE} hoặc 7P27FJ6M+222).",
    )


def _check_legacy_postcode(body: str, shown: str) -> None:
    if len(body) != _LEGACY_POSTCODE_DIGITS or not body.isdigit():
        return
    raise _error(
        "postcode_legacy",
        "legacy_six_digits",
        shown,
        f"'{body}' là mã bưu chính 6 chữ số theo hệ thống cũ, đã được thay bằng mã bưu chính "
        "quốc gia 5 chữ số từ ngày 01/01/2018 (Quyết định 2475/QĐ-BTTTT), và không phải là mã "
        f"địa chỉ. Hãy nhập mã địa chỉ của hộ, ví dụ {_EXAMPLE}.",
    )


def _split_sub_index(compact: str, shown: str) -> tuple[str, int]:
    """The code without separators and its sub-index (1 when there is no suffix)."""
    head, suffix, tail = compact.rpartition(_SUFFIX)
    head = head.replace(_SUFFIX, "")
    if suffix and tail.isdigit() and len(head) in (VPOSTCODE_LENGTH, OLC_LENGTH):
        return head, _sub_index(tail, shown)
    return compact.replace(_SUFFIX, ""), 1


def _sub_index(digits: str, shown: str) -> int:
    significant = digits.lstrip("0")
    if not significant:
        message = (
            f"Số thứ tự hộ '-{digits}' trong mã '{shown}' không hợp lệ: hộ thứ nhất trong ô "
            "không có hậu tố, các hộ tiếp theo là -2, -3, …"
        )
        raise _error("sub_index_invalid", "zero", shown, message)
    # Compare lengths first: int() refuses strings of thousands of digits.
    if len(significant) > len(str(MAX_SUB_INDEX)) or int(significant) > MAX_SUB_INDEX:
        message = (
            f"Số thứ tự hộ '-{digits[:10]}' trong mã '{shown}' quá lớn: một ô có tối đa "
            f"{MAX_SUB_INDEX} hộ."
        )
        raise _error("sub_index_invalid", "too_large", shown, message)
    return int(significant)


def _parse_vpostcode(body: str, sub_index: int, shown: str) -> ParsedCode:
    postcode, local = body[:_POSTCODE_DIGITS], body[_POSTCODE_DIGITS:]
    if not postcode.isdigit():
        message = (
            f"Mã địa chỉ '{shown}' phải bắt đầu bằng 5 chữ số mã bưu chính (ví dụ {_EXAMPLE})."
        )
        raise _error("code_malformed", "postcode_part", shown, message)
    _check_alphabet(local, shown)
    code = _with_sub_index(body, sub_index)
    return ParsedCode(VPOSTCODE, postcode, local, sub_index, code)


def _parse_olc(body: str, sub_index: int, shown: str) -> ParsedCode:
    _check_alphabet(body, shown)
    cell = body[: olc.SEPARATOR_POSITION] + olc.SEPARATOR + body[olc.SEPARATOR_POSITION :]
    if not olc.is_full(cell):
        message = (
            f"Mã Open Location Code '{cell}' không hợp lệ: hai ký tự đầu không ứng với vị trí "
            "nào trên Trái Đất."
        )
        raise _error("olc_invalid", "off_globe", shown, message)
    return ParsedCode(OLC, None, cell, sub_index, _with_sub_index(cell, sub_index))


def _check_alphabet(part: str, shown: str) -> None:
    if all(ch in olc.ALPHABET for ch in part):
        return
    raise _error(
        "olc_invalid",
        "characters",
        shown,
        f"Phần vị trí '{part}' của mã địa chỉ '{shown}' không hợp lệ: chỉ gồm các ký tự "
        f"{olc.ALPHABET} (không có số 0 và 1, không có các chữ {', '.join(_NOT_IN_ALPHABET)}).",
    )


def _length_error(body: str, shown: str) -> CodeFormatError:
    if len(body) == _POSTCODE_DIGITS and body.isdigit():
        message = (
            f"'{body}' là mã bưu chính, chưa phải mã địa chỉ: mã địa chỉ gồm mã bưu chính 5 chữ "
            f"số và 7 ký tự vị trí (ví dụ {_EXAMPLE})."
        )
        return _error("code_malformed", "postcode_only", shown, message)
    message = (
        f"Mã địa chỉ '{shown}' có {len(body)} ký tự (không kể dấu cách, '+' và '-'): mã địa chỉ "
        f"gồm 12 ký tự, 5 chữ số mã bưu chính và 7 ký tự vị trí (ví dụ {_EXAMPLE}), hoặc là mã "
        "Open Location Code 11 ký tự (ví dụ 7P27FJ6M+222)."
    )
    return _error("code_malformed", "length", shown, message)


def _error(code: str, reason: str, shown: str, message: str) -> CodeFormatError:
    return CodeFormatError(message, code=code, detail={"value": shown, "reason": reason})


def recover_olc(
    code: ParsedCode | str, *, ref_lat: float | None = None, ref_lon: float | None = None
) -> str:
    """The full 11-digit OLC of a code.

    Parameters
    ----------
    code : ParsedCode or str
        A string is parsed first (and may raise ``CodeFormatError``).
    ref_lat, ref_lon : float, optional
        Required when ``code.reference_postcode`` is set (``vpostcode``): the reference point
        of the commune with that postcode, within 0.5° of the household in each axis (a
        commune's centroid is). The 4 dropped characters are the nearest ones to it.

    Raises
    ------
    ValueError
        A ``vpostcode`` without a reference point.

    Examples
    --------
    >>> recover_olc("81106FJ6M222-2", ref_lat=10.45, ref_lon=105.64)
    '7P27FJ6M+222'
    >>> recover_olc("7P27FJ6M+222")
    '7P27FJ6M+222'
    """
    parsed = parse(code) if isinstance(code, str) else code
    if parsed.reference_postcode is None:
        return parsed.local
    if ref_lat is None or ref_lon is None:
        raise ValueError(
            f"{parsed.code}: a vpostcode decodes only with the reference point of the commune "
            f"with postcode {parsed.reference_postcode}"
        )
    short = parsed.local[: olc.SEPARATOR_POSITION - _DROPPED] + olc.SEPARATOR
    short += parsed.local[olc.SEPARATOR_POSITION - _DROPPED :]
    return olc.recover_nearest(short, ref_lat, ref_lon)


def decode(
    code: ParsedCode | str, *, ref_lat: float | None = None, ref_lon: float | None = None
) -> olc.CodeArea:
    """The cell of a code (see ``recover_olc`` for the reference point of a ``vpostcode``).

    Examples
    --------
    >>> decode("81106FJ6M222", ref_lat=10.45, ref_lon=105.64)
    CodeArea(south=10.46, west=105.6325, north=10.460025, east=105.63253125, code_length=11)
    """
    return olc.decode(recover_olc(code, ref_lat=ref_lat, ref_lon=ref_lon))
