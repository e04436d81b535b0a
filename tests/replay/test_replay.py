"""Every recorded history of every earlier version replays on today's workflow code: a change
that would break runs in flight fails here, not in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.change_order import ChangeOrderQueueWorkflow, ChangeOrderWorkflow
from workflows.invoice_cycle import InvoiceCycleWorkflow
from workflows.opportunity_to_project import OpportunityToProjectWorkflow
from workflows.sweeps import BillingSweepWorkflow, CrmSweepWorkflow
from workflows.time_to_invoice import TimeToInvoiceWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
WORKFLOWS = [
    OpportunityToProjectWorkflow,
    TimeToInvoiceWorkflow,
    InvoiceCycleWorkflow,
    CrmSweepWorkflow,
    BillingSweepWorkflow,
    ChangeOrderWorkflow,
    ChangeOrderQueueWorkflow,
]


def test_histories_are_recorded_for_every_path() -> None:
    names = {(p.name.split(".")[0], p.name.split(".")[2]) for p in HISTORIES}
    assert {
        ("opportunity_to_project", "clean"),
        ("opportunity_to_project", "approved"),
        ("opportunity_to_project", "rejected"),
        ("opportunity_to_project", "expired"),
        ("opportunity_to_project", "corrected"),
        ("opportunity_to_project", "compensated"),
        ("opportunity_to_project", "cancelled"),
        ("opportunity_to_project", "outage_resumed"),
        ("opportunity_to_project", "operator_retried"),
        ("opportunity_to_project", "upfront"),
        ("time_to_invoice", "paid"),
        ("time_to_invoice", "failed"),
    } <= names
    assert {
        ("time_to_invoice", "adjusted"),
        ("time_to_invoice", "rerated"),
        ("time_to_invoice", "payment_failed"),
        ("time_to_invoice", "overdue"),
        ("time_to_invoice", "voided"),
        ("time_to_invoice", "uncollectible"),
        ("time_to_invoice", "follow_up_failed"),
        ("time_to_invoice", "totals_disagree"),
        ("invoice_cycle", "two_projects"),
        ("sweeps", "crm"),
        ("sweeps", "billing"),
    } <= names
    assert {
        ("change_order", "applied"),
        ("change_order", "approved"),
        ("change_order", "rejected"),
        ("change_order", "expired"),
        ("change_order", "reapproved"),
        ("change_order", "compensated"),
        ("change_order", "awaiting_project"),
        ("change_order", "already_applied"),
        ("change_order", "corrected"),
        ("change_order", "correction_failed"),
        ("change_order_queue", "ordered"),
        ("change_order_queue", "rerun"),
    } <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.name for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())  # noqa: ASYNC240 (small)
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
