"""The ``diachiso`` command line: serve, migrate, imports, users, teams, demo."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from sqlalchemy.orm import Session

from geo.errors import GeoError
from service import accounts, codes, metrics, migrate, server
from service.db import Database, open_database
from service.errors import ServiceError
from service.logs import configure_logging
from service.routers.units import import_limits
from service.server import ServeOptions
from service.settings import Settings
from service.unit_import import ImportRequest, import_units
from service.units import as_aware

app = typer.Typer(help="diachiso: địa chỉ số hộ gia đình", no_args_is_help=True)
users_app = typer.Typer(help="Users and their tokens", no_args_is_help=True)
teams_app = typer.Typer(help="Teams and their areas", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(teams_app, name="teams")


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "DIACHISO_" + "_".join(str(p) for p in error["loc"]).upper()
            typer.echo(f"{name}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    configure_logging(level=settings.log_level, fmt="text")
    return settings


@contextlib.contextmanager
def _database(settings: Settings, *, require_current: bool = True) -> Iterator[Database]:
    database = open_database(settings, pool_size=1, max_overflow=2)
    try:
        if require_current and migrate.current_revision(database.engine) != migrate.head_revision():
            _fail("The database schema is not current: run `diachiso migrate` first.")
        yield database
    finally:
        database.close()


@contextlib.contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    """A session committed at the end; domain errors become a clear message and exit 2."""
    with _database(settings) as database, database.sessions() as session:
        try:
            yield session
            session.commit()
        except (ServiceError, GeoError) as exc:
            session.rollback()
            _fail(f"{exc.code}: {exc.message}")


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(2)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: DIACHISO_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: DIACHISO_PORT")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn worker processes")] = 1,
) -> None:
    """Check migrations, then serve the API and pages (Ctrl-C stops; the embedded DB too)."""
    settings = _settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    options = ServeOptions(
        host=settings.host if host is None else host,
        port=settings.port if port is None else port,
        log_level=settings.log_level,
        log_format=settings.log_format,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    # The embedded cluster (if any) stays up while the workers use it; with several workers,
    # their metrics meet in a shared directory (service/metrics.py).
    try:
        with _database(settings), metrics.shared_directory(workers):
            server.serve(options, workers=workers)
    except server.StartupFailure as exc:  # one line: the reason, or where the log has it
        typer.echo(str(exc), err=True)
        raise typer.Exit(3) from None


@app.command(name="migrate")
def migrate_cmd(
    revision: Annotated[
        str | None, typer.Option(help="Target revision (default: head; with --down: one step)")
    ] = None,
    down: Annotated[bool, typer.Option("--down", help="Downgrade to --revision")] = False,
) -> None:
    """Bring the database schema to the newest (or a given) revision."""
    settings = _settings()
    with _database(settings, require_current=False) as database:
        if down:
            migrate.downgrade(database.engine, revision=revision or "-1")
        else:
            migrate.upgrade(database.engine, revision=revision or "head")
        typer.echo(f"schema at {migrate.current_revision(database.engine)}")


@app.command(name="import-units")
def import_units_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    level: Annotated[str, typer.Option(help="province, district, commune or hamlet")],
    code_field: Annotated[str, typer.Option()] = "code",
    name_field: Annotated[str, typer.Option()] = "name",
    parent_code_field: Annotated[str | None, typer.Option()] = None,
    postcode_field: Annotated[str | None, typer.Option()] = None,
    target_field: Annotated[str | None, typer.Option()] = None,
    source_crs: Annotated[
        str | None, typer.Option(help="e.g. EPSG:5897 (VN-2000 Đồng Tháp)")
    ] = None,
    valid_from: Annotated[
        datetime | None, typer.Option(help="ISO date the units take effect")
    ] = None,
    close_missing: Annotated[bool, typer.Option(help="Close units absent from the file")] = False,
) -> None:
    """Import a GeoJSON / GeoPackage / zipped Shapefile / CSV layer of units; prints the report."""
    request = ImportRequest(
        data=file.read_bytes(),
        filename=file.name,
        level=level,
        code_field=code_field,
        name_field=name_field,
        parent_code_field=parent_code_field,
        postcode_field=postcode_field,
        target_field=target_field,
        source_crs=source_crs,
        valid_from=as_aware(valid_from),
        close_missing=close_missing,
    )
    _run_import(request)


@app.command(name="import-targets")
def import_targets_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    level: Annotated[str, typer.Option()] = "hamlet",
    code_field: Annotated[str, typer.Option()] = "code",
    target_field: Annotated[str, typer.Option()] = "target",
) -> None:
    """Set expected household counts of existing units from a CSV (code, target)."""
    request = ImportRequest(
        data=file.read_bytes(),
        filename=file.name,
        level=level,
        code_field=code_field,
        target_field=target_field,
    )
    _run_import(request)


def _run_import(request: ImportRequest) -> None:
    settings = _settings()
    with _session(settings) as session:
        report = import_units(
            session,
            request,
            actor=None,
            limits=import_limits(settings),
            policy=codes.policy_from(settings),
        )
    _print_json(report)


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Option()],
    role: Annotated[str, typer.Option(help="surveyor, reviewer, admin or postal")],
    team: Annotated[str | None, typer.Option(help="Team name (required for surveyors)")] = None,
) -> None:
    """Create a user; the token is printed alone on the last line (shown only now)."""
    settings = _settings()
    with _session(settings) as session:
        user, token = accounts.create_user(session, name=name, role=role, team=team, actor=None)
        typer.echo(f"created user {user.id} ({user.role}) {user.name}", err=True)
    typer.echo(token)


@users_app.command("list")
def users_list() -> None:
    """List users (no secrets)."""
    settings = _settings()
    with _session(settings) as session:
        _print_json([accounts.user_out(session, u) for u in accounts.list_users(session)])


@users_app.command("revoke")
def users_revoke(user_id: Annotated[int, typer.Argument()]) -> None:
    """Revoke a user's token."""
    settings = _settings()
    with _session(settings) as session:
        accounts.revoke_token(session, user_id, actor=None)
    typer.echo(f"revoked token of user {user_id}")


@users_app.command("rotate")
def users_rotate(user_id: Annotated[int, typer.Argument()]) -> None:
    """Issue a new token for a user (printed alone on the last line; the old one stops)."""
    settings = _settings()
    with _session(settings) as session:
        token = accounts.rotate_token(session, accounts.get_user(session, user_id), actor=None)
    typer.echo(token)


@teams_app.command("create")
def teams_create(
    name: Annotated[str, typer.Argument()],
    unit: Annotated[list[str] | None, typer.Option("--unit", help="Hamlet or commune code")] = None,
) -> None:
    """Create a team with its area."""
    settings = _settings()
    with _session(settings) as session:
        team = accounts.create_team(session, name, unit or [], actor=None)
        _print_json(accounts.team_out(session, team))


@teams_app.command("assign")
def teams_assign(
    name: Annotated[str, typer.Argument()],
    unit: Annotated[list[str], typer.Option("--unit", help="Hamlet or commune code")],
) -> None:
    """Add units to a team's area."""
    settings = _settings()
    with _session(settings) as session:
        team = accounts.assign_units(session, name, unit, actor=None)
        _print_json(accounts.team_out(session, team))


@app.command()
def dedupe(
    unit: Annotated[
        str | None, typer.Option("--unit", help="Code of any level (default: everything)")
    ] = None,
) -> None:
    """Re-scan a unit for duplicate households (after an import or a threshold change)."""
    from service import dedupe as dedupe_

    settings = _settings()
    params = dedupe_.params_from(settings)
    with _session(settings) as session:
        communes = dedupe_.communes_of(session, unit)
        if unit and not communes:
            _fail(f"Không có hộ nào thuộc đơn vị {unit}.")
        with typer.progressbar(length=len(communes), label="Quét trùng", file=sys.stderr) as bar:
            report = dedupe_.rescan(
                session,
                communes,
                params,
                actor=None,
                progress=bar.update,
                policy=codes.policy_from(settings),
            )
        _print_json(report.as_dict())


@app.command(name="import-codes")
def import_codes_cmd(
    path: Annotated[Path, typer.Argument(help="CSV: household_id or address_code, national_code")],
) -> None:
    """Attach centrally issued 10-digit national address codes; all or nothing."""
    settings = _settings()
    try:
        data = path.read_bytes()
    except OSError as exc:
        _fail(f"file_unreadable: {exc}")
        return
    with _session(settings) as session:
        result = codes.import_national(session, data, actor=None)
        _print_json(result.as_dict())
        if result.errors:
            session.rollback()
            _fail(f"Từ chối tệp: {len(result.errors)} dòng lỗi; không có mã nào được gắn.")


@app.command(name="issue-codes")
def issue_codes_cmd(
    unit: Annotated[str | None, typer.Option("--unit", help="Code of any level")] = None,
) -> None:
    """Issue codes to accepted households that have none (after postcodes were set)."""
    settings = _settings()
    with _session(settings) as session:
        issued = codes.issue_pending(
            session, unit=unit, policy=codes.policy_from(settings), actor=None
        )
        _print_json({"issued": len(issued)})


@app.command(name="export")
def export_cmd(
    fmt: Annotated[str, typer.Option("--format", help="csv, geojson or gpkg")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (households.FORMAT)")
    ] = None,
    unit: Annotated[str | None, typer.Option("--unit", help="Code of any level")] = None,
    status: Annotated[str | None, typer.Option(help="Comma list (default accepted)")] = None,
    since: Annotated[str | None, typer.Option(help="Cursor of an earlier export")] = None,
) -> None:
    """Export households to a file, as the API does; prints the manifest and the next cursor."""
    from service import exports

    settings = _settings()
    output = output or Path(f"households.{fmt}")
    with _database(settings) as database:
        try:
            request = exports.ExportRequest(
                format=fmt, unit=unit, statuses=exports.parse_statuses(status), since=since
            )
            export = exports.start(database, request, user=None)
        except ServiceError as exc:
            _fail(f"{exc.code}: {exc.message}")
            return
        partial = output.with_name(output.name + ".part")
        lines = fmt != "gpkg"
        with (
            partial.open("wb") as sink,
            typer.progressbar(length=export.row_count, label="Xuất", file=sys.stderr) as bar,
        ):
            for chunk in export.body:
                sink.write(chunk)
                if lines:
                    bar.update(chunk.count(b"\n"))
        partial.replace(output)
        with database.sessions() as session:
            manifest, _ = exports.list_exports(session, limit=1, before_id=export.id + 1)
    _print_json({**manifest[0], "file": str(output), "cursor": export.cursor})


@app.command()
def demo(seed: Annotated[int, typer.Option(help="Generator seed")] = 2026) -> None:
    """Load a generated demo province (once), issue demo tokens, print tokens and URLs."""
    from service.demo import load_demo

    settings = _settings()
    with _session(settings) as session:
        summary = load_demo(session, seed=seed, limits=import_limits(settings))
    base = f"http://{settings.host}:{settings.port}"
    typer.echo(f"\nTỉnh demo: {summary['province']} ({summary['units']} đơn vị)")
    typer.echo(f"API docs: {base}/docs   readiness: {base}/readyz")
    for role, token in summary["tokens"].items():
        typer.echo(f"token {role:9s} {token}")


def main() -> None:
    """Entry point of the ``diachiso`` script."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
