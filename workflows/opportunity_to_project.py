"""Opportunity-to-project: a closed-won deal becomes a customer, a project, a billing account.

One run per CRM opportunity (`opportunity-to-project:<crm>:<opportunity id>`). The run fetches
the deal, derives what the deal does not carry from configuration, validates it (waiting for a
correction when it is bad), upserts the customer in the ERP, asks finance when the deal is
risky, creates the project in the PSA, provisions billing and writes the outcome back to the
CRM. A step that fails for good after others succeeded is compensated in reverse.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from enum import StrEnum

from pydantic import Field
from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

from workflows.approvals import (
    DECIDE,
    ApprovalAck,
    ApprovalDecision,
    ApprovalGate,
    AwaitsApproval,
    Decision,
    DecisionRecord,
    Message,
    PendingApproval,
)
from workflows.time_to_invoice import (
    InvoiceKind,
    TimeToInvoiceInput,
    TimeToInvoiceWorkflow,
    upfront_workflow_id,
)

with workflow.unsafe.imports_passed_through():
    from activities.billing import (
        BillingActivities,
        DeactivateBillingInput,
        ProvisionBillingInput,
    )
    from activities.contracts import ContractActivities, RecordContractInput
    from activities.crm import CrmActivities, FetchDealInput, WriteBackInput
    from activities.deal import DealActivities, DealPolicyInput, PlanDealInput
    from activities.erp import ErpActivities, UpsertCustomerInput
    from activities.psa import CloseProjectInput, CreateProjectInput, PsaActivities
    from canonical import BillingType, ContractVersion, DealPlan, DealPolicy
    from workflows import search_attributes as sa
    from workflows._lifecycle import (
        Ending,
        Lifecycle,
        NothingToUndo,
        Outage,
        StepFailed,
        defect,
        outcome_message,
    )
    from workflows.queues import SystemQueue

__all__ = [
    "DATA_CORRECTED",
    "DECIDE",
    "STATUS",
    "ApprovalAck",
    "ApprovalDecision",
    "DataCorrected",
    "DealStatus",
    "Decision",
    "DecisionRecord",
    "OpportunityToProjectInput",
    "OpportunityToProjectResult",
    "OpportunityToProjectWorkflow",
    "PendingApproval",
    "Step",
    "workflow_id",
]

LIFECYCLE = "opportunity-to-project"


def workflow_id(crm: str, opportunity_id: str) -> str:
    """The business key: one lifecycle per CRM deal, whoever or whatever starts it."""
    return f"{LIFECYCLE}:{crm}:{opportunity_id}"


class OpportunityToProjectInput(Message):
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
    RECORD_CONTRACT = "record_contract"
    PROVISION_BILLING = "provision_billing"
    WRITE_BACK = "write_back"
    UPFRONT_INVOICE = "upfront_invoice"
    AWAITING_OPERATOR = "awaiting_operator"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DataCorrected(Message):
    """Sent after someone fixed the deal in the CRM: fetch and validate again."""

    corrected_by: str | None = None
    note: str | None = None


class DealStatus(Message):
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
    #: system-role -> True when this run created it (False: an earlier run had).
    created: dict[str, bool] = Field(default_factory=dict)
    validation_issues: list[str] = Field(default_factory=list)
    pending_approval: PendingApproval | None = None
    decisions: list[DecisionRecord] = Field(default_factory=list)
    #: The system the run waits on during an outage ("stripe"), and since when.
    waiting_on: str | None = None
    outage: Outage | None = None
    last_error: str | None = None


class OpportunityToProjectResult(Message):
    status: Step  # COMPLETED, REJECTED or EXPIRED (a failed run raises)
    ids: dict[str, str] = Field(default_factory=dict)
    message: str


# Message names, shared with the CLI and the service (DECIDE and OPERATOR: workflows.approvals).
DATA_CORRECTED = "data_corrected"  # signal
STATUS = "status"  # query


# --------------------------------------------------------------------------- the workflow

#: `workflow.patched` ids: runs recorded before the change replay without it.
CONTRACTS = "contracts-as-provisioned"


#: What the CRM deal shows while and after q2c works on it (`Q2C_Status__c`).
CRM_STATUS = {
    Step.AWAITING_CORRECTION: "needs_correction",
    Step.AWAITING_APPROVAL: "awaiting_approval",
    Step.COMPLETED: "provisioned",
    Step.REJECTED: "rejected",
    Step.EXPIRED: "approval_expired",
    Step.FAILED: "failed",
    Step.CANCELLED: "cancelled",
}


@workflow.defn
class OpportunityToProjectWorkflow(Lifecycle, AwaitsApproval):
    LIFECYCLE = LIFECYCLE
    FAILURE_TYPE = "ProvisioningFailed"

    @workflow.init
    def __init__(self, request: OpportunityToProjectInput) -> None:
        self._init_lifecycle()
        self._approval = ApprovalGate()
        self._request = request
        self._correlation_id = request.opportunity_id
        self._step = Step.FETCH_DEAL
        self._ids: dict[str, str] = {}
        self._created: dict[str, bool] = {}
        self._issues: list[str] = []
        self._customer_name: str | None = None
        self._legal_entity: str | None = None
        self._currency: str | None = None
        self._corrections = 0

    # -- the run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: OpportunityToProjectInput) -> OpportunityToProjectResult:
        workflow.upsert_search_attributes(
            [
                sa.CORRELATION_ID.value_set(request.opportunity_id),
                sa.LIFECYCLE.value_set(LIFECYCLE),
            ]
        )
        await self.audit("start", "started", detail={"trigger": request.trigger})
        result = await self.guarded(self._provision(), self._report_ending)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _provision(self) -> OpportunityToProjectResult:
        policy = await self.local(
            Step.FETCH_DEAL, DealActivities.deal_policy, DealPolicyInput(crm=self._request.crm)
        )
        self._outages = policy.outage
        plan = await self._validated_plan(policy)
        if plan.customer is None or plan.project is None:
            raise defect("a ready plan without a customer or a project")
        customer, project = plan.customer, plan.project

        if plan.risks:
            decision = await self._approval_of(plan.risks, policy)
            if decision is None or decision.what == Decision.REJECT:
                return await self._declined(decision)

        self._set_step(Step.UPSERT_CUSTOMER)
        erp = await self.call(
            Step.UPSERT_CUSTOMER,
            ErpActivities.upsert_customer,
            UpsertCustomerInput(customer=customer),
            system=SystemQueue.TRYTON,
        )
        self._ids["erp_customer"] = erp.erp_customer_id
        await self.link("customer", customer.id, "erp", erp.erp_customer_id)
        await self.audit(
            Step.UPSERT_CUSTOMER,
            "created" if erp.created else "updated",
            system="erp",
            detail={"erp_customer_id": erp.erp_customer_id},
        )

        # One project per deal, whichever run makes it: a re-entered deal finds its project.
        self._set_step(Step.CREATE_PROJECT)
        self.saga.add("close project", self._close_project)
        made = await self.call(
            Step.CREATE_PROJECT,
            PsaActivities.create_project,
            CreateProjectInput(
                project=project,
                erp_customer_id=erp.erp_customer_id,
                idempotency_key=f"project:{project.id}",
            ),
            system=SystemQueue.TRYTON,
        )
        self._made("psa_project", made.project_id, made.created)
        await self.link("project", project.id, "psa", made.project_id)
        await self.audit(
            Step.CREATE_PROJECT,
            "created" if made.created else "found",
            system="psa",
            detail={"project_id": made.project_id, "task_ids": made.task_ids},
        )

        if plan.contract is not None and workflow.patched(CONTRACTS):
            await self._record_contract(plan.contract, made.project_id, made.task_ids)

        # One billing account per customer, for good.
        self._set_step(Step.PROVISION_BILLING)
        self.saga.add("deactivate billing account", self._deactivate_billing)
        billing = await self.call(
            Step.PROVISION_BILLING,
            BillingActivities.provision_billing_customer,
            ProvisionBillingInput(
                customer=customer, idempotency_key=f"billing-customer:{customer.id}"
            ),
            system=SystemQueue.STRIPE,
        )
        self._made("billing_customer", billing.billing_customer_id, billing.created)
        await self.audit(
            Step.PROVISION_BILLING,
            "created" if billing.created else "updated",
            system="billing",
            detail={"billing_customer_id": billing.billing_customer_id},
        )

        self._set_step(Step.WRITE_BACK)
        message = (
            f"Project {made.project_id} ({project.legal_entity_code}, "
            f"{project.currency}) and billing account {billing.billing_customer_id} ready"
        )
        await self._write_back(Step.WRITE_BACK, CRM_STATUS[Step.COMPLETED], message)
        self.saga.clear()
        await self.audit(Step.WRITE_BACK, "updated", system="crm", detail={"message": message})
        if plan.contract is not None and workflow.patched(CONTRACTS):
            await self._start_upfront_invoice(plan.contract, made.project_id)
        self._set_step(Step.COMPLETED)
        await self.audit(Step.COMPLETED, "completed", detail=dict(self._ids))
        return OpportunityToProjectResult(
            status=Step.COMPLETED, ids=dict(self._ids), message=message
        )

    async def _record_contract(
        self, contract: ContractVersion, project_id: str, task_ids: dict[str, str]
    ) -> None:
        """Keep what was sold, with the PSA's task ids: invoicing bills from it."""
        self._set_step(Step.RECORD_CONTRACT)
        recorded = await self.local(
            Step.RECORD_CONTRACT,
            ContractActivities.record_contract,
            RecordContractInput(contract=contract, project_id=project_id, task_ids=task_ids),
        )
        self._ids["contract"] = f"{recorded.contract_id} v{recorded.version}"

    async def _start_upfront_invoice(self, contract: ContractVersion, project_id: str) -> None:
        """The fixed fees' upfront shares, invoiced now through a time-to-invoice run of its
        own: the same draft, finance approval, billing and ERP steps as a period invoice.

        A later run (the deal provisioned again, or `q2c invoice run --upfront` after finance
        rejected the first) bills only the shares no issued invoice holds; the run outlives
        this one.
        """
        fees = [
            ln
            for ln in contract.lines
            if ln.billing_type is BillingType.FIXED_FEE and contract.upfront(ln).amount > 0
        ]
        if not fees:
            return
        self._set_step(Step.UPFRONT_INVOICE)
        child_id = upfront_workflow_id(project_id)
        # A rerun of this deal finds the upfront invoice's run started already.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await workflow.start_child_workflow(
                TimeToInvoiceWorkflow.run,
                TimeToInvoiceInput(
                    project_id=project_id,
                    period=workflow.now().strftime("%Y-%m"),
                    kind=InvoiceKind.UPFRONT,
                    trigger=f"opportunity:{self._request.opportunity_id}",
                ),
                id=child_id,
                parent_close_policy=ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )
        self._ids["upfront_invoice_run"] = child_id
        await self.audit(Step.UPFRONT_INVOICE, "started", detail={"workflow_id": child_id})

    def _made(self, role: str, external_id: str, created: bool) -> None:
        self._ids[role] = external_id
        self._created[role] = created

    # -- validation, waiting for corrections ------------------------------------------------

    async def _validated_plan(self, policy: DealPolicy) -> DealPlan:
        deadline = workflow.now() + policy.correction_deadline
        round_ = 0
        while True:
            round_ += 1
            seen = self._corrections
            self._set_step(Step.FETCH_DEAL)
            snapshot = await self.call(
                Step.FETCH_DEAL,
                CrmActivities.fetch_deal,
                FetchDealInput(crm=self._request.crm, opportunity_id=self._request.opportunity_id),
                system=SystemQueue.SALESFORCE,
            )
            self._set_step(Step.VALIDATE)
            issues = list(snapshot.problems)
            plan: DealPlan | None = None
            if snapshot.opportunity is not None and snapshot.account is not None:
                self._customer_name = snapshot.account.name
                plan = await self.local(
                    Step.VALIDATE,
                    DealActivities.plan_deal,
                    PlanDealInput(opportunity=snapshot.opportunity, account=snapshot.account),
                )
                issues = plan.issues
            self._issues = issues
            if plan is not None and plan.ready and plan.customer and plan.project:
                self._legal_entity = plan.project.legal_entity_code
                self._currency = plan.project.currency
                workflow.upsert_search_attributes([sa.CUSTOMER.value_set(plan.customer.name)])
                await self.audit(Step.VALIDATE, "validated", detail={"risks": plan.risks})
                return plan

            summary = "; ".join(issues)
            await self._write_back(
                Step.AWAITING_CORRECTION,
                CRM_STATUS[Step.AWAITING_CORRECTION],
                f"Fix in the CRM, then q2c continues: {summary}",
            )
            await self.record_exception(
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

    async def _approval_of(self, risks: list[str], policy: DealPolicy) -> DecisionRecord | None:
        self._approval.open(policy.approval, risks)
        self._set_step(Step.AWAITING_APPROVAL)
        await self._write_back(
            Step.AWAITING_APPROVAL,
            CRM_STATUS[Step.AWAITING_APPROVAL],
            "Waiting for finance approval: " + "; ".join(risks),
        )
        await self.audit(Step.AWAITING_APPROVAL, "approval_requested", detail={"risks": risks})
        decision = await self._approval.wait(self._remind)
        await self.audit(
            Step.AWAITING_APPROVAL,
            decision.what if decision else "approval_expired",
            detail=decision.model_dump(mode="json") if decision else {},
        )
        return decision

    async def _remind(self, pending: PendingApproval) -> None:
        count = pending.reminders_sent
        await self.record_exception(
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
            await self.record_exception(
                "approval-expired",
                kind="approval_expired",
                message=f"Opportunity {self._request.opportunity_id} ({self._customer_name}): "
                "finance did not decide in time; win the deal again to ask anew",
                step=Step.AWAITING_APPROVAL,
            )
        self._set_step(step)
        return OpportunityToProjectResult(status=step, ids=dict(self._ids), message=message)

    # -- messages ---------------------------------------------------------------------------

    @workflow.signal(name=DATA_CORRECTED)
    def data_corrected(self, note: DataCorrected) -> None:
        self._corrections += 1

    @workflow.query(name=STATUS)
    def status(self) -> DealStatus:
        return DealStatus(
            workflow_id=workflow.info().workflow_id,
            opportunity_id=self._request.opportunity_id,
            crm=self._request.crm,
            step=Step(self._step),
            customer_name=self._customer_name,
            legal_entity=self._legal_entity,
            currency=self._currency,
            ids=dict(self._ids),
            created=dict(self._created),
            validation_issues=list(self._issues),
            pending_approval=self._approval.pending,
            decisions=list(self._approval.records),
            waiting_on=self._waiting_on,
            outage=self._outage,
            last_error=self._last_error,
        )

    # -- compensations: only what this run created ------------------------------------------

    def _ours(self, role: str, what: str) -> str:
        if role not in self._ids:
            raise NothingToUndo(f"no {what} was made")
        if not self._created.get(role):
            raise NothingToUndo(f"{what} {self._ids[role]} was made by an earlier run")
        return self._ids[role]

    async def _close_project(self) -> None:
        project_id = self._ours("psa_project", "project")
        await self.compensation(
            PsaActivities.close_project,
            CloseProjectInput(project_id=project_id, reason=self._last_error or "compensation"),
            system=SystemQueue.TRYTON,
        )

    async def _deactivate_billing(self) -> None:
        customer_id = self._ours("billing_customer", "billing account")
        await self.compensation(
            BillingActivities.deactivate_billing_customer,
            DeactivateBillingInput(
                billing_customer_id=customer_id,
                reason=self._last_error or "compensation",
                # This run's undo: a later run may reactivate the account and undo again.
                idempotency_key=f"billing-customer:{customer_id}:deactivate:"
                f"{workflow.info().run_id}",
            ),
            system=SystemQueue.STRIPE,
        )

    async def _report_ending(self, ending: Ending) -> None:
        """Tell the CRM and a person how the run ended, and what was (NOT) undone."""
        step = Step.CANCELLED if ending.cancelled else Step.FAILED
        verb = "cancelled" if ending.cancelled else "failed"
        message = outcome_message(
            f"Provisioning {verb} at {ending.step}: {ending.reason}", ending.outcome
        )
        self._set_step(step)
        not_undone = list(ending.outcome.not_undone)
        try:
            await self._write_back(step, CRM_STATUS[step], message)
        except StepFailed as exc:
            not_undone.append(f"CRM status: {exc.reason}")
        await self.record_exception(
            verb,
            kind=f"provisioning_{verb}",
            message=f"Opportunity {self._request.opportunity_id}: {message}",
            step=ending.step,
            detail={
                "ids": dict(self._ids),
                "created": dict(self._created),
                "undone": ending.outcome.undone,
                "not_undone": not_undone,
                "skipped": ending.outcome.skipped,
            },
        )

    # -- helpers ----------------------------------------------------------------------------

    async def _write_back(self, step: Step, status: str, message: str) -> None:
        await self.call(
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
            system=SystemQueue.SALESFORCE,
        )
