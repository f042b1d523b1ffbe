"""Vietnamese national postcodes (mã bưu chính quốc gia): five digits since 1 January 2018."""

from __future__ import annotations

import math
import numbers
import re
import unicodedata

from geo.errors import PostcodeError

_FIVE_DIGITS = 5
_LEGACY_DIGITS = 6
# Spreadsheets turn 81106 into 81106.0; a CSV written from them keeps the ".0".
_SPREADSHEET_FLOAT = re.compile(r"([0-9]+)\.0+")
_DIGITS = re.compile(r"[0-9]+")


def normalise_postcode(value: object) -> str | None:
    """Return a 5-digit postcode string, or None for an empty value.

    Parameters
    ----------
    value : str, int, float or None
        As typed or as read from a file: spaces are ignored, ``81106`` and ``81106.0``
        (a spreadsheet number) are accepted.

    Returns
    -------
    str or None

    Raises
    ------
    PostcodeError
        code ``postcode_invalid``: not five digits; six digits get a message explaining that
        the 6-digit system was replaced on 1 January 2018 (Decision 2475/QĐ-BTTTT).

    Examples
    --------
    >>> normalise_postcode(" 81 106 "), normalise_postcode(81106), normalise_postcode(81106.0)
    ('81106', '81106', '81106')
    >>> normalise_postcode("") is None, normalise_postcode(None) is None
    (True, True)
    >>> normalise_postcode("871000")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geo.errors.PostcodeError: Mã bưu chính '871000' có 6 chữ số: đây là hệ thống mã cũ, ...
    """
    text = _postcode_text(value)
    if not text:
        return None
    if not _DIGITS.fullmatch(text):
        raise _invalid(value, reason="not_digits")
    if len(text) == _LEGACY_DIGITS:
        raise PostcodeError(
            f"Mã bưu chính '{text}' có 6 chữ số: đây là hệ thống mã cũ, đã được thay thế từ ngày "
            "01/01/2018 (Quyết định 2475/QĐ-BTTTT). Hãy dùng mã bưu chính quốc gia 5 chữ số.",
            code="postcode_invalid",
            detail={"value": text, "reason": "legacy_six_digits"},
        )
    if len(text) != _FIVE_DIGITS:
        raise _invalid(value, reason="not_five_digits")
    return text


def _postcode_text(value: object) -> str:
    if value is None:
        return ""
    # bool is an int subclass: True is not postcode 1.
    if isinstance(value, bool):
        raise _invalid(value, reason="not_digits")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number) or not number.is_integer():
            raise _invalid(value, reason="not_digits")
        return str(int(number))
    if not isinstance(value, str):
        raise _invalid(value, reason="not_digits")
    # NFKC folds full-width digits (from some Vietnamese input methods) to ASCII.
    text = "".join(unicodedata.normalize("NFKC", value).split())
    spreadsheet = _SPREADSHEET_FLOAT.fullmatch(text)
    return spreadsheet.group(1) if spreadsheet else text


def _invalid(value: object, *, reason: str) -> PostcodeError:
    shown = str(value)[:40]
    return PostcodeError(
        f"Mã bưu chính '{shown}' không hợp lệ: mã bưu chính quốc gia gồm đúng 5 chữ số "
        "(ví dụ 81106).",
        code="postcode_invalid",
        detail={"value": shown, "reason": reason},
    )
