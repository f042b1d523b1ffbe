"""Field intake: store every batch verbatim, then validate and write it set-based.

Order of work for one request (PRODUCT.md, "Intake"):

1. The envelope is judged as a whole (JSON, a ``submissions`` array, at most N items); a bad
   envelope is a 4xx with nothing stored.
2. The request body is stored verbatim (with its SHA-256) and committed *before* anything else,
   so no later failure can lose a submission.
3. Items are parsed and placed in memory (pure ``geo`` code), then written in one transaction:
   submissions are claimed with ``INSERT … ON CONFLICT (client_id) DO NOTHING``, which makes a
   concurrent resend of the same id wait for the first and then find it, so one id never makes
   two households. Households (a new one is its own first version until it changes: migration
   0006), the versions of later observations, address codes and audit events follow in a few
   bulk statements.
4. If that transaction fails, the items are still recorded with status ``error`` (and the body
   is in ``intake_batches``); a retry with the same ids processes them again.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg2
from psycopg2.extras import Json, execute_values
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from geo import olc
from geo.dedupe import DedupeParams, HouseholdFacts
from geo.issues import Issue, make_issue, outcome
from geo.placement import Placement, Query
from geo.validation import (
    Limits,
    ParsedItem,
    canonical_json,
    parse_item,
    payload_diff,
)
from service import audit, codes, dedupe
from service.bulk import JsonText, JsonValue, array_literal, copy_rows
from service.codes import CodePolicy
from service.db import Database, raw_cursor
from service.errors import BadRequestError, MalformedRequestError
from service.models import User
from service.unit_index import CachedIndex, UnitIndexCache

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IntakeOptions:
    """Settings that shape intake."""

    max_items: int
    limits: Limits
    dedupe: DedupeParams = field(default_factory=DedupeParams)
    codes: CodePolicy = field(default_factory=CodePolicy)


@dataclass(slots=True, eq=False)
class _Item:
    """One item on its way through a batch (a work record: equal only to itself)."""

    index: int
    raw: Any
    sha256: str
    parsed: ParsedItem
    issues: list[Issue] = field(default_factory=list)
    status: str = "rejected"
    placement: Placement | None = None
    household_id: int | None = None
    submission_id: int | None = None
    result: dict[str, Any] | None = None
    stored: Any = None  # the payload as logged, when it differs from ``raw``
    address_code: str | None = None
    province_code: str | None = None  # of the commune the point was placed in
    log_province: str | None = None  # of the submission log row: the team's, when it has one
    payload_json: str = ""  # the payload as logged, JSON text (the canonical form)
    olc: str | None = None  # the point's address-code cell, when a code was planned
    client_text: str | None = None  # parsed.id as text, made once (for the log and the result)


def parse_envelope(body: bytes, *, max_items: int) -> list[Any]:
    """The items of a request body; a malformed envelope raises (nothing is stored)."""
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequestError(
            f"Nội dung không phải JSON hợp lệ (UTF-8): {exc.msg} tại vị trí {exc.pos}.",
            code="json_invalid",
        ) from exc
    items = envelope.get("submissions") if isinstance(envelope, dict) else None
    if not isinstance(items, list):
        raise BadRequestError(
            'Nội dung phải là đối tượng JSON có mảng "submissions".', code="envelope_invalid"
        )
    if len(items) > max_items:
        raise BadRequestError(
            f"Một lần gửi tối đa {max_items} hộ (nhận {len(items)}): hãy chia nhỏ.",
            code="too_many_items",
            max_items=max_items,
        )
    return items


def submit(
    database: Database,
    cache: UnitIndexCache,
    *,
    body: bytes,
    content_type: str | None,
    user: User,
    now: datetime,
    options: IntakeOptions,
    channel: str = "api",
    raw_items: list[Any] | None = None,
) -> list[dict[str, Any]]:
    """Store, validate and write one batch; the per-item results in request order.

    ``raw_items`` are the batch's items when ``body`` is not a JSON envelope (an OpenRosa
    instance, ``channel="openrosa"``): the body is still stored verbatim first.
    """
    if raw_items is None:
        raw_items = parse_envelope(body, max_items=options.max_items)
    batch_id, area, index = _store_batch(
        database,
        cache,
        body=body,
        content_type=content_type,
        user=user,
        n=len(raw_items),
        channel=channel,
        now=now,
    )
    for attempt in range(_ATTEMPTS):
        items = [_parse(i, raw, now=now, limits=options.limits) for i, raw in enumerate(raw_items)]
        try:
            with database.sessions() as session, session.begin():
                _process(
                    session,
                    index,
                    items,
                    batch_id=batch_id,
                    area=area,
                    user=user,
                    contended=attempt > 0,
                    params=options.dedupe,
                    policy=options.codes,
                )
            return [item.result or {} for item in items]
        except (IntegrityError, psycopg2.IntegrityError) as exc:
            if _lost_race(exc) and attempt + 1 < _ATTEMPTS:
                continue  # a concurrent resend stored some ids first: the next pass yields
            _record_failure(
                database, items, batch_id=batch_id, team_province=area.province, user=user
            )
            raise
        except Exception:
            _record_failure(
                database, items, batch_id=batch_id, team_province=area.province, user=user
            )
            raise
    raise AssertionError("unreachable")


#: The first pass COPYs optimistically; a pass after a lost race claims row by row.
_ATTEMPTS = 2


def _lost_race(exc: Exception) -> bool:
    """True when another request committed one of our client ids first."""
    # COPY runs on the raw DBAPI cursor, so its error arrives unwrapped by SQLAlchemy.
    diag = getattr(getattr(exc, "orig", exc), "diag", None)
    return getattr(diag, "constraint_name", None) == "submissions_client_id_key"


def _parse(index: int, raw: Any, *, now: datetime, limits: Limits) -> _Item:
    canonical = canonical_json(raw)
    stored = _storable(raw, canonical)
    # Issues name fields by their keys: parse the NUL-free copy so no issue carries a NUL.
    parsed = parse_item(stored, now=now, limits=limits)
    item = _Item(index=index, raw=raw, sha256=hashlib.sha256(canonical).hexdigest(), parsed=parsed)
    item.client_text = str(parsed.id) if parsed.id is not None else None
    item.payload_json = canonical.decode()
    if stored is not raw:
        # jsonb cannot hold U+0000: keep a marked copy in the log (the body has the original)
        # and reject the item, naming the fields that carried it.
        fields = [d["path"].replace("\x00", "\ufffd") for d in payload_diff(raw, stored)]
        nul = [make_issue("item_invalid", {"field": f}) for f in fields]
        item.parsed = replace(parsed, issues=[*parsed.issues, *nul], household=None)
        item.stored = stored
        item.payload_json = orjson.dumps(stored).decode()
    return item


def _storable(raw: Any, text_: bytes) -> Any:
    """``raw`` itself, or a copy with NUL characters replaced when it contains any."""
    if b"\\u0000" not in text_:
        return raw
    return orjson.loads(text_.replace(b"\\u0000", b"\\ufffd"))


def _store_batch(
    database: Database,
    cache: UnitIndexCache,
    *,
    body: bytes,
    content_type: str | None,
    user: User,
    n: int,
    channel: str,
    now: datetime,
) -> tuple[uuid.UUID, TeamArea, CachedIndex]:
    """Store the request body verbatim and commit; its id, the team's area at ``now`` and
    the unit index it was judged by (the batch is placed with the same one)."""
    batch_id = uuid.uuid4()
    with database.sessions() as session, session.begin():
        index = cache.get(session)
        area = team_area(session, index, user, at=now)
        session.execute(
            text(
                "INSERT INTO intake_batches (id, user_id, channel, content_type, body, "
                "body_sha256, item_count, province_code) "
                "VALUES (:id, :user_id, :channel, :ct, :body, :sha, :n, :province)"
            ),
            {
                "id": batch_id,
                "user_id": user.id,
                "channel": channel,
                "ct": content_type,
                "body": body,
                "sha": hashlib.sha256(body).hexdigest(),
                "n": n,
                "province": area.province,
            },
        )
    return batch_id, area, index


def _process(
    session: Session,
    index: CachedIndex,
    items: list[_Item],
    *,
    batch_id: uuid.UUID,
    area: TeamArea,
    user: User,
    contended: bool,
    params: DedupeParams,
    policy: CodePolicy,
) -> None:
    first, repeats = _split_repeats(items)
    existing = _existing(session, [i.parsed.id for i in first if i.parsed.id is not None])
    fresh = [i for i in first if i.parsed.id is None or i.parsed.id not in existing]
    retry = [i for i in first if i.parsed.id in existing and _retryable(existing[i.parsed.id], i)]
    work = fresh + retry
    _validate(session, index, work, area=area)
    _reserve_ids(session, work, fresh)
    matches = _find_duplicates(session, work, params)
    for item in work:
        item.log_province = _log_province(item, area.province)
    claimed = _claim(session, fresh, batch_id=batch_id, user=user, contended=contended)
    claimed |= _reclaim(session, retry)
    done = [i for i in work if i.submission_id in claimed]
    planned = _plan_codes(session, done, policy)
    _write_households(session, done, user=user)
    codes.write(session, planned, reason="intake", returning=False)
    updated = [i.household_id for i in done if i.parsed.household_ref is not None]
    by_household = {i.household_id: i for i in done}
    for household_id, code in _codes_of(session, updated, policy, user=user).items():
        by_household[household_id].address_code = code
    lost = [i for i in work if i.submission_id not in claimed]
    _record_duplicates(session, matches, done, lost, params, user=user, policy=policy)
    for item in done:
        item.result = _result(item)
    existing |= _existing(session, [i.parsed.id for i in lost if i.parsed.id is not None])
    for item in first:
        if item.result is None:
            item.result = (
                _replay(existing[item.parsed.id], item) if item.parsed.id else _result(item)
            )
    for item, original in repeats:
        item.result = _repeat_result(item, original)
    _audit_batch(session, items, done, batch_id=batch_id, user=user)


def _log_province(item: _Item, team_province: str | None) -> str | None:
    """The province of an item's log row: the team's (where a resend comes from); a team
    across provinces logs each item in the province its point fell in (if it was placed)."""
    return team_province or item.province_code


def _split_repeats(items: list[_Item]) -> tuple[list[_Item], list[tuple[_Item, _Item]]]:
    """The first occurrence of each id, and later occurrences paired with their first."""
    seen: dict[uuid.UUID, _Item] = {}
    first, repeats = [], []
    for item in items:
        key = item.parsed.id
        if key is not None and key in seen:
            repeats.append((item, seen[key]))
            continue
        if key is not None:
            seen[key] = item
        first.append(item)
    return first, repeats


@dataclass(frozen=True, slots=True)
class _Stored:
    id: int
    client_id: uuid.UUID
    payload: Any
    sha256: str
    status: str
    issues: list[Any]
    household_id: int | None
    address_code: str | None  # issued when this submission was accepted


def _existing(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, _Stored]:
    if not ids:
        return {}
    with raw_cursor(session) as cursor:  # uuid columns arrive as uuid.UUID (register_uuid)
        cursor.execute(
            "SELECT s.id, s.client_id, s.payload, s.payload_sha256, s.status, s.issues, "
            "s.household_id, a.code FROM submissions s "
            "LEFT JOIN address_codes a ON a.submission_id = s.id "
            "WHERE s.client_id = ANY(CAST(%(ids)s AS uuid[]))",
            {"ids": array_literal(ids)},
        )
        return {row[1]: _Stored(*row) for row in cursor.fetchall()}


def _retryable(stored: _Stored, item: _Item) -> bool:
    """A resend of an item whose first processing failed: process it again."""
    return stored.status in ("received", "error") and stored.sha256 == item.sha256


def _validate(session: Session, index: CachedIndex, items: list[_Item], *, area: TeamArea) -> None:
    placeable = [i for i in items if i.parsed.lat is not None and i.parsed.captured_at]
    queries = [_query(i.parsed) for i in placeable]
    for item, placement in zip(placeable, index.index.locate_many(queries), strict=True):
        item.placement = placement
        if placement.commune is not None:
            item.province_code = index.province_of.get(placement.commune.id)
    refs = _referenced(session, [i.parsed.household_ref for i in items if i.parsed.household_ref])
    for item in items:
        item.issues = list(item.parsed.issues) + _spatial_issues(index, item, area)
        ref = item.parsed.household_ref
        if ref is not None and not _may_update(refs.get(ref), area):
            item.issues.append(make_issue("item_invalid", {"field": "household_id"}))
        item.status = outcome(item.issues)


def _referenced(session: Session, ids: list[int]) -> dict[int, tuple[str | None, str | None]]:
    """Hamlet and commune of the live households that items refer to."""
    if not ids:
        return {}
    rows = session.execute(
        text(
            "SELECT id, hamlet_code, commune_code FROM households "
            "WHERE id = ANY(:ids) AND status NOT IN ('merged', 'retired') FOR UPDATE"
        ),
        {"ids": ids},
    )
    return {row[0]: (row[1], row[2]) for row in rows}


def _may_update(where: tuple[str | None, str | None] | None, area: TeamArea) -> bool:
    """A surveyor may add observations only to live households of the team's area."""
    if where is None:
        return False
    hamlet, commune = where
    return hamlet in area.hamlets or commune in area.communes


def _plan_codes(session: Session, done: list[_Item], policy: CodePolicy) -> list[codes.Planned]:
    """Codes for the batch's new accepted households, in acceptance (request) order."""
    wanted = []
    for item in done:
        if item.status != "accepted" or item.parsed.household_ref is not None:
            continue
        if any(i.code == "duplicate_linked" for i in item.issues):
            continue  # merged into its older twin right away: that one holds the code
        p, placement = item.parsed, item.placement
        assert placement is not None and placement.commune is not None
        assert p.lat is not None and p.lon is not None and item.household_id is not None
        wanted.append(
            codes.Wanted(
                household_id=item.household_id,
                lat=p.lat,
                lon=p.lon,
                postcode=placement.commune.postcode,
                commune_unit_id=placement.commune.id,
                province_code=item.province_code,
                submission_id=item.submission_id,
            )
        )
    planned = codes.plan(session, wanted, scheme=policy.scheme)
    by_id = {i.household_id: i for i in done}
    for code in planned:
        by_id[code.wanted.household_id].address_code = code.issued.code
        by_id[code.wanted.household_id].olc = code.issued.olc  # its cell: not encoded again
    return planned


def _codes_of(
    session: Session, household_ids: list[int | None], policy: CodePolicy, *, user: User
) -> dict[int, str]:
    """Codes after later observations: a move beyond the policy's distance earns a new one."""
    ids = [i for i in household_ids if i is not None]
    if not ids:
        return {}
    codes.reconcile(session, ids, policy=policy, actor=user, reason="observation")
    rows = session.execute(
        text("SELECT id, address_code FROM households WHERE id = ANY(:ids)"), {"ids": ids}
    ).all()
    return {hid: code for hid, code in rows if code}


def _find_duplicates(
    session: Session, items: list[_Item], params: DedupeParams
) -> list[dedupe.Match]:
    """Each new household against the table and the rest of the batch; holds set on items.

    The newer household of a qualifying pair gets ``possible_duplicate`` (or, when auto-linking
    is on and the pair is exact, ``duplicate_linked``: it is merged into the older one).
    """
    new = [i for i in items if i.status != "rejected" and i.parsed.household_ref is None]
    probes = [_probe(i) for i in new]
    matches = [m for m in dedupe.find_for_new(session, probes, params) if m.qualifies(params)]
    by_household = {i.household_id: i for i in new}
    holders: dict[int, list[dedupe.Match]] = {}
    for match in matches:
        if match.b in by_household:
            holders.setdefault(match.b, []).append(match)
    for household_id, found in holders.items():
        item = by_household[household_id]
        exact = [m for m in found if m.score.exact] if params.auto_link else []
        if exact:
            target = min(m.a for m in exact)
            item.issues.append(make_issue("duplicate_linked", {"household_id": target}))
        else:
            best = max(m.score.score for m in found)
            item.issues.append(dedupe.hold_issue((m.a for m in found), best))
        item.status = outcome(item.issues)
    return matches


def _probe(item: _Item) -> dedupe.Probe:
    p, h, placement = item.parsed, item.parsed.household, item.placement
    assert h is not None and placement is not None and placement.commune is not None
    assert p.lon is not None and p.lat is not None and item.household_id is not None
    facts = HouseholdFacts(
        id=item.household_id,
        hamlet_code=placement.hamlet.code if placement.hamlet else p.hamlet_code,
        commune_code=placement.commune.code,
        head_name=h.head_name,
        house_number=h.house_number,
        phone=h.phone,
        kind=h.kind,
        accuracy_m=p.accuracy_m,
    )
    return dedupe.Probe(lon=p.lon, lat=p.lat, facts=facts, province_code=item.province_code)


def _record_duplicates(
    session: Session,
    matches: list[dedupe.Match],
    done: list[_Item],
    lost: list[_Item],
    params: DedupeParams,
    *,
    user: User,
    policy: CodePolicy,
) -> None:
    """Store the candidates of the households written (not of those ``lost`` to a concurrent
    resend); hold or link as decided."""
    if not matches:
        return
    unwritten = {i.household_id for i in lost}
    kept = [m for m in matches if m.a not in unwritten and m.b not in unwritten]
    ids = dedupe.store(session, kept)
    linked = {
        i.household_id: next(x.detail for x in i.issues if x.code == "duplicate_linked")
        for i in done
        if any(x.code == "duplicate_linked" for x in i.issues)
    }
    batch = {i.household_id for i in done}
    # A pair whose newer member is already in the table (a concurrent batch drew larger ids).
    dedupe.refresh_holds(
        session, {m.b for m in kept if m.b not in batch}, actor=user, policy=policy
    )
    for match in kept:
        detail = linked.get(match.b)
        candidate_id = ids.get((match.a, match.b))
        if candidate_id and detail is not None and detail["household_id"] == match.a:
            dedupe.resolve(
                session,
                candidate_id,
                action="merge",
                keep=match.a,
                actor=user,
                automatic=True,
                policy=policy,
            )


def _query(parsed: ParsedItem) -> Query:
    assert parsed.lat is not None and parsed.lon is not None and parsed.captured_at is not None
    return Query(
        lon=parsed.lon,
        lat=parsed.lat,
        accuracy_m=parsed.accuracy_m,
        hamlet_code=parsed.hamlet_code,
        at=parsed.captured_at,
    )


def _spatial_issues(index: CachedIndex, item: _Item, area: TeamArea) -> list[Issue]:
    parsed = item.parsed
    if item.placement is None:
        if parsed.swapped and parsed.captured_at and parsed.lat is None:
            lat, lon = parsed.swapped
            hint = index.index.swap_hint(lat=lon, lon=lat, at=parsed.captured_at)
            return [hint] if hint else []
        return []
    issues = list(item.placement.issues)
    if item.placement.commune is not None and not _in_area(item.placement, area):
        issues.append(make_issue("outside_team_area", {"hamlet_code": parsed.hamlet_code}))
    return issues


def _in_area(placement: Placement, area: TeamArea) -> bool:
    """The claimed hamlet (or, when unknown, where the point is) belongs to the team's units."""
    hamlets, communes = area.hamlets, area.communes
    unit = placement.claimed or placement.hamlet
    if unit is not None:
        return unit.code in hamlets or unit.parent_code in communes
    return placement.commune is not None and placement.commune.code in communes


@dataclass(frozen=True, slots=True)
class TeamArea:
    """Where a team may capture: its hamlet codes (codes that name no current unit count as
    hamlets still to come) and commune codes (all their hamlets), and the province of its
    units when they lie in one province (the distribution key of its raw batches and log rows
    on a distributed database, docs/scaling.md; None for a team across provinces)."""

    hamlets: frozenset[str]
    communes: frozenset[str]
    province: str | None


def team_area(session: Session, index: CachedIndex, user: User, *, at: datetime) -> TeamArea:
    """The team's area: its unit codes (one primary-key read) resolved against the cached
    unit index as valid at ``at``, without joining ``admin_units`` on every batch."""
    codes_ = session.scalars(
        text("SELECT unit_code FROM team_units WHERE team_id = :team"), {"team": user.team_id}
    ).all()
    units = {code: index.index.unit(code, at=at) for code in codes_}
    provinces = {index.province_of.get(u.id) for u in units.values() if u is not None}
    provinces.discard(None)
    return TeamArea(
        hamlets=frozenset(c for c, u in units.items() if u is None or u.level == "hamlet"),
        communes=frozenset(c for c, u in units.items() if u is not None and u.level == "commune"),
        province=provinces.pop() if len(provinces) == 1 else None,
    )


# Ids are drawn up front (so a batch is written with COPY), as two arrays in one statement.
# The sequences are looked up once (OFFSET 0 keeps the lookup from being inlined into every
# row): per row, it cost 9.5 ms for 1,000 + 1,000 ids against 1.0 ms.
_DRAW_IDS = (
    "SELECT ARRAY(SELECT nextval(s.submissions) FROM generate_series(1, %(submissions)s)), "
    "ARRAY(SELECT nextval(s.households) FROM generate_series(1, %(households)s)) "
    "FROM (SELECT CAST(pg_get_serial_sequence('submissions', 'id') AS regclass) AS submissions, "
    "CAST(pg_get_serial_sequence('households', 'id') AS regclass) AS households OFFSET 0) s"
)


def _reserve_ids(session: Session, items: list[_Item], fresh: list[_Item]) -> None:
    """Draw submission ids for the fresh items and household ids for the new households."""
    live = [i for i in items if i.status != "rejected"]
    for item in live:
        item.household_id = item.parsed.household_ref
    need = [i for i in live if i.parsed.household_ref is None]
    if not fresh and not need:
        return
    with raw_cursor(session) as cursor:
        cursor.execute(_DRAW_IDS, {"submissions": len(fresh), "households": len(need)})
        submission_ids, household_ids = cursor.fetchone()
    for item, submission_id in zip(fresh, submission_ids, strict=True):
        item.submission_id = submission_id
    for item, household_id in zip(need, household_ids, strict=True):
        item.household_id = household_id


def _submission_values(item: _Item) -> dict[str, Any]:
    placement = item.placement
    return {
        "province_code": item.log_province,
        "captured_at": item.parsed.captured_at,
        "hamlet_code": item.parsed.hamlet_code,
        "commune_code": placement.commune.code if placement and placement.commune else None,
        "status": item.status,
        "issues": [i.as_dict() for i in item.issues],
        "household_id": item.household_id if item.status != "rejected" else None,
    }


_SUBMISSION_COLUMNS = (
    "province_code",
    "id",
    "client_id",
    "batch_id",
    "item_index",
    "payload",
    "payload_sha256",
    "user_id",
    "team_id",
    "captured_at",
    "hamlet_code",
    "commune_code",
    "status",
    "issues",
    "household_id",
    "processed_at",
)


def _claim(
    session: Session, items: list[_Item], *, batch_id: uuid.UUID, user: User, contended: bool
) -> set[int]:
    """Write the batch's new submissions to the log; returns the submission ids claimed.

    First pass: one COPY. A concurrent request that COPYs one of the same client ids makes it
    wait for that commit and fail on the unique index; :func:`submit` then runs a contended
    pass, which inserts with ``ON CONFLICT (client_id) DO NOTHING`` so the ids stored by the
    other request are not claimed here but replayed.
    """
    if not items:
        return set()
    # Per-batch values formatted once, not per row.
    now, batch = datetime.now(UTC).isoformat(), str(batch_id)
    rows = []
    for item in items:
        v = _submission_values(item)
        rows.append(
            (
                v["province_code"],
                item.submission_id,
                item.client_text,
                batch,
                item.index,
                JsonText(item.payload_json),
                item.sha256,
                user.id,
                user.team_id,
                v["captured_at"],
                v["hamlet_code"],
                v["commune_code"],
                v["status"],
                JsonValue(v["issues"]),
                v["household_id"],
                now,
            )
        )
    if not contended:
        copy_rows(raw_cursor(session), "submissions", _SUBMISSION_COLUMNS, rows)
        return {item.submission_id for item in items if item.submission_id is not None}
    returned = execute_values(
        raw_cursor(session),
        f"INSERT INTO submissions ({', '.join(_SUBMISSION_COLUMNS)}) VALUES %s "
        "ON CONFLICT (client_id) DO NOTHING RETURNING id",
        [
            tuple(Json(v.value, dumps=_dumps) if isinstance(v, JsonValue) else v for v in row)
            for row in rows
        ],
        page_size=len(rows),
        fetch=True,
    )
    return {row[0] for row in returned}


def _reclaim(session: Session, items: list[_Item]) -> set[int]:
    """Process again the resends of items whose first processing failed."""
    claimed = set()
    for item in items:
        v = _submission_values(item)
        item.submission_id = session.execute(
            text(
                "UPDATE submissions SET status = :status, issues = :issues, household_id = :hh, "
                "captured_at = :captured_at, hamlet_code = :hamlet_code, "
                "province_code = :province_code, "
                "commune_code = :commune_code, processed_at = now(), error = NULL "
                "WHERE client_id = :cid AND status IN ('received', 'error') RETURNING id"
            ),
            {
                **v,
                "issues": orjson.dumps(v["issues"]).decode(),
                "hh": v["household_id"],
                "cid": item.parsed.id,
            },
        ).scalar_one_or_none()
        if item.submission_id is not None:  # else a concurrent resend got there first
            claimed.add(item.submission_id)
    return claimed


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


_HOUSEHOLD_FIELDS = (
    "status",
    "province_code",
    "commune_code",
    "hamlet_code",
    "commune_unit_id",
    "hamlet_unit_id",
    "team_id",
    "accuracy_m",
    "mock_location",
    "head_name",
    "head_name_folded",
    "house_number",
    "street",
    "phone",
    "phone_raw",
    "kind",
    "members",
    "note",
    "issues",
    "captured_at",
    "olc",
)


def _write_households(session: Session, items: list[_Item], *, user: User) -> None:
    """Create (or, for a household reference, update) the households of accepted/flagged items."""
    live = [i for i in items if i.status != "rejected"]
    new = [i for i in live if i.parsed.household_ref is None]
    updates = [i for i in live if i.parsed.household_ref is not None]
    if new:
        rows = []
        for item in new:
            # EWKT with repr() floats: exact, and cheaper to build than EWKB.
            geom = f"SRID=4326;POINT({item.parsed.lon!r} {item.parsed.lat!r})"
            fields = _household_fields(item, user=user)
            rows.append((item.household_id, *fields, geom, item.address_code, item.submission_id))
        columns = ("id", *_HOUSEHOLD_FIELDS, "geom", "address_code", "first_submission_id")
        copy_rows(raw_cursor(session), "households", columns, rows)
    values = {
        i.index: dict(zip(_HOUSEHOLD_FIELDS, _household_fields(i, user=user), strict=True))
        for i in updates
    }
    # A new household's first version is the household row itself until it first changes
    # (then the database keeps it: migration 0006); later observations add versions here.
    versions = [(i, *_update_household(session, i, values[i.index])) for i in updates]
    _write_versions(session, versions, values, user=user)


def _household_fields(item: _Item, *, user: User) -> tuple[Any, ...]:
    """The household's ``_HOUSEHOLD_FIELDS``, in that order (a COPY row needs no dict)."""
    p, h, placement = item.parsed, item.parsed.household, item.placement
    assert h is not None and placement is not None and placement.commune is not None
    assert p.lat is not None and p.lon is not None
    hamlet = placement.hamlet
    return (
        item.status,
        item.province_code,
        placement.commune.code,
        hamlet.code if hamlet else p.hamlet_code,
        placement.commune.id,
        hamlet.id if hamlet else None,
        user.team_id,
        p.accuracy_m,
        p.mock,
        h.head_name,
        h.head_name_folded,
        h.house_number,
        h.street,
        h.phone,
        h.phone_raw,
        h.kind,
        h.members,
        h.note,
        JsonValue([i.as_dict() for i in item.issues]),
        p.captured_at,
        item.olc or olc.encode(p.lat, p.lon, olc.CELL_DIGITS),
    )


def _update_household(
    session: Session, item: _Item, values: dict[str, Any]
) -> tuple[int, str, str | None]:
    """Apply another observation to an existing household: its version number, reason, and
    the household's province after it (the version row's, so that it lives with its
    household wherever the observation's point fell).

    Phones sync late, so observations arrive out of capture order: one captured before the
    household's current state is kept in the history (reason ``submission_late``) but does
    not overwrite the newer fields.
    """
    values = {**values, "issues": _dumps(values["issues"].value)}
    sets = ", ".join(f"{name} = :{name}" for name in _HOUSEHOLD_FIELDS)
    params = {**values, "lon": item.parsed.lon, "lat": item.parsed.lat, "id": item.household_id}
    row = session.execute(
        text(
            f"UPDATE households SET {sets}, geom = ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), "
            "version = version + 1 WHERE id = :id AND captured_at <= :captured_at "
            "RETURNING version, province_code"
        ),
        params,
    ).one_or_none()
    if row is not None:
        return int(row[0]), "submission", row[1]
    version, province = session.execute(
        text(
            "UPDATE households SET version = version + 1 WHERE id = :id "
            "RETURNING version, province_code"
        ),
        {"id": item.household_id},
    ).one()
    return int(version), "submission_late", province


def _write_versions(
    session: Session,
    versions: list[tuple[_Item, int, str, str | None]],
    values: dict[int, dict[str, Any]],
    *,
    user: User,
) -> None:
    """One immutable version row per change: the per-household audit trail (who, when, what)."""
    if not versions:
        return
    rows = [
        (
            i.household_id,
            v,
            i.submission_id,
            user.id,
            reason,
            JsonValue(_snapshot(i, values[i.index])),
            province,
        )
        for i, v, reason, province in versions
    ]
    columns = (
        "household_id",
        "version",
        "submission_id",
        "actor_user_id",
        "reason",
        "data",
        "province_code",
    )
    copy_rows(raw_cursor(session), "household_versions", columns, rows)
    for item, version, *_ in versions:
        if version > 1:
            audit.record(
                session,
                actor=user,
                action="households.update",
                entity="household",
                entity_id=item.household_id,
                after={"version": version, "submission": str(item.parsed.id)},
            )


_SNAPSHOT_FIELDS = (
    "status",
    "commune_code",
    "hamlet_code",
    "accuracy_m",
    "mock_location",
    "head_name",
    "house_number",
    "street",
    "phone",
    "phone_raw",
    "kind",
    "members",
    "note",
)


def _snapshot(item: _Item, values: dict[str, Any]) -> dict[str, Any]:
    """The household as this observation leaves it (stored in household_versions)."""
    p = item.parsed
    return {
        **{name: values[name] for name in _SNAPSHOT_FIELDS},
        "lon": p.lon,
        "lat": p.lat,
        "captured_at": p.captured_at.isoformat() if p.captured_at else None,
        "issues": [i.code for i in item.issues],
    }


def _client_id(item: _Item) -> Any:
    if item.client_text is not None:
        return item.client_text
    raw_id = item.raw.get("id") if isinstance(item.raw, dict) else None
    return raw_id if isinstance(raw_id, str | int) else None


def _result(item: _Item) -> dict[str, Any]:
    return {
        "id": _client_id(item),
        "status": item.status,
        "household_id": item.household_id if item.status != "rejected" else None,
        "address_code": item.address_code,
        "issues": [i.as_dict() for i in item.issues],
    }


def _replay(stored: _Stored, item: _Item) -> dict[str, Any]:
    """The first result for a resend of the same payload; a conflict for a different one."""
    if stored.sha256 == item.sha256:
        return {
            "id": str(stored.client_id),
            "status": stored.status,
            "household_id": stored.household_id,
            "address_code": stored.address_code,
            "issues": stored.issues,
        }
    return _conflict(item, stored.payload, household_id=stored.household_id)


def _conflict(item: _Item, original: Any, *, household_id: int | None) -> dict[str, Any]:
    differences = payload_diff(original, item.raw)
    issue = Issue(
        "id_conflict",
        "error",
        "Mã bản ghi này đã được gửi với nội dung khác; bản đã lưu được giữ nguyên. "
        "Nếu là hộ mới, hãy tạo mã bản ghi mới.",
        {"differences": differences},
    )
    return {
        "id": _client_id(item),
        "status": "conflict",
        "household_id": household_id,
        "address_code": None,
        "issues": [issue.as_dict()],
    }


def _repeat_result(item: _Item, original: _Item) -> dict[str, Any]:
    """An id repeated inside one batch: the first occurrence's result, or a conflict."""
    if item.sha256 == original.sha256:
        return dict(original.result or {})
    household_id = (original.result or {}).get("household_id")
    return _conflict(item, original.raw, household_id=household_id)


def _audit_batch(
    session: Session, items: list[_Item], done: list[_Item], *, batch_id: uuid.UUID, user: User
) -> None:
    """One audit event per batch: who, when, the outcome counts and every household it made."""
    counts: dict[str, int] = {}
    for item in items:
        status = (item.result or {}).get("status", "error")
        counts[status] = counts.get(status, 0) + 1
    live = [i for i in done if i.status != "rejected"]
    after = {
        "counts": counts,
        "created": [i.household_id for i in live if i.parsed.household_ref is None],
        "updated": [i.household_id for i in live if i.parsed.household_ref is not None],
        "submissions": [i.submission_id for i in done],
    }
    audit.record(
        session,
        actor=user,
        action="submissions.batch",
        entity="intake_batch",
        entity_id=batch_id,
        after=after,
    )


def _record_failure(
    database: Database,
    items: list[_Item],
    *,
    batch_id: uuid.UUID,
    team_province: str | None,
    user: User,
) -> None:
    """Keep the items of a failed batch visible (status ``error``) so nothing is lost."""
    log.exception("intake batch %s failed; items kept with status 'error'", batch_id)
    try:
        with database.sessions() as session, session.begin():
            rows = [
                (
                    _log_province(i, team_province),
                    i.parsed.id,
                    batch_id,
                    i.index,
                    Json(i.raw if i.stored is None else i.stored, dumps=_dumps),
                    i.sha256,
                    user.id,
                    user.team_id,
                    i.parsed.captured_at,
                    i.parsed.hamlet_code,
                    "error",
                    "processing failed; resend to retry",
                )
                for i in items
            ]
            execute_values(
                raw_cursor(session),
                "INSERT INTO submissions (province_code, client_id, batch_id, item_index, "
                "payload, payload_sha256, user_id, team_id, captured_at, hamlet_code, status, "
                "error) "
                "VALUES %s ON CONFLICT (client_id) DO NOTHING",
                rows,
                page_size=max(len(rows), 1),
            )
    except Exception:
        log.exception("could not record the failed batch %s (its body is stored)", batch_id)
