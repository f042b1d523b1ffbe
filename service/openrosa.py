"""OpenRosa for ODK Collect and KoboCollect: the team's household form, its form list,
submissions through the intake path, and the settings QR code that configures a phone.

The form is an XLSForm kept in the repository (``forms/household.md``), converted with
pyxform. Each team is served its own XForm: the commune and hamlet lists of the cascading
choice are the team's units valid now, so the form's version and hash change whenever the
team's area or its units change, and Collect (``form_update_mode=match_exactly``) fetches it
again. A submitted instance becomes an ordinary submission item (``geo.xform``) and goes
through ``intake.submit`` like a JSON batch of one, with the XML stored verbatim first.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

import orjson
import segno
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo.xform import instance_item
from service import intake
from service.db import Database
from service.models import User, valid_now
from service.unit_index import UnitIndexCache

FORM_SOURCE = Path(__file__).parent / "forms" / "household.md"
FORM_ID = "ho_gia_dinh"
FORM_TITLE = "Hộ gia đình"
OPENROSA_VERSION = "1.0"
XML_MEDIA_TYPE = "text/xml; charset=utf-8"
_FORM_LIST_NS = "http://openrosa.org/xforms/xformsList"
_RESPONSE_NS = "http://openrosa.org/http/response"
#: Our own machine-readable part of a response (Collect reads only the first <message>).
RESULT_NS = "urn:diachiso:openrosa"
#: The choice lists that hold example rows in the source and the team's units when served.
_UNIT_LISTS = ("communes", "hamlets")


@dataclass(frozen=True, slots=True)
class Hamlet:
    """A hamlet a team may capture in, with its commune (both valid now)."""

    code: str
    name: str
    commune_code: str
    commune_name: str


def team_hamlets(session: Session, *, team_id: int | None) -> list[Hamlet]:
    """The hamlets of a team's area valid now (a commune in the area means all its hamlets)."""
    rows = session.execute(
        text(
            "SELECT h.code, h.name, h.parent_code, coalesce(c.name, h.parent_code) "
            "FROM admin_units h LEFT JOIN admin_units c ON c.code = h.parent_code "
            f"AND c.level = 'commune' AND {valid_now('c')} "
            f"WHERE h.level = 'hamlet' AND {valid_now('h')} AND EXISTS ("
            "SELECT 1 FROM team_units tu WHERE tu.team_id = :team "
            "AND tu.unit_code IN (h.code, h.parent_code)) "
            "ORDER BY h.parent_code, h.code"
        ),
        {"team": team_id},
    ).all()
    return [Hamlet(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class Form:
    """One XForm as served: the exact bytes the form list's hash is taken of."""

    form_id: str
    version: str
    title: str
    xml: bytes

    @property
    def md5(self) -> str:
        """The OpenRosa form-list hash: ``md5:`` and the hex MD5 of the bytes served."""
        return "md5:" + hashlib.md5(self.xml, usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class FormOptions:
    """What of the settings goes into the served form (geopoint thresholds, in metres)."""

    capture_accuracy_m: float
    warning_accuracy_m: float


def team_form(team_name: str, hamlets: Sequence[Hamlet], *, options: FormOptions) -> Form | None:
    """The household XForm for a team; None when its area has no hamlet to choose."""
    return _build_form(team_name, tuple(hamlets), options) if hamlets else None


@functools.lru_cache(maxsize=256)
def _build_form(team_name: str, hamlets: tuple[Hamlet, ...], options: FormOptions) -> Form:
    # Converting takes ~15 ms; teams and their units change rarely, so keep recent forms.
    # pyxform is imported here, not with the module: it costs every process ~0.5 s of
    # start-up (each worker, each CLI command) and only the form endpoints use it.
    from pyxform.xls2xform import convert

    source, source_digest = _source()
    book = copy.deepcopy(source)
    book["choices"] = [r for r in book["choices"] if r["list_name"] not in _UNIT_LISTS]
    book["choices"] += _unit_choices(hamlets)
    parameters = (
        f"capture-accuracy={options.capture_accuracy_m:g} "
        f"warning-accuracy={options.warning_accuracy_m:g}"
    )
    for row in book["survey"]:
        if row.get("type") == "geopoint":
            row["parameters"] = parameters
    title = f"{FORM_TITLE} – {team_name}"
    version = _version(source_digest, title, hamlets, parameters)
    book["settings"][0].update({"form_id": FORM_ID, "form_title": title, "version": version})
    return Form(FORM_ID, version, title, convert(book).xform.encode())


@functools.cache
def _source() -> tuple[dict[str, Any], str]:
    """The XLSForm as pyxform's workbook dict, and the SHA-256 of its file."""
    from pyxform.xls2json_backends import md_to_dict

    data = FORM_SOURCE.read_bytes()
    return dict(md_to_dict(data.decode("utf-8"))), hashlib.sha256(data).hexdigest()


def _unit_choices(hamlets: tuple[Hamlet, ...]) -> list[dict[str, str]]:
    communes = {h.commune_code: h.commune_name for h in hamlets}
    rows = [{"list_name": "communes", "name": c, "label": n} for c, n in sorted(communes.items())]
    rows += [
        {"list_name": "hamlets", "name": h.code, "label": h.name, "commune": h.commune_code}
        for h in hamlets
    ]
    return rows


def _version(source: str, title: str, hamlets: tuple[Hamlet, ...], parameters: str) -> str:
    """A version that changes with the form source, the team's units and the thresholds."""
    inputs = orjson.dumps([source, title, [astuple(h) for h in hamlets], parameters])
    return hashlib.sha256(inputs).hexdigest()[:12]


def form_list_xml(forms: Sequence[tuple[Form, str]]) -> bytes:
    """An OpenRosa ``<xforms>`` list of ``(form, download URL)`` pairs."""
    root = Element("xforms", xmlns=_FORM_LIST_NS)
    for form, url in forms:
        entry = SubElement(root, "xform")
        fields = (
            ("formID", form.form_id),
            ("name", form.title),
            ("version", form.version),
            ("hash", form.md5),
            ("downloadUrl", url),
        )
        for tag, value in fields:
            SubElement(entry, tag).text = value
    return _document(root)


def submit_instance(
    database: Database,
    cache: UnitIndexCache,
    *,
    xml: bytes,
    content_type: str | None,
    user: User,
    now: datetime,
    options: intake.IntakeOptions,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Map one instance to an item and run it through intake: the item and its result.

    A body that is not an instance of our form raises before anything is stored, as a bad
    envelope does in the JSON API.
    """
    item = instance_item(xml, form_id=FORM_ID)
    [result] = intake.submit(
        database,
        cache,
        body=xml,
        content_type=content_type,
        user=user,
        now=now,
        options=options,
        channel="openrosa",
        raw_items=[item],
    )
    return item, result


def submission_response(item: dict[str, Any], result: dict[str, Any]) -> tuple[int, bytes]:
    """HTTP status and OpenRosa body for an item's intake result.

    Every outcome intake stored answers 201, rejected included: Collect marks a submission
    sent only on 201/202 and otherwise retries it forever, while a rejected household can
    only be fixed by capturing it again under a new instanceID. A changed resend is a 409.
    """
    household = item.get("household")
    name = household.get("head_name") if isinstance(household, dict) else None
    status = 409 if result["status"] == "conflict" else 201
    nature = "error" if status == 409 else "submit_success"
    return status, response_xml(
        result_message(result, head_name=name), nature=nature, result=result
    )


def result_message(result: dict[str, Any], *, head_name: Any) -> str:
    """What a surveyor reads in Collect about one household, in Vietnamese."""
    who = f"Hộ {head_name.strip()}" if isinstance(head_name, str) and head_name.strip() else "Hộ"
    reasons = " ".join(issue["message"] for issue in result["issues"])
    status = result["status"]
    if status == "accepted":
        code = result.get("address_code")
        told = f"mã địa chỉ {code}" if code else "mã địa chỉ sẽ được cấp sau"
        return f"{who}: đã nhận, {told}. {reasons}".strip()
    if status == "flagged":
        return f"{who}: đã nhận, chờ kiểm duyệt. {reasons}".strip()
    if status == "rejected":
        return (
            f"{who}: bị từ chối, không tạo hộ. {reasons} Bản ghi vẫn được lưu; hãy thu thập "
            "lại hộ này bằng một biểu mẫu mới."
        )
    paths = [
        d["path"] for i in result["issues"] for d in (i.get("detail") or {}).get("differences", [])
    ]
    changed = f" Khác ở: {', '.join(paths)}." if paths else ""
    return f"{who}: {reasons}{changed}"


def response_xml(
    message: str, *, nature: str, result: dict[str, Any] | None = None, code: str | None = None
) -> bytes:
    """An ``<OpenRosaResponse>`` with its ``<message>`` and our result or error code."""
    root = Element("OpenRosaResponse", xmlns=_RESPONSE_NS)
    SubElement(root, "message", nature=nature).text = message
    if result is not None:
        root.append(_result_element(result))
    if code is not None:
        SubElement(root, "error", xmlns=RESULT_NS, code=code)
    return _document(root)


def _result_element(result: dict[str, Any]) -> Element:
    attributes = {
        key: str(result[key])
        for key in ("id", "status", "household_id", "address_code")
        if result.get(key) is not None
    }
    element = Element("result", {"xmlns": RESULT_NS, **attributes})
    for issue in result["issues"]:
        child = SubElement(element, "issue", code=issue["code"], severity=issue["severity"])
        child.text = issue["message"]
    return element


def _document(root: Element) -> bytes:
    return tostring(root, encoding="utf-8", xml_declaration=True)


def collect_settings(*, server_url: str, user_name: str, team_name: str | None) -> dict[str, Any]:
    """ODK Collect / KoboCollect project settings for one app user (the QR code's content).

    The form list is mirrored (``match_exactly``), so a team's new form version replaces the
    old one; finalized forms are sent as soon as there is a link and kept on the phone; the
    server URL, which holds the token, cannot be changed or viewed from the phone's menus.
    """
    return {
        "general": {
            "protocol": "odk_default",
            "server_url": server_url,
            "form_update_mode": "match_exactly",
            "periodic_form_updates_check": "every_one_hour",
            "automatic_update": True,
            "autosend": "wifi_and_cellular",
            "delete_send": False,
            "metadata_username": user_name,
            "app_language": "vi",
        },
        "admin": {"change_server": False},
        "project": {
            "name": f"Địa chỉ số – {team_name}" if team_name else "Địa chỉ số",
            "icon": "Đ",
            "color": "#0f766e",
        },
    }


def settings_payload(settings: dict[str, Any]) -> str:
    """The text of a Collect settings QR code: the JSON, zlib-compressed, then base64."""
    return base64.b64encode(zlib.compress(orjson.dumps(settings), 9)).decode("ascii")


def qr_svg_data_uri(payload: str) -> str:
    """An SVG QR code of ``payload`` as a ``data:`` URI (medium error correction, as ODK's)."""
    return str(segno.make(payload, error="m", micro=False).svg_data_uri(scale=4, border=4))
