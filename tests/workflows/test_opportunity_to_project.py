"""Every branch of the opportunity-to-project workflow, on the real dev server, with fakes
for the systems (see `fakes.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from canonical import BillingType, Money
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
    OpportunityToProjectResult,
    OpportunityToProjectWorkflow,
    Step,
)
from workflows.time_to_invoice import upfront_workflow_id

Handle = WorkflowHandle[OpportunityToProjectWorkflow, OpportunityToProjectResult]
STEP_WAIT_S = 15


async def status_of(handle: Handle) -> DealStatus:
    """The `status` query (answered by a worker: call it while one runs)."""
    status: DealStatus = await handle.query(STATUS, result_type=DealStatus)
    return status


async def wait_until(handle: Handle, done: Callable[[DealStatus], bool]) -> DealStatus:
    """Poll the `status` query until `done` holds (a bound on polling, not a timed assertion)."""
    deadline = asyncio.get_running_loop().time() + STEP_WAIT_S
    while True:
        status = await status_of(handle)
        if done(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run never got there; it is at {status}")
        await asyncio.sleep(0.05)


async def wait_for_step(handle: Handle, step: Step) -> DealStatus:
    return await wait_until(handle, lambda s: s.step == step)


async def start(client: Client, task_queue: str) -> Handle:
    request, wid = start_args()
    return await client.start_workflow(
        OpportunityToProjectWorkflow.run, request, id=wid, task_queue=task_queue
    )


def retry() -> OperatorDecision:
    return OperatorDecision(
        action=OperatorAction.RETRY, operator="ops@northwind.example", reason="stripe is back"
    )


def risky() -> FakeSystems:
    # 2,000 hours at 150 USD: 300,000 USD, over the 250,000 threshold.
    return FakeSystems(deal=opportunity(hours="2000"))


async def test_clean_deal_is_provisioned_everywhere(temporal_client: Client, task_queue: str):
    systems = FakeSystems()
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        result = await handle.result()
        status = await status_of(handle)

    assert status.step == Step.COMPLETED and status.customer_name == "Globex Corporation"
    assert result.status == Step.COMPLETED
    assert result.ids == {
        "erp_customer": "17",
        "psa_project": "42",
        "contract": "salesforce:006000000000001AAA v1",
        "billing_customer": "cus_TEST1",
    }
    # The contract as sold is kept with the PSA's task ids; hours only: no upfront invoice.
    [recorded] = systems.called("record_contract")
    assert recorded.project_id == "42" and recorded.task_ids == {
        t.name: str(100 + i)
        for i, t in enumerate(systems.called("create_project")[0].project.tasks)
    }
    assert [ln.billing_type for ln in recorded.contract.lines] == [
        BillingType.TIME_AND_MATERIALS
    ] * 2
    [project] = systems.called("create_project")
    assert project.project.legal_entity_code == "NW-US"
    assert [(t.role, t.rate.amount if t.rate else None) for t in project.project.tasks] == [
        ("Solution Architect", 150),
        ("Project Manager", 120),
    ]
    assert project.erp_customer_id == "17"
    # Keys protect the deal's project and the customer's account, whichever run asks.
    assert project.idempotency_key == "project:salesforce:006000000000001AAA"
    [billing] = systems.called("provision_billing_customer")
    assert billing.idempotency_key == "billing-customer:salesforce:001000000000001AAA"
    assert billing.customer.legal_entity.code == "NW-US"
    [write_back] = systems.called("write_back_deal")
    assert (write_back.status, write_back.project_id, write_back.billing_customer_id) == (
        "provisioned",
        "42",
        "cus_TEST1",
    )
    assert not systems.called("close_project") and not systems.called("record_exception")
    linked = {(r.entity, r.system, r.external_id) for r in systems.called("link_reference")}
    assert linked == {("customer", "erp", "17"), ("project", "psa", "42")}
    audited = [(a.step, a.action) for a in systems.called("record_audit")]
    assert audited[0] == ("start", "started") and audited[-1] == ("completed", "completed")
    description = await handle.describe()
    attributes = {k.name: v for k, v in description.typed_search_attributes}
    assert attributes["Q2cCorrelationId"] == handle.id.rsplit(":", 1)[1]
    assert attributes["Q2cLifecycle"] == "opportunity-to-project"
    assert attributes["Q2cStep"] == "completed"
    assert attributes["Q2cCustomer"] == "Globex Corporation"


async def test_risky_deal_waits_for_a_listed_approver(temporal_client: Client, task_queue: str):
    systems = risky()
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        status = await wait_for_step(handle, Step.AWAITING_APPROVAL)
        assert status.pending_approval is not None
        assert "exceeds the approval threshold" in status.pending_approval.reasons[0]
        assert not systems.called("upsert_customer")  # nothing downstream before approval

        # An approver not on the finance list: the update is refused, nothing recorded.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                DECIDE,
                ApprovalDecision(
                    decision=Decision.APPROVE, approver="sales@x.example", reason="ok"
                ),
                result_type=ApprovalAck,
            )
        assert "not on the finance approvers list" in str(refused.value.cause)
        # No outage, so no operator decision is taken either.
        with pytest.raises(WorkflowUpdateFailedError) as not_waiting:
            await handle.execute_update(OPERATOR, retry(), result_type=OperatorAck)
        assert "not waiting for an operator" in str(not_waiting.value.cause)
        # The same person by signal: recorded and ignored.
        await handle.signal(
            DECIDE,
            ApprovalDecision(decision=Decision.APPROVE, approver="sales@x.example", reason="ok"),
        )
        status = await wait_until(handle, lambda s: bool(s.decisions))
        assert status.step == Step.AWAITING_APPROVAL
        [ignored] = status.decisions
        assert not ignored.accepted and ignored.via == "signal"
        assert ignored.ignored_because == "sales@x.example is not on the finance approvers list"

        ack = await handle.execute_update(
            DECIDE,
            ApprovalDecision(decision=Decision.APPROVE, approver=APPROVER, reason="margin ok"),
            result_type=ApprovalAck,
        )
        assert ack.what == Decision.APPROVE and ack.approver == APPROVER
        result = await handle.result()
        status = await status_of(handle)

    assert result.status == Step.COMPLETED
    assert systems.statuses() == ["awaiting_approval", "provisioned"]
    assert [d.accepted for d in status.decisions] == [False, True]
    assert status.pending_approval is None


async def test_rejected_deal_is_marked_and_creates_nothing(
    temporal_client: Client, task_queue: str
):
    systems = risky()
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, Step.AWAITING_APPROVAL)
        await handle.signal(
            DECIDE,
            ApprovalDecision(decision=Decision.REJECT, approver=APPROVER, reason="discount"),
        )
        result = await handle.result()

    assert result.status == Step.REJECTED and result.ids == {}
    assert systems.statuses() == ["awaiting_approval", "rejected"]
    assert systems.called("write_back_deal")[-1].message == f"Rejected by {APPROVER}: discount"
    for system_call in ("upsert_customer", "create_project", "provision_billing_customer"):
        assert not systems.called(system_call)


async def test_permanent_billing_failure_is_compensated(temporal_client: Client, task_queue: str):
    systems = FakeSystems(fail_billing="stripe HTTP 400: address: invalid country")
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        status = await status_of(handle)

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ProvisioningFailed"
    assert "provision_billing" in cause.message and "invalid country" in cause.message
    [closed] = systems.called("close_project")
    assert closed.project_id == "42"
    assert not systems.called("deactivate_billing_customer")  # billing never succeeded
    assert systems.statuses() == ["failed"]
    assert "Undone: close project" in systems.called("write_back_deal")[-1].message
    [exception] = systems.called("record_exception")
    assert exception.kind == "provisioning_failed" and exception.step == "provision_billing"
    assert exception.detail["undone"] == ["close project"]
    assert status.step == Step.FAILED and "invalid country" in (status.last_error or "")


async def test_bad_deal_waits_for_correction_then_completes(
    temporal_client: Client, task_queue: str
):
    systems = FakeSystems(deal_account=account("JP"))
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        status = await wait_for_step(handle, Step.AWAITING_CORRECTION)
        assert status.validation_issues == [
            "account.billing_address.country: no legal entity contracts with customers in JP"
        ]
        [exception] = systems.called("record_exception")
        assert exception.kind == "invalid_deal" and "JP" in exception.message
        assert systems.statuses() == ["needs_correction"]

        systems.deal_account = account("GB", tax_id="GB123456789")
        systems.deal = opportunity(currency="GBP")
        await handle.signal(DATA_CORRECTED, DataCorrected(corrected_by="ops@northwind.example"))
        result = await handle.result()

    assert result.status == Step.COMPLETED
    assert len(systems.called("fetch_deal")) == 2
    [project] = systems.called("create_project")
    assert (project.project.legal_entity_code, project.project.currency) == ("NW-UK", "GBP")
    assert systems.statuses() == ["needs_correction", "provisioned"]


async def test_status_query_and_search_attributes_while_waiting(
    temporal_client: Client, task_queue: str
):
    systems = risky()
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        status = await wait_for_step(handle, Step.AWAITING_APPROVAL)
        assert (status.legal_entity, status.currency) == ("NW-US", "USD")
        assert status.ids == {} and status.last_error is None
        description = await handle.describe()
        attributes = {k.name: v for k, v in description.typed_search_attributes}
        assert attributes["Q2cStep"] == "awaiting_approval"
        await handle.terminate("test over")


# -- timers: days pass in seconds on the time-skipping server ---------------------------------


async def test_unanswered_approval_reminds_then_expires(
    time_skipping_env: WorkflowEnvironment, task_queue: str
):
    client = time_skipping_env.client
    systems = risky()  # remind every 4 h, expire after 10 h
    async with systems.worker(client, task_queue):
        handle = await start(client, task_queue)
        result: OpportunityToProjectResult = await handle.result()

    assert result.status == Step.EXPIRED
    reminders = [e for e in systems.called("record_exception") if e.kind == "approval_overdue"]
    assert len(reminders) == 2  # at 4 h and 8 h; expired at 10 h
    assert "reminder 2" in reminders[1].message
    assert systems.statuses() == ["awaiting_approval", "approval_expired"]
    assert systems.called("record_exception")[-1].kind == "approval_expired"
    assert not systems.called("upsert_customer")


async def test_uncorrected_deal_fails_after_the_deadline(
    time_skipping_env: WorkflowEnvironment, task_queue: str
):
    client = time_skipping_env.client
    systems = FakeSystems(deal_account=account("JP"))  # correction deadline 6 h
    async with systems.worker(client, task_queue):
        handle = await start(client, task_queue)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ProvisioningFailed"
    assert "not corrected within 6:00:00" in cause.message
    assert systems.statuses() == ["needs_correction", "failed"]
    assert not systems.called("create_project")
    kinds = [e.kind for e in systems.called("record_exception")]
    assert kinds == ["invalid_deal", "provisioning_failed"]
    history_length = len((await handle.fetch_history()).events)
    assert history_length < 200
    assert timedelta(hours=6) == systems.policy.correction_deadline


# -- outages, operators, cancellation, re-entry ------------------------------------------------


def outage_deadline_passes() -> FakeSystems:
    """Billing down; notice after 1 s, and Stripe's outage deadline passes after 3 s."""
    systems = FakeSystems(billing_down=True)
    outage = systems.policy.outage.model_copy(
        update={"notice_after": timedelta(seconds=1), "deadlines": {"stripe": timedelta(seconds=3)}}
    )
    systems.policy = systems.policy.model_copy(update={"outage": outage})
    return systems


async def search_attribute(handle: Handle, name: str) -> object:
    description = await handle.describe()
    return {k.name: v for k, v in description.typed_search_attributes}.get(name)


async def test_billing_outage_is_waited_out_shown_and_resolved(
    temporal_client: Client, task_queue: str
):
    systems = FakeSystems(billing_down=True)  # notice after 2 s; deadline 1 h
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        status = await wait_until(handle, lambda s: s.waiting_on == "stripe")
        assert status.step == Step.PROVISION_BILLING and status.outage is not None
        assert status.outage.step == "provision_billing" and not status.outage.awaiting_operator
        assert await search_attribute(handle, "Q2cWaitingOn") == "stripe"
        [notice] = systems.open_exceptions()
        assert (notice.kind, notice.step) == ("system_unavailable", "provision_billing")
        assert "stripe has not answered provision_billing" in notice.message
        assert not systems.called("close_project")

        systems.billing_down = False  # Stripe is back
        result = await handle.result()
        status = await status_of(handle)

    assert result.status == Step.COMPLETED and result.ids["billing_customer"] == "cus_TEST1"
    assert status.waiting_on is None and status.outage is None
    assert await search_attribute(handle, "Q2cWaitingOn") is None
    [resolved] = systems.called("resolve_exception")
    assert resolved.dedupe_key == notice.dedupe_key and "stripe answered again" in (
        resolved.resolution
    )
    assert systems.open_exceptions() == []
    assert not systems.called("close_project") and systems.statuses() == ["provisioned"]


async def test_past_the_deadline_an_operator_retries(temporal_client: Client, task_queue: str):
    systems = outage_deadline_passes()
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        status = await wait_for_step(handle, Step.AWAITING_OPERATOR)
        assert status.waiting_on == "stripe" and status.outage and status.outage.awaiting_operator
        assert [e.kind for e in systems.open_exceptions()] == [
            "system_unavailable",
            "operator_needed",
        ]
        assert not systems.called("close_project")  # nothing undone while a person decides

        systems.billing_down = False
        ack = await handle.execute_update(OPERATOR, retry(), result_type=OperatorAck)
        assert (ack.action, ack.step, ack.system) == (
            OperatorAction.RETRY,
            "provision_billing",
            "stripe",
        )
        result = await handle.result()

    assert result.status == Step.COMPLETED
    assert systems.open_exceptions() == []
    assert not systems.called("close_project") and systems.statuses() == ["provisioned"]
    audited = [a.action for a in systems.called("record_audit")]
    assert "operator_retry" in audited


async def test_past_the_deadline_an_operator_compensates(temporal_client: Client, task_queue: str):
    systems = outage_deadline_passes()
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, Step.AWAITING_OPERATOR)
        # By signal, as a script would; with a field a newer CLI might add.
        await handle.signal(
            OPERATOR,
            {
                "action": "compensate",
                "operator": "ops@northwind.example",
                "reason": "customer withdrew",
                "ticket": "OPS-1",
            },
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        status = await status_of(handle)

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ProvisioningFailed"
    assert "ops@northwind.example decided to compensate: customer withdrew" in cause.message
    [closed] = systems.called("close_project")
    assert closed.project_id == "42"
    assert systems.statuses() == ["failed"]
    assert "Undone: close project" in systems.called("write_back_deal")[-1].message
    assert [e.kind for e in systems.open_exceptions()] == ["provisioning_failed"]
    assert status.step == Step.FAILED and status.waiting_on is None


async def test_cancelled_run_compensates_and_tells_the_crm(
    temporal_client: Client, task_queue: str
):
    systems = FakeSystems(billing_down=True)
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_until(handle, lambda s: s.waiting_on == "stripe")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        status = await status_of(handle)

    assert isinstance(failure.value.cause, CancelledError)
    [closed] = systems.called("close_project")
    assert closed.project_id == "42"
    assert not systems.called("deactivate_billing_customer")  # billing never answered
    assert systems.statuses() == ["cancelled"]
    message = systems.called("write_back_deal")[-1].message
    assert message.startswith("Provisioning cancelled at provision_billing") and (
        "Undone: close project" in message
    )
    [cancelled] = systems.open_exceptions()  # the outage notice resolved with the run
    assert cancelled.kind == "provisioning_cancelled"
    assert cancelled.detail["undone"] == ["close project"]
    assert status.step == Step.CANCELLED and status.waiting_on is None


async def test_failed_re_entry_leaves_the_live_project_alone(
    temporal_client: Client, task_queue: str
):
    # The deal was provisioned before: its project exists; this run's billing call is refused.
    systems = FakeSystems(project_exists=True, fail_billing="stripe HTTP 400: tax id invalid")
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await status_of(handle)

    assert not systems.called("close_project")
    assert status.created == {"psa_project": False}
    assert systems.statuses() == ["failed"]
    [write_back] = systems.called("write_back_deal")
    assert "tax id invalid" in write_back.message and "Undone" not in write_back.message
    assert write_back.project_id == "42"  # the CRM keeps pointing at the live project
    [failed] = systems.called("record_exception")
    assert failed.detail["undone"] == [] and failed.detail["skipped"] == [
        "deactivate billing account: no billing account was made",
        "close project: project 42 was made by an earlier run",
    ]


async def test_a_compensation_that_fails_is_reported_as_not_undone(
    temporal_client: Client, task_queue: str
):
    systems = FakeSystems(
        fail_billing="stripe HTTP 400: address invalid", fail_close="tryton: project locked"
    )
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        with pytest.raises(WorkflowFailureError):
            await handle.result()

    message = systems.called("write_back_deal")[-1].message
    assert "NOT undone: close project: " in message and "project locked" in message
    assert "Undone:" not in message
    [failed] = systems.called("record_exception")
    [not_undone] = failed.detail["not_undone"]
    assert not_undone.startswith("close project: ") and "project locked" in not_undone


async def test_a_store_hiccup_never_undoes_business_work(temporal_client: Client, task_queue: str):
    systems = FakeSystems()
    systems.fail_link = "store: database is locked"
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        result = await handle.result()

    assert result.status == Step.COMPLETED
    assert len(systems.called("link_reference")) == 2  # tried, logged, went on
    assert not systems.called("close_project") and systems.statuses() == ["provisioned"]


async def test_messages_with_an_added_field_are_accepted(temporal_client: Client, task_queue: str):
    """A newer sender during a rolling deploy: input, signal and update carry a field this
    version does not know."""
    systems = risky()
    request, wid = start_args()
    async with systems.worker(temporal_client, task_queue):
        handle: Handle = await temporal_client.start_workflow(
            "OpportunityToProjectWorkflow",
            request.model_dump() | {"priority": "high"},
            id=wid,
            task_queue=task_queue,
            result_type=OpportunityToProjectResult,
        )
        await wait_for_step(handle, Step.AWAITING_APPROVAL)
        await handle.signal(
            DATA_CORRECTED, {"corrected_by": "ops@x.example", "source": "crm-v2"}
        )  # nothing waits for it now: accepted and harmless
        await handle.signal(
            DECIDE,
            {"decision": "approve", "approver": "sales@x.example", "reason": "go", "via": "app"},
        )
        await wait_until(handle, lambda s: len(s.decisions) == 1)
        ack = await handle.execute_update(
            DECIDE,
            {"decision": "approve", "approver": APPROVER, "reason": "ok", "channel": "slack"},
            result_type=ApprovalAck,
        )
        result = await handle.result()

    assert ack.approver == APPROVER
    assert result.status == Step.COMPLETED


async def test_an_upfront_fee_starts_its_invoice_run_once(temporal_client: Client, task_queue: str):
    """A fixed fee with 20 % up front: provisioning starts the upfront invoice's own
    time-to-invoice run, and a second provisioning of the deal does not start another."""
    deal = with_upfront_fee()
    systems = FakeSystems(deal=deal)
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        result = await handle.result()
        upfront_id = upfront_workflow_id("42")
        assert result.ids["upfront_invoice_run"] == upfront_id
        child = temporal_client.get_workflow_handle(upfront_id)
        try:
            started = await child.describe()
            assert started.workflow_type == "TimeToInvoiceWorkflow"
            assert started.parent_id == handle.id
            # The deal provisioned again (a re-entry): the upfront run is not started twice.
            again = await temporal_client.start_workflow(
                OpportunityToProjectWorkflow.run,
                start_args(deal.id)[0],
                id=f"{handle.id}-again",
                task_queue=task_queue,
            )
            await again.result()
            assert (await child.describe()).run_id == started.run_id
        finally:
            await child.terminate("test over")
    [recorded, _] = systems.called("record_contract")
    [training] = [ln for ln in recorded.contract.lines if ln.task == "Training"]
    assert recorded.contract.upfront(training) == Money.of("1000.00", deal.currency)
