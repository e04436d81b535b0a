"""Record histories of every lifecycle's runs for the replay test.

    .venv/bin/python -m tests.replay.record_histories v2 [LIFECYCLE ...]

LIFECYCLE: opportunity_to_project, time_to_invoice (with the invoice cycle), sweeps,
change_order (with the deal's change-order queue).

Run it when the workflow's behaviour changes on purpose (behind `workflow.patched`), with a
new label: the histories of every earlier version stay, and the replay test proves the new
code still replays them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from canonical import OutagePolicy
from tests.fixtures.temporal import temporal_binary
from tests.replay.change_order_histories import (
    record_change_order_histories,
    record_queue_history,
    record_queue_rerun_history,
)
from tests.replay.invoice_histories import record_invoice_cycle_history, record_invoice_histories
from tests.replay.sweep_histories import record_sweep_histories
from tests.workflows.fakes import (
    APPROVER,
    FakeSystems,
    account,
    opportunity,
    start_args,
    with_upfront_fee,
)
from workflows.approvals import OPERATOR, OperatorAck, OperatorAction, OperatorDecision
from workflows.opportunity_to_project import (
    DATA_CORRECTED,
    DECIDE,
    STATUS,
    ApprovalAck,
    ApprovalDecision,
    DataCorrected,
    DealStatus,
    Decision,
    OpportunityToProjectWorkflow,
    Step,
)
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

HISTORIES = Path(__file__).parent / "histories"


async def _wait(handle: WorkflowHandle, step: Step) -> None:  # type: ignore[type-arg]
    while (await handle.query(STATUS, result_type=DealStatus)).step != step:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def _clean(handle: WorkflowHandle, systems: FakeSystems) -> None:  # type: ignore[type-arg]
    await handle.result()


async def _approved(handle: WorkflowHandle, systems: FakeSystems) -> None:  # type: ignore[type-arg]
    await _wait(handle, Step.AWAITING_APPROVAL)
    outsider = ApprovalDecision(decision=Decision.APPROVE, approver="rep@x.example", reason="go")
    await handle.signal(DECIDE, outsider)
    await handle.execute_update(
        DECIDE,
        ApprovalDecision(decision=Decision.APPROVE, approver=APPROVER, reason="ok"),
        result_type=ApprovalAck,
    )
    await handle.result()


async def _corrected(handle: WorkflowHandle, systems: FakeSystems) -> None:  # type: ignore[type-arg]
    await _wait(handle, Step.AWAITING_CORRECTION)
    systems.deal_account = account("US")
    await handle.signal(DATA_CORRECTED, DataCorrected(corrected_by="ops@x.example"))
    await handle.result()


async def _compensated(handle: WorkflowHandle, systems: FakeSystems) -> None:  # type: ignore[type-arg]
    try:
        await handle.result()
    except Exception:  # the run fails after compensating: that is the history we want
        return


async def _rejected(handle: WorkflowHandle, systems: FakeSystems) -> None:  # type: ignore[type-arg]
    await _wait(handle, Step.AWAITING_APPROVAL)
    await handle.signal(
        DECIDE, ApprovalDecision(decision=Decision.REJECT, approver=APPROVER, reason="price")
    )
    await handle.result()


async def _cancelled(handle: WorkflowHandle, systems: FakeSystems) -> None:  # type: ignore[type-arg]
    await _waiting_on(handle, "stripe")
    await handle.cancel()
    with contextlib.suppress(Exception):  # cancelled after compensating: the history we want
        await handle.result()


async def _outage_resumed(handle: WorkflowHandle, systems: FakeSystems) -> None:  # type: ignore[type-arg]
    await _waiting_on(handle, "stripe")
    systems.billing_down = False
    await handle.result()


async def _operator_retried(handle: WorkflowHandle, systems: FakeSystems) -> None:  # type: ignore[type-arg]
    await _wait(handle, Step.AWAITING_OPERATOR)
    systems.billing_down = False
    await handle.execute_update(
        OPERATOR,
        OperatorDecision(action=OperatorAction.RETRY, operator="ops@x.example", reason="back"),
        result_type=OperatorAck,
    )
    await handle.result()


async def _waiting_on(handle: WorkflowHandle, system: str) -> None:  # type: ignore[type-arg]
    while (await handle.query(STATUS, result_type=DealStatus)).waiting_on != system:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def _with_policy(systems: FakeSystems, **changes: Any) -> FakeSystems:
    systems.policy = systems.policy.model_copy(update=changes)
    return systems


def _expiring() -> FakeSystems:
    """A risky deal whose approval reminds after 1 s and expires after 2.5 s."""
    systems = FakeSystems(deal=opportunity(hours="2000"))
    approval = systems.policy.approval.model_copy(
        update={"remind_after": timedelta(seconds=1), "expire_after": timedelta(seconds=2.5)}
    )
    return _with_policy(systems, approval=approval)


def _deadline_passes() -> FakeSystems:
    systems = FakeSystems(billing_down=True)
    outage = OutagePolicy(
        notice_after=timedelta(seconds=1), deadlines={"stripe": timedelta(seconds=3)}
    )
    return _with_policy(systems, outage=outage)


Drive = Callable[[WorkflowHandle, Any], Awaitable[None]]  # type: ignore[type-arg]


def _with_upfront_fee() -> FakeSystems:
    """A fixed fee with 20 % up front: provisioning starts the upfront invoice's run."""
    return FakeSystems(deal=with_upfront_fee())


async def _upfront(handle: WorkflowHandle, systems: FakeSystems) -> None:  # type: ignore[type-arg]
    result = await handle.result()
    # The upfront run is not this recording's subject (no invoicing worker serves it).
    await handle._client.get_workflow_handle(result.ids["upfront_invoice_run"]).terminate()


SCENARIOS: dict[str, tuple[Callable[[], FakeSystems], Drive]] = {
    "clean": (FakeSystems, _clean),
    "upfront": (_with_upfront_fee, _upfront),
    "approved": (lambda: FakeSystems(deal=opportunity(hours="2000")), _approved),
    "corrected": (lambda: FakeSystems(deal_account=account("JP")), _corrected),
    "compensated": (lambda: FakeSystems(fail_billing="stripe HTTP 400: refused"), _compensated),
    "rejected": (lambda: FakeSystems(deal=opportunity(hours="2000")), _rejected),
    "expired": (_expiring, _clean),
    "cancelled": (lambda: FakeSystems(billing_down=True), _cancelled),
    "outage_resumed": (lambda: FakeSystems(billing_down=True), _outage_resumed),
    "operator_retried": (_deadline_passes, _operator_retried),
}
LIFECYCLES = ("opportunity_to_project", "time_to_invoice", "sweeps", "change_order")


async def record(label: str, lifecycles: list[str]) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    client: Client = env.client
    try:
        for name, (make, drive) in (
            SCENARIOS.items() if "opportunity_to_project" in lifecycles else ()
        ):
            systems = make()
            task_queue = f"record-{uuid.uuid4()}"
            async with systems.worker(client, task_queue):
                request, wid = start_args()
                handle = await client.start_workflow(
                    OpportunityToProjectWorkflow.run, request, id=wid, task_queue=task_queue
                )
                await drive(handle, systems)
            history = await handle.fetch_history()
            path = HISTORIES / f"opportunity_to_project.{label}.{name}.json"
            path.write_text(history.to_json())
            print(f"{path}: {len(history.events)} events")
        if "time_to_invoice" in lifecycles:
            # Time-to-invoice and the invoice cycle: their own functions, their own module.
            await record_invoice_histories(client, label)
            await record_invoice_cycle_history(client, label)
        if "sweeps" in lifecycles:
            for name, text in await record_sweep_histories(client, label):
                (HISTORIES / name).write_text(text)
                print(f"{HISTORIES / name}")
        if "change_order" in lifecycles:
            # A change order's runs and its deal's queue: their own module, like invoices'.
            await record_change_order_histories(client, label)
            await record_queue_history(client, label)
            await record_queue_rerun_history(client, label)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(
        record(sys.argv[1] if len(sys.argv) > 1 else "v1", sys.argv[2:] or list(LIFECYCLES))
    )
