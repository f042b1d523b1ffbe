"""The examples in the service modules' docstrings hold (service.server has its own test)."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from service import codes, embedded, models


@pytest.mark.parametrize("module", [codes, embedded, models], ids=lambda m: m.__name__)
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted and not result.failed
