"""geo.text: NFC storage form, folded match form, phone numbers, house numbers."""

from __future__ import annotations

import doctest
import unicodedata

import pytest

import geo.text
from geo.text import fold_name, house_number_invalid, normalise_phone, normalise_text

NFC_NAME = "Nguyễn Văn An"
NFD_NAME = unicodedata.normalize("NFD", NFC_NAME)


def test_the_nfd_fixture_really_differs() -> None:
    assert NFD_NAME != NFC_NAME
    assert len(NFD_NAME) > len(NFC_NAME)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (NFC_NAME, NFC_NAME),
        (NFD_NAME, NFC_NAME),
        ("  Nguyễn   Văn \t An \n", NFC_NAME),
        ("Nguyễn\u00a0Văn\u2003An", NFC_NAME),  # no-break and em spaces from web pages
        ("Nguyễn\x00 Văn\x07 An", NFC_NAME),  # NUL cannot be stored in PostgreSQL text
        ("Hẻm 5, Đường Lê Lợi", "Hẻm 5, Đường Lê Lợi"),
        ("12/3", "12/3"),
        ("", None),
        ("   ", None),
        ("\t\n", None),
        (None, None),
    ],
)
def test_normalise_text(value: object, expected: str | None) -> None:
    result = normalise_text(value)
    assert result == expected
    if result is not None:
        assert unicodedata.is_normalized("NFC", result)


@pytest.mark.parametrize("value", [5, 5.0, True, b"An", ["An"], {"name": "An"}])
def test_normalise_text_refuses_non_strings(value: object) -> None:
    with pytest.raises(TypeError):
        normalise_text(value)


def test_normalise_text_max_length_counts_after_normalisation() -> None:
    # NFD doubles the code points of "ễ": the limit applies to the stored NFC form.
    assert normalise_text(unicodedata.normalize("NFD", "ễ" * 10), max_length=10) == "ễ" * 10
    assert normalise_text("  " + "a" * 10 + "  ", max_length=10) == "a" * 10
    with pytest.raises(ValueError, match="longer than 10"):
        normalise_text("a" * 11, max_length=10)


def test_normalise_text_refuses_lone_surrogates() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        normalise_text("An\ud800")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (NFC_NAME, "nguyen van an"),
        (NFD_NAME, "nguyen van an"),
        ("Nguyễn Văn  An", "nguyen van an"),
        ("ĐẶNG thị  Hoà", "dang thi hoa"),
        (unicodedata.normalize("NFD", "ĐẶNG thị  Hoà"), "dang thi hoa"),
        ("đỗ đức độ", "do duc do"),
        ("Ðặng Văn Ðức", "dang van duc"),  # Icelandic eth from legacy fonts
        ("Trần Thị Mỹ-Linh", "tran thi my linh"),
        ("Lê Văn Tư (chủ hộ)", "le van tu chu ho"),
        ("  Huỳnh,  Ngọc.  Ánh ", "huynh ngoc anh"),
        ("Phạm\u200bThị Út", "phamthi ut"),  # zero-width space joins, as it displays
        ("Nguyễn Văn An 2", "nguyen van an 2"),
        ("ƯƠNG ươn", "uong uon"),
        ("", ""),
        ("  ", ""),
        ("-.-", ""),
        (None, ""),
    ],
)
def test_fold_name(name: str | None, expected: str) -> None:
    assert fold_name(name) == expected


def test_fold_name_is_nfc_nfd_agnostic_and_idempotent() -> None:
    names = ["Nguyễn Thị Ánh Tuyết", "Huỳnh Đức Thọ", "Võ Thị Sáu", "Đoàn Ngọc Ẩn"]
    for name in names:
        folded = fold_name(name)
        assert folded == fold_name(unicodedata.normalize("NFD", name))
        assert folded == fold_name(folded)
        assert folded.isascii()


def test_fold_name_keeps_other_scripts_as_letters() -> None:
    # Khmer and Chinese names occur in the delta: letters survive, only marks go.
    assert fold_name("Thạch Sóc 李") == "thach soc 李"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0912345678", "0912345678"),
        ("0912 345 678", "0912345678"),
        ("0912.345.678", "0912345678"),
        ("0912-345-678", "0912345678"),
        ("+84 912 345 678", "0912345678"),
        ("+84912345678", "0912345678"),
        ("84912345678", "0912345678"),
        ("(+84) 912 345 678", "0912345678"),
        ("+84 (0) 912 345 678", "0912345678"),
        ("０９１２３４５６７８", "0912345678"),  # full-width digits
        ("0312345678", "0312345678"),
        ("0512345678", "0512345678"),
        ("0712345678", "0712345678"),
        ("0812345678", "0812345678"),
        ("0838234567", "0838234567"),  # 083 is a mobile prefix, not HCMC's 028
        ("02838234567", "02838234567"),
        ("(028) 3823 4567", "02838234567"),
        ("0277 3851 234", "02773851234"),  # Đồng Tháp landline
        ("+84 28 3823 4567", "02838234567"),
        ("842838234567", "02838234567"),
        ("\t0912 345 678\n", "0912345678"),
    ],
)
def test_normalise_phone_accepts(raw: str, expected: str) -> None:
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        None,
        "   ",
        "091234567",  # 9 digits
        "09123456789",  # 11 digits mobile
        "0112345678",  # 01 is no mobile prefix
        "0412345678",
        "0612345678",
        "0012345678",
        "01234567890",  # old 11-digit mobiles were renumbered in 2018
        "0283823456",  # landline, 10 digits
        "028382345678",  # landline, 12 digits
        "912345678",  # trunk 0 missing
        "+1 912 345 678",
        "+85 912 345 678",
        "0912 345 67a",
        "091234567O",  # letter O for zero
        "0912/345/678",
        "0912345678 ext 12",
        "+84",
        "84",
        "0",
        "+",
        "++84912345678",
        "٠٩١٢٣٤٥٦٧٨",  # Arabic-Indic digits are digits, but not ours
    ],
)
def test_normalise_phone_refuses(raw: str | None) -> None:
    assert normalise_phone(raw) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", False),
        ("12A", False),
        ("12/3", False),
        ("Tổ 5", False),
        (unicodedata.normalize("NFD", "Tổ 5"), False),
        ("", False),
        (None, False),
        ("1" * 32, False),
        ("1" * 33, True),
        ("12\x003", True),
        ("12\t3", True),
        ("12\n", True),
        ("12\x1b[0m", True),  # terminal escape
        ("12\u200b3", True),  # zero-width space (Cf)
        ("12\u202e3", True),  # right-to-left override (Cf)
        ("12\u00a03", False),  # no-break space is a space, not a control
    ],
)
def test_house_number_invalid(value: str | None, expected: bool) -> None:
    assert house_number_invalid(value) is expected


def test_doctests() -> None:
    result = doctest.testmod(geo.text)
    assert result.attempted > 0
    assert result.failed == 0
