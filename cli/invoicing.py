"""Finance's handle on time-to-invoice runs, and the billing calendar's schedules.

`q2c invoice run|show|approve|reject|adjust` and `q2c schedules`. As with the lifecycle
commands, the run holds the draft and the rules (who may decide, how far an adjustment may
go); the CLI asks and prints. Every failure is one line on stderr and exit code 1; an option
value that cannot be read (an amount that is not a number) is one line and exit code 2.

Importing this module registers its commands on `cli.app.app` (`cli/app.py` imports it).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Table
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleDescription,
    ScheduleRange,
    ScheduleSpec,
)
from temporalio.service import RPCError, RPCStatusCode

from canonical import (
    AdjustmentKind,
    AdjustmentLine,
    BillingPeriod,
    DraftLine,
    DraftView,
    InvoiceAdjustment,
)
from cli.app import CliError, app, friendly_errors
from cli.common import (
    QUERY_TIMEOUT_S,
    RPC_TIMEOUT_S,
    UPDATE_TIMEOUT_S,
    Approver,
    Fields,
    JsonFlag,
    Reason,
    RunView,
    StillProcessing,
    amount_text,
    bullets,
    console,
    describe_and_query,
    execute_update,
    first_problem,
    print_decided,
    print_started,
    print_still_processing,
    query_or_note,
    rpc_timeout,
    run,
    run_status,
    send_decision,
    settings,
    usage_error,
    user,
    when,
)
from settings import Settings
from workflows import search_attributes as attrs
from workflows.starters import (
    SWEEPS,
    TIME_TO_INVOICE,
    StartedRun,
    ensure_billing_schedules,
    ensure_sweep_schedules,
    schedule_id,
    start_invoice_run,
    sweep_schedule_id,
)
from workflows.time_to_invoice import (
    ADJUST,
    DECIDE,
    LIFECYCLE,
    STATUS,
    Decision,
    DecisionAck,
    InvoiceCorrected,
    InvoiceKind,
    InvoiceRecord,
    InvoiceStatus,
    PaymentEvent,
    Rerate,
    upfront_workflow_id,
    workflow_id,
)

#: The PSA's (Tryton's) project ids are database ids: digits only.
PROJECT_ID = re.compile(r"^[0-9]{1,18}$")
#: An amount as a person types it on an invoice: 400 or 400.50, nothing else.
AMOUNT = re.compile(r"^[0-9]+(\.[0-9]+)?$")
#: How many upcoming starts `q2c schedules` shows per schedule.
NEXT_RUNS_SHOWN = 3
#: Click's exit code for a command line it cannot read.

invoice_app = typer.Typer(help="Time-to-invoice runs: start one, review the draft, decide.")
app.add_typer(invoice_app, name="invoice")

InvoiceWorkflowId = Annotated[
    str,
    typer.Argument(
        metavar="WORKFLOW_ID",
        help=f"The run's workflow id, e.g. {LIFECYCLE}:42:2026-11",
    ),
]


# --------------------------------------------------------------------------- commands


@invoice_app.command("run")
@friendly_errors
def invoice_run(
    project_id: Annotated[
        str, typer.Argument(metavar="PROJECT_ID", help="The PSA's project id, e.g. 42.")
    ],
    period: Annotated[
        str | None,
        typer.Option("--period", metavar="YYYY-MM", help="The billing period, e.g. 2026-11."),
    ] = None,
    upfront: Annotated[
        bool,
        typer.Option(
            "--upfront",
            help="The fixed fees' upfront shares instead of a period (after a rejected one).",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a project's time-to-invoice run for a period (or its upfront invoice), or find
    the one already running."""
    project_id = project_id.strip()
    if not PROJECT_ID.match(project_id):
        raise CliError(f"{project_id}: not a PSA project id (digits, e.g. 42)")
    if upfront == (period is not None):
        raise CliError("give --period YYYY-MM, or --upfront (not both)")
    kind = InvoiceKind.UPFRONT if upfront else InvoiceKind.PERIOD
    try:
        key = BillingPeriod.parse(period).key if period else _this_month()
    except ValueError as exc:
        raise CliError(f"--period: {exc}") from None
    config = settings()
    wid = upfront_workflow_id(project_id) if upfront else workflow_id(project_id, key)

    async def start(client: Client) -> StartedRun:
        return await start_invoice_run(
            client,
            config,
            project_id,
            key,
            trigger=f"cli:{user()}",
            rpc_timeout=timedelta(seconds=RPC_TIMEOUT_S),
            kind=kind,
        )

    print_started(run(config, start, wid), config.run_link(wid), as_json=as_json)


def _this_month() -> str:
    return BillingPeriod.of(datetime.now(UTC).date()).key


@invoice_app.command("approve")
@friendly_errors
def invoice_approve(wid: InvoiceWorkflowId, approver: Approver, reason: Reason) -> None:
    """Approve the draft: the run bills it, posts it to the ERP and follows the payment."""
    _decide(wid, Decision.APPROVE, approver, reason)


@invoice_app.command("reject")
@friendly_errors
def invoice_reject(wid: InvoiceWorkflowId, approver: Approver, reason: Reason) -> None:
    """Reject the draft: nothing is billed and the time stays unbilled."""
    _decide(wid, Decision.REJECT, approver, reason)


@invoice_app.command("adjust")
@friendly_errors
def invoice_adjust(
    wid: InvoiceWorkflowId,
    approver: Approver,
    reason: Reason,
    write_off: Annotated[
        list[str] | None,
        typer.Option(
            "--write-off",
            metavar="DESCRIPTION=AMOUNT",
            help="Work not charged, net of tax, e.g. 'Onboarding=400'. Repeatable.",
        ),
    ] = None,
    discount: Annotated[
        list[str] | None,
        typer.Option(
            "--discount",
            metavar="DESCRIPTION=AMOUNT",
            help="A discount, net of tax, e.g. 'Loyalty=150.50'. Repeatable.",
        ),
    ] = None,
) -> None:
    """Take amounts off the draft (net, before tax) while it waits for finance."""
    lines = [_adjustment_line("--write-off", AdjustmentKind.WRITE_OFF, v) for v in write_off or []]
    lines += [_adjustment_line("--discount", AdjustmentKind.DISCOUNT, v) for v in discount or []]
    if not lines:
        usage_error("--write-off/--discount", "give at least one DESCRIPTION=AMOUNT")
    wid = _checked_wid(wid)
    try:
        # One id per command: a retry of this delivery (or the same one by signal) applies once.
        request = InvoiceAdjustment(
            adjustment_id=f"adj-{uuid.uuid4().hex[:16]}",
            approver=approver.strip(),
            reason=reason,
            lines=lines,
        )
    except ValidationError as exc:
        field, problem = first_problem(exc)
        raise CliError(f"--{field}: {problem}") from None
    config = settings()

    async def send(client: Client) -> tuple[DecisionAck | StillProcessing, InvoiceStatus | None]:
        ack = await execute_update(
            client,
            wid,
            ADJUST,
            request,
            result_type=DecisionAck,
            timeout_s=UPDATE_TIMEOUT_S,
            consequence="its draft can no longer change",
        )
        if isinstance(ack, StillProcessing):
            return ack, None
        # The acknowledgement carries the total, the draft its currency.
        status, _ = await query_or_note(
            client.get_workflow_handle(wid),
            STATUS,
            result_type=InvoiceStatus,
            timeout_s=QUERY_TIMEOUT_S,
        )
        return ack, status

    ack, status = run(config, send, wid)
    if isinstance(ack, StillProcessing):
        print_still_processing(wid, "adjustment", "q2c invoice show", config.run_link(wid))
        return
    currency = status.draft.currency if status and status.draft else None
    unit = f" {currency}" if currency else ""
    details = [
        f"- {_KIND_LABEL[line.kind]} {line.description}: {amount_text(line.amount, currency)}{unit}"
        for line in lines
    ]
    if ack.total is not None:
        details.append(f"new total: {amount_text(ack.total, currency)}{unit}")
    details.append(f"adjustment id: {request.adjustment_id}")
    if ack.duplicate:
        details.append("(applied before: this delivery changed nothing)")
    print_decided("adjusted", wid, ack.approver, reason, config.run_link(wid), details)


@invoice_app.command("show")
@friendly_errors
def invoice_show(wid: InvoiceWorkflowId, as_json: JsonFlag = False) -> None:
    """The draft line by line with its totals, finance's decisions, the invoice and payments."""
    wid = _checked_wid(wid)
    config = settings()

    async def ask(client: Client) -> RunView[InvoiceStatus]:
        return await describe_and_query(
            client, wid, STATUS, result_type=InvoiceStatus, timeout_s=QUERY_TIMEOUT_S
        )

    view = run(config, ask, wid)
    if view.description.workflow_type != TIME_TO_INVOICE:
        raise CliError(f"{wid}: not a time-to-invoice run (a {view.description.workflow_type})")
    link = config.run_link(wid)
    if as_json:
        answer = _status_json(view.answer) if view.answer else None
        typer.echo(json.dumps(view.as_json("invoice", link, answer), indent=2))
    else:
        _render_invoice(console(), view, link)


@app.command("schedules")
@friendly_errors
def schedules(
    apply: Annotated[
        bool,
        typer.Option(
            "--apply", help="First create or update the schedules from the settings' calendars."
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """q2c's Temporal Schedules: when each billing calendar next starts an invoice cycle, and
    each catch-up sweep its next look for missed webhooks."""
    config = settings()
    sweeps = {sweep_schedule_id(config.task_queue, name): name for name in SWEEPS}

    async def look(client: Client) -> list[dict[str, Any]]:
        ids = set(await ensure_billing_schedules(client, config) if apply else [])
        ids |= set(await ensure_sweep_schedules(client, config) if apply else [])
        # The list comes from visibility, which lags: a schedule just applied may be missing.
        listing = await client.list_schedules(rpc_timeout=rpc_timeout())
        ids |= {
            found.id
            async for found in listing
            if found.id.startswith(_SCHEDULE_PREFIX) or found.id in sweeps
        }
        views = []
        for sid in sorted(ids):
            try:
                described = await client.get_schedule_handle(sid).describe(
                    rpc_timeout=rpc_timeout()
                )
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:  # deleted since it was listed
                    continue
                raise
            views.append(_schedule_json(described, config, sweep=sweeps.get(sid)))
        return views

    found = run(config, look)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no schedules; `q2c schedules --apply` creates them from the settings")
        return
    _render_schedules(console(), found)


# --------------------------------------------------------------------------- the calls


def _decide(wid: str, decision: Decision, approver: str, reason: str) -> None:
    send_decision(
        _checked_wid(wid),
        decision,
        approver,
        reason,
        update=DECIDE,
        ack_type=DecisionAck,
        check="q2c invoice show",
    )


def _checked_wid(wid: str) -> str:
    """Opportunity runs answer to `decide` too: never send finance's invoice decision there."""
    wid = wid.strip()
    if not wid.startswith(f"{LIFECYCLE}:"):
        raise CliError(
            f"{wid}: not a time-to-invoice run (those are {LIFECYCLE}:<project>:<YYYY-MM>)"
        )
    return wid


def _adjustment_line(option: str, kind: AdjustmentKind, value: str) -> AdjustmentLine:
    description, equals, amount_text = value.rpartition("=")
    description, amount_text = description.strip(), amount_text.strip()
    if not equals or not description:
        usage_error(option, f"{value!r} is not DESCRIPTION=AMOUNT")
    if not AMOUNT.match(amount_text):
        usage_error(option, f"{value!r}: the amount {amount_text!r} is not a number like 400.50")
    # Decimal from the text: an amount is never a float, not even on its way in.
    amount = Decimal(amount_text)
    if amount <= 0:
        usage_error(option, f"{value!r}: the amount must be more than 0")
    try:
        return AdjustmentLine(kind=kind, description=description, amount=amount)
    except ValidationError as exc:
        usage_error(option, f"{value!r}: {first_problem(exc)[1]}")


# --------------------------------------------------------------------------- amounts


def _plain(value: Decimal, currency: str) -> str:
    return amount_text(value, currency, grouped=False)


def _draft_json(draft: DraftView) -> dict[str, Any]:
    """Amounts as strings (exact, never floats) in the currency's minor unit."""
    c = draft.currency
    shown = draft.model_dump(mode="json")
    shown.update(subtotal=_plain(draft.subtotal, c), tax=_plain(draft.tax, c))
    shown["total"] = _plain(draft.total, c)
    shown["lines"] = [
        {
            **line.model_dump(mode="json"),
            "unit_price": _plain(line.unit_price, c),
            "net": _plain(line.net, c),
            "tax": _plain(line.tax, c),
            "total": _plain(line.total, c),
        }
        for line in draft.lines
    ]
    return shown


def _status_json(status: InvoiceStatus) -> dict[str, Any]:
    shown = status.model_dump(mode="json")
    if status.draft is not None:
        shown["draft"] = _draft_json(status.draft)
    shown["rerates"] = [
        {
            **rerate.model_dump(mode="json"),
            "total_before": _plain(rerate.total_before, rerate.currency)
            if rerate.total_before is not None and rerate.currency
            else None,
            "total_after": _plain(rerate.total_after, rerate.currency)
            if rerate.total_after is not None and rerate.currency
            else None,
        }
        for rerate in status.rerates
    ]
    return shown


# --------------------------------------------------------------------------- schedules

_SCHEDULE_PREFIX = schedule_id("")
#: Each cron field's full range: shown as `*`.
_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day_of_month", 1, 31),
    ("month", 1, 12),
    ("day_of_week", 0, 6),
)


def _schedule_json(
    described: ScheduleDescription, config: Settings, *, sweep: str | None = None
) -> dict[str, Any]:
    """A billing calendar's schedule (`calendar`, `cron`) or a sweep's (`sweep`, `every`)."""
    schedule, info = described.schedule, described.info
    calendar = None if sweep else described.id.removeprefix(_SCHEDULE_PREFIX)
    every = [i.every for i in schedule.spec.intervals]
    action = schedule.action
    starts = action if isinstance(action, ScheduleActionStartWorkflow) else None
    return {
        "schedule_id": described.id,
        "calendar": calendar,
        "sweep": sweep,
        "cron": _cron(schedule.spec),
        "every_s": every[0].total_seconds() if len(every) == 1 else None,
        "note": schedule.state.note,
        "paused": schedule.state.paused,
        "settings_cron": config.billing_calendars.get(calendar) if calendar else None,
        "settings_every_s": config.sweep_interval.total_seconds() if sweep else None,
        "workflow": starts.workflow if starts else None,
        "task_queue": starts.task_queue if starts else None,
        "next_runs": [at.isoformat() for at in info.next_action_times[:NEXT_RUNS_SHOWN]],
        "recent_actions": [
            {
                "scheduled_at": done.scheduled_at.isoformat(),
                "started_at": done.started_at.isoformat(),
                "workflow_id": done.action.workflow_id,
                "run_id": done.action.first_execution_run_id,
            }
            for done in info.recent_actions
            if isinstance(done.action, ScheduleActionExecutionStartWorkflow)
        ],
    }


def _cron(spec: ScheduleSpec) -> str | None:
    """The server keeps a cron as a calendar spec; read it back as the cron it was."""
    if spec.cron_expressions:
        return "; ".join(spec.cron_expressions)
    if len(spec.calendars) != 1 or spec.intervals:
        return None
    calendar = spec.calendars[0]
    if calendar.year or [(r.start, r.end) for r in calendar.second] not in ([(0, 0)], []):
        return None  # not something five cron fields say
    fields = [_cron_field(getattr(calendar, name), low, high) for name, low, high in _CRON_FIELDS]
    return f"{' '.join(fields)} ({spec.time_zone_name or 'UTC'})"


def _cron_field(ranges: tuple[ScheduleRange, ...], low: int, high: int) -> str:
    parts = []
    for r in ranges or (ScheduleRange(low, high),):
        end = max(r.start, r.end)  # an end of 0 means "just the start"
        text = "*" if (r.start, end) == (low, high) else str(r.start)
        if text != "*" and end != r.start:
            text += f"-{end}"
        parts.append(text + (f"/{r.step}" if r.step > 1 else ""))
    return ",".join(parts)


def _render_schedules(out: Console, found: list[dict[str, Any]]) -> None:
    for index, schedule in enumerate(found):
        if index:
            out.print()
        out.print(schedule["schedule_id"], style="bold")
        fields = Fields(_SCHEDULE_LABEL_WIDTH)
        row = fields.row
        if schedule["sweep"]:
            row("sweep", schedule["sweep"])
            row("every", _seconds(schedule["every_s"]))
        else:
            row("calendar", schedule["calendar"])
            row("cron", schedule["cron"])
        row("note", schedule["note"])
        row("state", "paused" if schedule["paused"] else "active")
        if schedule["workflow"]:
            row("starts", f"{schedule['workflow']} on task queue {schedule['task_queue']}")
        configured = schedule["settings_cron"]
        if schedule["sweep"]:
            if schedule["settings_every_s"] != schedule["every_s"]:
                wanted = _seconds(schedule["settings_every_s"])
                row("settings", f"say every {wanted}; `q2c schedules --apply` updates it")
        elif configured is None:
            row("settings", "not in the settings' billing calendars")
        elif configured not in (schedule["note"] or ""):
            row("settings", f"say {configured}; `q2c schedules --apply` updates the schedule")
        row("next runs", "\n".join(_iso_when(at) for at in schedule["next_runs"]) or "none")
        row(
            "recent",
            "\n".join(
                f"{_iso_when(done['started_at'])}  {done['workflow_id']}"
                for done in schedule["recent_actions"]
            )
            or "none yet",
        )
        fields.print(out)


def _seconds(total: float | None) -> str:
    return "?" if total is None else str(timedelta(seconds=total))


def _iso_when(at: str) -> str:
    return when(datetime.fromisoformat(at))


# --------------------------------------------------------------------------- rendering

_KIND_LABEL = {AdjustmentKind.WRITE_OFF: "write-off", AdjustmentKind.DISCOUNT: "discount"}
_LABEL_WIDTH = len("adjustments")
_SCHEDULE_LABEL_WIDTH = len("next runs")


def _render_invoice(out: Console, view: RunView[InvoiceStatus], link: str) -> None:
    header = Fields(_LABEL_WIDTH)
    d = view.description
    closed = f", closed {when(d.close_time)}" if d.close_time else ""
    header.row("workflow id", d.id)
    header.row("run", f"{run_status(d.status)} (started {when(d.start_time)}{closed})")
    status = view.answer
    if status is None:
        recorded = view.search_attributes()
        header.row("note", view.note)
        header.row("step", recorded.get(attrs.STEP.name))
        header.row("customer", recorded.get(attrs.CUSTOMER.name))
        header.row("correlation", recorded.get(attrs.CORRELATION_ID.name))
        header.print(out, link)
        return
    pending = f" (since {when(status.pending_since)})" if status.pending_since else ""
    header.row("step", f"{status.step.value}{pending}")
    header.row("project", f"{status.project_id}, period {status.period}")
    header.row("customer", status.customer_name)
    if status.supplementary_to:
        header.row(
            "supplementary",
            "bills only time not billed on " + ", ".join(status.supplementary_to),
        )
    draft = status.draft
    if draft is None:
        header.row("draft", "not drafted yet")
    elif not draft.lines:
        header.row("draft", "no billable time in the period")
    header.print(out)
    rest = Fields(_LABEL_WIDTH)
    if draft is not None and draft.lines:
        out.print()
        out.print(_lines_table(draft))
        c = draft.currency
        totals = {"subtotal": draft.subtotal, "tax": draft.tax, "total": draft.total}
        width = max(len(amount_text(v, c)) for v in totals.values())
        for label, value in totals.items():
            rest.row(label, f"{amount_text(value, c):>{width}} {c}")
        overage = f", overage {amount_text(draft.overage, c)} {c}" if draft.overage else ""
        rest.row("hours", f"{draft.hours:f}{overage}")
        rest.row(
            "entries",
            f"{draft.time_entries} time entries, {draft.rejected_entries} rejected",
        )
        rest.row(
            "adjustments",
            bullets(
                [
                    f"{_KIND_LABEL[line.kind]} {line.description}: "
                    f"{amount_text(line.amount, c)} {c} "
                    f"(by {adjustment.approver}: {adjustment.reason}"
                    f"{f'; {adjustment.adjustment_id}' if adjustment.adjustment_id else ''})"
                    for adjustment in draft.adjustments
                    for line in adjustment.lines
                ]
            ),
        )
    rest.row("re-rates", bullets([_rerate_line(rerate) for rerate in status.rerates]))
    rest.row("corrections", bullets([_correction_line(fix) for fix in status.corrections]))
    rest.row("finance", bullets([_record_line(record) for record in status.records]))
    if status.invoice_number or status.billing_invoice_id:
        ids = [f"billing {status.billing_invoice_id}"] if status.billing_invoice_id else []
        ids += [f"ERP {status.erp_invoice_id}"] if status.erp_invoice_id else []
        rest.row("invoice", f"{status.invoice_number or '(not numbered)'} ({', '.join(ids)})")
    rest.row("due", status.due_date.isoformat() if status.due_date else None)
    currency = draft.currency if draft else None
    rest.row("payments", bullets([_payment_line(p, currency) for p in status.payments]))
    rest.row("last error", status.last_error)
    rest.row("follow-up", bullets(status.issues) if status.issues else None)
    out.print()
    rest.print(out, link)


def _lines_table(draft: DraftView) -> Table:
    c = draft.currency
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("description")
    for name in ("quantity", f"unit price ({c})", "net", "tax", "total"):
        table.add_column(name, justify="right", no_wrap=True)
    for line in draft.lines:
        table.add_row(
            line.description + _traced(line),
            f"{line.quantity:f}",
            amount_text(line.unit_price, c),
            amount_text(line.net, c),
            amount_text(line.tax, c),
            amount_text(line.total, c),
        )
    return table


def _traced(line: DraftLine) -> str:
    """Where a line comes from: its contract version and what produced it."""
    if line.contract_version is None and not line.source_count:
        return ""
    version = f"contract v{line.contract_version}" if line.contract_version else "no contract"
    if not line.source_count:
        return f"\n  {version}"
    shown = ", ".join(line.sources)
    hidden = line.source_count - len(line.sources)
    more = f" and {hidden} more" if hidden > 0 else ""
    return f"\n  {version}; from {shown}{more}"


def _record_line(record: InvoiceRecord) -> str:
    outcome = "accepted" if record.accepted else f"ignored: {record.ignored_because}"
    return (
        f"{record.what} by {record.approver} via {record.via} at {when(record.at)} "
        f"({outcome}): {record.reason}"
    )


def _rerate_line(rerate: Rerate) -> str:
    """What a change order did to the draft finance holds: re-rated it, or nothing and why."""
    order = f"change order {rerate.change_order} (contract v{rerate.version}"
    order += f", effective {rerate.effective_from.isoformat()})"
    if not rerate.rerated:
        return f"Not re-rated by {order} at {when(rerate.at)}: {rerate.ignored_because}"
    c = rerate.currency
    before = amount_text(rerate.total_before, c) if rerate.total_before is not None else "?"
    after = amount_text(rerate.total_after, c) if rerate.total_after is not None else "?"
    dropped = "".join(f"; adjustment dropped: {d}" for d in rerate.dropped_adjustments)
    return (
        f"Re-rated by {order} at {when(rerate.at)}: total {before} → {after} {c or ''}".rstrip()
        + dropped
    )


def _correction_line(fix: InvoiceCorrected) -> str:
    """A change order that corrected the issued invoice: its credit note and re-bill."""
    parts = [f"credit note {fix.credit_note_id}"] if fix.credit_note_id else []
    if fix.rebill_invoice_id:
        total = (
            f", {amount_text(fix.rebill_total, fix.currency)} {fix.currency or ''}".rstrip()
            if fix.rebill_total is not None
            else ""
        )
        parts.append(f"re-bill {fix.rebill_number or fix.rebill_invoice_id}{total}")
    if fix.erp_credit_note_id or fix.erp_rebill_id:
        parts.append(f"ERP credit {fix.erp_credit_note_id}, re-bill {fix.erp_rebill_id}")
    follows = "; payment now followed on the re-bill" if fix.followed else ""
    return f"Corrected by change order {fix.change_order}: {', '.join(parts)}{follows}"


def _payment_line(event: PaymentEvent, currency: str | None) -> str:
    amount = f" {amount_text(event.amount, currency)} {currency or ''}" if event.amount else ""
    reason = f": {event.reason}" if event.reason else ""
    return f"{event.kind}{amount.rstrip()} at {when(event.occurred_at)} ({event.event_id}){reason}"
