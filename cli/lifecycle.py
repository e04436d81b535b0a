"""A person's handle on lifecycle runs: start, approve, reject, signal, status, list.

Each command is a thin call on Temporal: the run holds the state and the rules (who may
approve, what a correction does), the CLI only asks and prints. Every failure, a refusal by
the run included, is one line on stderr (`error: ...`) and exit code 1.

Importing this module registers its commands on `cli.app.app` (`cli/app.py` imports it).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import FailureError, TemporalError
from temporalio.service import RPCError, RPCStatusCode

from cli.app import CliError, app, friendly_errors
from connectors.errors import ValidationFailed
from connectors.salesforce import check_id
from settings import Settings, load_settings
from workflows import search_attributes as attrs
from workflows.client import connect
from workflows.opportunity_to_project import (
    DATA_CORRECTED,
    DECIDE,
    LIFECYCLE,
    STATUS,
    ApprovalAck,
    ApprovalDecision,
    DataCorrected,
    DealStatus,
    Decision,
    DecisionRecord,
    Step,
    workflow_id,
)
from workflows.starters import StartedRun, start_opportunity_run

#: A Temporal that does not answer the connect within this long is treated as unreachable.
CONNECT_TIMEOUT_S = 5.0
#: Describe, signal, start, list: plain server calls, no worker involved.
RPC_TIMEOUT_S = 10.0
#: A query needs a worker; a closed run with none would otherwise hang the command.
QUERY_TIMEOUT_S = 5.0
#: An update needs a worker to validate and record the decision.
UPDATE_TIMEOUT_S = 15.0
#: Every Salesforce Opportunity id starts with this key prefix (001 is an Account, ...).
SALESFORCE_OPPORTUNITY_PREFIX = "006"

start_app = typer.Typer(help="Start a lifecycle run by hand (a webhook usually does).")
signal_app = typer.Typer(help="Tell a run that something changed outside it.")
app.add_typer(start_app, name="start")
app.add_typer(signal_app, name="signal")

T = TypeVar("T")


class Crm(StrEnum):
    SALESFORCE = "salesforce"


class Lifecycle(StrEnum):
    OPPORTUNITY_TO_PROJECT = LIFECYCLE


WorkflowId = Annotated[
    str,
    typer.Argument(
        metavar="WORKFLOW_ID",
        help="The run's workflow id, e.g. opportunity-to-project:salesforce:006…",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Approver = Annotated[
    str,
    typer.Option(
        "--approver",
        envvar="Q2C_APPROVER",
        help="Your e-mail address, as on the finance approvers list.",
    ),
]
Reason = Annotated[str, typer.Option("--reason", help="Why: kept with the decision.")]


# --------------------------------------------------------------------------- commands


@start_app.command("opportunity")
@friendly_errors
def start_opportunity(
    opportunity_id: Annotated[
        str, typer.Argument(metavar="OPPORTUNITY_ID", help="The CRM's opportunity id.")
    ],
    crm: Annotated[Crm, typer.Option("--crm", help="The CRM the deal lives in.")] = Crm.SALESFORCE,
    as_json: JsonFlag = False,
) -> None:
    """Start the opportunity-to-project run of a won deal, or find the one already running."""
    opportunity_id = _checked_opportunity_id(crm, opportunity_id.strip())
    settings = _settings()
    wid = workflow_id(crm.value, opportunity_id)

    async def start(client: Client) -> StartedRun:
        return await start_opportunity_run(
            client,
            settings,
            opportunity_id,
            crm=crm.value,
            trigger=f"cli:{_user()}",
            rpc_timeout=timedelta(seconds=RPC_TIMEOUT_S),
        )

    run = _run(settings, start, wid)
    link = settings.run_link(run.workflow_id)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "workflow_id": run.workflow_id,
                    "run_id": run.run_id,
                    "started": run.started,
                    "web_ui": link,
                }
            )
        )
        return
    typer.echo(f"{'started' if run.started else 'already running'}: {run.workflow_id}")
    typer.echo(f"Web UI: {link}")


@app.command("approve")
@friendly_errors
def approve(wid: WorkflowId, approver: Approver, reason: Reason) -> None:
    """Approve a deal waiting for finance; the run answers at once (or says why not)."""
    _decide(wid, Decision.APPROVE, approver, reason)


@app.command("reject")
@friendly_errors
def reject(wid: WorkflowId, approver: Approver, reason: Reason) -> None:
    """Reject a deal waiting for finance: nothing is created, the CRM is told why."""
    _decide(wid, Decision.REJECT, approver, reason)


@signal_app.command("data-corrected")
@friendly_errors
def signal_data_corrected(
    wid: WorkflowId,
    note: Annotated[str | None, typer.Option("--note", help="What was fixed.")] = None,
) -> None:
    """The deal was fixed in the CRM: the run fetches and validates it again."""
    settings = _settings()
    message = DataCorrected(corrected_by=_user(), note=note)

    async def send(client: Client) -> None:
        handle = client.get_workflow_handle(wid)
        try:
            await handle.signal(DATA_CORRECTED, message, rpc_timeout=_rpc_timeout())
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                await _closed_or_missing(handle, "it takes no more signals")
            raise

    _run(settings, send, wid)
    typer.echo(f"data_corrected sent: {wid}")


@app.command("status")
@friendly_errors
def status(wid: WorkflowId, as_json: JsonFlag = False) -> None:
    """Where a run is: step, customer, ids, issues, pending approval, decisions."""
    settings = _settings()
    view = _run(settings, lambda client: _status(client, wid), wid)
    link = settings.run_link(wid)
    if as_json:
        typer.echo(json.dumps(view.as_json(link), indent=2))
    else:
        _render_status(_console(), view, link)


@app.command("list")
@friendly_errors
def list_runs(
    lifecycle: Annotated[
        Lifecycle, typer.Option("--lifecycle", help="Which lifecycle's runs.")
    ] = Lifecycle.OPPORTUNITY_TO_PROJECT,
    step: Annotated[Step | None, typer.Option("--step", help="Only runs at this step.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Runs found by their search attributes, newest first (visibility lags a second or so)."""
    settings = _settings()
    query = f"{attrs.LIFECYCLE.name} = '{lifecycle.value}'"
    if step is not None:
        query += f" AND {attrs.STEP.name} = '{step.value}'"

    async def find(client: Client) -> list[dict[str, Any]]:
        return [
            {
                "workflow_id": run.id,
                "status": _run_status(run.status),
                "step": run.typed_search_attributes.get(attrs.STEP),
                "customer": run.typed_search_attributes.get(attrs.CUSTOMER),
                "started_at": run.start_time.isoformat(),
            }
            async for run in client.list_workflows(query, limit=limit, rpc_timeout=_rpc_timeout())
        ]

    runs = _run(settings, find)
    if as_json:
        typer.echo(json.dumps(runs, indent=2))
        return
    if not runs:
        typer.echo(f"no runs match {query}")
        return
    # Plain columns, never truncated: a workflow id must survive copy and paste.
    rows = [["WORKFLOW ID", "STATUS", "STEP", "CUSTOMER", "STARTED"]]
    rows += [
        [
            run["workflow_id"],
            run["status"],
            run["step"] or "-",
            run["customer"] or "-",
            _when(datetime.fromisoformat(run["started_at"])),
        ]
        for run in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())


# --------------------------------------------------------------------------- the calls


def _decide(wid: str, decision: Decision, approver: str, reason: str) -> None:
    try:
        request = ApprovalDecision(decision=decision, approver=approver.strip(), reason=reason)
    except ValidationError as exc:
        field, problem = _first_problem(exc)
        raise CliError(f"--{field}: {problem}") from None
    settings = _settings()

    async def send(client: Client) -> ApprovalAck:
        handle = client.get_workflow_handle(wid)
        try:
            ack: ApprovalAck = await handle.execute_update(
                DECIDE,
                request,
                result_type=ApprovalAck,
                rpc_timeout=timedelta(seconds=UPDATE_TIMEOUT_S),
            )
        except WorkflowUpdateFailedError as exc:
            # The run's validator refused it: not an approver, nothing pending.
            cause = exc.cause
            reason = cause.message if isinstance(cause, FailureError) else str(cause)
            raise CliError(f"{wid}: {reason}") from None
        except RPCTimeoutOrCancelledError:
            raise CliError(
                f"{wid}: no worker answered within {UPDATE_TIMEOUT_S:g}s; is `q2c worker` running?"
            ) from None
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                await _closed_or_missing(handle, "it takes no more decisions")
            raise
        return ack

    ack = _run(settings, send, wid)
    typer.echo(f"{_PAST[ack.decision]}: {wid}")
    typer.echo(f"by:     {ack.approver}")
    typer.echo(f"reason: {reason}")
    typer.echo(f"Web UI: {settings.run_link(wid)}")


@dataclass(frozen=True)
class RunView:
    """What `status` shows: the run as Temporal records it, and the run's own answer."""

    description: WorkflowExecutionDescription
    deal: DealStatus | None
    #: Why `deal` is missing (no worker answered the query, the query failed).
    note: str | None = None

    def search_attributes(self) -> dict[str, Any]:
        return _attributes(self.description.typed_search_attributes)

    def as_json(self, link: str) -> dict[str, Any]:
        d = self.description
        return {
            "workflow_id": d.id,
            "run_id": d.run_id,
            "run_status": _run_status(d.status),
            "started_at": d.start_time.isoformat(),
            "closed_at": d.close_time.isoformat() if d.close_time else None,
            "search_attributes": self.search_attributes(),
            "deal": self.deal.model_dump(mode="json") if self.deal else None,
            "note": self.note,
            "web_ui": link,
        }


async def _status(client: Client, wid: str) -> RunView:
    handle = client.get_workflow_handle(wid)
    description = await handle.describe(rpc_timeout=_rpc_timeout())
    try:
        deal: DealStatus = await handle.query(
            STATUS, result_type=DealStatus, rpc_timeout=timedelta(seconds=QUERY_TIMEOUT_S)
        )
    except (RPCError, RPCTimeoutOrCancelledError) as exc:
        timed_out = isinstance(exc, RPCTimeoutOrCancelledError) or exc.status in (
            RPCStatusCode.CANCELLED,
            RPCStatusCode.DEADLINE_EXCEEDED,
        )
        reason = (
            f"no worker answered the status query within {QUERY_TIMEOUT_S:g}s"
            if timed_out
            else f"the status query failed: {exc}"
        )
        return RunView(description, None, f"{reason}; showing what Temporal recorded")
    except (WorkflowQueryRejectedError, WorkflowQueryFailedError) as exc:
        return RunView(description, None, f"the status query failed: {exc}")
    return RunView(description, deal)


async def _closed_or_missing(handle: WorkflowHandle[Any, Any], consequence: str) -> None:
    """Temporal says NOT_FOUND both for an unknown id and a closed run: tell them apart."""
    try:
        description = await handle.describe(rpc_timeout=_rpc_timeout())
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"no run with workflow id {handle.id}") from None
        raise
    if description.status != WorkflowExecutionStatus.RUNNING:
        state = _run_status(description.status)
        raise CliError(f"{handle.id}: the run is {state}; {consequence}")


# --------------------------------------------------------------------------- plumbing


def _run(settings: Settings, work: Callable[[Client], Awaitable[T]], wid: str | None = None) -> T:
    """Connect, do the work, and turn what Temporal says into one line."""

    async def main() -> T:
        return await work(await _connect(settings))

    try:
        return asyncio.run(main())
    except RPCError as exc:
        raise CliError(_rpc_problem(exc, settings, wid)) from None
    except RPCTimeoutOrCancelledError:
        raise CliError(f"{wid or 'Temporal'}: no answer in time") from None
    except TemporalError as exc:
        raise CliError(f"{wid}: {exc}" if wid else str(exc)) from None


async def _connect(settings: Settings) -> Client:
    target = settings.temporal_target
    try:
        return await asyncio.wait_for(connect(settings), timeout=CONNECT_TIMEOUT_S)
    except TimeoutError:
        raise CliError(
            f"cannot reach Temporal at {target}: no answer within {CONNECT_TIMEOUT_S:g}s"
        ) from None
    except (RuntimeError, OSError, RPCError) as exc:
        # RuntimeError: the SDK's "Failed client connect: <transport error>".
        raise CliError(f"cannot reach Temporal at {target}: {_transport_reason(exc)}") from None


def _rpc_problem(exc: RPCError, settings: Settings, wid: str | None) -> str:
    target, message = settings.temporal_target, exc.message
    if exc.status == RPCStatusCode.NOT_FOUND:
        if "namespace" in message.lower():
            return f"namespace {settings.temporal_namespace!r} not found at {target}"
        if wid is not None:
            return f"no run with workflow id {wid}"
    if exc.status == RPCStatusCode.UNAVAILABLE:
        return f"cannot reach Temporal at {target}: {message}"
    if exc.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
        return f"Temporal at {target} did not answer in time ({message})"
    if exc.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
        return f"Temporal at {target} refused access: {message}"
    subject = f"{wid}: " if wid else ""
    return f"{subject}Temporal refused: {message} ({exc.status.name.lower()})"


_TONIC_MESSAGE = re.compile(r'message: "([^"]+)"')


def _transport_reason(exc: BaseException) -> str:
    """The useful end of the SDK's transport error ("Connection refused"), not its debug dump."""
    text = str(exc)
    if found := _TONIC_MESSAGE.search(text):
        return found.group(1)
    return text.removeprefix("Failed client connect: ")[:200] or type(exc).__name__


def _checked_opportunity_id(crm: Crm, value: str) -> str:
    """The id becomes part of the workflow id: refuse a malformed one before Temporal sees it."""
    return _OPPORTUNITY_ID_CHECKS[crm](value)


def _salesforce_opportunity_id(value: str) -> str:
    try:
        check_id(value, field="opportunity id")
    except ValidationFailed:
        raise CliError(
            f"{value}: not a Salesforce opportunity id (15 or 18 letters and digits)"
        ) from None
    if not value.startswith(SALESFORCE_OPPORTUNITY_PREFIX):
        raise CliError(
            f"{value}: not a Salesforce opportunity id "
            f"(those start with {SALESFORCE_OPPORTUNITY_PREFIX}, this one with {value[:3]})"
        )
    return value


_OPPORTUNITY_ID_CHECKS: dict[Crm, Callable[[str], str]] = {
    Crm.SALESFORCE: _salesforce_opportunity_id,
}


def _settings() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        field, problem = _first_problem(exc)
        raise CliError(f"settings: Q2C_{field.upper()}: {problem}") from None


def _first_problem(exc: ValidationError) -> tuple[str, str]:
    """The first field pydantic refused and why: one line is enough to fix it."""
    first = exc.errors()[0]
    return "_".join(str(part) for part in first["loc"]), first["msg"]


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _rpc_timeout() -> timedelta:
    return timedelta(seconds=RPC_TIMEOUT_S)


def _console() -> Console:
    """Made per command, so the width follows the terminal (or `COLUMNS`) of this call.

    No markup, emoji or highlighting: customer names and reasons are data, printed as is.
    """
    return Console(highlight=False, markup=False, emoji=False)


def _run_status(value: WorkflowExecutionStatus | None) -> str:
    return value.name.lower() if value is not None else "unknown"


def _attributes(found: TypedSearchAttributes) -> dict[str, Any]:
    return {pair.key.name: pair.value for pair in found}


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "-"


# --------------------------------------------------------------------------- rendering

_PAST = {Decision.APPROVE: "approved", Decision.REJECT: "rejected"}
_LABEL_WIDTH = len("legal entity")


def _render_status(out: Console, view: RunView, link: str) -> None:
    d = view.description
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True, min_width=_LABEL_WIDTH)
    grid.add_column()

    def row(label: str, value: str | Text | None) -> None:
        if value:
            grid.add_row(label, value if isinstance(value, Text) else Text(value))

    closed = f", closed {_when(d.close_time)}" if d.close_time else ""
    row("workflow id", d.id)
    row("run", f"{_run_status(d.status)} (started {_when(d.start_time)}{closed})")
    deal = view.deal
    if deal is None:
        attributes = view.search_attributes()
        row("note", view.note)
        row("step", attributes.get(attrs.STEP.name))
        row("opportunity", attributes.get(attrs.CORRELATION_ID.name))
        row("customer", attributes.get(attrs.CUSTOMER.name))
    else:
        row("step", deal.step.value)
        row("opportunity", f"{deal.crm} {deal.opportunity_id}")
        row("customer", deal.customer_name)
        row("legal entity", deal.legal_entity)
        row("currency", deal.currency)
        row("ids", ", ".join(f"{role} {value}" for role, value in deal.ids.items()))
        row("issues", _bullets(deal.validation_issues))
        if (pending := deal.pending_approval) is not None:
            row(
                "approval",
                f"pending since {_when(pending.requested_at)}\n"
                f"reminder {_when(pending.remind_at)} "
                f"({pending.reminders_sent} sent so far)\n"
                f"expires {_when(pending.expires_at)}\n" + _bullets(pending.reasons),
            )
        row("decisions", "\n".join(_decision_line(record) for record in deal.decisions))
        row("last error", deal.last_error)
    out.print(grid)
    # Outside the grid, never wrapped or cut: the link must survive copy and paste.
    out.print(Text.assemble((f"{'Web UI':<{_LABEL_WIDTH}}", "bold"), "  ", link), soft_wrap=True)


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def _decision_line(record: DecisionRecord) -> str:
    outcome = "accepted" if record.accepted else f"ignored: {record.ignored_because}"
    return (
        f"{record.decision} by {record.approver} via {record.via} at {_when(record.at)} "
        f"({outcome}): {record.reason}"
    )
