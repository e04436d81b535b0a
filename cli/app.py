"""`q2c`: the command line of q2c. Commands are thin; the work lives in the packages."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from connectors.errors import ConnectorError
from devstack.process import PartFailed
from store import StoreNotMigrated

if TYPE_CHECKING:
    from devstack.stack import Stack

app = typer.Typer(
    name="q2c",
    help="Durable quote-to-cash orchestration on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(help="Run the dev stack: Temporal, Tryton, stand-ins, service, worker.")
store_app = typer.Typer(help="q2c's own database.")
app.add_typer(dev_app, name="dev")
app.add_typer(store_app, name="store")

console = Console()
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir", envvar="Q2C_STATE_DIR", help="Where the stack keeps state and logs."
    ),
]


class CliError(Exception):
    """An error the user can act on: printed as one line, exit code 1."""


def friendly_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """One readable line and a non-zero exit instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (CliError, PartFailed, ConnectorError, StoreNotMigrated) as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper


def _progress(name: str, message: str) -> None:
    mark = "[green]✓[/green]" if message.startswith(("healthy", "already")) else "…"
    console.print(f"{mark} [bold]{name:<10}[/bold] {message}", highlight=False)


@dev_app.command("up")
@friendly_errors
def dev_up(state_dir: StateDir = None) -> None:
    """Start every part on 127.0.0.1 in the background; return when all are healthy."""
    from devstack.stack import load_stack  # the dev stack only: a quick CLI start

    stack = load_stack(state_dir)
    stack.up(_progress)
    console.print()
    _print_status(stack)
    console.print(f"\nState and logs: {stack.state_dir}   Stop everything: q2c dev down")


@dev_app.command("down")
@friendly_errors
def dev_down(state_dir: StateDir = None) -> None:
    """Stop every process `q2c dev up` started, and nothing else."""
    from devstack.stack import load_stack  # the dev stack only: a quick CLI start

    load_stack(state_dir).down(_progress)


@dev_app.command("status")
@friendly_errors
def dev_status(
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Each part with its health and URL. Exit code 1 when a part is not healthy."""
    from devstack.stack import load_stack  # the dev stack only: a quick CLI start

    stack = load_stack(state_dir)
    if as_json:
        parts = [asdict(s) for s in stack.status()]
        typer.echo(
            json.dumps(
                {
                    "healthy": all(p["healthy"] for p in parts),
                    "temporal_ui": stack.settings.temporal_ui_url,
                    "parts": parts,
                },
                indent=2,
            )
        )
        healthy = all(p["healthy"] for p in parts)
    else:
        healthy = _print_status(stack)
    if not healthy:
        raise typer.Exit(1)


def _print_status(stack: Stack) -> bool:
    table = Table("part", "health", "pid", "url")
    statuses = stack.status()
    for s in statuses:
        health = (
            "[green]healthy[/green]"
            if s.healthy
            else "[yellow]unhealthy[/yellow]"
            if s.running
            else "[red]stopped[/red]"
        )
        table.add_row(s.name, health, str(s.pid or "-"), s.url)
    console.print(table)
    for s in statuses:
        if s.detail:  # e.g. "Tryton: database q2c on sqlite"
            console.print(f"{s.name.capitalize()}: {s.detail}", highlight=False)
    console.print(f"Temporal Web UI: {stack.settings.temporal_ui_url}", highlight=False)
    return all(s.healthy for s in statuses)


@app.command("worker")
@friendly_errors
def run_worker(
    queues: Annotated[
        str | None,
        typer.Option(
            "--queues",
            metavar="QUEUE,...",
            help="Serve only these task queues (comma-separated), e.g. q2c,q2c-tryton. "
            "Default: the workflows' queue and every system's.",
        ),
    ] = None,
) -> None:
    """Run a worker in the foreground (Ctrl-C drains and stops it)."""
    import worker
    from cli.common import settings, usage_error

    chosen = None if queues is None else queues.split(",")
    try:
        worker.select_queues(settings(), chosen)
    except worker.UnknownQueue as exc:
        usage_error("--queues", str(exc))
    worker.main(chosen)


@app.command("service")
@friendly_errors
def run_service() -> None:
    """Run the q2c service (webhooks, health) in the foreground."""
    from service.__main__ import main as service_main

    service_main()


@store_app.command("migrate")
@friendly_errors
def store_migrate() -> None:
    """Bring the store's schema to the newest revision: once per deployment and release,
    before its workers and service start (they refuse an old schema). Safe to run twice,
    and from two places at once."""
    from settings import load_settings
    from store.migrate import migrate_store

    settings = load_settings()
    asyncio.run(migrate_store(settings.store_url))
    console.print(f"store migrated: {settings.store_url.split('@')[-1]}", highlight=False)


@app.command("demo")
@friendly_errors
def run_demo(state_dir: StateDir = None) -> None:
    """Run the demo scenario on a running dev stack (`q2c dev up` first)."""
    from devstack.demo import run_demo as scenario
    from devstack.stack import load_stack  # the dev stack only: a quick CLI start

    stack = load_stack(state_dir)
    unhealthy = [s.name for s in stack.status() if not s.healthy]
    if unhealthy:
        raise CliError(f"the dev stack is not up ({', '.join(unhealthy)}): run `q2c dev up`")
    asyncio.run(
        scenario(stack.settings, lambda line: console.print(line, highlight=False, soft_wrap=True))
    )


def main() -> NoReturn:
    """The console script `q2c`: run the command, flush, and leave through `os._exit`.

    A thread of Temporal's Rust runtime can still touch the GIL while the interpreter
    finalizes (temporalio sdk-python #300) and abort a command that has done its work
    (exit 134, "PyGILState_Release"). Leaving without finalizing avoids it; everything the
    command wrote is flushed first. Only here: a test runner invokes `app`, never `main`.
    """
    try:
        app()  # standalone mode: always ends in SystemExit carrying the exit code
        code = 0
    except SystemExit as exc:
        code = exit_code(exc.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to flush into
            stream.flush()
    os._exit(code)


def exit_code(code: str | int | None) -> int:
    """What the interpreter would make of `SystemExit(code)`; a message goes to stderr."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


# Register their commands on `app` (imported last: they import `app`, `CliError` and
# `friendly_errors` from here): start, approve, reject, signal, status and list; invoice
# run|show|approve|reject|adjust and schedules; contract show; change-order
# start|preview|approve|reject.
import cli.change_orders  # noqa: E402
import cli.contracts  # noqa: E402
import cli.invoicing  # noqa: E402
import cli.lifecycle  # noqa: E402, F401
