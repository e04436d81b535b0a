"""Record histories of change-order runs and a deal's change-order queue for the replay test;
called by `record_histories.py` (the deal histories live there).

Every path of a change order: applied at once, approved after its preview, rejected, expired,
approved again after its preview changed, compensated after the billing plan was refused,
waiting for its deal's project, a rerun of one already applied, a retroactive one that
corrected an issued invoice (credit note and re-bill, its invoice run told), and one whose
correction the ERP refused (the billing correction voided, the rest undone); and a deal's
queue that took two change orders delivered in reverse order and gave them turns in approval
order, and one whose active run was terminated and started again.

    .venv/bin/python -m tests.replay.change_order_histories LABEL [SCENARIO ...]

records every scenario and the queue, or only the scenarios named.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowHistory

from canonical import ChangeOrder, Money
from tests.fixtures.change_orders import retroactive_rate_increase
from tests.workflows.change_order_fakes import (
    APPROVER,
    FakeChangeOrders,
    Handle,
    change_order,
    draft_id_of,
    new_deal,
    start_change_order,
    start_invoice_run,
    wait_until,
)
from workflows.approvals import DECIDE, ApprovalAck, ApprovalDecision, Decision
from workflows.change_order import (
    ChangeOrderStep,
    queue_workflow_id,
    workflow_id,
)
from workflows.starters import start_change_order_run

HISTORIES = Path(__file__).parent / "histories"
Drive = Callable[[Handle, FakeChangeOrders], Awaitable[None]]
RISKY = "24000"


async def _pending(handle: Handle) -> None:
    await wait_until(handle, lambda s: s.pending_approval is not None)


def _decision(what: Decision, reason: str) -> ApprovalDecision:
    return ApprovalDecision(decision=what, approver=APPROVER, reason=reason)


async def _applied(handle: Handle, systems: FakeChangeOrders) -> None:
    await handle.result()


async def _approved(handle: Handle, systems: FakeChangeOrders) -> None:
    await _pending(handle)
    outsider = ApprovalDecision(decision=Decision.APPROVE, approver="rep@x.example", reason="go")
    await handle.signal(DECIDE, outsider)
    await handle.execute_update(DECIDE, _decision(Decision.APPROVE, "ok"), result_type=ApprovalAck)
    await handle.result()


async def _rejected(handle: Handle, systems: FakeChangeOrders) -> None:
    await _pending(handle)
    await handle.signal(DECIDE, _decision(Decision.REJECT, "too dear"))
    await handle.result()


async def _reapproved(handle: Handle, systems: FakeChangeOrders) -> None:
    """Edited in the CRM while finance looked: the preview finance approved is superseded."""
    await _pending(handle)
    change_order_id = handle.id.rsplit(":", 1)[1]
    systems.edit(change_order_id, amount_delta=Money.of("26000", "USD"))
    await handle.execute_update(
        DECIDE, _decision(Decision.APPROVE, "first look"), result_type=ApprovalAck
    )
    await wait_until(
        handle,
        lambda s: bool(s.superseded) and s.pending_approval is not None,
    )
    await handle.execute_update(
        DECIDE, _decision(Decision.APPROVE, "second look"), result_type=ApprovalAck
    )
    await handle.result()


async def _compensated(handle: Handle, systems: FakeChangeOrders) -> None:
    with contextlib.suppress(Exception):  # fails after compensating: the history we want
        await handle.result()


async def _corrected(handle: Handle, systems: FakeChangeOrders) -> None:
    """Retroactive: finance approves; the December invoice is corrected and its run told."""
    await _pending(handle)
    await handle.execute_update(
        DECIDE, _decision(Decision.APPROVE, "re-bill checked"), result_type=ApprovalAck
    )
    await handle.result()


async def _correction_failed(handle: Handle, systems: FakeChangeOrders) -> None:
    await _pending(handle)
    await handle.execute_update(DECIDE, _decision(Decision.APPROVE, "ok"), result_type=ApprovalAck)
    with contextlib.suppress(Exception):  # fails after compensating: the history we want
        await handle.result()


async def _awaiting_project(handle: Handle, systems: FakeChangeOrders) -> None:
    await wait_until(handle, lambda s: s.step == ChangeOrderStep.AWAITING_PROJECT)
    systems.provisioned = True
    await handle.result()


def _expiring() -> FakeChangeOrders:
    """A risky change order whose approval reminds after 1 s and expires after 2.5 s."""
    systems = FakeChangeOrders()
    systems.policy = systems.policy.model_copy(
        update={"remind_after": timedelta(seconds=1), "expire_after": timedelta(seconds=2.5)}
    )
    return systems


#: name -> (the fake systems, the change order's amount delta, how the run is driven); an
#: amount delta of None: the retroactive rate increase (`retroactive_rate_increase`), which
#: corrects the December invoice of a stand-in time-to-invoice run.
SCENARIOS: dict[str, tuple[Callable[[], FakeChangeOrders], str | None, Drive]] = {
    "applied": (FakeChangeOrders, "2400", _applied),
    "approved": (FakeChangeOrders, RISKY, _approved),
    "rejected": (FakeChangeOrders, RISKY, _rejected),
    "expired": (_expiring, RISKY, _applied),
    "reapproved": (FakeChangeOrders, RISKY, _reapproved),
    "compensated": (
        lambda: FakeChangeOrders(fail_plan="stripe HTTP 400: plan refused"),
        "2400",
        _compensated,
    ),
    "awaiting_project": (lambda: FakeChangeOrders(provisioned=False), "2400", _awaiting_project),
    "already_applied": (FakeChangeOrders, "2400", _applied),
    "corrected": (FakeChangeOrders, None, _corrected),
    "correction_failed": (
        lambda: FakeChangeOrders(fail_erp="tryton: the period is closed"),
        None,
        _correction_failed,
    ),
}


async def record_change_order_histories(
    client: Client, label: str, only: set[str] | None = None
) -> None:
    for name, (make, amount_delta, drive) in SCENARIOS.items():
        if only is not None and name not in only:
            continue
        systems = make()
        if amount_delta is None:
            change_order_id = f"a0X{uuid.uuid4().hex[:15].upper()}"
            change = systems.add(retroactive_rate_increase(change_order_id, new_deal()))
        else:
            change = systems.add(change_order(opportunity_id=new_deal(), amount_delta=amount_delta))
        if name == "already_applied":
            systems.applied_versions[change.id] = 2
        task_queue = f"record-{uuid.uuid4()}"
        async with systems.worker(client, task_queue):
            invoice_run = None
            if amount_delta is None:
                invoice_run = await start_invoice_run(client, task_queue)
                systems.corrected_drafts["INV-2"] = draft_id_of(invoice_run)
            handle = await start_change_order(client, task_queue, change)
            await drive(handle, systems)
            await _end_queue(client, change)
            if invoice_run is not None:  # not this recording's subject
                await invoice_run.terminate("recorded")
        _write(f"change_order.{label}.{name}.json", await handle.fetch_history())


async def record_queue_history(client: Client, label: str) -> None:
    """A deal's queue: the change order approved second is delivered first; the queue starts
    the one approved first, gives it the turn, then the other."""
    systems = FakeChangeOrders()
    deal = new_deal()
    first, second = (
        systems.add(
            change_order(opportunity_id=deal, approved_at=datetime(2026, 11, d, tzinfo=UTC))
        )
        for d in (20, 21)
    )
    task_queue = f"record-{uuid.uuid4()}"
    async with systems.worker(client, task_queue):
        await start_change_order_run(client, task_queue, second.id, crm="salesforce", trigger="rec")
        for change in (second, first):  # the second applies once the first has finished
            await client.get_workflow_handle(workflow_id(change.crm, change.id)).result()
        queue = await _end_queue(client, first)
    _write(f"change_order_queue.{label}.ordered.json", await queue.fetch_history())


async def record_queue_rerun_history(client: Client, label: str) -> None:
    """A deal's queue whose active run was terminated and started again: the new run takes
    the turn (`RERUN_TAKES_TURN`)."""
    systems = FakeChangeOrders()
    change = systems.add(change_order(opportunity_id=new_deal()))
    systems.hold.add(change.id)
    task_queue = f"record-{uuid.uuid4()}"
    async with systems.worker(client, task_queue):
        run = client.get_workflow_handle(workflow_id(change.crm, change.id))
        await start_change_order_run(client, task_queue, change.id, crm="salesforce", trigger="rec")
        await systems.held.wait()
        await run.terminate("stuck")
        systems.hold.clear()
        await start_change_order_run(client, task_queue, change.id, crm="salesforce", trigger="rec")
        await client.get_workflow_handle(workflow_id(change.crm, change.id)).result()
        systems.release.set()
        queue = await _end_queue(client, change)
    _write(f"change_order_queue.{label}.rerun.json", await queue.fetch_history())


async def _end_queue(client: Client, change: ChangeOrder) -> WorkflowHandle[Any, Any]:
    """The deal's queue stays open an hour after its last change order: not this recording's
    subject, so it is ended once the change orders are."""
    queue = client.get_workflow_handle(queue_workflow_id(change.crm, change.opportunity_id))
    with contextlib.suppress(Exception):  # a change order that never joined has no queue
        await queue.terminate("recorded")
    return queue


def _write(name: str, history: WorkflowHistory) -> None:
    path = HISTORIES / name
    path.write_text(history.to_json())
    print(f"{path}: {len(history.events)} events")


async def _record_only_change_orders(label: str, only: set[str] | None = None) -> None:
    """`python -m tests.replay.change_order_histories v1 [SCENARIO ...]`: these histories, not
    the others; with scenarios named, only those (and not the queue's)."""
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
        await record_change_order_histories(env.client, label, only)
        if only is None:
            await record_queue_history(env.client, label)
            await record_queue_rerun_history(env.client, label)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    import sys

    label = sys.argv[1] if len(sys.argv) > 1 else "v1"
    asyncio.run(_record_only_change_orders(label, set(sys.argv[2:]) or None))
