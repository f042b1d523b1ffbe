"""geo.postcodes: 5-digit national postcodes, the 6-digit legacy system refused."""

from __future__ import annotations

import doctest
import unicodedata

import numpy as np
import pytest

import geo.postcodes
from geo.errors import PostcodeError
from geo.postcodes import normalise_postcode


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("81106", "81106"),
        (81106, "81106"),
        (81106.0, "81106"),  # a spreadsheet number
        ("81106.0", "81106"),  # the same, once written to CSV
        (" 81106 ", "81106"),
        ("81 106", "81106"),
        ("\u00a081106\t", "81106"),  # no-break space from a web page
        ("８１１０６", "81106"),  # full-width digits
        (np.int64(10000), "10000"),
        (np.float64(97000.0), "97000"),
        (None, None),
        ("", None),
        ("   ", None),
    ],
)
def test_normalise_postcode_accepts(value: object, expected: str | None) -> None:
    assert normalise_postcode(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("8110", "not_five_digits"),
        (8110, "not_five_digits"),
        ("8110600", "not_five_digits"),
        ("81a06", "not_digits"),
        ("81-106", "not_digits"),
        ("-8110", "not_digits"),
        (-81106, "not_digits"),
        (81106.5, "not_digits"),
        (float("nan"), "not_digits"),
        (True, "not_digits"),
        ([81106], "not_digits"),
        ("870000", "legacy_six_digits"),
        (870000, "legacy_six_digits"),
        (870000.0, "legacy_six_digits"),
    ],
)
def test_normalise_postcode_refuses(value: object, reason: str) -> None:
    with pytest.raises(PostcodeError) as caught:
        normalise_postcode(value)
    error = caught.value
    assert error.code == "postcode_invalid"
    assert error.detail["reason"] == reason
    assert error.detail["value"]
    assert unicodedata.is_normalized("NFC", error.message)


def test_six_digit_message_explains_the_legacy_system() -> None:
    with pytest.raises(PostcodeError) as caught:
        normalise_postcode("870000")
    message = caught.value.message
    assert "870000" in message
    assert "01/01/2018" in message
    assert "2475/QĐ-BTTTT" in message
    assert "5 chữ số" in message
    assert caught.value.detail == {"value": "870000", "reason": "legacy_six_digits"}


def test_doctests() -> None:
    result = doctest.testmod(geo.postcodes)
    assert result.attempted > 0
    assert result.failed == 0
