"""Read an XForm instance, as ODK Collect and KoboCollect submit it, into a submission item.

The household form (``service/forms/household.md``) names its fields after the JSON item of
``POST /api/v1/submissions`` (docs/intake.md), so the mapping is field by field. What needs
care is how Collect encodes values:

- a geopoint is one text node, ``"lat lon altitude accuracy"`` (WGS84 degrees, metres);
- Collect records accuracy ``0`` for a fix from a mock location provider (unless the form
  sets ``allow-mock-accuracy``; its ``LocationUtils.sanitizeAccuracy``), so an accuracy of
  exactly 0 becomes ``mock: true``;
- times are ISO 8601 with the phone's offset (``2026-11-28T09:15:00.000+07:00``); the form
  stamps ``captured_at`` when the geopoint is taken, ``end`` and ``start`` are fallbacks;
- ``meta/instanceID`` is ``uuid:<uuid>`` and becomes the item id, so resends are idempotent
  exactly as in the JSON API.

Only what makes the bytes an instance of our form is judged here (well-formed XML, the form
id, an instanceID). Values the item rules refuse (a malformed geopoint, ``members`` that is
not a number) are passed on as text, and ``geo.validation.parse_item`` rejects the item
naming the field, as it would for the JSON API.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from geo.errors import InstanceError, XmlSyntaxError

_INSTANCE_ID = re.compile(r"uuid:([0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12})")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_INTEGER = re.compile(r"[-+]?\d{1,9}")  # anything longer is no member count: keep it as text
_HOUSEHOLD_FIELDS = ("head_name", "house_number", "street", "phone", "kind", "members")


def instance_item(xml: bytes, *, form_id: str) -> dict[str, Any]:
    """The submission item of one XForm instance of form ``form_id``.

    Parameters
    ----------
    xml : bytes
        The ``xml_submission_file`` part exactly as received.
    form_id : str
        The id the instance's root element must carry.

    Returns
    -------
    dict
        The item as ``POST /api/v1/submissions`` takes it (absent fields left out), plus an
        ``openrosa`` member with the form version, the instanceID as sent and the times
        Collect recorded (kept in the submission log, ignored by validation).

    Raises
    ------
    XmlSyntaxError
        The bytes are not well-formed XML, or declare a DTD or entities (refused).
    InstanceError
        ``form_unknown``: the root element is another form's; ``instance_id_invalid``: no
        ``meta/instanceID`` of the form ``uuid:<uuid>``.

    Examples
    --------
    >>> xml = (b'<data id="f"><location>10.41 105.605 3.5 4.8</location><household>'
    ...        b'<members>4</members></household><meta><instanceID>uuid:6f1c2e0a-1b7d-4a55'
    ...        b'-9a63-3f0c9f1d2b11</instanceID></meta></data>')
    >>> item = instance_item(xml, form_id="f")
    >>> item["id"], item["household"]
    ('6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b11', {'members': 4})
    >>> item["location"]
    {'lat': 10.41, 'lon': 105.605, 'accuracy_m': 4.8}
    >>> instance_item(xml.replace(b">4<", ">bốn<".encode()), form_id="f")["household"]
    {'members': 'bốn'}
    """
    root = _parse(xml)
    found = root.get("id")
    if found != form_id:
        raise InstanceError(
            f"Biểu mẫu '{found}' không phải biểu mẫu của dịch vụ ('{form_id}'): hãy tải lại "
            "biểu mẫu từ máy chủ.",
            code="form_unknown",
            detail={"form_id": found},
        )
    fields = _leaves(root)
    instance_id = fields.get("meta/instanceID")
    household: dict[str, Any] = {n: fields.get(f"household/{n}") for n in _HOUSEHOLD_FIELDS}
    household["members"] = _integer_or_text(household["members"])
    openrosa = {
        "form_id": form_id,
        "form_version": root.get("version"),
        "instance_id": instance_id,
        "commune": fields.get("commune"),
        "start": fields.get("start"),
        "end": fields.get("end"),
    }
    item = {
        "id": _item_id(instance_id),
        "captured_at": _first(fields, "captured_at", "end", "start"),
        "location": parse_geopoint(fields.get("location")),
        "hamlet_code": fields.get("hamlet_code"),
        "household": _present(household),
        "note": fields.get("note"),
        "openrosa": _present(openrosa),
    }
    return _present(item)


def parse_geopoint(text: str | None) -> dict[str, Any] | None:
    """The item ``location`` of an XForm geopoint ``"lat lon [altitude [accuracy]]"``.

    Numbers become floats; a part that is not a number stays text (the item rules reject
    it, naming the field). Accuracy 0 is a mock provider's fix (Collect zeroes it).

    Examples
    --------
    >>> parse_geopoint("10.4603 105.6329 0.0 6.5")
    {'lat': 10.4603, 'lon': 105.6329, 'accuracy_m': 6.5}
    >>> parse_geopoint("10.4603 105.6329")
    {'lat': 10.4603, 'lon': 105.6329}
    >>> parse_geopoint("10.4603 105.6329 2 0")["mock"], parse_geopoint("x"), parse_geopoint(None)
    (True, {'lat': 'x'}, None)
    """
    if text is None:
        return None
    parts = [_number_or_text(part) for part in text.split()]
    location = dict(zip(("lat", "lon"), parts[:2], strict=False))
    if len(parts) >= 4:
        accuracy = parts[3]
        location["accuracy_m"] = accuracy
        if isinstance(accuracy, float) and accuracy == 0:
            location["mock"] = True
    return location


def _parse(xml: bytes) -> Element:
    try:
        root: Element = fromstring(xml, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise XmlSyntaxError(f"Tệp XML của biểu mẫu không hợp lệ: {exc}.") from exc
    return root


def _local(tag: str) -> str:
    """The local name of an ElementTree tag (``{namespace}name``): Collect's namespaces vary."""
    return tag.rsplit("}", 1)[-1]


def _leaves(element: Element) -> dict[str, str | None]:
    """Text of every leaf element by its path of local names (``household/phone``); the first
    of repeated names wins (in document order), and an empty element is None.

    Walked with a stack, not recursion: a body of a few kilobytes can nest thousands deep.
    """
    out: dict[str, str | None] = {}
    stack = _children(element, "")
    while stack:  # depth first, in document order: the stack holds siblings reversed
        node, path = stack.pop()
        if len(node):
            stack += _children(node, path + "/")
        else:
            out.setdefault(path, node.text or None)
    return out


def _children(element: Element, prefix: str) -> list[tuple[Element, str]]:
    """The element children (no comments or PIs) with their paths, last first."""
    return [(c, prefix + _local(c.tag)) for c in reversed(element) if isinstance(c.tag, str)]


def _item_id(instance_id: str | None) -> str:
    match = _INSTANCE_ID.fullmatch(instance_id.strip()) if instance_id else None
    if match is None or uuid.UUID(match.group(1)).int == 0:
        raise InstanceError(
            "Biểu mẫu thiếu mã bản ghi meta/instanceID dạng 'uuid:…'.",
            code="instance_id_invalid",
            detail={"instance_id": instance_id},
        )
    return match.group(1)


def _first(fields: dict[str, str | None], *names: str) -> str | None:
    for name in names:
        value = fields.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


def _number_or_text(text: str) -> float | str:
    return float(text) if _NUMBER.fullmatch(text) else text


def _integer_or_text(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if _INTEGER.fullmatch(text.strip()) else text


def _present(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without its None members: an absent field and a null one mean the same."""
    return {key: value for key, value in values.items() if value is not None}
