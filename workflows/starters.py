"""Starting lifecycle runs from outside a workflow: the service's webhooks and the CLI.

Both start a run the same way, so a deal started by hand and the same deal's webhook land on
one run: the business-key workflow id, the same conflict and reuse policies, the same search
attributes. This module is client-side code; it never runs inside a workflow.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import SignalWorkflowExecutionRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from connectors.stripe import wire as stripe_wire
from connectors.stripe.mapping import from_minor
from settings import Settings
from store import Store
from workflows import search_attributes as attrs
from workflows.change_order import (
    ENQUEUE,
    ChangeOrderInput,
    ChangeOrderQueueInput,
    ChangeOrderStep,
    QueueTicket,
    queue_workflow_id,
)
from workflows.change_order import LIFECYCLE as CHANGE_ORDER_LIFECYCLE
from workflows.change_order import workflow_id as change_order_workflow_id
from workflows.invoice_cycle import InvoiceCycleInput
from workflows.opportunity_to_project import (
    DATA_CORRECTED,
    LIFECYCLE,
    DataCorrected,
    OpportunityToProjectInput,
    Step,
    workflow_id,
)
from workflows.sweeps import SweepInput
from workflows.time_to_invoice import (
    BILLING_METADATA_KEY,
    PAYMENT,
    InvoiceKind,
    InvoiceStep,
    PaymentEvent,
    TimeToInvoiceInput,
    upfront_workflow_id,
)
from workflows.time_to_invoice import LIFECYCLE as INVOICE_LIFECYCLE
from workflows.time_to_invoice import workflow_id as invoice_workflow_id

#: The type names the worker registers: starters start runs by name, they never run one.
OPPORTUNITY_TO_PROJECT = "OpportunityToProjectWorkflow"
INVOICE_CYCLE = "InvoiceCycleWorkflow"
TIME_TO_INVOICE = "TimeToInvoiceWorkflow"
CRM_SWEEP = "CrmSweepWorkflow"
BILLING_SWEEP = "BillingSweepWorkflow"
CHANGE_ORDER = "ChangeOrderWorkflow"
CHANGE_ORDER_QUEUE = "ChangeOrderQueueWorkflow"

_CRM_NAMES = {"salesforce": "Salesforce"}


@dataclass(frozen=True)
class StartedRun:
    workflow_id: str
    run_id: str | None
    #: False when a run with this workflow id was already running and the start attached to it.
    started: bool


async def start_opportunity_run(
    client: Client,
    settings: Settings,
    opportunity_id: str,
    *,
    crm: str,
    trigger: str,
    summary: str | None = None,
    rpc_timeout: timedelta | None = None,
    refetch: bool = False,
    changed_at: datetime | None = None,
) -> StartedRun:
    """Start the deal's opportunity-to-project run, or attach to the one already running.

    With `refetch` (a fresh change in the CRM), a run already waiting for corrected data is
    told to fetch the deal again: signal-with-start delivers `data_corrected` to the running
    run, or to the new one before its first step (where it changes nothing).
    With `changed_at` (when the CRM change being reported happened), a run of the deal that
    started at or after it has already read that change: it is returned, not started again,
    even when it has finished. So a webhook replayed after a sweep started the deal's run
    (or the other way round) lands on that run.
    The caller checks the opportunity id's format first: it becomes part of the workflow id.
    """
    if changed_at is not None:
        found = await find_opportunity_run(client, opportunity_id, crm=crm, rpc_timeout=rpc_timeout)
        if found is not None and found.start_time >= changed_at:
            return StartedRun(workflow_id=found.workflow_id, run_id=found.run_id, started=False)
    handle = await client.start_workflow(
        OPPORTUNITY_TO_PROJECT,
        OpportunityToProjectInput(opportunity_id=opportunity_id, crm=crm, trigger=trigger),
        id=workflow_id(crm, opportunity_id),
        task_queue=settings.task_queue,
        # Starts racing each other (redelivered webhooks, a person and a webhook) attach to the
        # one running run...
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # ...and a deal that is won again later gets a new run that updates what exists.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(attrs.CORRELATION_ID, opportunity_id),
                SearchAttributePair(attrs.LIFECYCLE, LIFECYCLE),
                SearchAttributePair(attrs.STEP, Step.FETCH_DEAL.value),
            ]
        ),
        static_summary=summary or f"{_CRM_NAMES.get(crm, crm)} opportunity {opportunity_id}",
        rpc_timeout=rpc_timeout,
        start_signal=DATA_CORRECTED if refetch else None,
        start_signal_args=[DataCorrected(corrected_by=crm, note=trigger)] if refetch else [],
    )
    return StartedRun(workflow_id=handle.id, run_id=handle.result_run_id, started=_started(handle))


async def start_change_order_run(
    client: Client,
    task_queue: str,
    change_order_id: str,
    *,
    crm: str,
    trigger: str,
    rpc_timeout: timedelta | None = None,
) -> StartedRun:
    """Start the change order's run, or attach to the one already running.

    A change order's webhook, its redelivery, a person's `q2c change-order start` and the
    deal's queue land on one run; a change order approved again after its run ended (edited,
    re-approved in the CRM) gets a new run, which finds what the last one applied.
    The caller checks the id's format first: it becomes part of the workflow id.
    """
    handle = await client.start_workflow(
        CHANGE_ORDER,
        ChangeOrderInput(change_order_id=change_order_id, crm=crm, trigger=trigger),
        id=change_order_workflow_id(crm, change_order_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(attrs.CORRELATION_ID, change_order_id),
                SearchAttributePair(attrs.LIFECYCLE, CHANGE_ORDER_LIFECYCLE),
                SearchAttributePair(attrs.STEP, ChangeOrderStep.FETCH.value),
            ]
        ),
        static_summary=f"{_CRM_NAMES.get(crm, crm)} change order {change_order_id}",
        rpc_timeout=rpc_timeout,
    )
    return StartedRun(workflow_id=handle.id, run_id=handle.result_run_id, started=_started(handle))


async def enqueue_change_order(
    client: Client,
    task_queue: str,
    *,
    crm: str,
    opportunity_id: str,
    change_order_id: str,
    workflow_id: str,
) -> None:
    """Join the deal's change-order queue (starting it if it is not running)."""
    await client.start_workflow(
        CHANGE_ORDER_QUEUE,
        ChangeOrderQueueInput(crm=crm, opportunity_id=opportunity_id),
        id=queue_workflow_id(crm, opportunity_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=f"Change orders of {_CRM_NAMES.get(crm, crm)} opportunity {opportunity_id}",
        start_signal=ENQUEUE,
        start_signal_args=[QueueTicket(change_order_id=change_order_id, workflow_id=workflow_id)],
    )


@dataclass(frozen=True)
class ExistingRun:
    workflow_id: str
    run_id: str
    start_time: datetime
    running: bool


async def find_opportunity_run(
    client: Client, opportunity_id: str, *, crm: str, rpc_timeout: timedelta | None = None
) -> ExistingRun | None:
    """The deal's latest opportunity-to-project run, running or closed; None if it never had one.

    This is how the CRM sweep tells a deal q2c has seen from one whose webhook was lost.
    """
    handle = client.get_workflow_handle(workflow_id(crm, opportunity_id))
    try:
        described = await handle.describe(rpc_timeout=rpc_timeout)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return ExistingRun(
        workflow_id=described.id,
        run_id=described.run_id,
        start_time=described.start_time,
        running=described.close_time is None,
    )


async def start_invoice_run(
    client: Client,
    settings: Settings,
    project_id: str,
    period: str,
    *,
    trigger: str,
    rpc_timeout: timedelta | None = None,
    kind: InvoiceKind = InvoiceKind.PERIOD,
) -> StartedRun:
    """Start the project's time-to-invoice run for a period, or attach to the one running.

    A period whose run was rejected, expired or failed may be run again: the PSA then offers
    only what is still unbilled, so nothing is invoiced twice. The caller checks the project
    id and the period first: both become part of the workflow id. An upfront run (`kind`)
    has one id per project; run again, it bills only the upfront shares not yet issued.
    """
    upfront = kind is InvoiceKind.UPFRONT
    handle = await client.start_workflow(
        TIME_TO_INVOICE,
        TimeToInvoiceInput(project_id=project_id, period=period, trigger=trigger, kind=kind),
        id=upfront_workflow_id(project_id) if upfront else invoice_workflow_id(project_id, period),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(attrs.LIFECYCLE, INVOICE_LIFECYCLE),
                SearchAttributePair(attrs.STEP, InvoiceStep.LOAD_CONTRACT.value),
            ]
        ),
        static_summary=(
            f"Upfront invoice of project {project_id}"
            if upfront
            else f"Invoice project {project_id} for {period}"
        ),
        rpc_timeout=rpc_timeout,
    )
    return StartedRun(workflow_id=handle.id, run_id=handle.result_run_id, started=_started(handle))


def _started(handle: object) -> bool:
    """Whether the server started a new run (`StartWorkflowExecutionResponse.started`).

    The SDK keeps the response only on a private attribute; `tests/cli` proves that a second
    start still reads False here, so an SDK upgrade that moves it cannot pass unnoticed.
    """
    response = getattr(handle, "_start_workflow_response", None)
    return bool(getattr(response, "started", True))


def schedule_id(calendar: str) -> str:
    return f"q2c-billing-{calendar}"


async def ensure_billing_schedules(client: Client, settings: Settings) -> list[str]:
    """One Temporal Schedule per billing calendar; creating them again updates them."""
    ids = []
    for calendar, cron in settings.billing_calendars.items():
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                INVOICE_CYCLE,
                InvoiceCycleInput(calendar=calendar),
                id=f"invoice-cycle-{calendar}",
                task_queue=settings.task_queue,
            ),
            spec=ScheduleSpec(cron_expressions=[cron]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            state=ScheduleState(note=f"q2c billing calendar {calendar!r}: {cron} (UTC)"),
        )
        sid = schedule_id(calendar)
        try:
            await client.create_schedule(sid, schedule)
        except ScheduleAlreadyRunningError:
            await client.get_schedule_handle(sid).update(
                lambda _, schedule=schedule: ScheduleUpdate(schedule=schedule)  # type: ignore[misc]
            )
        ids.append(sid)
    return ids


# ------------------------------------------------------------------------ catch-up sweeps

#: The sweeps and the workflow each one's schedule starts.
SWEEPS = {"crm": CRM_SWEEP, "billing": BILLING_SWEEP}


def sweep_schedule_id(task_queue: str, name: str) -> str:
    """`q2c-sweep-crm` for the deployment on task queue `q2c`: one set of sweeps per
    deployment, and a test's private queue gets private sweeps."""
    return f"{task_queue}-sweep-{name}"


async def ensure_sweep_schedules(client: Client, settings: Settings) -> list[str]:
    """One Temporal Schedule per catch-up sweep, every `sweep_interval`; again updates them.

    A sweep still running when the next is due is not doubled (overlap SKIP); one that a
    worker outage made miss its time runs once when the worker is back.
    """
    ids = []
    for name, workflow in SWEEPS.items():
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                workflow,
                SweepInput(sweep=name),
                id=sweep_schedule_id(settings.task_queue, name),
                task_queue=settings.task_queue,
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=settings.sweep_interval)]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            state=ScheduleState(
                note=f"q2c catch-up sweep {name!r}: every {settings.sweep_interval}"
            ),
        )
        sid = sweep_schedule_id(settings.task_queue, name)
        try:
            await client.create_schedule(sid, schedule)
        except ScheduleAlreadyRunningError:
            await client.get_schedule_handle(sid).update(
                lambda _, schedule=schedule: ScheduleUpdate(schedule=schedule)  # type: ignore[misc]
            )
        ids.append(sid)
    return ids


# ---------------------------------------------------------- billing events to their runs

BILLING_SOURCE = "stripe"
UNKNOWN_INVOICE = "unknown_billing_invoice"
#: Namespace of the signal request ids, so one event id always gives the same request id,
#: whether the webhook or the sweep delivers it (the name predates the sweep; keep it).
_SIGNAL_REQUESTS = uuid.uuid5(uuid.NAMESPACE_URL, "q2c:webhooks/stripe")


class DeliveryFailed(Exception):
    """A billing event could not be delivered now; delivering it again later is safe."""


class StoreUnavailable(DeliveryFailed):
    pass


class TemporalUnavailable(DeliveryFailed):
    pass


class SignalRefused(DeliveryFailed):
    """Temporal refused the signal for a reason retrying will not change."""


@dataclass(frozen=True)
class BillingDelivery:
    #: "signalled"; "duplicate": the event id was delivered before, nothing was sent now;
    #: RUN_CLOSED: a void or write-off after its run ended (recorded, nothing sent);
    #: or UNKNOWN_INVOICE (an exception recorded). `duplicate` is also true when a delivery
    #: racing this one recorded the event first.
    outcome: str
    workflow_id: str | None
    duplicate: bool
    reason: str | None = None


async def deliver_billing_event(
    temporal: Callable[[], Awaitable[Client]],
    store: Store,
    event: stripe_wire.Event,
    invoice: stripe_wire.Invoice,
    *,
    kind: str,
    signal_timeout: float | None = None,
) -> BillingDelivery:
    """Signal billing's event to the time-to-invoice run its invoice names, once.

    `temporal` gives the client, called only when there is something to signal (a
    duplicate is answered while Temporal is down).

    The one way a billing event reaches a run, for the webhook and the billing sweep alike:
    an event id already recorded (`inbound_event`, source "stripe") delivers nothing;
    deliveries racing before the record exists signal with one Temporal request id derived
    from the event id, and Temporal keeps one of those signals per run (the SDK's
    `handle.signal` draws a random request id, so the raw request is sent here). An invoice
    naming no open run becomes one `unknown_billing_invoice` exception per event id.
    """
    workflow_id = invoice.metadata.get(BILLING_METADATA_KEY) or None
    try:
        seen = await store.inbound_event(BILLING_SOURCE, event.id)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreUnavailable(str(exc)) from exc
    if seen is not None:
        return BillingDelivery("duplicate", seen.workflow_id or None, duplicate=True)

    unknown_because: str | None = None
    if workflow_id is None:
        unknown_because = f"its metadata has no {BILLING_METADATA_KEY}"
    elif not workflow_id.startswith(f"{INVOICE_LIFECYCLE}:"):
        unknown_because = f"its metadata names {workflow_id!r}, not a {INVOICE_LIFECYCLE} run"
    elif not await _signal_payment(
        temporal, workflow_id, payment_event(kind, event, invoice), signal_timeout
    ):
        if kind in ENDS_AFTER_RUN and await _run_existed(temporal, workflow_id):
            # A run that failed voids its own invoice on the way out: nothing to tell anyone.
            return await _record_delivery(store, event, invoice, workflow_id, RUN_CLOSED)
        unknown_because = f"the run {workflow_id} it names does not exist or has closed"
    try:
        if unknown_because is not None and (
            seen := await store.inbound_event(BILLING_SOURCE, event.id)
        ):
            # A delivery racing this one signalled first, and the run closed on it.
            return BillingDelivery("duplicate", seen.workflow_id or None, duplicate=True)
        if unknown_because is not None:
            await _record_unknown(store, event, invoice, kind, unknown_because)
        _, created = await store.record_inbound_event(
            source=BILLING_SOURCE,
            event_id=event.id,
            # The column is required; "" says the event reached no run (see the exception).
            workflow_id=(workflow_id or "") if unknown_because is None else "",
            correlation_id=invoice.id,
        )
    except (SQLAlchemyError, OSError) as exc:
        raise StoreUnavailable(str(exc)) from exc
    if unknown_because is not None:
        return BillingDelivery(UNKNOWN_INVOICE, None, duplicate=not created, reason=unknown_because)
    # Not created: a delivery racing this one recorded it first; Temporal kept one signal.
    return BillingDelivery("signalled", workflow_id, duplicate=not created)


#: Invoice ends that may follow the close of the run that issued the invoice.
ENDS_AFTER_RUN = frozenset({"voided", "uncollectible"})
#: `BillingDelivery.outcome` of such an end: recorded, no signal, no exception.
RUN_CLOSED = "run_closed"


async def _run_existed(temporal: Callable[[], Awaitable[Client]], workflow_id: str) -> bool:
    try:
        client = await temporal()
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise TemporalUnavailable(exc.status.name) from exc
    except (RuntimeError, OSError) as exc:
        raise TemporalUnavailable(f"{type(exc).__name__}: {exc}") from exc
    return True


async def _record_delivery(
    store: Store,
    event: stripe_wire.Event,
    invoice: stripe_wire.Invoice,
    workflow_id: str,
    outcome: str,
) -> BillingDelivery:
    try:
        _, created = await store.record_inbound_event(
            source=BILLING_SOURCE,
            event_id=event.id,
            workflow_id=workflow_id,
            correlation_id=invoice.id,
        )
    except (SQLAlchemyError, OSError) as exc:
        raise StoreUnavailable(str(exc)) from exc
    return BillingDelivery(outcome, workflow_id, duplicate=not created)


def payment_event(
    kind: str, event: stripe_wire.Event, invoice: stripe_wire.Invoice
) -> PaymentEvent:
    """The `payment` signal for a billing event of `kind` (see `connectors.stripe.payment_kind`)."""
    paid = kind == "paid"
    return PaymentEvent(
        event_id=event.id,
        kind=kind,
        billing_invoice_id=invoice.id,
        amount=from_minor(invoice.amount_paid, invoice.currency).amount if paid else None,
        occurred_at=datetime.fromtimestamp(event.created, UTC),
        reason=None if paid else _failure_reason(kind, event.data.object),
    )


def _failure_reason(kind: str, invoice: dict[str, Any]) -> str:
    """Why the invoice was not paid, as far as the event tells.

    Stripe keeps the decline message on the payment attempt (`last_payment_error` of the
    PaymentIntent), which an invoice event embeds only when expanded; otherwise the
    attempt count is all there is.
    """
    if kind == "voided":
        return "the invoice was voided in billing"
    if kind == "uncollectible":
        return "the invoice was marked uncollectible in billing"
    intent = invoice.get("payment_intent")
    for holder in (invoice, intent if isinstance(intent, dict) else {}):
        error = holder.get("last_payment_error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    attempts = invoice.get("attempt_count") or 1
    return f"payment attempt {attempts} failed; billing gave no reason"


async def _signal_payment(
    temporal: Callable[[], Awaitable[Client]],
    workflow_id: str,
    event: PaymentEvent,
    wait_s: float | None,
) -> bool:
    """Deliver `event` to the run; False when there is no open run of that id."""
    try:
        client = await temporal()
        await asyncio.wait_for(_send_signal(client, workflow_id, event), wait_s)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        if exc.status in _TRANSIENT_RPC:
            raise TemporalUnavailable(exc.status.name) from exc
        raise SignalRefused(exc.status.name) from exc
    except (TimeoutError, RuntimeError, OSError) as exc:
        # RuntimeError: the SDK's "Failed client connect".
        raise TemporalUnavailable(f"{type(exc).__name__}: {exc}") from exc
    return True


_TRANSIENT_RPC = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.CANCELLED,
    }
)


async def _send_signal(client: Client, workflow_id: str, event: PaymentEvent) -> None:
    """`handle.signal(PAYMENT, event)`, with a request id Temporal deduplicates on."""
    request = SignalWorkflowExecutionRequest(
        namespace=client.namespace,
        workflow_execution=WorkflowExecution(workflow_id=workflow_id),
        signal_name=PAYMENT,
        identity=client.identity,
        request_id=str(uuid.uuid5(_SIGNAL_REQUESTS, event.event_id)),
    )
    request.input.payloads.extend(await client.data_converter.encode([event]))
    # Retrying inside the SDK is safe: every attempt carries the same request id.
    await client.workflow_service.signal_workflow_execution(request, retry=True)


_HAPPENED = {
    "paid": "was paid",
    "payment_failed": "had a payment fail",
    "voided": "was voided",
    "uncollectible": "was marked uncollectible",
}


async def _record_unknown(
    store: Store,
    event: stripe_wire.Event,
    invoice: stripe_wire.Invoice,
    kind: str,
    because: str,
) -> None:
    paid = event.type == "invoice.paid"
    amount = from_minor(invoice.amount_paid if paid else invoice.amount_due, invoice.currency)
    customer_name = event.data.object.get("customer_name")
    customer = f"{customer_name} ({invoice.customer})" if customer_name else invoice.customer
    happened = _HAPPENED.get(kind, "changed")
    what = invoice.number or invoice.id
    message = (
        f"Stripe invoice {what} [{invoice.id}] for {amount} (customer {customer}) {happened},"
        f" but no q2c run follows it: {because}"
    )
    workflow_id = invoice.metadata.get(BILLING_METADATA_KEY) or None
    await store.record_exception(
        dedupe_key=f"{BILLING_SOURCE}-event:{event.id}",
        kind=UNKNOWN_INVOICE,
        message=message,
        workflow_id=workflow_id,
        correlation_id=invoice.id,
        lifecycle=INVOICE_LIFECYCLE,
        detail={
            "event_id": event.id,
            "event_type": event.type,
            "invoice_id": invoice.id,
            "invoice_number": invoice.number,
            "customer_id": invoice.customer,
            "customer_name": customer_name,
            "amount": str(amount.amount),
            "currency": amount.currency,
            "workflow_id": workflow_id,
            "reason": because,
        },
    )
