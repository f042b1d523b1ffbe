"""Vietnamese text at intake: the NFC storage form, the folded match form, phones, house numbers.

Names arrive in both NFC and NFD (precomposed ``ễ`` or ``e`` + two combining marks), depending
on the phone's keyboard. Storage uses NFC; matching uses ``fold_name``, which also removes the
diacritics so that "Nguyễn" typed without tones still matches.
"""

from __future__ import annotations

import re
import unicodedata

HOUSE_NUMBER_MAX_LENGTH = 32

# Mobile: 0 + 3/5/7/8/9 + 8 digits; landline: 02 + 9 digits.
_PHONE = re.compile(r"0(?:[35789][0-9]{8}|2[0-9]{9})")
_COUNTRY_CODE = "84"
# The bounded per-code-point cache of fold_name: Vietnamese text needs a few hundred entries.
_FOLD_CACHE_MAX = 4096


def normalise_text(value: object, *, max_length: int | None = None) -> str | None:
    """The storage form of a text field: NFC, trimmed, one space between words; None if empty.

    Parameters
    ----------
    value : str or None
        As received. Whitespace runs (tabs, newlines, no-break spaces) become one space; other
        control characters are dropped (PostgreSQL cannot store NUL in text).
    max_length : int, optional
        Longest accepted result, in characters after normalisation.

    Returns
    -------
    str or None
        None for None, an empty or a blank string.

    Raises
    ------
    TypeError
        ``value`` is neither a string nor None (the caller reports the field as invalid).
    ValueError
        The result is longer than ``max_length``, or the text holds lone surrogates.

    Examples
    --------
    >>> normalise_text("  Nguye\u0302\u0303n   Va\u0306n\\tAn ")
    'Nguyễn Văn An'
    >>> normalise_text(" \\n ") is None, normalise_text(None) is None
    (True, True)
    >>> normalise_text(5)
    Traceback (most recent call last):
    ...
    TypeError: expected a string, got int
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    text = unicodedata.normalize("NFC", value)
    # isprintable() is False for every control, format, odd space and surrogate: the rare slow path.
    if not text.isprintable():
        text = _drop_controls(text)
    text = " ".join(text.split())
    if max_length is not None and len(text) > max_length:
        raise ValueError(f"longer than {max_length} characters")
    return text or None


def _drop_controls(text: str) -> str:
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs":
            raise ValueError("lone surrogate: not valid Unicode text")
        # Whitespace controls (tab, newline) are kept for split() to turn into one space.
        if category != "Cc" or char.isspace():
            kept.append(char)
    return "".join(kept)


class _FoldTable(dict[int, str | None]):
    """str.translate table of fold_name, filled lazily per code point (bounded in size)."""

    def __missing__(self, code_point: int) -> str | None:
        folded = _fold_char(chr(code_point))
        if len(self) < _FOLD_CACHE_MAX:
            self[code_point] = folded
        return folded


def _fold_char(char: str) -> str | None:
    category = unicodedata.category(char)
    if category[0] == "M" or category == "Cf":
        return None  # diacritics after NFD; zero-width characters pasted from the web
    if category[0] in "LN":
        # đ does not decompose under NFD; ð (Icelandic eth) stands in for it in legacy fonts.
        return "d" if char in "đð" else char
    return " "  # punctuation, symbols, controls and odd spaces all separate words


_FOLD_TABLE = _FoldTable()
# Lower-case Vietnamese after NFD lies below U+0370 (ASCII, đ, combining marks): a plain dict
# translates it faster than the lazy table, which handles whatever is left over.
_FOLD_LATIN = {code_point: _fold_char(chr(code_point)) for code_point in range(0x370)}


def fold_name(name: str | None) -> str:
    """The match form of a name: no diacritics, ``đ`` → ``d``, lower case, words only.

    Punctuation separates words ("Mỹ-Linh" → "my linh"); NFC and NFD input fold alike.

    Examples
    --------
    >>> fold_name("ĐẶNG thị  Hoà"), fold_name("Nguye\u0302\u0303n Va\u0306n An")
    ('dang thi hoa', 'nguyen van an')
    >>> fold_name("Lê Thị Mỹ-Linh (chủ hộ)"), fold_name(None), fold_name(" . ")
    ('le thi my linh chu ho', '', '')
    """
    if not name:
        return ""
    # Lower-case first: lower() can itself produce combining marks ("İ" → "i̇").
    folded = unicodedata.normalize("NFD", name.lower()).translate(_FOLD_LATIN)
    if not folded.isascii():
        folded = folded.translate(_FOLD_TABLE)
    return " ".join(folded.split())


def normalise_phone(raw: str | None) -> str | None:
    """The one stored phone form: ``0`` + 9 digits (mobile) or ``02`` + 9 digits (landline).

    Separators (spaces, dots, dashes, parentheses) are ignored; ``+84`` and ``84`` replace the
    leading ``0``, and a redundant ``0`` after them ("+84 (0) 912…") is dropped.

    Returns
    -------
    str or None
        None for an empty value and for anything that is not a Vietnamese mobile (03, 05, 07,
        08, 09 and 10 digits) or landline (02 and 11 digits) number.

    Examples
    --------
    >>> normalise_phone("+84 912 345 678"), normalise_phone("(028) 3823 4567")
    ('0912345678', '02838234567')
    >>> normalise_phone("84912345678"), normalise_phone("0912 345 67"), normalise_phone("")
    ('0912345678', None, None)
    """
    if not raw:
        return None
    # NFKC turns full-width digits and "＋" from some input methods into ASCII.
    text = raw if raw.isascii() else unicodedata.normalize("NFKC", raw)
    # Separators people type: "0912 345 678", "0912.345.678", "(028) 3823-4567". Chained
    # replace() is several times faster than a regex here, and this runs for every item.
    compact = "".join(text.split()).replace(".", "").replace("-", "").replace("(", "")
    national = _national_number(compact.replace(")", ""))
    if national is None:
        return None
    phone = "0" + national
    return phone if _PHONE.fullmatch(phone) else None


def _national_number(digits: str) -> str | None:
    """The number without its trunk ``0`` or country code ``84``; None for foreign numbers."""
    if digits.startswith("0"):
        return digits[1:]
    international = digits.removeprefix("+")
    if not international.startswith(_COUNTRY_CODE):
        return None
    return international[len(_COUNTRY_CODE) :].removeprefix("0")


def house_number_invalid(value: str | None) -> bool:
    """Whether a house number is obviously broken: control characters or over 32 characters.

    Examples
    --------
    >>> house_number_invalid("12/3"), house_number_invalid("Tổ 5"), house_number_invalid(None)
    (False, False, False)
    >>> house_number_invalid("12\\x003"), house_number_invalid("1" * 33)
    (True, True)
    """
    if value is None:
        return False
    if len(value) > HOUSE_NUMBER_MAX_LENGTH:
        return True
    # isprintable() is True whenever there is no Cc/Cf character: skip the per-character scan.
    return not value.isprintable() and any(
        unicodedata.category(char) in ("Cc", "Cf") for char in value
    )
