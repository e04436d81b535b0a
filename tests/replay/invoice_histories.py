"""Record histories of time-to-invoice and invoice-cycle runs for the replay test; called by
`record_histories.py` (the deal histories live there).

Every path of an invoice run: adjusted (the adjustment delivered twice), paid, payment failed
then paid, overdue (followed past its due date until the run ends), voided, uncollectible,
a failure after issue, a disagreeing total and a failed ERP posting (both compensated), and
(from v3) re-rated by a change order while finance held the draft.

    .venv/bin/python -m tests.replay.invoice_histories LABEL [SCENARIO ...]

records every scenario and the invoice cycle, or only the scenarios named.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from temporalio.client import Client, WorkflowHandle, WorkflowHistory

from canonical import AdjustmentKind, AdjustmentLine, InvoiceAdjustment
from tests.workflows.invoice_fakes import APPROVER, FakeInvoicing, start_args
from workflows.approvals import ApprovalDecision, Decision
from workflows.invoice_cycle import InvoiceCycleInput, InvoiceCycleWorkflow
from workflows.time_to_invoice import (
    ADJUST,
    CONTRACT_CHANGED,
    DECIDE,
    PAYMENT,
    STATUS,
    ContractChanged,
    DecisionAck,
    InvoiceStatus,
    InvoiceStep,
    PaymentEvent,
    TimeToInvoiceResult,
    TimeToInvoiceWorkflow,
)

HISTORIES = Path(__file__).parent / "histories"
Handle = WorkflowHandle[TimeToInvoiceWorkflow, TimeToInvoiceResult]
Drive = Callable[[Handle], Awaitable[None]]


async def _wait(handle: Handle, step: InvoiceStep) -> None:
    while (await handle.query(STATUS, result_type=InvoiceStatus)).step != step:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def _approve(handle: Handle) -> None:
    await _wait(handle, InvoiceStep.AWAITING_APPROVAL)
    await handle.execute_update(
        DECIDE,
        ApprovalDecision(decision=Decision.APPROVE, approver=APPROVER, reason="ok"),
        result_type=DecisionAck,
    )


def _event(kind: str, event_id: str) -> PaymentEvent:
    return PaymentEvent(
        event_id=event_id,
        kind=kind,
        billing_invoice_id="in_TEST1",
        amount=Decimal("2400.00") if kind == "paid" else None,
        occurred_at=datetime(2026, 12, 5, tzinfo=UTC),
        reason="card declined" if kind == "payment_failed" else None,
    )


async def _issued_then(handle: Handle, *events: PaymentEvent) -> None:
    await _approve(handle)
    await _wait(handle, InvoiceStep.AWAITING_PAYMENT)
    for event in events:
        await handle.signal(PAYMENT, event)
    await handle.result()


async def _adjusted(handle: Handle) -> None:
    await _wait(handle, InvoiceStep.AWAITING_APPROVAL)
    goodwill = InvoiceAdjustment(
        adjustment_id="adj-goodwill",
        approver=APPROVER,
        reason="goodwill",
        lines=[
            AdjustmentLine(
                kind=AdjustmentKind.DISCOUNT, description="Goodwill", amount=Decimal(100)
            )
        ],
    )
    await handle.signal(ADJUST, goodwill)
    await handle.execute_update(ADJUST, goodwill, result_type=DecisionAck)  # applied once
    await _issued_then(handle, _event("paid", "evt_1"))


async def _rerated(handle: Handle) -> None:
    """Adjusted, then re-rated by a change order (delivered twice), the adjustment applied
    again; approved and paid; a change order after the decision is recorded and ignored."""
    await _wait(handle, InvoiceStep.AWAITING_APPROVAL)
    goodwill = InvoiceAdjustment(
        adjustment_id="adj-goodwill",
        approver=APPROVER,
        reason="goodwill",
        lines=[
            AdjustmentLine(
                kind=AdjustmentKind.DISCOUNT, description="Goodwill", amount=Decimal(100)
            )
        ],
    )
    await handle.execute_update(ADJUST, goodwill, result_type=DecisionAck)
    change = ContractChanged(
        change_order="salesforce:a0X000000000001AAA", version=2, effective_from=date(2026, 11, 1)
    )
    await handle.signal(CONTRACT_CHANGED, change)
    await handle.signal(CONTRACT_CHANGED, change)  # re-rated once
    while not (await handle.query(STATUS, result_type=InvoiceStatus)).rerates:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await _approve(handle)
    await _wait(handle, InvoiceStep.AWAITING_PAYMENT)
    await handle.signal(CONTRACT_CHANGED, change.model_copy(update={"version": 3}))
    await handle.signal(PAYMENT, _event("paid", "evt_1"))
    await handle.result()


async def _compensated(handle: Handle) -> None:
    await _approve(handle)
    with contextlib.suppress(Exception):  # fails after compensating: the history we want
        await handle.result()


def _paid(handle: Handle) -> Awaitable[None]:
    return _issued_then(handle, _event("paid", "evt_1"))


def _payment_failed(handle: Handle) -> Awaitable[None]:
    return _issued_then(handle, _event("payment_failed", "evt_f"), _event("paid", "evt_2"))


def _overdue(handle: Handle) -> Awaitable[None]:
    return _issued_then(handle)  # due three days ago, followed one day past it: ends unpaid


def _voided(handle: Handle) -> Awaitable[None]:
    return _issued_then(handle, _event("voided", "evt_v"))


def _uncollectible(handle: Handle) -> Awaitable[None]:
    return _issued_then(handle, _event("uncollectible", "evt_u"))


def _past_due() -> FakeInvoicing:
    return FakeInvoicing(due=datetime.now(UTC).date() - timedelta(days=3))


#: name -> (the fake systems, the run's payment follow-up in days, how the run is driven)
INVOICE_SCENARIOS: dict[str, tuple[Callable[[], FakeInvoicing], int | None, Drive]] = {
    "adjusted": (FakeInvoicing, None, _adjusted),
    "rerated": (FakeInvoicing, None, _rerated),
    "paid": (FakeInvoicing, None, _paid),
    "payment_failed": (FakeInvoicing, None, _payment_failed),
    "overdue": (_past_due, 1, _overdue),
    "voided": (FakeInvoicing, None, _voided),
    "uncollectible": (FakeInvoicing, None, _uncollectible),
    "follow_up_failed": (
        lambda: FakeInvoicing(refuse={"mark_time_billed", "write_invoice_status"}),
        None,
        _paid,
    ),
    "totals_disagree": (lambda: FakeInvoicing(finalize_surcharge=Decimal(1)), None, _compensated),
    "failed": (lambda: FakeInvoicing(fail_erp="tryton: period closed"), None, _compensated),
}


async def record_invoice_histories(
    client: Client, label: str, only: set[str] | None = None
) -> None:
    for name, (make, follow_up_days, drive) in INVOICE_SCENARIOS.items():
        if only is not None and name not in only:
            continue
        systems = make()
        task_queue = f"record-{uuid.uuid4()}"
        async with systems.worker(client, task_queue):
            request, wid = start_args()
            handle: Handle = await client.start_workflow(
                TimeToInvoiceWorkflow.run,
                request.model_copy(update={"payment_follow_up_days": follow_up_days}),
                id=wid,
                task_queue=task_queue,
            )
            await drive(handle)
        _write(f"time_to_invoice.{label}.{name}.json", await handle.fetch_history())


async def record_invoice_cycle_history(client: Client, label: str) -> None:
    """A cycle that starts two projects' runs, one of which was started before."""
    project = f"c{uuid.uuid4().hex[:8]}"
    systems = FakeInvoicing(projects=[f"{project}1", f"{project}2"])
    task_queue = f"record-{uuid.uuid4()}"
    async with systems.worker(client, task_queue):
        first, _ = start_args()
        early = await client.start_workflow(
            TimeToInvoiceWorkflow.run,
            first.model_copy(update={"project_id": f"{project}1"}),
            id=f"time-to-invoice:{project}1:2026-11",
            task_queue=task_queue,
        )
        cycle = await client.start_workflow(
            InvoiceCycleWorkflow.run,
            InvoiceCycleInput(calendar="monthly", period="2026-11"),
            id=f"invoice-cycle:{project}",
            task_queue=task_queue,
        )
        await cycle.result()
        for run_id in (early.id, f"time-to-invoice:{project}2:2026-11"):
            await client.get_workflow_handle(run_id).terminate("recorded")
    _write(f"invoice_cycle.{label}.two_projects.json", await cycle.fetch_history())


def _write(name: str, history: WorkflowHistory) -> None:
    path = HISTORIES / name
    path.write_text(history.to_json())
    print(f"{path}: {len(history.events)} events")


async def _record_only_invoices(label: str, only: set[str] | None = None) -> None:
    """`python -m tests.replay.invoice_histories v2 [SCENARIO ...]`: these histories, not
    the deals'; with scenarios named, only those (and not the cycle's)."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from tests.fixtures.temporal import temporal_binary
    from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    try:
        await record_invoice_histories(env.client, label, only)
        if only is None:
            await record_invoice_cycle_history(env.client, label)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    import sys

    label = sys.argv[1] if len(sys.argv) > 1 else "v2"
    asyncio.run(_record_only_invoices(label, set(sys.argv[2:]) or None))
