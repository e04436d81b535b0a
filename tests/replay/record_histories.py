"""Record histories of every lifecycle's runs for the replay test.

    .venv/bin/python -m tests.replay.record_histories v1

Run it when the workflow's behaviour changes on purpose (behind `workflow.patched`), with a
new label: the histories of every earlier version stay, and the replay test proves the new
code still replays them.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.fixtures.temporal import temporal_binary
from tests.replay.invoice_histories import record_invoice_cycle_history, record_invoice_histories
from tests.workflows.fakes import APPROVER, FakeSystems, account, opportunity, start_args
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


Drive = Callable[[WorkflowHandle, Any], Awaitable[None]]  # type: ignore[type-arg]


SCENARIOS: dict[str, tuple[Callable[[], FakeSystems], Drive]] = {
    "clean": (FakeSystems, _clean),
    "approved": (lambda: FakeSystems(deal=opportunity(hours="2000")), _approved),
    "corrected": (lambda: FakeSystems(deal_account=account("JP")), _corrected),
    "compensated": (lambda: FakeSystems(fail_billing="stripe HTTP 400: refused"), _compensated),
}


async def record(label: str) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    client: Client = env.client
    try:
        for name, (make, drive) in SCENARIOS.items():
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
        # Time-to-invoice and the invoice cycle: their own functions, their own module.
        await record_invoice_histories(client, label)
        await record_invoice_cycle_history(client, label)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v1"))
