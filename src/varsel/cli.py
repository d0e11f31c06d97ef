"""The varsel command line."""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, TextIO

import typer
import uvicorn
from rich.console import Console

from varsel.settings import Settings

cli = typer.Typer(help="varsel: email and SMS notifications for service owners.", no_args_is_help=True)
console = Console(stderr=True)

CREATE_SCOPE = "altinn:serviceowner/notifications.create"


async def _migrate(settings: Settings) -> None:
    from varsel.db.engine import Database
    from varsel.db.migrate import migrate

    database = Database(settings.resolved_database_url())
    try:
        await migrate(database)
    finally:
        await database.dispose()


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8080).")] = None,
) -> None:
    """Run the API and the workers in one process (SQLite in the data folder unless VARSEL_DATABASE_URL is set)."""
    from varsel.app import build, create_app

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_migrate(settings))
    app = create_app(build(settings), run_workers=True)
    bind_host = host or settings.host
    bind_port = port or settings.port
    console.print(f"varsel serving on http://{bind_host}:{bind_port} (data in {settings.data_dir.resolve()})")
    _exit_cleanly_after_graceful_shutdown()
    uvicorn.run(app, host=bind_host, port=bind_port, log_level=settings.log_level, access_log=False)


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
    minutes: Annotated[int, typer.Option(help="How long the token is valid.")] = 60,
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
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    rejected = asyncio.run(_import(settings, files))
    # Exit 1 when lines were rejected, so scripts notice; everything valid has been written regardless.
    raise typer.Exit(1 if rejected else 0)


def main() -> None:
    cli()
