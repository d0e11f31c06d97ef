"""The varsel command line."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console

from varsel.settings import Settings

cli = typer.Typer(help="varsel: email and SMS notifications for service owners.", no_args_is_help=True)
console = Console(stderr=True)

CREATE_SCOPE = "altinn:serviceowner/notifications.create"

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def tables() -> Console:
    """Where the operator commands print their tables (standard output). Into a pipe or a file rich would assume 80
    columns and cut every column to fit (ids and timestamps into "…"); there a table takes the width it needs."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=100_000)


def configure_logging(level_name: str, stream: TextIO | None = None) -> None:
    """Give the long-running commands one log handler (stderr) at VARSEL_LOG_LEVEL, shared by varsel's loggers
    (among them the transition log, at INFO) and uvicorn's, which are left handler-less so that they propagate here.

    Without a handler on the root logger, records below WARNING reach nothing (Python's last resort prints WARNING
    and above only), and the transition log, the point of `varsel.transitions`, is never written.
    """
    from uvicorn.config import LOG_LEVELS
    from uvicorn.logging import TRACE_LOG_LEVEL

    level = LOG_LEVELS.get(level_name.strip().lower())
    if level is None:
        console.print(
            f"[red]varsel cannot start:[/] VARSEL_LOG_LEVEL={level_name!r} is not one of {', '.join(LOG_LEVELS)}",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    logging.addLevelName(TRACE_LOG_LEVEL, "TRACE")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    # force: this process owns its logging; a handler someone put there before (basicConfig in a sitecustomize)
    # would otherwise write every line twice.
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
        # Whatever configured them before (a level of their own, or a dictConfig that disabled existing loggers)
        # must not hide their lines: the root's level decides.
        uvicorn_logger.setLevel(logging.NOTSET)
        uvicorn_logger.disabled = False
    # httpx logs every request's full URL (at INFO "HTTP Request: GET …", at DEBUG more), query and all: an
    # attachment's SAS URL carries its signature (sig=) there, a credential that must not reach a log at any level.
    # httpcore's trace lines are no use without them. Both stay at WARNING whatever VARSEL_LOG_LEVEL says.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Alembic writes a dozen lines at INFO on every start (plugins set up, the dialect, each revision): below the
    # default level, shown from debug on. varsel.db.migrate says in one line when a migration changed the schema.
    logging.getLogger("alembic").setLevel(logging.WARNING if level > logging.DEBUG else logging.NOTSET)


async def _migrate(settings: Settings) -> None:
    from varsel.db.engine import Database
    from varsel.db.migrate import migrate

    database = Database(settings.resolved_database_url())
    try:
        await migrate(database)
    finally:
        await database.dispose()


def _build_or_exit(settings: Settings, *, providers: bool = True) -> Any:
    from varsel.app import build
    from varsel.providers.factory import ProviderNotConfigured
    from varsel.providers.outbox import OutboxEmailProvider, OutboxSmsProvider

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not providers:
        # This process sends nothing: the providers' settings are not its concern.
        outbox = settings.data_dir / "outbox"
        return build(settings, email_provider=OutboxEmailProvider(outbox), sms_provider=OutboxSmsProvider(outbox))
    try:
        return build(settings)
    except ProviderNotConfigured as error:
        console.print(f"[red]varsel cannot start:[/] {error}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from error


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8080).")] = None,
) -> None:
    """Run the API and the workers in one process (SQLite in the data folder unless VARSEL_DATABASE_URL is set)."""
    from varsel.app import create_app

    settings = Settings()
    configure_logging(settings.log_level)
    listening = _listen_or_exit(host or settings.host, port or settings.port)
    services = _build_or_exit(settings)
    asyncio.run(_migrate(settings))
    app = create_app(services, run_workers=True)
    _settle_memory()
    _serve_http(app, settings, listening, "varsel serving")


@cli.command()
def api(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8080).")] = None,
) -> None:
    """Run the API only (orders, registry pushes, delivery-report webhooks, metrics, health); no workers."""
    from varsel.app import create_app

    settings = Settings()
    configure_logging(settings.log_level)
    listening = _listen_or_exit(host or settings.host, port or settings.port)
    # The API sends instant orders itself (varsel.orders.instant): it needs the configured providers, as workers do.
    services = _build_or_exit(settings)
    asyncio.run(_migrate(settings))
    app = create_app(services, run_workers=False)
    _settle_memory()
    _serve_http(app, settings, listening, "varsel API serving")


@cli.command()
def worker(
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve /metrics and /health on this port (127.0.0.1 unless VARSEL_HOST).")
    ] = None,
) -> None:
    """Run the workers only: the kinds of work in VARSEL_DISPATCH__KINDS (all by default)."""
    settings = Settings()
    configure_logging(settings.log_level)
    services = _build_or_exit(settings)
    asyncio.run(_migrate(settings))
    _run_fast(_work(services, settings, metrics_port))
    raise typer.Exit(0)


def _settle_memory() -> None:
    """Keep the garbage collector's pauses out of the answers: everything built at start (modules, the app, its
    compiled statements and schemas) lives as long as the process, so it is frozen out of the collector's sight, and
    young collections run less often. A full collection over all of it stalled every request for ~100 ms now and
    then, which is what a p99 at 1,000 orders/s showed."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _run_fast(work: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (as uvicorn does for `serve` and `api`): the senders' HTTP, SMTP and
    database traffic costs much less CPU on it."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(work)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(work)


async def _work(services: Any, settings: Settings, metrics_port: int | None) -> None:
    from varsel.app import create_operations_app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = None
    serving = None
    if metrics_port is not None:
        config = uvicorn.Config(
            create_operations_app(services),
            host=settings.host,
            port=metrics_port,
            log_level=settings.log_level,
            log_config=None,  # configure_logging's handler, not uvicorn's own
            access_log=False,
            lifespan="off",
        )
        server = _MetricsServer(config)
        serving = asyncio.create_task(server.serve())
    kinds = settings.dispatch.kinds
    _settle_memory()  # everything is built now
    services.database.start_wal_checkpoints()
    services.workers.start(kinds)
    console.print(f"varsel worker running: {', '.join(kinds)} (data in {settings.data_dir.resolve()})")
    await stop.wait()
    console.print("varsel worker stopping: finishing what is under way")
    await services.close(settings.dispatch.shutdown_grace_seconds)
    if server is not None and serving is not None:
        server.should_exit = True
        await serving


class _MetricsServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The worker handles SIGTERM itself (stop claiming, finish what is under way, exit 0): uvicorn must not
        # take the signal from it.
        yield


def _listen_or_exit(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything else is built: a port another program holds ends the command with
    one line saying so and how to choose another, not uvicorn's error among the start-up lines after the migrations.
    Bound as uvicorn binds its own; it listens once uvicorn serves on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        if error.errno == errno.EADDRINUSE:
            why = f"{shown} is already in use (another varsel, or another program, listens there)"
        else:
            why = f"cannot listen on {shown}: {error.strerror or error}"
        other = port + 1 if port < 65535 else 8080
        console.print(
            f"[red]varsel cannot start:[/] {why}; choose another port with VARSEL_PORT={other} (or --port {other})",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from error
    sock.set_inheritable(True)
    return sock


def _serve_http(app: Any, settings: Settings, listening: socket.socket, what: str) -> None:
    bind_host, bind_port = listening.getsockname()[:2]
    shown = f"[{bind_host}]" if listening.family == socket.AF_INET6 else bind_host
    console.print(f"{what} on http://{shown}:{bind_port} (data in {settings.data_dir.resolve()})")
    _exit_cleanly_after_graceful_shutdown()
    # log_config=None: uvicorn's loggers propagate to configure_logging's handler instead of getting their own.
    config = uvicorn.Config(
        app, host=bind_host, port=bind_port, log_level=settings.log_level, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    server.run(sockets=[listening])
    if not server.started:
        sys.exit(3)  # as uvicorn.run: the application did not start (its lifespan failed)


def _exit_cleanly_after_graceful_shutdown() -> None:
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal to the handler that was in
    # place before it started. A stop that was asked for and carried out is a success: exit 0, so that process
    # supervisors do not report a crash.
    def _exit(_signum: int, _frame: object) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, _exit)


@cli.command()
def migrate() -> None:
    """Apply the database migrations to the configured database."""
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_migrate(settings))
    console.print("migrations applied")


@cli.command()
def token(
    org: Annotated[str, typer.Option(help="The service owner (org code) the token acts for, e.g. ttd.")],
    scope: Annotated[list[str] | None, typer.Option(help="A scope to carry; repeat for more.")] = None,
    minutes: Annotated[
        int, typer.Option(min=1, help="How long the token is valid, in minutes (at least 1; an hour unless given).")
    ] = 60,
    platform: Annotated[
        bool, typer.Option("--platform", help="Print a PlatformAccessToken (issuer = org) instead.")
    ] = False,
) -> None:
    """Print a development token signed with the data folder's key (trusted while no issuers are configured)."""
    from varsel.auth.keys import ensure_dev_key
    from varsel.auth.tokens import sign_dev_token

    settings = Settings()
    key = ensure_dev_key(settings.dev_key_path)
    scopes = scope if scope else [CREATE_SCOPE]
    if settings.auth.issuers:
        console.print("[yellow]note: issuers are configured, so varsel does not trust development tokens[/]")
    print(sign_dev_token(key, org=org, scopes=scopes, minutes=minutes, platform=platform))


registry_cli = typer.Typer(help="The local contact registries: persons, organisations, user contacts, authorisations.")
cli.add_typer(registry_cli, name="registry")


async def _import(settings: Settings, files: list[str]) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from varsel.clock import SystemClock
    from varsel.db.engine import Database
    from varsel.db.migrate import migrate as apply_migrations
    from varsel.recipients.imports import ImportSummary, RegistryImporter

    database = Database(settings.resolved_database_url())
    failures = 0
    try:
        await apply_migrations(database)
        importer = RegistryImporter(database, SystemClock())
        for name in files:
            summary = ImportSummary()
            # Blocking file reads are fine here: the import is the only thing this process does.
            handle = sys.stdin if name == "-" else open(name, encoding="utf-8", errors="replace")  # noqa: SIM115, ASYNC230
            total = None if name == "-" else Path(name).stat().st_size  # noqa: ASYNC240
            with (
                handle,
                Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    DownloadColumn(),
                    TimeRemainingColumn(),
                    console=console,
                ) as progress,
            ):
                task = progress.add_task(f"importing {name}", total=total)

                async def numbered(source: TextIO = handle) -> AsyncIterator[tuple[int, str]]:
                    for number, line in enumerate(source, start=1):
                        yield number, line.rstrip("\n")

                await importer.import_lines(numbered(), summary, functools.partial(progress.advance, task))
            console.print(
                f"{name}: {summary.inserted} inserted, {summary.updated} updated, {summary.deleted} deleted, "
                f"{len(summary.rejected)} rejected",
                soft_wrap=True,
            )
            for number, reason in summary.rejected[:200]:
                console.print(f"  line {number}: {reason}", markup=False, highlight=False, soft_wrap=True)
            if len(summary.rejected) > 200:
                console.print(f"  … and {len(summary.rejected) - 200} more rejected lines")
            failures += len(summary.rejected)
    finally:
        await database.dispose()
    return failures


@registry_cli.command("import")
def registry_import(
    files: Annotated[list[str], typer.Argument(help="JSON Lines files; - reads standard input.")],
) -> None:
    """Upsert registry records from JSON Lines (one record a line); bad lines are reported, never fatal."""
    for name in files:
        if name != "-":
            _readable_or_exit(name)
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    rejected = asyncio.run(_import(settings, files))
    # Exit 1 when lines were rejected, so scripts notice; everything valid has been written regardless.
    raise typer.Exit(1 if rejected else 0)


def _readable_or_exit(name: str) -> None:
    """A file the import cannot read ends it before anything is imported, with one line, exit 2 (a usage error, as
    a mistyped option): no traceback, and no half-done import of the files named before it."""
    try:
        with open(name, "rb") as handle:
            handle.read(1)
    except OSError as error:
        console.print(
            f"varsel registry import: cannot read {name}: {error.strerror or error}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from error


reports_cli = typer.Typer(help="Delivery reports that matched no notification, for operators.")
cli.add_typer(reports_cli, name="reports")


async def _with_services(settings: Settings, work: Any) -> Any:
    # Operator commands send nothing: built as `varsel api` is, without the providers' settings.
    services = _build_or_exit(settings, providers=False)
    await _migrate(settings)
    try:
        return await work(services)
    finally:
        await services.close()


@reports_cli.command("dead")
def reports_dead(
    limit: Annotated[int, typer.Option(help="At most this many, oldest first.")] = 1000,
) -> None:
    """List delivery reports that never matched a notification."""
    from rich.table import Table

    async def work(services: Any) -> list[Any]:
        return list(await services.reports.dead(limit))

    dead = asyncio.run(_with_services(Settings(), work))
    table = Table("id", "received", "channel", "provider", "reference", "provider ref", "status", "attempts")
    for report in dead:
        table.add_row(
            str(report.id),
            report.received.isoformat(timespec="seconds"),
            report.channel,
            report.provider,
            report.reference,
            report.provider_reference or "",
            report.status,
            str(report.attempts),
        )
    tables().print(table)
    console.print(f"{len(dead)} dead reports")


@reports_cli.command("retry")
def reports_retry(
    ids: Annotated[list[str] | None, typer.Argument(help="Report ids; none with --all.")] = None,
    all_reports: Annotated[bool, typer.Option("--all", help="Retry every dead report.")] = False,
) -> None:
    """Try dead reports again (for another retry window): after the notifications they name have appeared."""
    from uuid import UUID

    if not ids and not all_reports:
        console.print("name report ids, or --all")
        raise typer.Exit(2)
    try:
        chosen = None if all_reports else [UUID(value) for value in ids or []]
    except ValueError as error:
        console.print(f"not a report id: {error}")
        raise typer.Exit(2) from error

    async def work(services: Any) -> tuple[int, int]:
        revived = await services.reports.retry(chosen)
        processed = await services.reports.run_once()
        return revived, processed

    revived, processed = asyncio.run(_with_services(Settings(), work))
    console.print(f"{revived} reports pending again; {processed} tried now (the workers retry the rest)")


notifications_cli = typer.Typer(help="Notifications, for operators.")
cli.add_typer(notifications_cli, name="notifications")


@notifications_cli.command("history")
def notification_history(
    notification_id: Annotated[
        str, typer.Argument(help="The notification's id (given an order's, it lists the order's notifications).")
    ],
) -> None:
    """Every hand-over of a notification to a provider, and every delivery report about it."""
    from uuid import UUID

    from rich.table import Table

    try:
        wanted = UUID(notification_id)
    except ValueError as error:
        console.print(f"not a notification id: {notification_id!r}")
        raise typer.Exit(2) from error

    async def work(services: Any) -> tuple[list[Any], list[Any], list[Any] | None]:
        from varsel.reports import repository

        async with services.database.read() as conn:
            attempts = await repository.attempts_of(conn, wanted)
            reports = await repository.reports_of(conn, wanted, str(wanted))
            of_order = None if attempts or reports else await _notifications_of_order(conn, wanted)
        return attempts, reports, of_order

    attempts, reports, of_order = asyncio.run(_with_services(Settings(), work))
    if of_order is not None:
        # An order's id (the one its creation answered with) is the id a newcomer has at hand.
        listed = Table("notification", "channel", "recipient", "status", "attempts")
        for n in of_order:
            listed.add_row(str(n.id), n.channel, n.recipient or "", n.status, str(n.attempts))
        console.print(
            f"{wanted} is an order, not a notification: the history is a notification's. The order's "
            f"{len(of_order)} notifications (varsel notifications history NOTIFICATION for one):",
            highlight=False,
            soft_wrap=True,
        )
        tables().print(listed)
        raise typer.Exit(1)
    table = Table("attempt", "started", "finished", "provider", "outcome", "status", "provider ref", "detail")
    for a in attempts:
        table.add_row(
            str(a.attempt),
            a.started.isoformat(timespec="milliseconds"),
            a.finished.isoformat(timespec="milliseconds"),
            a.provider,
            a.outcome,
            a.status,
            a.provider_reference or "",
            a.detail or "",
        )
    tables().print(table)
    reported = Table("report received", "provider", "status", "state", "occurred", "detail")
    for r in reports:
        reported.add_row(
            r.received.isoformat(timespec="seconds"),
            r.provider,
            r.status,
            r.state,
            r.occurred.isoformat(timespec="seconds") if r.occurred else "",
            r.detail or "",
        )
    tables().print(reported)
    if not attempts and not reports:
        console.print("nothing recorded for that id")
        raise typer.Exit(1)


async def _notifications_of_order(conn: Any, order_id: Any) -> list[Any] | None:
    """The notifications of the order with this id (email then SMS, oldest first), or None when no order has it."""
    from sqlalchemy import literal, select, union_all

    from varsel.db.tables import email_notifications, orders, sms_notifications

    if (await conn.execute(select(orders.c.id).where(orders.c.id == order_id))).first() is None:
        return None
    recipient = {"email": email_notifications.c.email_address, "sms": sms_notifications.c.mobile_number}
    chosen = [
        select(
            table.c.id,
            literal(channel).label("channel"),
            recipient[channel].label("recipient"),
            table.c.status,
            table.c.attempts,
            table.c.created,
        ).where(table.c.order_id == order_id)
        for channel, table in (("email", email_notifications), ("sms", sms_notifications))
    ]
    query = union_all(*chosen).subquery()
    return list(await conn.execute(select(query).order_by(query.c.channel, query.c.created, query.c.id)))


console_cli = typer.Typer(help="The web console at /console.")
cli.add_typer(console_cli, name="console")


@console_cli.command("login")
def console_login(
    org: Annotated[str | None, typer.Option("--org", help="Sign in as this service owner (org).")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Sign in as an administrator (every org's).")] = False,
) -> None:
    """Print a one-time sign-in link for the console (valid console.link_minutes, usable once)."""
    from datetime import timedelta

    from varsel.auth.tokens import ORG_PATTERN
    from varsel.console.principal import Principal
    from varsel.console.sign_in import SignInLinks

    if admin == bool(org):
        console.print("give --org ORG or --admin (one of the two)")
        raise typer.Exit(2)
    if org is not None and not ORG_PATTERN.match(org):
        console.print(f"not an org name: {org!r}")
        raise typer.Exit(2)
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def work(services: Any) -> str:
        links = SignInLinks(services.database, services.clock, timedelta(minutes=settings.console.link_minutes))
        return await links.create(Principal(org=org, admin=admin))

    token = asyncio.run(_with_services(settings, work))
    # The address the API listens on, unless a public URL says where browsers reach it.
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = (settings.public_url or f"http://{host}:{settings.port}").rstrip("/")
    console.print(f"Sign in within {settings.console.link_minutes} minutes (the link works once):", highlight=False)
    print(f"{base}/console/sign-in/link/{token}")


def main() -> None:
    try:
        cli()
    except ValidationError as error:
        if error.title != Settings.__name__:
            raise
        # A setting that does not parse: one line each, named as the operator set it, not a traceback.
        for problem in error.errors():
            name = "VARSEL_" + "__".join(str(part) for part in problem["loc"]).upper()
            console.print(
                f"varsel: {name}={problem.get('input')!r} is not valid: {problem['msg']}", markup=False, soft_wrap=True
            )
        raise SystemExit(2) from None
