"""`q2c change-order start|preview|approve|reject` against the real dev server.

The lifecycle's own run needs the CRM, the PSA and the store; what the commands talk to is
its `status` query and `decide` update. A small run registered as `ChangeOrderWorkflow`
answers both with the lifecycle kit's own approval gate (so refusals are the real ones) and
a real impact preview (`tests/fixtures/change_orders.py`), waiting for finance after an
earlier preview was superseded.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import uuid

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import cli.app  # noqa: F401  (first: the command modules load through it)
from canonical import ChangePolicy
from canonical.impact import ImpactPreview, change_risks
from tests.cli import test_lifecycle_cli as lifecycle_cli
from tests.cli.test_lifecycle_cli import RESULT_WAIT_S, Invoke, error_line, make_invoke
from tests.fixtures.change_orders import OPPORTUNITY_ID, PROJECT_ID, rate_increase_preview
from workflows.approvals import ApprovalGate, AwaitsApproval, Decision, PendingApproval
from workflows.change_order import (
    STATUS,
    ChangeOrderInput,
    ChangeOrderResult,
    ChangeOrderStep,
    ChangeOrderView,
    workflow_id,
)
from workflows.starters import CHANGE_ORDER

cli_env = lifecycle_cli.cli_env
q2c = lifecycle_cli.q2c
started_runs = lifecycle_cli.started_runs

APPROVER = "finance@northwind.example"
POLICY = ChangePolicy(approvers=[APPROVER])
#: The rate finance approved first, before the change order was edited to 180.
EARLIER_RATE = "175"


@workflow.defn(name=CHANGE_ORDER, sandboxed=False)  # its module imports the CLI
class ChangeOrderStandIn(AwaitsApproval):
    """Waits for finance on the rate increase's preview; applies it when approved."""

    @workflow.init
    def __init__(self, request: ChangeOrderInput) -> None:
        self._request = request
        ident = request.change_order_id
        self._superseded = [rate_increase_preview(EARLIER_RATE, change_order_id=ident).digest]
        self._preview = rate_increase_preview(change_order_id=ident)
        self._risks = change_risks(self._preview, POLICY)
        self._approved_digest: str | None = None
        self._applied_version: int | None = None
        # Open from the first workflow task on: a decision sent at once is not refused.
        self._approval = ApprovalGate()
        self._approval.open(POLICY, self._risks)
        self._step = ChangeOrderStep.AWAITING_APPROVAL

    @workflow.run
    async def run(self, request: ChangeOrderInput) -> ChangeOrderResult:
        decision = await self._approval.wait(self._remind)
        if decision is not None and decision.what == Decision.APPROVE:
            self._approved_digest = self._preview.digest
            self._applied_version = self._preview.after.version
            self._step = ChangeOrderStep.APPLIED
        else:
            self._step = ChangeOrderStep.REJECTED
        await workflow.wait_condition(workflow.all_handlers_finished)
        return ChangeOrderResult(
            status=self._step,
            contract_version=self._applied_version,
            digest=self._approved_digest,
            message=decision.reason if decision is not None else "expired",
        )

    async def _remind(self, pending: PendingApproval) -> None:
        return None

    @workflow.query(name=STATUS)
    def status(self) -> ChangeOrderView:
        return ChangeOrderView(
            workflow_id=workflow.info().workflow_id,
            change_order_id=self._request.change_order_id,
            crm=self._request.crm,
            step=self._step,
            opportunity_id=OPPORTUNITY_ID,
            project_id=PROJECT_ID,
            preview=self._preview,
            risks=self._risks,
            pending_approval=self._approval.pending,
            decisions=self._approval.records,
            approved_digest=self._approved_digest,
            superseded=self._superseded,
            applied_version=self._applied_version,
        )


def new_change_order_id() -> str:
    return f"a06{uuid.uuid4().hex[:15].upper()}"


def wid_of(change_order_id: str) -> str:
    return workflow_id("salesforce", change_order_id)


async def start_by_cli(q2c: Invoke, started_runs: list[str]) -> tuple[str, str]:
    """The run's workflow id and its change order id."""
    co = new_change_order_id()
    started_runs.append(wid_of(co))
    result = await q2c("change-order", "start", co)
    assert result.exit_code == 0, result.output
    return wid_of(co), co


async def first_task_done(client: Client, wid: str) -> None:
    """Until the run's first workflow task completed (it answers queries from then on): a
    long poll on its history, not a sleep."""
    handle = client.get_workflow_handle(wid)
    async with asyncio.timeout(RESULT_WAIT_S):
        async for event in handle.fetch_history_events(wait_new_event=True):
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                return


async def result_of(client: Client, wid: str) -> ChangeOrderResult:
    handle = client.get_workflow_handle(wid, result_type=ChangeOrderResult)
    return await asyncio.wait_for(handle.result(), RESULT_WAIT_S)


def stripped(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


# --------------------------------------------------------------------------- start


async def test_start_prints_the_run_and_a_second_start_attaches(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    co = new_change_order_id()
    wid = wid_of(co)
    started_runs.append(wid)

    first = await q2c("change-order", "start", co)

    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        f"started: {wid}",
        f"Web UI: http://127.0.0.1:8233/namespaces/{temporal_client.namespace}/workflows/{wid}",
    ]
    handle = temporal_client.get_workflow_handle(wid)
    description = await handle.describe()
    assert description.workflow_type == "ChangeOrderWorkflow"
    assert description.task_queue == task_queue
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    request = ChangeOrderInput.model_validate_json(payload.data)
    assert (request.change_order_id, request.crm) == (co, "salesforce")
    assert request.trigger == f"cli:{getpass.getuser()}"

    again = await q2c("change-order", "start", co)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0] == f"already running: {wid}"
    as_json = json.loads((await q2c("change-order", "start", co, "--json")).stdout)
    assert as_json["workflow_id"] == wid and as_json["started"] is False
    assert as_json["run_id"] == description.run_id  # the same run, not a second one


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("a06ABC", "15 or 18 letters and digits"),
        ("a06000000000001AA;", "15 or 18 letters and digits"),
        (
            "006000000000001AAA",
            "a custom object's record id starts with a, this one with 006",
        ),
    ],
)
async def test_a_malformed_change_order_id_is_refused_before_temporal(
    q2c: Invoke, temporal_client: Client, bad: str, why: str
) -> None:
    result = await q2c("change-order", "start", bad)

    assert error_line(result) == f"error: {bad}: not a Salesforce change order id ({why})"
    with pytest.raises(RPCError) as missing:
        await temporal_client.get_workflow_handle(wid_of(bad)).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


# --------------------------------------------------------------------------- preview


async def test_preview_shows_the_diff_its_digest_and_why_finance_must_approve(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    async with Worker(temporal_client, task_queue=task_queue, workflows=[ChangeOrderStandIn]):
        wid, co = await start_by_cli(q2c, started_runs)
        await first_task_done(temporal_client, wid)

        human = await q2c("change-order", "preview", wid)
        by_id = await q2c("change-order", "preview", co)
        machine = await q2c("change-order", "preview", wid, "--json")

    expected = rate_increase_preview(change_order_id=co)
    earlier = rate_increase_preview(EARLIER_RATE, change_order_id=co)
    assert human.exit_code == 0, human.output
    lines = stripped(human.stdout)
    diff = lines[lines.index("Impact preview") + 1 :]
    assert diff == expected.render()
    assert diff[1:] == [
        "Development rate: 165.00 → 180.00 USD from 2027-01-01",
        "Development amount: 16500.00 → 18000.00 USD from 2027-01-01",
        "Contract value: 19500.00 → 21000.00 USD from 2027-01-01",
        "Contract budget: 19500.00 → 44500.00 USD from 2027-01-01",
    ]
    rows = [line.split() for line in lines]
    assert ["step", "awaiting_approval"] in rows
    assert ["digest", expected.digest] in rows
    assert ["superseded", "-", earlier.digest] in rows
    assert ["change", "order", "salesforce", co, "(opportunity", f"{OPPORTUNITY_ID},"] == rows[
        rows.index(["step", "awaiting_approval"]) + 1
    ][:6]
    assert "must approve:" in human.stdout
    assert "- budget: up 25000.00 USD, over the 10000 USD finance approves" in lines
    approval = next(line for line in lines if line.startswith("approval"))
    assert "pending since" in approval and "expires" in approval
    assert not any(line.startswith(("approved", "decisions")) for line in lines)

    # The change order's id alone names the same run.
    assert by_id.exit_code == 0, by_id.output
    assert by_id.stdout == human.stdout

    assert machine.exit_code == 0, machine.output
    report = json.loads(machine.stdout)
    assert report["workflow_id"] == wid and report["run_status"] == "running"
    view = report["change_order"]
    assert view["step"] == "awaiting_approval" and view["diff"] == expected.render()
    # The preview reads back as the very one: its digest is checked as it is read.
    assert ImpactPreview.model_validate(view["preview"]) == expected
    assert view["risks"] == change_risks(expected, POLICY)
    assert view["pending_approval"]["reasons"] == view["risks"]
    assert view["approved_digest"] is None and view["superseded"] == [earlier.digest]


async def test_preview_of_an_unknown_or_a_foreign_run_is_one_line(q2c: Invoke) -> None:
    co = new_change_order_id()
    for args in (
        ["change-order", "preview", wid_of(co)],
        ["change-order", "preview", wid_of(co), "--json"],
        ["change-order", "preview", co],
        ["change-order", "approve", co, "--approver", APPROVER, "--reason", "ok"],
        ["change-order", "reject", wid_of(co), "--approver", APPROVER, "--reason", "no"],
    ):
        assert error_line(await q2c(*args)) == f"error: no run with workflow id {wid_of(co)}"

    deal = "opportunity-to-project:salesforce:006000000000001AAA"
    for args in (
        ["change-order", "preview", deal],
        ["change-order", "approve", deal, "--approver", APPROVER, "--reason", "ok"],
    ):
        assert error_line(await q2c(*args)) == (
            f"error: {deal}: not a change-order run "
            "(those are change-order:<crm>:<change order id>)"
        )
    assert error_line(await q2c("change-order", "preview", "006000000000001AAA")).startswith(
        "error: 006000000000001AAA: not a Salesforce change order id"
    )


# --------------------------------------------------------------------------- decisions


async def test_an_unlisted_approver_is_refused_and_a_listed_one_gets_the_digest_applied(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    async with Worker(temporal_client, task_queue=task_queue, workflows=[ChangeOrderStandIn]):
        wid, co = await start_by_cli(q2c, started_runs)

        refused = await q2c(
            "change-order", "approve", wid, "--approver", "sales@northwind.example",
            "--reason", "my deal",
        )  # fmt: skip
        approved = await q2c(
            "change-order", "approve", wid, "--approver", APPROVER, "--reason", "margin ok"
        )
        result = await result_of(temporal_client, wid)
        after = await q2c("change-order", "preview", wid)
        # The run has ended: a second decision is refused, and says why.
        late = await q2c(
            "change-order", "reject", co, "--approver", APPROVER, "--reason", "second thoughts"
        )

    assert error_line(refused) == (
        f"error: {wid}: sales@northwind.example is not on the finance approvers list"
    )
    assert approved.exit_code == 0, approved.output
    assert approved.stdout.splitlines()[:3] == [
        f"approved: {wid}",
        f"by:     {APPROVER}",
        "reason: margin ok",
    ]
    expected = rate_increase_preview(change_order_id=co)
    assert (result.status, result.digest) == (ChangeOrderStep.APPLIED, expected.digest)

    assert after.exit_code == 0, after.output
    lines = stripped(after.stdout)
    rows = [line.split() for line in lines]
    assert ["step", "applied"] in rows
    assert ["approved", expected.digest] in rows
    assert ["applied", "contract", "version", "2"] in rows
    assert not any(line.startswith("approval") for line in lines)  # nothing pending
    # A decision the update's validator refused never reached the run: only one counts.
    [decision] = [line for line in lines if "via update" in line]
    assert decision.startswith(f"decisions     - approve by {APPROVER} via update at ")
    assert decision.endswith("(accepted): margin ok")

    assert error_line(late) == f"error: {wid}: the run is completed; it takes no more decisions"


async def test_reject_with_the_approver_from_the_environment_ends_the_run_rejected(
    cli_env: dict[str, str], temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    q2c = make_invoke({**cli_env, "Q2C_APPROVER": APPROVER})
    async with Worker(temporal_client, task_queue=task_queue, workflows=[ChangeOrderStandIn]):
        wid, co = await start_by_cli(q2c, started_runs)
        rejected = await q2c("change-order", "reject", co, "--reason", "budget too high")
        result = await result_of(temporal_client, wid)
        shown = json.loads((await q2c("change-order", "preview", wid, "--json")).stdout)

    assert rejected.exit_code == 0, rejected.output
    assert rejected.stdout.splitlines()[:2] == [f"rejected: {wid}", f"by:     {APPROVER}"]
    assert (result.status, result.digest) == (ChangeOrderStep.REJECTED, None)
    view = shown["change_order"]
    assert view["step"] == "rejected" and view["approved_digest"] is None
    [decision] = view["decisions"]
    assert (decision["what"], decision["via"], decision["accepted"]) == ("reject", "update", True)
