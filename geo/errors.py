"""Errors raised by the pure domain layer.

Every error carries a stable English ``code`` (the API's problem ``code``) and a Vietnamese
message for the user. The service maps the classes to HTTP statuses in one table.
"""

from __future__ import annotations

from typing import Any


class GeoError(Exception):
    """Base class of domain errors: a stable ``code``, a Vietnamese message, optional detail."""

    code = "domain_error"

    def __init__(self, message: str, *, code: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.detail = detail


class InputFileError(GeoError):
    """An uploaded file cannot be used: unreadable, wrong kind, wrong fields or geometry."""

    code = "file_invalid"


class CrsError(InputFileError):
    """The coordinate reference system is unknown or contradicts the coordinates."""

    code = "crs_invalid"


class PostcodeError(GeoError):
    """A postcode that is not a 5-digit national postcode."""

    code = "postcode_invalid"


class CodeFormatError(GeoError):
    """Text that is not an address code or Open Location Code (empty, malformed, legacy)."""

    code = "code_invalid"


class InstanceError(GeoError):
    """A submitted XForm instance that is not one of our forms' (no instanceID, another form)."""

    code = "instance_invalid"


class XmlSyntaxError(InstanceError):
    """Bytes that are not a well-formed XML document (or use DTDs and entities, refused)."""

    code = "xml_invalid"
