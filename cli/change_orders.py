"""Finance's handle on change-order runs: `q2c change-order start|preview|approve|reject`.

The run holds the impact preview, its digest and the rules (which changes need finance, who
may decide, that only the approved digest is applied); the CLI asks and prints. `preview`
shows the diff finance approves, line by line, with the digest the approval records. Every
failure, a refusal by the run included, is one line on stderr and exit code 1.

Importing this module registers its commands on `cli.app.app` (`cli/app.py` imports it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from temporalio.client import Client

from cli.app import CliError, app, friendly_errors
from cli.common import (
    QUERY_TIMEOUT_S,
    RPC_TIMEOUT_S,
    Approver,
    Fields,
    JsonFlag,
    Reason,
    RunView,
    bullets,
    console,
    decision_line,
    describe_and_query,
    print_started,
    run,
    run_status,
    salesforce_record_id,
    send_decision,
    settings,
    user,
    when,
)
from cli.lifecycle import Crm
from workflows import search_attributes as attrs
from workflows.approvals import DECIDE, ApprovalAck, Decision
from workflows.change_order import LIFECYCLE, STATUS, ChangeOrderView, workflow_id
from workflows.starters import CHANGE_ORDER, StartedRun, start_change_order_run

#: Salesforce gives custom objects (`Change_Order__c`) key prefixes starting with "a"; the
#: org picks the rest, so only the letter is checked. Standard objects' start with a digit.
SALESFORCE_CUSTOM_OBJECT_PREFIX = "a"

change_order_app = typer.Typer(
    help="Change-order runs: start one, preview its impact as a diff, decide."
)
app.add_typer(change_order_app, name="change-order")

ChangeOrderRun = Annotated[
    str,
    typer.Argument(
        metavar="WORKFLOW_ID",
        help=f"The run's workflow id, e.g. {LIFECYCLE}:salesforce:a06…, "
        "or the Salesforce change order id alone.",
    ),
]


# --------------------------------------------------------------------------- commands


@change_order_app.command("start")
@friendly_errors
def change_order_start(
    change_order_id: Annotated[
        str, typer.Argument(metavar="CHANGE_ORDER_ID", help="The CRM's change order id.")
    ],
    crm: Annotated[
        Crm, typer.Option("--crm", help="The CRM the change order lives in.")
    ] = Crm.SALESFORCE,
    as_json: JsonFlag = False,
) -> None:
    """Start the run of an approved change order, or find the one already running."""
    change_order_id = _checked_change_order_id(crm, change_order_id.strip())
    config = settings()
    wid = workflow_id(crm.value, change_order_id)

    async def start(client: Client) -> StartedRun:
        return await start_change_order_run(
            client,
            config.task_queue,
            change_order_id,
            crm=crm.value,
            trigger=f"cli:{user()}",
            rpc_timeout=timedelta(seconds=RPC_TIMEOUT_S),
        )

    print_started(run(config, start, wid), config.run_link(wid), as_json=as_json)


@change_order_app.command("preview")
@friendly_errors
def change_order_preview(wid: ChangeOrderRun, as_json: JsonFlag = False) -> None:
    """The impact preview as a diff, its digest, why finance must approve, and decisions."""
    wid = _resolved_wid(wid)
    config = settings()

    async def ask(client: Client) -> RunView[ChangeOrderView]:
        return await describe_and_query(
            client, wid, STATUS, result_type=ChangeOrderView, timeout_s=QUERY_TIMEOUT_S
        )

    view = run(config, ask, wid)
    if view.description.workflow_type != CHANGE_ORDER:
        raise CliError(f"{wid}: not a change-order run (a {view.description.workflow_type})")
    link = config.run_link(wid)
    if as_json:
        typer.echo(
            json.dumps(view.as_json("change_order", link, _view_json(view.answer)), indent=2)
        )
    else:
        _render_preview(console(), view, link)


@change_order_app.command("approve")
@friendly_errors
def change_order_approve(wid: ChangeOrderRun, approver: Approver, reason: Reason) -> None:
    """Approve the previewed impact: the run records its digest and applies exactly it."""
    _decide(wid, Decision.APPROVE, approver, reason)


@change_order_app.command("reject")
@friendly_errors
def change_order_reject(wid: ChangeOrderRun, approver: Approver, reason: Reason) -> None:
    """Reject the change order: nothing is applied, the CRM is told why."""
    _decide(wid, Decision.REJECT, approver, reason)


# --------------------------------------------------------------------------- the calls


def _decide(wid: str, decision: Decision, approver: str, reason: str) -> None:
    send_decision(
        _resolved_wid(wid),
        decision,
        approver,
        reason,
        update=DECIDE,
        ack_type=ApprovalAck,
        check="q2c change-order preview",
    )


def _resolved_wid(value: str) -> str:
    """A change-order run's workflow id, or a bare Salesforce change order id made into one.
    Other lifecycles' runs answer to `decide` too: never send a change order's decision there."""
    value = value.strip()
    if value.startswith(f"{LIFECYCLE}:"):
        return value
    if ":" in value:
        raise CliError(
            f"{value}: not a change-order run (those are {LIFECYCLE}:<crm>:<change order id>)"
        )
    return workflow_id(Crm.SALESFORCE.value, _checked_change_order_id(Crm.SALESFORCE, value))


def _checked_change_order_id(crm: Crm, value: str) -> str:
    """The id becomes part of the workflow id: refuse a malformed one before Temporal sees it."""
    return _CHANGE_ORDER_ID_CHECKS[crm](value)


def _salesforce_change_order_id(value: str) -> str:
    return salesforce_record_id(
        value,
        what="change order",
        prefix=SALESFORCE_CUSTOM_OBJECT_PREFIX,
        prefixed="a custom object's record id starts with",
    )


_CHANGE_ORDER_ID_CHECKS: dict[Crm, Callable[[str], str]] = {
    Crm.SALESFORCE: _salesforce_change_order_id,
}


# --------------------------------------------------------------------------- rendering


def _view_json(view: ChangeOrderView | None) -> dict[str, Any] | None:
    """The run's view as it answers, and the diff as `preview` prints it."""
    if view is None:
        return None
    shown = view.model_dump(mode="json")
    shown["diff"] = view.preview.render() if view.preview is not None else []
    return shown


_LABEL_WIDTH = len("change order")


def _render_preview(out: Console, view: RunView[ChangeOrderView], link: str) -> None:
    d = view.description
    fields = Fields(_LABEL_WIDTH)
    row = fields.row
    closed = f", closed {when(d.close_time)}" if d.close_time else ""
    row("workflow id", d.id)
    row("run", f"{run_status(d.status)} (started {when(d.start_time)}{closed})")
    co = view.answer
    if co is None:
        recorded = view.search_attributes()
        row("note", view.note)
        row("step", recorded.get(attrs.STEP.name))
        row("change order", recorded.get(attrs.CORRELATION_ID.name))
        fields.print(out, link)
        return
    row("step", co.step.value)
    deal = [f"opportunity {co.opportunity_id}"] if co.opportunity_id else []
    deal += [f"project {co.project_id}"] if co.project_id else []
    row(
        "change order", f"{co.crm} {co.change_order_id}" + (f" ({', '.join(deal)})" if deal else "")
    )
    preview = co.preview
    row("digest", preview.digest if preview is not None else "no preview yet")
    if co.risks:
        row("finance", "must approve:\n" + bullets(co.risks))
    elif preview is not None:
        row("finance", "no approval needed: the change applies at once")
    if (pending := co.pending_approval) is not None:
        row(
            "approval",
            f"pending since {when(pending.requested_at)}, expires {when(pending.expires_at)} "
            f"({pending.reminders_sent} reminders sent)",
        )
    row("decisions", bullets([decision_line(record) for record in co.decisions]))
    row("approved", co.approved_digest)
    row("superseded", bullets(co.superseded))
    row("applied", f"contract version {co.applied_version}" if co.applied_version else None)
    row("waiting on", co.waiting_on)
    row("last error", co.last_error)
    fields.print(out, link)
    if preview is not None:
        out.print()
        # Outside the grid, never wrapped: each line is one change, as finance approves it.
        out.print("Impact preview", style="bold")
        for line in preview.render():
            out.print(f"  {line}", soft_wrap=True)
