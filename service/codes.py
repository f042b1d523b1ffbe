"""Address codes: issuance with deterministic sub-indexes, supersession, decoding, hand-over.

A code is derived from a validated point (``geo.codes``) and recorded with the scheme, the
postcode and the point it was issued under. It is never changed or reissued:

* accepted, non-held households get one in the transaction that accepts them (intake, release
  of a duplicate hold, a review);
* a household that moves by more than ``code_move_m`` or to another commune gets a new code and
  the old one is superseded by it; a merge supersedes the loser's code by the survivor's (and
  undoing the merge restores it, to the same household);
* co-located households share a cell: the first has no suffix, the next ``-2``, ``-3`` in order
  of acceptance. Allocation holds a transaction lock per cell, and ``(cell_key, sub_index)`` is
  unique, so concurrent acceptance in one cell can never issue the same code twice.

``households.address_code`` mirrors the active code for reads and exports.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2.extras import execute_values
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo import codes as geo_codes
from geo import olc
from geo.errors import GeoError, PostcodeError
from service import audit
from service.bulk import array_literal, copy_rows
from service.db import raw_cursor
from service.errors import BadRequestError, NotFoundError
from service.models import User, valid_now

_LOCK_CLASS = 7_001  # pg_advisory_xact_lock(class, hashtext(lock key))
#: Sub-index allocation is serialised per *block* of cells: the cell key without its last
#: LOCK_BLOCK_CHARS characters (a 20 × 20 block of ~14 m cells, ~280 m). One lock per cell
#: took up to 1,000 advisory locks per 1,000-item batch, and seven such batches at once
#: filled PostgreSQL's lock table (max_locks_per_transaction 64 × max_connections 100):
#: "out of shared memory", a 503. A block holds a commune batch's houses in a few dozen.
LOCK_BLOCK_CHARS = 2


def lock_keys(cell_keys: Iterable[str]) -> list[str]:
    """The sorted advisory-lock keys covering ``cell_keys`` (each cell's block).

    >>> lock_keys(["vpostcode:81106FJ6M222", "vpostcode:81106FJ6M2X3", "olc:7P28QPG4+X2"])
    ['olc:7P28QPG4+', 'vpostcode:81106FJ6M2']
    """
    return sorted({key[:-LOCK_BLOCK_CHARS] for key in cell_keys})


@dataclass(frozen=True, slots=True)
class CodePolicy:
    """How codes are issued: the scheme, and the move that earns a new code."""

    scheme: geo_codes.Scheme = geo_codes.DEFAULT_SCHEME
    move_m: float = 5.0


def policy_from(settings: Any) -> CodePolicy:
    """The configured policy."""
    return CodePolicy(scheme=settings.code_scheme, move_m=settings.code_move_m)


@dataclass(slots=True)
class Wanted:
    """A household that should get a code now."""

    household_id: int
    lat: float
    lon: float
    postcode: str | None
    commune_unit_id: int | None
    province_code: str | None
    submission_id: int | None = None


@dataclass(slots=True)
class Planned:
    """A code allocated to a household, not yet written."""

    wanted: Wanted
    issued: geo_codes.IssuedCode


# The highest sub-index issued per cell key: one index probe per key (an aggregate LATERAL
# subquery is never folded into a join). As a plain `cell_key = ANY(…) GROUP BY`, a table
# never analysed yet (a new deployment's first hours, the load test) was scanned whole on
# every batch: 10–14 ms a batch at 35,000 codes, growing with the table.
_TAKEN = text(
    "SELECT k.key, m.top FROM unnest(CAST(:keys AS text[])) AS k(key) "
    "CROSS JOIN LATERAL (SELECT max(a.sub_index) AS top FROM address_codes a "
    "WHERE a.cell_key = k.key) m WHERE m.top IS NOT NULL"
)


def plan(session: Session, wanted: Sequence[Wanted], *, scheme: geo_codes.Scheme) -> list[Planned]:
    """Allocate codes (sub-indexes in the given order); households that cannot get one yet
    (a ``vpostcode`` commune without a postcode) are left out.

    Takes the per-cell transaction locks: call it in the transaction that writes the codes.
    """
    first: list[tuple[Wanted, geo_codes.IssuedCode]] = []
    cells = olc.encode_many([w.lat for w in wanted], [w.lon for w in wanted], olc.CELL_DIGITS)
    for w, cell in zip(wanted, cells, strict=True):
        try:
            issued = geo_codes.issue(scheme, w.lat, w.lon, postcode=w.postcode, cell=cell)
        except PostcodeError:
            continue  # postcode_missing: issued when the commune's postcode is set
        first.append((w, issued))
    if not first:
        return []
    keys = sorted({issued.cell_key for _, issued in first})
    session.execute(
        text(
            "SELECT pg_advisory_xact_lock(:cls, h) FROM "
            "(SELECT hashtext(k) AS h FROM unnest(CAST(:keys AS text[])) k ORDER BY k) s"
        ),
        {"cls": _LOCK_CLASS, "keys": array_literal(lock_keys(keys))},
    )
    taken: dict[str, int] = dict(session.execute(_TAKEN, {"keys": array_literal(keys)}).all())
    planned = []
    for w, issued in first:
        sub_index = taken.get(issued.cell_key, 0) + 1
        taken[issued.cell_key] = sub_index
        if sub_index > 1:
            issued = geo_codes.issue(
                scheme, w.lat, w.lon, postcode=w.postcode, sub_index=sub_index, cell=issued.olc
            )
        planned.append(Planned(w, issued))
    return planned


_CODE_COLUMNS = (
    "code",
    "scheme",
    "postcode",
    "olc",
    "sub_index",
    "cell_key",
    "household_id",
    "commune_unit_id",
    "province_code",
    "geom",
    "submission_id",
    "reason",
)


def write(
    session: Session, planned: Sequence[Planned], *, reason: str, returning: bool = True
) -> dict[int, int]:
    """Insert the planned codes; code id by household id (``returning=False``: one COPY, the
    intake path, which needs no ids)."""
    if not planned:
        return {}
    rows = [
        (
            p.issued.code,
            p.issued.scheme,
            p.issued.postcode,
            p.issued.olc,
            p.issued.sub_index,
            p.issued.cell_key,
            p.wanted.household_id,
            p.wanted.commune_unit_id,
            p.wanted.province_code,
            f"SRID=4326;POINT({p.wanted.lon!r} {p.wanted.lat!r})",
            p.wanted.submission_id,
            reason,
        )
        for p in planned
    ]
    cursor = raw_cursor(session)
    if not returning:
        copy_rows(cursor, "address_codes", _CODE_COLUMNS, rows)
        return {}
    returned = execute_values(
        cursor,
        f"INSERT INTO address_codes ({', '.join(_CODE_COLUMNS)}) VALUES %s "
        "RETURNING household_id, id",
        rows,
        page_size=1000,
        fetch=True,
    )
    return {household: code_id for household, code_id in returned}


def _mirror(session: Session, codes: dict[int, str | None]) -> None:
    if codes:
        session.execute(
            text(
                "UPDATE households h SET address_code = v.code FROM "
                "unnest(CAST(:ids AS bigint[]), CAST(:codes AS text[])) v(id, code) "
                "WHERE h.id = v.id AND h.address_code IS DISTINCT FROM v.code"
            ),
            {"ids": list(codes), "codes": list(codes.values())},
        )


# --- keeping codes in step with households ---------------------------------------------------

# The commune's postcode comes from its version valid now: a postcode set after the household
# was captured (a new version of the commune) is the one its code is issued under.
_STATE_SQL = """
SELECT h.id, h.status, ST_Y(h.geom), ST_X(h.geom), coalesce(cm.id, h.commune_unit_id),
       h.commune_code, cm.postcode, h.province_code, h.merged_into_id,
       a.id, a.code, ac.code AS code_commune,
       ST_Distance(h.geom::geography, a.geom::geography, false)
FROM households h
LEFT JOIN LATERAL (
    SELECT u.id, u.postcode FROM admin_units u
    WHERE u.code = h.commune_code AND u.level = 'commune'
      AND (u.valid_to IS NULL OR u.valid_to > now())
    ORDER BY u.valid_from DESC LIMIT 1
) cm ON TRUE
LEFT JOIN address_codes a ON a.household_id = h.id AND a.status = 'active'
LEFT JOIN admin_units ac ON ac.id = a.commune_unit_id
WHERE h.id = ANY(:ids)
ORDER BY h.id
FOR UPDATE OF h
"""


@dataclass(slots=True)
class Reconciled:
    """What ``reconcile`` did."""

    issued: dict[int, str]
    superseded: dict[str, str | None]  # old code → its successor


def reconcile(
    session: Session,
    household_ids: Iterable[int],
    *,
    policy: CodePolicy,
    actor: User | None,
    reason: str,
) -> Reconciled:
    """Bring the codes of these households in line with their state.

    Accepted without a code → issue. Accepted and moved more than ``policy.move_m`` or into another
    commune → issue a new code and supersede the old one by it. Merged → the active code is
    superseded by the survivor's. Any other status keeps what it has.
    """
    ids = sorted(set(household_ids))
    if not ids:
        return Reconciled({}, {})
    rows = session.execute(text(_STATE_SQL), {"ids": ids}).all()
    wanted, replacing, merged = [], {}, []
    for row in rows:
        hid, status, lat, lon, commune_id, commune, postcode, province, merged_into = row[:9]
        code_id, code, code_commune, distance = row[9:]
        if status == "merged" and code_id is not None:
            merged.append((hid, code_id, code, merged_into))
        if status != "accepted":
            continue
        moved = code_id is not None and (
            (distance or 0.0) > policy.move_m
            or (code_commune is not None and code_commune != commune)
        )
        if code_id is None or moved:
            wanted.append(Wanted(hid, lat, lon, postcode, commune_id, province))
            if moved:
                replacing[hid] = (code_id, code)
    result = Reconciled({}, {})
    if wanted:
        planned = plan(session, wanted, scheme=policy.scheme)
        # The old code stops being active first: one active code per household, always.
        for p in planned:
            if p.wanted.household_id in replacing:
                _supersede(session, replacing[p.wanted.household_id][0], None, why="moved")
        new_ids = write(session, planned, reason=reason)
        for p in planned:
            hid = p.wanted.household_id
            result.issued[hid] = p.issued.code
            if hid in replacing:
                old_id, old_code = replacing[hid]
                session.execute(
                    text("UPDATE address_codes SET superseded_by_id = :s WHERE id = :id"),
                    {"s": new_ids[hid], "id": old_id},
                )
                result.superseded[old_code] = p.issued.code
        _mirror(session, dict(result.issued))
    for hid, code_id, code, survivor in merged:
        successor = session.execute(
            text(
                "SELECT id, code FROM address_codes WHERE household_id = :s AND status = 'active'"
            ),
            {"s": survivor},
        ).first()
        _supersede(session, code_id, successor[0] if successor else None, why="merge")
        result.superseded[code] = successor[1] if successor else None
        _mirror(session, {hid: None})
    for old, new in result.superseded.items():
        audit.record(
            session,
            actor=actor,
            action="codes.supersede",
            entity="address_code",
            entity_id=old,
            after={"superseded_by": new, "reason": reason},
        )
    return result


def _supersede(session: Session, code_id: int, successor_id: int | None, *, why: str) -> None:
    session.execute(
        text(
            "UPDATE address_codes SET status = 'superseded', superseded_by_id = :s, "
            "superseded_at = now(), superseded_reason = :why WHERE id = :id"
        ),
        {"id": code_id, "s": successor_id, "why": why},
    )


def active_codes(session: Session, household_ids: Sequence[int]) -> dict[int, str]:
    """The active code of each household that has one."""
    rows = session.execute(
        text(
            "SELECT household_id, code FROM address_codes "
            "WHERE household_id = ANY(:ids) AND status = 'active'"
        ),
        {"ids": list(household_ids)},
    ).all()
    return {hid: code for hid, code in rows}


def retire(session: Session, code: str, *, why: str, actor: User | None) -> bool:
    """Undo an issuance (a reviewer reopened the decision that earned it): the code is
    superseded without a successor (never reissued) and the household has no code again."""
    row = session.execute(
        text("SELECT id, household_id FROM address_codes WHERE code = :c AND status = 'active'"),
        {"c": code},
    ).first()
    if row is None:
        return False
    _supersede(session, row[0], None, why=why)
    _mirror(session, {row[1]: None})
    audit.record(
        session,
        actor=actor,
        action="codes.retire",
        entity="address_code",
        entity_id=code,
        after={"household_id": row[1], "reason": why},
    )
    return True


def restore_after_unmerge(session: Session, household_id: int, *, actor: User | None) -> str | None:
    """Undoing a merge gives the household back the code the merge superseded (if any)."""
    row = session.execute(
        text(
            "SELECT id, code FROM address_codes WHERE household_id = :h AND status = 'superseded' "
            "AND superseded_reason = 'merge' ORDER BY superseded_at DESC, id DESC LIMIT 1"
        ),
        {"h": household_id},
    ).first()
    active = session.scalar(
        text("SELECT 1 FROM address_codes WHERE household_id = :h AND status = 'active'"),
        {"h": household_id},
    )
    if row is None or active:
        return None
    session.execute(
        text(
            "UPDATE address_codes SET status = 'active', superseded_by_id = NULL, "
            "superseded_at = NULL, superseded_reason = NULL WHERE id = :id"
        ),
        {"id": row[0]},
    )
    _mirror(session, {household_id: row[1]})
    audit.record(
        session,
        actor=actor,
        action="codes.restore",
        entity="address_code",
        entity_id=row[1],
        after={"household_id": household_id, "reason": "unmerge"},
    )
    return str(row[1])


def issue_pending(
    session: Session,
    *,
    unit: str | None = None,
    communes: Sequence[str] | None = None,
    policy: CodePolicy,
    actor: User | None,
) -> dict[int, str]:
    """Codes for accepted households that have none (e.g. their commune got a postcode)."""
    query = "SELECT h.id FROM households h WHERE h.status = 'accepted' AND h.address_code IS NULL"
    params: dict[str, Any] = {}
    if communes is not None:
        query += " AND h.commune_code = ANY(:communes)"
        params["communes"] = list(communes)
    if unit:
        query += (
            " AND (h.commune_code = :unit OR h.hamlet_code = :unit OR h.province_code = :unit"
            " OR h.commune_code IN (SELECT code FROM admin_units WHERE parent_code = :unit))"
        )
        params["unit"] = unit
    ids = list(session.scalars(text(query + " ORDER BY h.id"), params).all())
    issued: dict[int, str] = {}
    for start in range(0, len(ids), 5000):
        done = reconcile(
            session,
            ids[start : start + 5000],
            policy=policy,
            actor=actor,
            reason="pending",
        )
        issued |= done.issued
    if issued:
        audit.record(
            session,
            actor=actor,
            action="codes.issue_pending",
            entity="address_code",
            after={"unit": unit, "issued": len(issued)},
        )
    return issued


# --- decoding --------------------------------------------------------------------------------

_PII = ("head_name", "phone")
_PII_ROLES = frozenset({"reviewer", "admin", "postal"})


def decode(session: Session, text_code: str, *, user: User) -> dict[str, Any]:
    """What a code means: its cell, commune, status and successor, and its household."""
    parsed = geo_codes.parse(text_code)  # CodeFormatError: 422 with the reason
    row = session.execute(
        text(
            "SELECT a.code, a.scheme, a.status, s.code, a.olc, a.household_id, "
            "cm.code, cm.name, a.postcode, a.issued_at, a.superseded_at "
            "FROM address_codes a LEFT JOIN address_codes s ON s.id = a.superseded_by_id "
            "LEFT JOIN admin_units cm ON cm.id = a.commune_unit_id WHERE a.code = :code"
        ),
        {"code": parsed.code},
    ).first()
    if row is not None:
        code, scheme, status, successor, cell, household_id, c_code, c_name = row[:8]
        area = geo_codes.olc.decode(cell)
        return {
            "code": code,
            "scheme": scheme,
            "status": status,
            "superseded_by": successor,
            "postcode": row[8],
            "issued_at": row[9],
            "superseded_at": row[10],
            "cell": _cell(area),
            "commune": {"code": c_code, "name": c_name},
            "household": _household(session, household_id, user=user),
        }
    return _unissued(session, parsed)


def _unissued(session: Session, parsed: geo_codes.ParsedCode) -> dict[str, Any]:
    """A well-formed code nobody holds: its cell, if its postcode or point is known."""
    commune = None
    if parsed.reference_postcode is not None:
        commune = session.execute(
            text(
                "SELECT code, name, ST_Y(ST_PointOnSurface(geom)), ST_X(ST_PointOnSurface(geom)) "
                "FROM admin_units WHERE postcode = :p AND level = 'commune' AND geom IS NOT NULL "
                f"AND {valid_now()} LIMIT 1"
            ),
            {"p": parsed.reference_postcode},
        ).first()
        if commune is None:
            raise NotFoundError(
                f"Không có xã/phường nào mang mã bưu chính {parsed.reference_postcode}.",
                code="postcode_unknown",
            )
        area = geo_codes.decode(parsed, ref_lat=commune[2], ref_lon=commune[3])
    else:
        area = geo_codes.decode(parsed)
        lat, lon = area.center
        commune = session.execute(
            text(
                "SELECT code, name FROM admin_units WHERE level = 'commune' "
                "AND ST_Intersects(geom, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)) "
                f"AND {valid_now()} LIMIT 1"
            ),
            {"lat": lat, "lon": lon},
        ).first()
    return {
        "code": parsed.code,
        "scheme": parsed.scheme,
        "status": "unissued",
        "superseded_by": None,
        "postcode": parsed.postcode,
        "issued_at": None,
        "superseded_at": None,
        "cell": _cell(area),
        "commune": {"code": commune[0], "name": commune[1]} if commune else None,
        "household": None,
    }


def _cell(area: Any) -> dict[str, Any]:
    lat, lon = area.center
    return {"center": [lon, lat], "bbox": [area.west, area.south, area.east, area.north]}


def _household(session: Session, household_id: int, *, user: User) -> dict[str, Any]:
    row = (
        session.execute(
            text(
                "SELECT id, status, merged_into_id, hamlet_code, commune_code, house_number, "
                "street, kind, head_name, phone, team_id, national_code, address_code "
                "FROM households WHERE id = :id"
            ),
            {"id": household_id},
        )
        .mappings()
        .one()
    )
    out = dict(row)
    team_id = out.pop("team_id")
    may_see = user.role in _PII_ROLES or (user.role == "surveyor" and user.team_id == team_id)
    if not may_see:
        for name in _PII:
            out.pop(name)
    return out


# --- national digital address hand-over ------------------------------------------------------

_NATIONAL = re.compile(r"^[0-9]{10}$")


@dataclass(slots=True)
class NationalImport:
    """The outcome of ``import_national``: applied only when there are no errors."""

    applied: int = 0
    unchanged: int = 0
    errors: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"applied": self.applied, "unchanged": self.unchanged, "errors": self.errors or []}


def import_national(session: Session, data: bytes, *, actor: User | None) -> NationalImport:
    """Attach centrally issued 10-digit national codes (CSV: ``household_id`` or
    ``address_code``, and ``national_code``). All or nothing: any bad line refuses the file."""
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
        fields = set(reader.fieldnames or ())
        lines = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadRequestError(
            "Tệp phải là CSV UTF-8 có dòng tiêu đề.", code="file_unreadable"
        ) from exc
    if "national_code" not in fields or not fields & {"household_id", "address_code"}:
        raise BadRequestError(
            "Tệp CSV cần cột national_code và một trong hai cột household_id hoặc address_code.",
            code="field_missing",
        )
    errors: list[dict[str, Any]] = []
    wanted: dict[int, tuple[int, str]] = {}  # household → (line, national code)
    by_national: dict[str, int] = {}
    for number, line in enumerate(lines, start=2):
        national = (line.get("national_code") or "").strip()
        if not _NATIONAL.match(national):
            errors.append(_line_error(number, "national_code_invalid", national))
            continue
        household = _resolve_household(session, line)
        if household is None:
            errors.append(_line_error(number, "household_unknown", _reference(line)))
            continue
        if national in by_national and by_national[national] != household:
            errors.append(_line_error(number, "national_code_reused", national))
            continue
        if household in wanted and wanted[household][1] != national:
            errors.append(_line_error(number, "household_repeated", str(household)))
            continue
        by_national[national] = household
        wanted[household] = (number, national)
    if by_national:
        taken = session.execute(
            text("SELECT national_code, id FROM households WHERE national_code = ANY(:codes)"),
            {"codes": list(by_national)},
        ).all()
        for national, holder in taken:
            if holder != by_national[national]:
                errors.append(
                    _line_error(wanted[by_national[national]][0], "national_code_reused", national)
                )
    if errors:
        return NationalImport(errors=sorted(errors, key=lambda e: e["line"]))
    current: dict[int, str | None] = dict(
        session.execute(
            text("SELECT id, national_code FROM households WHERE id = ANY(:ids)"),
            {"ids": list(wanted)},
        ).all()
    )
    changes = {h: n for h, (_, n) in wanted.items() if current.get(h) != n}
    if changes:
        session.execute(
            text(
                "UPDATE households h SET national_code = v.code FROM "
                "unnest(CAST(:ids AS bigint[]), CAST(:codes AS text[])) v(id, code) "
                "WHERE h.id = v.id"
            ),
            {"ids": list(changes), "codes": list(changes.values())},
        )
        audit.record(
            session,
            actor=actor,
            action="codes.import_national",
            entity="household",
            after={"applied": len(changes), "households": sorted(changes)[:1000]},
        )
    return NationalImport(applied=len(changes), unchanged=len(wanted) - len(changes), errors=[])


def _reference(line: dict[str, Any]) -> str:
    return str(line.get("household_id") or line.get("address_code") or "")


def _resolve_household(session: Session, line: dict[str, Any]) -> int | None:
    raw_id = (line.get("household_id") or "").strip()
    if raw_id:
        if not raw_id.isdigit():
            return None
        return session.scalar(
            text("SELECT id FROM households WHERE id = :id AND status <> 'merged'"),
            {"id": int(raw_id)},
        )
    raw_code = (line.get("address_code") or "").strip()
    try:
        parsed = geo_codes.parse(raw_code)
    except GeoError:
        return None
    return session.scalar(
        text("SELECT household_id FROM address_codes WHERE code = :c AND status = 'active'"),
        {"c": parsed.code},
    )


_LINE_MESSAGES = {
    "national_code_invalid": "Mã địa chỉ quốc gia phải gồm đúng 10 chữ số: '{value}'.",
    "household_unknown": "Không tìm thấy hộ '{value}' (mã hộ hoặc mã địa chỉ đang hiệu lực).",
    "national_code_reused": "Mã quốc gia {value} được gán cho hai hộ khác nhau.",
    "household_repeated": "Hộ {value} có hai mã quốc gia khác nhau trong tệp.",
}


def _line_error(line: int, code: str, value: str) -> dict[str, Any]:
    return {"line": line, "code": code, "message": _LINE_MESSAGES[code].format(value=value)}
