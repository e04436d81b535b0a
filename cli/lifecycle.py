"""A person's handle on lifecycle runs: start, approve, reject, retry, compensate, signal,
status, list.

Each command is a thin call on Temporal: the run holds the state and the rules (who may
approve, what a correction does), the CLI only asks and prints. Every failure, a refusal by
the run included, is one line on stderr (`error: ...`) and exit code 1.

Importing this module registers its commands on `cli.app.app` (`cli/app.py` imports it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from cli.app import app, friendly_errors
from cli.common import (
    QUERY_TIMEOUT_S,
    RPC_TIMEOUT_S,
    Approver,
    Fields,
    JsonFlag,
    Operator,
    Reason,
    RunView,
    bullets,
    closed_or_missing,
    console,
    decision_line,
    describe_and_query,
    print_started,
    rpc_timeout,
    run,
    run_status,
    salesforce_record_id,
    send_decision,
    send_operator_decision,
    settings,
    usage_error,
    user,
    when,
)
from workflows import search_attributes as attrs
from workflows.approvals import OperatorAction
from workflows.opportunity_to_project import (
    DATA_CORRECTED,
    DECIDE,
    LIFECYCLE,
    STATUS,
    ApprovalAck,
    DataCorrected,
    DealStatus,
    Decision,
    Step,
    workflow_id,
)
from workflows.starters import StartedRun, start_opportunity_run
from workflows.time_to_invoice import LIFECYCLE as INVOICE_LIFECYCLE
from workflows.time_to_invoice import InvoiceStep

#: Every Salesforce Opportunity id starts with this key prefix (001 is an Account, ...).
SALESFORCE_OPPORTUNITY_PREFIX = "006"

start_app = typer.Typer(help="Start a lifecycle run by hand (a webhook usually does).")
signal_app = typer.Typer(help="Tell a run that something changed outside it.")
app.add_typer(start_app, name="start")
app.add_typer(signal_app, name="signal")


class Crm(StrEnum):
    SALESFORCE = "salesforce"


class Lifecycle(StrEnum):
    OPPORTUNITY_TO_PROJECT = LIFECYCLE
    TIME_TO_INVOICE = INVOICE_LIFECYCLE


#: Each lifecycle's steps, as its runs show them in the `Q2cStep` search attribute.
STEPS: dict[Lifecycle, type[StrEnum]] = {
    Lifecycle.OPPORTUNITY_TO_PROJECT: Step,
    Lifecycle.TIME_TO_INVOICE: InvoiceStep,
}


WorkflowId = Annotated[
    str,
    typer.Argument(
        metavar="WORKFLOW_ID",
        help="The run's workflow id, e.g. opportunity-to-project:salesforce:006…",
    ),
]


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
    config = settings()
    wid = workflow_id(crm.value, opportunity_id)

    async def start(client: Client) -> StartedRun:
        return await start_opportunity_run(
            client,
            config,
            opportunity_id,
            crm=crm.value,
            trigger=f"cli:{user()}",
            rpc_timeout=timedelta(seconds=RPC_TIMEOUT_S),
        )

    print_started(run(config, start, wid), config.run_link(wid), as_json=as_json)


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


@app.command("retry")
@friendly_errors
def retry(wid: WorkflowId, operator: Operator, reason: Reason) -> None:
    """A run waiting for a person after a system's outage: try the step again."""
    _operate(wid, OperatorAction.RETRY, operator, reason)


@app.command("compensate")
@friendly_errors
def compensate(wid: WorkflowId, operator: Operator, reason: Reason) -> None:
    """A run waiting for a person after a system's outage: give up, undo what it created."""
    _operate(wid, OperatorAction.COMPENSATE, operator, reason)


@signal_app.command("data-corrected")
@friendly_errors
def signal_data_corrected(
    wid: WorkflowId,
    note: Annotated[str | None, typer.Option("--note", help="What was fixed.")] = None,
) -> None:
    """The deal was fixed in the CRM: the run fetches and validates it again."""
    config = settings()
    message = DataCorrected(corrected_by=user(), note=note)

    async def send(client: Client) -> None:
        handle = client.get_workflow_handle(wid)
        try:
            await handle.signal(DATA_CORRECTED, message, rpc_timeout=rpc_timeout())
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                await closed_or_missing(handle, "it takes no more signals")
            raise

    run(config, send, wid)
    typer.echo(f"data_corrected sent: {wid}")


@app.command("status")
@friendly_errors
def status(wid: WorkflowId, as_json: JsonFlag = False) -> None:
    """Where a run is: step, customer, ids, issues, pending approval, decisions."""
    config = settings()

    async def ask(client: Client) -> RunView[DealStatus]:
        return await describe_and_query(
            client, wid, STATUS, result_type=DealStatus, timeout_s=QUERY_TIMEOUT_S
        )

    view = run(config, ask, wid)
    link = config.run_link(wid)
    if as_json:
        typer.echo(json.dumps(view.as_json("deal", link), indent=2))
    else:
        _render_status(console(), view, link)


@app.command("list")
@friendly_errors
def list_runs(
    lifecycle: Annotated[
        Lifecycle, typer.Option("--lifecycle", help="Which lifecycle's runs.")
    ] = Lifecycle.OPPORTUNITY_TO_PROJECT,
    step: Annotated[
        str | None, typer.Option("--step", help="Only runs at this step of the lifecycle.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Runs found by their search attributes, newest first (visibility lags a second or so)."""
    config = settings()
    query = f"{attrs.LIFECYCLE.name} = '{lifecycle.value}'"
    if step is not None:
        steps = [s.value for s in STEPS[lifecycle]]
        if step not in steps:
            usage_error("--step", f"{step!r} is not a step of {lifecycle}: {', '.join(steps)}")
        query += f" AND {attrs.STEP.name} = '{step}'"

    async def find(client: Client) -> list[dict[str, Any]]:
        return [
            {
                "workflow_id": found.id,
                "status": run_status(found.status),
                "step": found.typed_search_attributes.get(attrs.STEP),
                "customer": found.typed_search_attributes.get(attrs.CUSTOMER),
                "started_at": found.start_time.isoformat(),
            }
            async for found in client.list_workflows(query, limit=limit, rpc_timeout=rpc_timeout())
        ]

    runs = run(config, find)
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
            found["workflow_id"],
            found["status"],
            found["step"] or "-",
            found["customer"] or "-",
            when(datetime.fromisoformat(found["started_at"])),
        ]
        for found in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())


# --------------------------------------------------------------------------- the calls


def _decide(wid: str, decision: Decision, approver: str, reason: str) -> None:
    send_decision(
        wid, decision, approver, reason, update=DECIDE, ack_type=ApprovalAck, check="q2c status"
    )


def _operate(wid: str, action: OperatorAction, operator: str, reason: str) -> None:
    wid = wid.strip()
    invoice_run = wid.startswith(f"{INVOICE_LIFECYCLE}:")
    check = "q2c invoice show" if invoice_run else "q2c status"
    send_operator_decision(wid, action, operator, reason, check=check)


def _checked_opportunity_id(crm: Crm, value: str) -> str:
    """The id becomes part of the workflow id: refuse a malformed one before Temporal sees it."""
    return _OPPORTUNITY_ID_CHECKS[crm](value)


def _salesforce_opportunity_id(value: str) -> str:
    return salesforce_record_id(
        value, what="opportunity", prefix=SALESFORCE_OPPORTUNITY_PREFIX, prefixed="those start with"
    )


_OPPORTUNITY_ID_CHECKS: dict[Crm, Callable[[str], str]] = {
    Crm.SALESFORCE: _salesforce_opportunity_id,
}


# --------------------------------------------------------------------------- rendering

_LABEL_WIDTH = len("legal entity")


def _render_status(out: Console, view: RunView[DealStatus], link: str) -> None:
    d = view.description
    fields = Fields(_LABEL_WIDTH)
    row = fields.row
    closed = f", closed {when(d.close_time)}" if d.close_time else ""
    row("workflow id", d.id)
    row("run", f"{run_status(d.status)} (started {when(d.start_time)}{closed})")
    deal = view.answer
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
        row("issues", bullets(deal.validation_issues))
        if (pending := deal.pending_approval) is not None:
            row(
                "approval",
                f"pending since {when(pending.requested_at)}\n"
                f"reminder {when(pending.remind_at)} "
                f"({pending.reminders_sent} sent so far)\n"
                f"expires {when(pending.expires_at)}\n" + bullets(pending.reasons),
            )
        row("decisions", "\n".join(decision_line(record) for record in deal.decisions))
        if (outage := deal.outage) is not None:
            row(
                "waiting on",
                f"{outage.system} since {when(outage.since)} at {outage.step}, "
                f"until {when(outage.deadline)}"
                + (
                    " (deadline passed: q2c retry | q2c compensate)"
                    if outage.awaiting_operator
                    else ""
                ),
            )
        row("last error", deal.last_error)
    fields.print(out, link)
