"""Opportunity-to-project: a closed-won deal becomes a customer, a project, a billing account.

One run per CRM opportunity (`opportunity-to-project:<crm>:<opportunity id>`). The run fetches
the deal, derives what the deal does not carry from configuration, validates it (waiting for a
correction when it is bad), upserts the customer in the ERP, asks finance when the deal is
risky, creates the project in the PSA, provisions billing and writes the outcome back to the
CRM. A step that fails for good after others succeeded is compensated in reverse.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.approvals import ApprovalDecision as ApprovalDecision
from workflows.approvals import Decision as Decision

with workflow.unsafe.imports_passed_through():
    from activities.billing import (
        BillingActivities,
        DeactivateBillingInput,
        ProvisionBillingInput,
    )
    from activities.crm import CrmActivities, FetchDealInput, WriteBackInput
    from activities.deal import DealActivities, DealPolicyInput, PlanDealInput
    from activities.erp import ErpActivities, UpsertCustomerInput
    from activities.ledger import (
        LedgerActivities,
        LinkReferenceInput,
    )
    from activities.psa import CloseProjectInput, CreateProjectInput, PsaActivities
    from canonical import DealPlan, DealPolicy
    from workflows import presets
    from workflows import search_attributes as sa
    from workflows._lifecycle import LifecycleSteps, StepFailed, reason_of


LIFECYCLE = "opportunity-to-project"


def workflow_id(crm: str, opportunity_id: str) -> str:
    """The business key: one lifecycle per CRM deal, whoever or whatever starts it."""
    return f"{LIFECYCLE}:{crm}:{opportunity_id}"


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OpportunityToProjectInput(_Message):
    opportunity_id: str = Field(min_length=1, max_length=64)
    crm: str = "salesforce"
    #: What started the run (a webhook event id, "cli:<user>"): kept in the audit trail.
    trigger: str | None = None


class Step(StrEnum):
    FETCH_DEAL = "fetch_deal"
    VALIDATE = "validate"
    AWAITING_CORRECTION = "awaiting_correction"
    UPSERT_CUSTOMER = "upsert_customer"
    AWAITING_APPROVAL = "awaiting_approval"
    CREATE_PROJECT = "create_project"
    PROVISION_BILLING = "provision_billing"
    WRITE_BACK = "write_back"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"


class ApprovalAck(_Message):
    """What an approver gets back from the update: the decision is recorded."""

    decision: Decision
    approver: str
    step: Step


class DataCorrected(_Message):
    """Sent after someone fixed the deal in the CRM: fetch and validate again."""

    corrected_by: str | None = None
    note: str | None = None


class DecisionRecord(_Message):
    decision: Decision
    approver: str
    reason: str
    at: datetime
    via: str  # "signal" or "update"
    accepted: bool
    #: Why an accepted=False decision was ignored (an approver not on the finance list).
    ignored_because: str | None = None


class PendingApproval(_Message):
    reasons: list[str]
    requested_at: datetime
    remind_at: datetime
    expires_at: datetime
    reminders_sent: int = 0


class DealStatus(_Message):
    """The `status` query: where the run is and what it has made so far."""

    workflow_id: str
    opportunity_id: str
    crm: str
    step: Step
    customer_name: str | None = None
    legal_entity: str | None = None
    currency: str | None = None
    #: system-role -> id there: "erp_customer", "psa_project", "billing_customer".
    ids: dict[str, str] = Field(default_factory=dict)
    validation_issues: list[str] = Field(default_factory=list)
    pending_approval: PendingApproval | None = None
    decisions: list[DecisionRecord] = Field(default_factory=list)
    last_error: str | None = None


class OpportunityToProjectResult(_Message):
    status: Step  # COMPLETED, REJECTED or EXPIRED (a failed run raises)
    ids: dict[str, str] = Field(default_factory=dict)
    message: str


# Message names, shared with the CLI and the service.
DECIDE = "decide"  # signal and update
DATA_CORRECTED = "data_corrected"  # signal
STATUS = "status"  # query


# --------------------------------------------------------------------------- the workflow

#: What the CRM deal shows while and after q2c works on it (`Q2C_Status__c`).
CRM_STATUS = {
    Step.AWAITING_CORRECTION: "needs_correction",
    Step.AWAITING_APPROVAL: "awaiting_approval",
    Step.COMPLETED: "provisioned",
    Step.REJECTED: "rejected",
    Step.EXPIRED: "approval_expired",
    Step.FAILED: "failed",
}


@workflow.defn
class OpportunityToProjectWorkflow(LifecycleSteps):
    LIFECYCLE = LIFECYCLE

    @workflow.init
    def __init__(self, request: OpportunityToProjectInput) -> None:
        self._request = request
        self._correlation_id = request.opportunity_id
        self._step = Step.FETCH_DEAL
        self._ids: dict[str, str] = {}
        self._issues: list[str] = []
        self._customer_name: str | None = None
        self._legal_entity: str | None = None
        self._currency: str | None = None
        self._policy: DealPolicy | None = None
        self._pending: PendingApproval | None = None
        self._decision: DecisionRecord | None = None
        self._decisions: list[DecisionRecord] = []
        self._corrections = 0
        self._last_error: str | None = None
        self._compensations: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    # -- the run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: OpportunityToProjectInput) -> OpportunityToProjectResult:
        workflow.upsert_search_attributes(
            [
                sa.CORRELATION_ID.value_set(request.opportunity_id),
                sa.LIFECYCLE.value_set(LIFECYCLE),
            ]
        )
        await self._audit("start", "started", detail={"trigger": request.trigger})
        try:
            result = await self._provision()
        except StepFailed as failure:
            await self._fail(failure)
            raise ApplicationError(
                f"{failure.step}: {failure.reason}", type="ProvisioningFailed", non_retryable=True
            ) from None
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _provision(self) -> OpportunityToProjectResult:
        self._policy = await self._call(
            Step.FETCH_DEAL,
            DealActivities.deal_policy,
            DealPolicyInput(crm=self._request.crm),
            presets.LOCAL_CALL,
        )
        plan = await self._validated_plan(self._policy)
        assert plan.customer is not None and plan.project is not None

        if plan.risks:
            decision = await self._approval(plan.risks, self._policy)
            if decision is None or decision.decision is Decision.REJECT:
                return await self._declined(decision)

        self._set_step(Step.UPSERT_CUSTOMER)
        customer = await self._call(
            Step.UPSERT_CUSTOMER,
            ErpActivities.upsert_customer,
            UpsertCustomerInput(customer=plan.customer),
        )
        self._ids["erp_customer"] = customer.erp_customer_id
        await self._link("customer", plan.customer.id, "erp", customer.erp_customer_id)
        await self._audit(
            Step.UPSERT_CUSTOMER,
            "created" if customer.created else "updated",
            system="erp",
            detail={"erp_customer_id": customer.erp_customer_id},
        )

        self._set_step(Step.CREATE_PROJECT)
        project = await self._call(
            Step.CREATE_PROJECT,
            PsaActivities.create_project,
            CreateProjectInput(
                project=plan.project,
                erp_customer_id=customer.erp_customer_id,
                idempotency_key=self._key(Step.CREATE_PROJECT),
            ),
        )
        self._ids["psa_project"] = project.project_id
        self._compensate_with("close project", self._close_project(project.project_id))
        await self._link("project", plan.project.id, "psa", project.project_id)
        await self._audit(
            Step.CREATE_PROJECT,
            "created",
            system="psa",
            detail={"project_id": project.project_id, "task_ids": project.task_ids},
        )

        self._set_step(Step.PROVISION_BILLING)
        billing = await self._call(
            Step.PROVISION_BILLING,
            BillingActivities.provision_billing_customer,
            ProvisionBillingInput(
                customer=plan.customer, idempotency_key=self._key(Step.PROVISION_BILLING)
            ),
        )
        self._ids["billing_customer"] = billing.billing_customer_id
        self._compensate_with(
            "deactivate billing account", self._deactivate_billing(billing.billing_customer_id)
        )
        await self._audit(
            Step.PROVISION_BILLING,
            "created" if billing.created else "updated",
            system="billing",
            detail={"billing_customer_id": billing.billing_customer_id},
        )

        self._set_step(Step.WRITE_BACK)
        message = (
            f"Project {project.project_id} ({plan.project.legal_entity_code}, "
            f"{plan.project.currency}) and billing account {billing.billing_customer_id} ready"
        )
        await self._write_back(Step.WRITE_BACK, CRM_STATUS[Step.COMPLETED], message)
        await self._audit(Step.WRITE_BACK, "updated", system="crm", detail={"message": message})
        self._set_step(Step.COMPLETED)
        await self._audit(Step.COMPLETED, "completed", detail=dict(self._ids))
        return OpportunityToProjectResult(
            status=Step.COMPLETED, ids=dict(self._ids), message=message
        )

    # -- validation, waiting for corrections ------------------------------------------------

    async def _validated_plan(self, policy: DealPolicy) -> DealPlan:
        deadline = workflow.now() + policy.correction_deadline
        round_ = 0
        while True:
            round_ += 1
            seen = self._corrections
            self._set_step(Step.FETCH_DEAL)
            snapshot = await self._call(
                Step.FETCH_DEAL,
                CrmActivities.fetch_deal,
                FetchDealInput(crm=self._request.crm, opportunity_id=self._request.opportunity_id),
            )
            self._set_step(Step.VALIDATE)
            issues = list(snapshot.problems)
            plan: DealPlan | None = None
            if snapshot.opportunity is not None and snapshot.account is not None:
                self._customer_name = snapshot.account.name
                plan = await self._call(
                    Step.VALIDATE,
                    DealActivities.plan_deal,
                    PlanDealInput(opportunity=snapshot.opportunity, account=snapshot.account),
                    presets.LOCAL_CALL,
                )
                issues = plan.issues
            self._issues = issues
            if plan is not None and plan.ready:
                assert plan.customer is not None and plan.project is not None
                self._legal_entity = plan.project.legal_entity_code
                self._currency = plan.project.currency
                workflow.upsert_search_attributes([sa.CUSTOMER.value_set(plan.customer.name)])
                await self._audit(Step.VALIDATE, "validated", detail={"risks": plan.risks})
                return plan

            summary = "; ".join(issues)
            await self._write_back(
                Step.AWAITING_CORRECTION,
                CRM_STATUS[Step.AWAITING_CORRECTION],
                f"Fix in the CRM, then q2c continues: {summary}",
            )
            await self._record_exception(
                f"validation:{round_}",
                kind="invalid_deal",
                message=f"Opportunity {self._request.opportunity_id}: {summary}",
                step=Step.VALIDATE,
                detail={"issues": issues},
            )
            self._set_step(Step.AWAITING_CORRECTION)
            remaining = deadline - workflow.now()
            try:
                if remaining <= timedelta(0):
                    raise TimeoutError
                await workflow.wait_condition(
                    lambda: self._corrections > seen,  # noqa: B023 (awaited in this iteration)
                    timeout=remaining,
                )
            except TimeoutError:
                raise StepFailed(
                    Step.AWAITING_CORRECTION,
                    f"deal data not corrected within {policy.correction_deadline}: {summary}",
                ) from None

    # -- finance approval -------------------------------------------------------------------

    async def _approval(self, risks: list[str], policy: DealPolicy) -> DecisionRecord | None:
        """Wait for finance; remind every `remind_after`; give up at `expire_after`."""
        now = workflow.now()
        approval = policy.approval
        self._pending = PendingApproval(
            reasons=risks,
            requested_at=now,
            remind_at=now + approval.remind_after,
            expires_at=now + approval.expire_after,
        )
        self._set_step(Step.AWAITING_APPROVAL)
        await self._write_back(
            Step.AWAITING_APPROVAL,
            CRM_STATUS[Step.AWAITING_APPROVAL],
            "Waiting for finance approval: " + "; ".join(risks),
        )
        await self._audit(Step.AWAITING_APPROVAL, "approval_requested", detail={"risks": risks})
        while self._decision is None:
            pending = self._pending
            now = workflow.now()
            if now >= pending.expires_at:
                break
            wake = min(pending.remind_at, pending.expires_at)
            try:
                await workflow.wait_condition(
                    lambda: self._decision is not None, timeout=max(wake - now, timedelta(0))
                )
            except TimeoutError:
                if workflow.now() >= pending.expires_at:
                    break
                await self._remind(pending, approval.remind_after)
        self._pending = None
        decision = self._decision
        await self._audit(
            Step.AWAITING_APPROVAL,
            decision.decision.value if decision else "approval_expired",
            detail=decision.model_dump(mode="json") if decision else {},
        )
        return decision

    async def _remind(self, pending: PendingApproval, every: timedelta) -> None:
        count = pending.reminders_sent + 1
        self._pending = pending.model_copy(
            update={"reminders_sent": count, "remind_at": pending.remind_at + every}
        )
        await self._record_exception(
            f"approval-reminder:{count}",
            kind="approval_overdue",
            message=(
                f"Opportunity {self._request.opportunity_id} ({self._customer_name}) has waited "
                f"for finance approval since {pending.requested_at:%Y-%m-%d %H:%M} UTC "
                f"(reminder {count}): " + "; ".join(pending.reasons)
            ),
            step=Step.AWAITING_APPROVAL,
        )

    async def _declined(self, decision: DecisionRecord | None) -> OpportunityToProjectResult:
        step = Step.REJECTED if decision is not None else Step.EXPIRED
        message = (
            f"Rejected by {decision.approver}: {decision.reason}"
            if decision is not None
            else "Finance approval expired; nothing was created"
        )
        await self._write_back(step, CRM_STATUS[step], message)
        if decision is None:
            await self._record_exception(
                "approval-expired",
                kind="approval_expired",
                message=f"Opportunity {self._request.opportunity_id} ({self._customer_name}): "
                "finance did not decide in time; win the deal again to ask anew",
                step=Step.AWAITING_APPROVAL,
            )
        self._set_step(step)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return OpportunityToProjectResult(status=step, ids=dict(self._ids), message=message)

    def _receive(self, decision: ApprovalDecision, via: str) -> DecisionRecord:
        problem = self._refusal(decision)
        record = DecisionRecord(
            decision=decision.decision,
            approver=decision.approver,
            reason=decision.reason,
            at=workflow.now(),
            via=via,
            accepted=problem is None,
            ignored_because=problem,
        )
        self._decisions.append(record)
        if problem is None:
            self._decision = record
        else:
            workflow.logger.warning("decision from %s ignored: %s", decision.approver, problem)
        return record

    def _refusal(self, decision: ApprovalDecision) -> str | None:
        if self._pending is None or self._decision is not None:
            return f"no approval is pending (step {self._step})"
        if self._policy is None or not self._policy.approval.may_decide(decision.approver):
            return f"{decision.approver} is not on the finance approvers list"
        return None

    @workflow.signal(name=DECIDE)
    def decide_by_signal(self, decision: ApprovalDecision) -> None:
        """Finance tools and webhooks: recorded, and ignored when the approver may not decide."""
        self._receive(decision, via="signal")

    @workflow.update(name=DECIDE)
    def decide_by_update(self, decision: ApprovalDecision) -> ApprovalAck:
        """The CLI: the approver gets an immediate answer, refusals included."""
        record = self._receive(decision, via="update")
        return ApprovalAck(decision=record.decision, approver=record.approver, step=self._step)

    @decide_by_update.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        if (problem := self._refusal(decision)) is not None:
            raise ValueError(problem)

    @workflow.signal(name=DATA_CORRECTED)
    def data_corrected(self, note: DataCorrected) -> None:
        self._corrections += 1

    @workflow.query(name=STATUS)
    def status(self) -> DealStatus:
        return DealStatus(
            workflow_id=workflow.info().workflow_id,
            opportunity_id=self._request.opportunity_id,
            crm=self._request.crm,
            step=self._step,
            customer_name=self._customer_name,
            legal_entity=self._legal_entity,
            currency=self._currency,
            ids=dict(self._ids),
            validation_issues=list(self._issues),
            pending_approval=self._pending,
            decisions=list(self._decisions),
            last_error=self._last_error,
        )

    # -- failure and compensation -----------------------------------------------------------

    def _compensate_with(self, name: str, undo: Callable[[], Awaitable[None]]) -> None:
        self._compensations.append((name, undo))

    def _close_project(self, project_id: str) -> Callable[[], Awaitable[None]]:
        async def undo() -> None:
            await workflow.execute_activity_method(
                PsaActivities.close_project,
                CloseProjectInput(project_id=project_id, reason=self._last_error or "compensation"),
                **presets.COMPENSATION,
            )

        return undo

    def _deactivate_billing(self, customer_id: str) -> Callable[[], Awaitable[None]]:
        async def undo() -> None:
            await workflow.execute_activity_method(
                BillingActivities.deactivate_billing_customer,
                DeactivateBillingInput(
                    billing_customer_id=customer_id,
                    reason=self._last_error or "compensation",
                    idempotency_key=self._key("deactivate_billing"),
                ),
                **presets.COMPENSATION,
            )

        return undo

    async def _fail(self, failure: StepFailed) -> None:
        """Undo what was done, newest first; tell the CRM and a person; then the run fails."""
        self._last_error = f"{failure.step}: {failure.reason}"
        undone: list[str] = []
        not_undone: list[str] = []
        if self._compensations:
            self._set_step(Step.COMPENSATING)
        for name, undo in reversed(self._compensations):
            try:
                await undo()
                undone.append(name)
            except ActivityError as exc:
                not_undone.append(f"{name}: {reason_of(exc)}")
        self._set_step(Step.FAILED)
        message = f"Provisioning failed at {failure.step}: {failure.reason}"
        if undone:
            message += f". Undone: {', '.join(undone)}"
        if not_undone:
            message += f". NOT undone: {'; '.join(not_undone)}"
        try:
            await self._write_back(Step.FAILED, CRM_STATUS[Step.FAILED], message)
        except StepFailed as exc:
            not_undone.append(f"CRM status: {exc.reason}")
        await self._record_exception(
            "failed",
            kind="provisioning_failed",
            message=f"Opportunity {self._request.opportunity_id}: {message}",
            step=failure.step,
            detail={"ids": dict(self._ids), "undone": undone, "not_undone": not_undone},
        )

    # -- helpers ----------------------------------------------------------------------------

    async def _write_back(self, step: Step, status: str, message: str) -> None:
        await self._call(
            step,
            CrmActivities.write_back_deal,
            WriteBackInput(
                crm=self._request.crm,
                opportunity_id=self._request.opportunity_id,
                workflow_id=workflow.info().workflow_id,
                status=status,
                project_id=self._ids.get("psa_project"),
                billing_customer_id=self._ids.get("billing_customer"),
                message=message,
            ),
        )

    async def _link(self, entity: str, canonical_id: str, system: str, external_id: str) -> None:
        await self._call(
            self._step,
            LedgerActivities.link_reference,
            LinkReferenceInput(
                entity=entity, canonical_id=canonical_id, system=system, external_id=external_id
            ),
            presets.LOCAL_CALL,
        )
