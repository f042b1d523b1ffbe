"""Load the generated demo province through the normal import path, and issue demo tokens."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from geo.demo import DemoProvince, feature_collection, generate_province, hamlet_csv
from service import accounts
from service.models import Team, User
from service.unit_import import ImportLimits, ImportRequest, import_units

DEMO_USERS = (
    ("Quản trị demo", "admin"),
    ("Kiểm duyệt demo", "reviewer"),
    ("Bưu điện demo", "postal"),
    ("Điều tra viên demo", "surveyor"),
)


def load_demo(session: Session, *, seed: int, limits: ImportLimits) -> dict[str, Any]:
    """Import the demo province (idempotent), make a team per commune, rotate demo tokens."""
    province = generate_province(seed=seed)
    for request in _requests(province):
        import_units(session, request, actor=None, limits=limits)
    teams = _ensure_teams(session, province)
    tokens = {role: _demo_token(session, name, role, team=teams[0]) for name, role in DEMO_USERS}
    units = 1 + len(province.districts) + len(province.communes) + len(province.hamlets)
    return {"province": province.province.name, "units": units, "tokens": tokens}


def _requests(province: DemoProvince) -> list[ImportRequest]:
    def geojson(level: str, units: Any) -> ImportRequest:
        data = orjson.dumps(feature_collection(units))
        return ImportRequest(
            data=data,
            filename=f"demo-{level}.geojson",
            level=level,
            code_field="code",
            name_field="name",
            parent_code_field="parent_code",
            postcode_field="postcode",
            target_field="target",
        )

    with_polygon = [h for h in province.hamlets if h.geometry is not None]
    without_polygon = [h for h in province.hamlets if h.geometry is None]
    csv_request = ImportRequest(
        data=hamlet_csv(without_polygon).encode("utf-8-sig"),
        filename="demo-hamlets.csv",
        level="hamlet",
        code_field="code",
        name_field="name",
        parent_code_field="commune_code",
        target_field="target",
    )
    return [
        geojson("province", [province.province]),
        geojson("district", province.districts),
        geojson("commune", province.communes),
        geojson("hamlet", with_polygon),
        csv_request,
    ]


def _ensure_teams(session: Session, province: DemoProvince) -> list[str]:
    names = []
    for commune in province.communes:
        name = f"Tổ CNS cộng đồng {commune.name}"
        if session.scalar(select(Team.id).where(Team.name == name)) is None:
            accounts.create_team(session, name, [commune.code], actor=None)
        names.append(name)
    return names


def _demo_token(session: Session, name: str, role: str, *, team: str) -> str:
    user = session.scalar(select(User).where(User.name == name, User.role == role))
    if user is None:
        team_name = team if role == "surveyor" else None
        _, token = accounts.create_user(session, name=name, role=role, team=team_name, actor=None)
        return token
    return accounts.rotate_token(session, user, actor=None)
