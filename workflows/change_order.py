"""Change-order propagation: an approved amendment reaches the PSA, billing, the contract and
the CRM, previewed, and approved by finance as a diff when it is risky.

One run per change order (`change-order:<crm>:<change order id>`). The run fetches the change
order and takes its turn in the deal's queue (`change-orders:<crm>:<opportunity id>`, a
`ChangeOrderQueueWorkflow`), which lets one change order of a deal apply at a time, in the
CRM's approval order. It waits for the deal's project to be provisioned, then computes the
impact preview (`canonical.preview_change`, with a stable digest) and asks finance when the
change is risky (`canonical.change_risks`). Finance's approval records the digest it
approved. Before applying, the run fetches the change order and recomputes the preview: if
the digest moved (the change order was edited, an invoice was issued meanwhile), it goes
back for approval. So only an approved preview is ever applied.

Applying, in order, each step idempotent under the change order's key and undone in reverse
if a later one fails for good: the PSA's terms (tasks, rates, budget, and the contract value
the ERP keeps with the project), the contract's new version (what invoicing reads, from the
effective date on), the billing plan on the billing account; then drafts awaiting approval
are told to re-rate, and the outcome is written back to the change order and the deal.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import Field
from temporalio import workflow

from workflows.approvals import (
    ApprovalGate,
    AwaitsApproval,
    Decision,
    DecisionRecord,
    Message,
    PendingApproval,
)
from workflows.time_to_invoice import (
    BILLING_METADATA_KEY,
    BILLING_RUN_METADATA_KEY,
    CONTRACT_CHANGED,
    INVOICE_CORRECTED,
    ContractChanged,
    InvoiceCorrected,
)

with workflow.unsafe.imports_passed_through():
    from activities.change_orders import (
        ApplyPsaTermsInput,
        BillingCorrection,
        BillingPlanInput,
        ChangeImpact,
        ChangeOrderActivities,
        ChangeOrderRunActivities,
        ChangeRulesInput,
        CorrectBillingInput,
        CorrectErpInput,
        EnqueueInput,
        PreviewInput,
        RecordCorrectionInput,
        RemoveVersionInput,
        RestoreBillingPlanInput,
        RestorePsaTermsInput,
        RunOpenInput,
        StartChangeOrderInput,
        VoidBillingCorrectionInput,
        billing_plan_text,
    )
    from activities.contracts import ContractActivities, RecordContractInput
    from activities.crm import (
        ApprovedChangeOrdersInput,
        ChangeOrderWriteBackInput,
        CrmActivities,
        FetchChangeOrderInput,
        WriteBackInput,
    )
    from canonical import ChangeOrder, ChangeOrderStatus, ChangePolicy
    from canonical.impact import ImpactPreview, change_risks
    from workflows import search_attributes as sa
    from workflows._lifecycle import Ending, Lifecycle, StepFailed, defect, outcome_message
    from workflows.queues import SystemQueue, activity_queue

__all__ = [
    "LIFECYCLE",
    "STATUS",
    "TURN",
    "ChangeOrderInput",
    "ChangeOrderQueueInput",
    "ChangeOrderQueueWorkflow",
    "ChangeOrderResult",
    "ChangeOrderStep",
    "ChangeOrderView",
    "ChangeOrderWorkflow",
    "QueueTicket",
    "queue_workflow_id",
    "workflow_id",
]

LIFECYCLE = "change-order"


def workflow_id(crm: str, change_order_id: str) -> str:
    """The business key: one lifecycle per CRM change order, whoever starts it."""
    return f"{LIFECYCLE}:{crm}:{change_order_id}"


def queue_workflow_id(crm: str, opportunity_id: str) -> str:
    """The deal's change-order queue: one change order of a deal applies at a time."""
    return f"change-orders:{crm}:{opportunity_id}"


class ChangeOrderInput(Message):
    change_order_id: str = Field(min_length=1, max_length=64)
    crm: str = "salesforce"
    #: What started the run (a webhook event id, "cli:<user>"): kept in the audit trail.
    trigger: str | None = None


class ChangeOrderStep(StrEnum):
    FETCH = "fetch_change_order"
    AWAITING_TURN = "awaiting_turn"
    AWAITING_PROJECT = "awaiting_project"
    PREVIEW = "preview"
    AWAITING_APPROVAL = "awaiting_approval"
    UPDATE_PSA = "update_psa"
    RECORD_CONTRACT = "record_contract"
    UPDATE_BILLING_PLAN = "update_billing_plan"
    CORRECT_BILLING = "correct_billing_invoices"
    CORRECT_ERP = "correct_erp_invoices"
    RERATE_DRAFTS = "rerate_drafts"
    WRITE_BACK = "write_back"
    AWAITING_OPERATOR = "awaiting_operator"
    COMPENSATING = "compensating"
    APPLIED = "applied"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ChangeOrderView(Message):
    """The `status` query: where the run is, the preview, and who decided what."""

    workflow_id: str
    change_order_id: str
    crm: str
    step: ChangeOrderStep
    opportunity_id: str | None = None
    project_id: str | None = None
    preview: ImpactPreview | None = None
    #: Why finance must approve (empty: the change applies at once).
    risks: list[str] = Field(default_factory=list)
    pending_approval: PendingApproval | None = None
    decisions: list[DecisionRecord] = Field(default_factory=list)
    #: The preview digest finance approved (None until approved).
    approved_digest: str | None = None
    #: Previews superseded before they were applied (their digests), newest last.
    superseded: list[str] = Field(default_factory=list)
    applied_version: int | None = None
    waiting_on: str | None = None
    last_error: str | None = None


class ChangeOrderResult(Message):
    status: ChangeOrderStep  # APPLIED, REJECTED or EXPIRED (a failed run raises)
    contract_version: int | None = None
    digest: str | None = None
    message: str


# Message names, shared with the CLI, the service and the queue.
STATUS = "status"  # query
TURN = "turn"  # signal: the deal's queue lets this change order apply now

#: How often a run re-checks whether the deal's project is provisioned, at most.
PROJECT_POLL_MAX = timedelta(minutes=5)
PROJECT_POLL_FIRST = timedelta(seconds=2)
#: How long a change order waits for its deal's project before it gives up.
PROJECT_WAIT = timedelta(days=7)

CRM_STATUS = {
    ChangeOrderStep.APPLIED: ChangeOrderStatus.APPLIED,
    ChangeOrderStep.REJECTED: ChangeOrderStatus.REJECTED,
    ChangeOrderStep.EXPIRED: ChangeOrderStatus.FAILED,
    ChangeOrderStep.FAILED: ChangeOrderStatus.FAILED,
    ChangeOrderStep.CANCELLED: ChangeOrderStatus.FAILED,
}


@workflow.defn
class ChangeOrderWorkflow(Lifecycle, AwaitsApproval):
    LIFECYCLE = LIFECYCLE
    FAILURE_TYPE = "ChangeOrderFailed"

    @workflow.init
    def __init__(self, request: ChangeOrderInput) -> None:
        self._init_lifecycle()
        self._approval = ApprovalGate()
        self._past_decisions: list[DecisionRecord] = []
        self._request = request
        self._correlation_id = request.change_order_id
        self._step = ChangeOrderStep.FETCH
        self._change: ChangeOrder | None = None
        self._impact: ChangeImpact | None = None
        self._risks: list[str] = []
        self._approved_digest: str | None = None
        self._superseded: list[str] = []
        self._applied_version: int | None = None
        self._turn = False

    @workflow.run
    async def run(self, request: ChangeOrderInput) -> ChangeOrderResult:
        workflow.upsert_search_attributes(
            [
                sa.CORRELATION_ID.value_set(request.change_order_id),
                sa.LIFECYCLE.value_set(LIFECYCLE),
            ]
        )
        await self.audit("start", "started", detail={"trigger": request.trigger})
        try:
            result = await self.guarded(self._propagate(), self._report_ending)
        finally:
            await self._leave_queue()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _propagate(self) -> ChangeOrderResult:
        rules = await self.local(
            ChangeOrderStep.FETCH,
            ChangeOrderActivities.change_rules,
            ChangeRulesInput(crm=self._request.crm),
        )
        self._outages = rules.outage
        change = await self._fetch()
        await self._take_turn(change)
        impact = await self._impact_when_provisioned(change)
        if impact.applied_version is not None:
            self._applied_version = impact.applied_version
            return await self._finish_applied(
                change, f"already applied as contract version {impact.applied_version}"
            )
        # Finance approves a digest; the preview applied is always one with that digest.
        while True:
            preview = self._preview_of(impact)
            self._risks = change_risks(preview, rules.policy)
            if not self._risks or self._approved_digest == preview.digest:
                break
            if self._approved_digest is not None:
                self._superseded.append(self._approved_digest)
                self._approved_digest = None
                await self.audit(
                    ChangeOrderStep.AWAITING_APPROVAL,
                    "preview_changed",
                    detail={"digest": preview.digest, "superseded": self._superseded[-1]},
                )
            decision = await self._approval_of(preview, rules.policy)
            if decision is None or decision.what == Decision.REJECT:
                return await self._declined(change, decision)
            self._approved_digest = preview.digest
            # What is applied is computed again now: anything that moved since the preview
            # finance saw makes another digest, and another approval.
            change = await self._fetch()
            impact = await self._impact_when_provisioned(change)
            if impact.applied_version is not None:
                self._applied_version = impact.applied_version
                return await self._finish_applied(
                    change, f"already applied as contract version {impact.applied_version}"
                )
        return await self._apply(change, impact, preview)

    # -- the steps ---------------------------------------------------------------------------

    async def _fetch(self) -> ChangeOrder:
        self._set_step(ChangeOrderStep.FETCH)
        snapshot = await self.call(
            ChangeOrderStep.FETCH,
            CrmActivities.fetch_change_order,
            FetchChangeOrderInput(
                crm=self._request.crm, change_order_id=self._request.change_order_id
            ),
            system=SystemQueue.SALESFORCE,
        )
        if snapshot.change_order is None:
            raise StepFailed(ChangeOrderStep.FETCH, "; ".join(snapshot.problems))
        change = snapshot.change_order
        if change.status not in (ChangeOrderStatus.APPROVED, ChangeOrderStatus.APPLIED):
            raise StepFailed(
                ChangeOrderStep.FETCH,
                f"status: the change order is {change.status.value} in the CRM; only an "
                "approved change order applies",
            )
        self._change = change
        return change

    async def _take_turn(self, change: ChangeOrder) -> None:
        """Queue in the deal's queue and wait until it is this change order's turn."""
        self._set_step(ChangeOrderStep.AWAITING_TURN)
        await workflow.execute_activity_method(
            ChangeOrderRunActivities.enqueue_change_order,
            EnqueueInput(
                crm=change.crm,
                opportunity_id=change.opportunity_id,
                change_order_id=change.id,
                workflow_id=workflow.info().workflow_id,
            ),
            start_to_close_timeout=timedelta(seconds=30),
        )
        await workflow.wait_condition(lambda: self._turn)
        await self.audit(
            ChangeOrderStep.AWAITING_TURN, "turn", detail={"deal": change.opportunity_id}
        )

    async def _leave_queue(self) -> None:
        """Tell the deal's queue this change order is done, however the run ended."""
        change = self._change
        if change is None:
            return  # never read: it never joined
        queue = workflow.get_external_workflow_handle(
            queue_workflow_id(change.crm, change.opportunity_id)
        )
        try:
            await queue.signal(ChangeOrderQueueWorkflow.finished, change.id)
        except Exception as exc:  # the queue is gone: nothing waits on this run
            workflow.logger.warning("queue not told %s finished: %s", change.id, exc)

    async def _impact_when_provisioned(self, change: ChangeOrder) -> ChangeImpact:
        """The impact, once the deal's project exists: a change order approved while its deal
        is still being provisioned waits for it."""
        deadline = workflow.now() + PROJECT_WAIT
        wait = PROJECT_POLL_FIRST
        while True:
            self._set_step(ChangeOrderStep.PREVIEW)
            impact = await self.call(
                ChangeOrderStep.PREVIEW,
                ChangeOrderActivities.preview_change_order,
                PreviewInput(change_order=change),
                system=SystemQueue.TRYTON,
            )
            self._impact = impact
            if impact.project_id is not None:
                return impact
            if workflow.now() >= deadline:
                raise StepFailed(
                    ChangeOrderStep.AWAITING_PROJECT,
                    f"deal {change.opportunity_id} was not provisioned within {PROJECT_WAIT}",
                )
            self._set_step(ChangeOrderStep.AWAITING_PROJECT)
            await workflow.sleep(wait)
            wait = min(wait * 2, PROJECT_POLL_MAX)

    def _preview_of(self, impact: ChangeImpact) -> ImpactPreview:
        if impact.problems:
            raise StepFailed(ChangeOrderStep.PREVIEW, "; ".join(impact.problems))
        if impact.preview is None:
            raise defect("an impact with neither a preview nor problems")
        return impact.preview

    async def _approval_of(
        self, preview: ImpactPreview, policy: ChangePolicy
    ) -> DecisionRecord | None:
        # A new preview, a new gate: the decisions on earlier previews are kept for the record.
        self._past_decisions += self._approval.records
        self._approval = ApprovalGate()
        self._approval.open(policy, self._risks, ref=preview.digest)
        self._set_step(ChangeOrderStep.AWAITING_APPROVAL)
        await self.audit(
            ChangeOrderStep.AWAITING_APPROVAL,
            "approval_requested",
            detail={"digest": preview.digest, "risks": self._risks},
        )
        decision = await self._approval.wait(self._remind)
        await self.audit(
            ChangeOrderStep.AWAITING_APPROVAL,
            decision.what if decision else "expired",
            detail={
                "digest": preview.digest,
                **({"approver": decision.approver} if decision else {}),
            },
        )
        return decision

    async def _remind(self, pending: PendingApproval) -> None:
        await self.audit(
            ChangeOrderStep.AWAITING_APPROVAL,
            f"reminder_{pending.reminders_sent}",
            detail={"reasons": pending.reasons},
        )

    async def _declined(
        self, change: ChangeOrder, decision: DecisionRecord | None
    ) -> ChangeOrderResult:
        step = ChangeOrderStep.REJECTED if decision is not None else ChangeOrderStep.EXPIRED
        message = (
            f"Rejected by {decision.approver}: {decision.reason}"
            if decision is not None
            else "Finance did not decide before the approval expired"
        )
        self._set_step(step)
        await self._write_back(change, CRM_STATUS[step], message)
        return ChangeOrderResult(status=step, message=message)

    async def _apply(
        self, change: ChangeOrder, impact: ChangeImpact, preview: ImpactPreview
    ) -> ChangeOrderResult:
        project_id = impact.project_id
        if project_id is None or impact.contract_id is None:
            raise defect("applying without a project")
        key = f"change-order:{change.key}"

        self._set_step(ChangeOrderStep.UPDATE_PSA)

        async def restore_psa() -> None:
            await self.compensation(
                ChangeOrderActivities.restore_psa_terms,
                RestorePsaTermsInput(project_id=project_id, idempotency_key=key),
                system=SystemQueue.TRYTON,
            )

        # Before the call: a change that fails midway is put back from what the PSA recorded.
        self.saga.add("restore PSA terms", restore_psa)
        psa = await self.call(
            ChangeOrderStep.UPDATE_PSA,
            ChangeOrderActivities.apply_psa_terms,
            ApplyPsaTermsInput(project_id=project_id, preview=preview, idempotency_key=key),
            system=SystemQueue.TRYTON,
        )
        await self.audit(
            ChangeOrderStep.UPDATE_PSA,
            "updated",
            system="psa",
            detail={"project_id": project_id, "added_tasks": psa.added_task_ids},
        )

        self._set_step(ChangeOrderStep.RECORD_CONTRACT)
        recorded = await self.local(
            ChangeOrderStep.RECORD_CONTRACT,
            ContractActivities.record_contract,
            RecordContractInput(
                contract=preview.after, project_id=project_id, task_ids=psa.added_task_ids
            ),
        )
        contract_id, version = recorded.contract_id, recorded.version

        async def remove_version() -> None:
            await workflow.execute_local_activity_method(
                ChangeOrderActivities.remove_contract_version,
                RemoveVersionInput(contract_id=contract_id, version=version, source=key),
                start_to_close_timeout=timedelta(seconds=30),
            )

        self.saga.add("remove contract version", remove_version)
        self._applied_version = version

        if impact.billing_customer_id is not None:
            customer = impact.billing_customer_id
            self._set_step(ChangeOrderStep.UPDATE_BILLING_PLAN)
            plan = await self.call(
                ChangeOrderStep.UPDATE_BILLING_PLAN,
                ChangeOrderActivities.update_billing_plan,
                BillingPlanInput(
                    billing_customer_id=customer,
                    project_id=project_id,
                    plan=billing_plan_text(preview),
                    idempotency_key=f"{key}:plan",
                ),
                system=SystemQueue.STRIPE,
            )

            async def restore_plan() -> None:
                await self.compensation(
                    ChangeOrderActivities.restore_billing_plan,
                    RestoreBillingPlanInput(
                        billing_customer_id=customer,
                        project_id=project_id,
                        before=plan.before,
                        idempotency_key=f"{key}:plan:undo",
                    ),
                    system=SystemQueue.STRIPE,
                )

            self.saga.add("restore billing plan", restore_plan)

        await self._correct_invoices(change, impact, preview, key)
        corrected = (
            f"; {len(preview.corrections)} invoice(s) corrected by credit note and re-bill"
            if preview.corrections
            else ""
        )
        message = (
            f"Applied as contract version {version} from {preview.effective_from.isoformat()}"
            f" (preview {preview.digest[:12]}){corrected}"
        )
        self._set_step(ChangeOrderStep.WRITE_BACK)
        await self._write_back(change, ChangeOrderStatus.APPLIED, message)
        self.saga.clear()
        await self._rerate_drafts(change, impact, version, preview)
        self._set_step(ChangeOrderStep.APPLIED)
        await self.audit(
            ChangeOrderStep.APPLIED,
            "completed",
            detail={"contract": contract_id, "version": version, "digest": preview.digest},
        )
        return ChangeOrderResult(
            status=ChangeOrderStep.APPLIED,
            contract_version=version,
            digest=preview.digest,
            message=message,
        )

    async def _correct_invoices(
        self, change: ChangeOrder, impact: ChangeImpact, preview: ImpactPreview, key: str
    ) -> None:
        """A retroactive change: each issued invoice it reaches is credited and re-billed,
        in billing first (undone by voiding both), then in the ERP, whose posted documents
        are the last step that can fail before the change is applied for good."""
        if not preview.corrections:
            return
        customer = impact.billing_customer_id
        if customer is None:
            raise defect("corrections without a billing account")
        billed: dict[str, BillingCorrection] = {}
        self._set_step(ChangeOrderStep.CORRECT_BILLING)
        for correction in preview.corrections:
            number = correction.invoice_number
            draft_id = self._corrected_draft(impact, number)
            fix_key = f"{key}:correct:{number}"
            made = await self.call(
                ChangeOrderStep.CORRECT_BILLING,
                ChangeOrderActivities.correct_billing_invoice,
                CorrectBillingInput(
                    draft_id=draft_id,
                    correction=correction,
                    billing_customer_id=customer,
                    days_until_due=impact.payment_net_days,
                    change_order=change.key,
                    change_order_name=change.name,
                    metadata=_follower(draft_id),
                    idempotency_key=fix_key,
                ),
                system=SystemQueue.STRIPE,
            )
            billed[number] = made

            async def void(made: BillingCorrection = made, fix_key: str = fix_key) -> None:
                await self.compensation(
                    ChangeOrderActivities.void_billing_correction,
                    VoidBillingCorrectionInput(correction=made, idempotency_key=f"{fix_key}:void"),
                    system=SystemQueue.STRIPE,
                )

            self.saga.add(f"void the credit note and re-bill of {number}", void)
            await self.audit(
                ChangeOrderStep.CORRECT_BILLING,
                "corrected",
                system="billing",
                detail={"invoice": number, **made.model_dump()},
            )
        self._set_step(ChangeOrderStep.CORRECT_ERP)
        for correction in preview.corrections:
            number = correction.invoice_number
            draft_id = self._corrected_draft(impact, number)
            erp = await self.call(
                ChangeOrderStep.CORRECT_ERP,
                ChangeOrderActivities.correct_erp_invoice,
                CorrectErpInput(
                    draft_id=draft_id,
                    correction=correction,
                    reason=f"Change order {change.name} ({change.key})",
                    idempotency_key=f"{key}:correct:{number}",
                ),
                system=SystemQueue.TRYTON,
            )
            await self.local(
                ChangeOrderStep.CORRECT_ERP,
                ChangeOrderActivities.record_correction,
                RecordCorrectionInput(
                    draft_id=draft_id,
                    change_order=change.key,
                    correction=correction,
                    billing=billed[number],
                    erp=erp,
                ),
            )
            await self.audit(
                ChangeOrderStep.CORRECT_ERP,
                "corrected",
                system="erp",
                detail={"invoice": number, **erp.model_dump()},
            )
            made = billed[number]
            run = _follower(draft_id)
            await self._tell(
                run[BILLING_METADATA_KEY],
                INVOICE_CORRECTED,
                InvoiceCorrected(
                    change_order=change.key,
                    credit_note_id=made.credit_note_id,
                    rebill_invoice_id=made.rebill_invoice_id,
                    rebill_number=made.rebill_number,
                    rebill_total=correction.rebill_total.amount,
                    currency=correction.rebill_total.currency,
                    erp_credit_note_id=erp.credit_note_id,
                    erp_rebill_id=erp.rebill_id,
                ),
                # The run that issued the invoice, not a later rerun of its period.
                run_id=run[BILLING_RUN_METADATA_KEY],
            )

    async def _rerate_drafts(
        self, change: ChangeOrder, impact: ChangeImpact, version: int, preview: ImpactPreview
    ) -> None:
        """Drafts awaiting finance re-rate with the new terms (their run is told)."""
        if not impact.draft_runs:
            return
        self._set_step(ChangeOrderStep.RERATE_DRAFTS)
        note = ContractChanged(
            change_order=change.key,
            version=version,
            effective_from=preview.effective_from,
        )
        for run_id in sorted(set(impact.draft_runs.values())):
            await self._tell(run_id, CONTRACT_CHANGED, note)

    async def _tell(
        self, workflow_id_: str, signal: str, note: Message, *, run_id: str | None = None
    ) -> None:
        """Signal a time-to-invoice run; one that ended meanwhile has nothing to do."""
        try:
            handle = workflow.get_external_workflow_handle(workflow_id_, run_id=run_id)
            await handle.signal(signal, note)
        except Exception as exc:
            workflow.logger.warning("%s not told %s: %s", workflow_id_, signal, exc)

    @staticmethod
    def _corrected_draft(impact: ChangeImpact, number: str) -> str:
        try:
            return impact.corrected_drafts[number]
        except KeyError:
            raise defect(f"a correction of invoice {number} without its draft") from None

    async def _finish_applied(self, change: ChangeOrder, message: str) -> ChangeOrderResult:
        self._set_step(ChangeOrderStep.WRITE_BACK)
        await self._write_back(change, ChangeOrderStatus.APPLIED, message)
        self._set_step(ChangeOrderStep.APPLIED)
        return ChangeOrderResult(
            status=ChangeOrderStep.APPLIED,
            contract_version=self._applied_version,
            message=message,
        )

    async def _write_back(
        self, change: ChangeOrder, status: ChangeOrderStatus, message: str
    ) -> None:
        """The change order's outcome in the CRM, and a note of it on the deal."""
        workflow_id_ = workflow.info().workflow_id
        await self.call(
            self._step,
            CrmActivities.write_back_change_order,
            ChangeOrderWriteBackInput(
                crm=change.crm,
                change_order_id=change.id,
                workflow_id=workflow_id_,
                status=status,
                message=message,
            ),
            system=SystemQueue.SALESFORCE,
        )
        if status is ChangeOrderStatus.APPLIED:
            await self.call(
                self._step,
                CrmActivities.write_back_deal,
                WriteBackInput(
                    crm=change.crm,
                    opportunity_id=change.opportunity_id,
                    workflow_id=workflow_id_,
                    status="provisioned",
                    message=f"Change order {change.name}: {message}",
                ),
                system=SystemQueue.SALESFORCE,
            )
        await self.audit(str(self._step), status.value, system="crm", detail={"message": message})

    async def _report_ending(self, ending: Ending) -> None:
        step = ChangeOrderStep.CANCELLED if ending.cancelled else ChangeOrderStep.FAILED
        self._set_step(step)
        message = outcome_message(f"{ending.step}: {ending.reason}", ending.outcome)
        await self.record_exception(
            "failed",
            kind="change_order_failed" if not ending.cancelled else "change_order_cancelled",
            message=f"change order {self._request.change_order_id}: {message}",
            step=ending.step,
        )
        change = self._change
        if change is None:
            return
        try:
            await self._write_back(change, CRM_STATUS[step], message)
        except StepFailed as exc:
            workflow.logger.error("could not write the failure back to the CRM: %s", exc)

    # -- messages ----------------------------------------------------------------------------

    @workflow.signal(name=TURN)
    def turn(self) -> None:
        self._turn = True

    @workflow.query(name=STATUS)
    def status(self) -> ChangeOrderView:
        impact = self._impact
        change = self._change
        return ChangeOrderView(
            workflow_id=workflow.info().workflow_id,
            change_order_id=self._request.change_order_id,
            crm=self._request.crm,
            step=ChangeOrderStep(self._step),
            opportunity_id=change.opportunity_id if change else None,
            project_id=impact.project_id if impact else None,
            preview=impact.preview if impact else None,
            risks=list(self._risks),
            pending_approval=self._approval.pending,
            decisions=[*self._past_decisions, *self._approval.records],
            approved_digest=self._approved_digest,
            superseded=list(self._superseded),
            applied_version=self._applied_version,
            waiting_on=self._waiting_on,
            last_error=self._last_error,
        )


def _follower(draft_id: str) -> dict[str, str]:
    """The billing metadata naming the time-to-invoice run of a draft (`<workflow id>/<run
    id>`): a re-bill carrying it has its payment events delivered to that run."""
    workflow_id_, _, run_id = draft_id.rpartition("/")
    return {BILLING_METADATA_KEY: workflow_id_, BILLING_RUN_METADATA_KEY: run_id}


# --------------------------------------------------------------------------- the deal's queue


class QueueTicket(Message):
    change_order_id: str
    workflow_id: str


class ChangeOrderQueueInput(Message):
    crm: str
    opportunity_id: str
    #: Tickets carried over a continue-as-new.
    waiting: list[QueueTicket] = Field(default_factory=list)
    done: list[str] = Field(default_factory=list)


ENQUEUE = "enqueue"  # signal
FINISHED = "finished"  # signal
QUEUE = "queue"  # query

#: How long the queue waits for a change order approved earlier in the CRM to join it.
JOIN_WAIT = timedelta(minutes=10)
#: How often the queue checks that the change order applying still has a run.
LIVENESS = timedelta(minutes=10)
#: How long an idle queue stays open before it ends (the next change order starts it again).
IDLE = timedelta(hours=1)
#: Change orders per run before the queue continues as new (its history stays small).
PER_RUN = 100
#: `enqueue` from a new run of the change order holding the turn gives that run the turn
#: (before it, the ticket was dropped and the deal's queue waited for ever).
RERUN_TAKES_TURN = "change-order-queue-rerun-takes-turn"


class QueueView(Message):
    active: str | None
    waiting: list[QueueTicket]
    done: list[str]


@workflow.defn
class ChangeOrderQueueWorkflow:
    """A deal's change orders, one at a time, in the CRM's approval order.

    Each change-order run joins with `enqueue` (signal-with-start) and waits for `turn`. When
    nothing applies, the queue asks the CRM which of the deal's change orders are approved
    and not yet applied, in approval order, and gives the turn to the first of them that
    has joined; one approved earlier that has not joined is started (and waited for, a
    while) first, so two change orders delivered in reverse order still apply in order.
    """

    @workflow.init
    def __init__(self, request: ChangeOrderQueueInput) -> None:
        self._request = request
        self._waiting: dict[str, QueueTicket] = {t.change_order_id: t for t in request.waiting}
        self._done: list[str] = list(request.done)
        self._active: str | None = None
        self._granted = 0

    @workflow.run
    async def run(self, request: ChangeOrderQueueInput) -> None:
        while True:
            try:
                await workflow.wait_condition(lambda: bool(self._waiting), timeout=IDLE)
            except TimeoutError:
                if not self._waiting:
                    return
            if self._granted >= PER_RUN or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    ChangeOrderQueueInput(
                        crm=request.crm,
                        opportunity_id=request.opportunity_id,
                        waiting=list(self._waiting.values()),
                        done=self._done[-PER_RUN:],
                    )
                )
            ticket = await self._next()
            if ticket is None:
                continue
            self._active = ticket.change_order_id
            self._granted += 1
            try:
                await workflow.get_external_workflow_handle(ticket.workflow_id).signal(TURN)
            except Exception as exc:  # the run ended before its turn came
                workflow.logger.warning("%s not told its turn: %s", ticket.workflow_id, exc)
                self._finish(ticket.change_order_id)
                continue
            await self._until_finished(ticket)

    async def _next(self) -> QueueTicket | None:
        approved = await workflow.execute_activity_method(
            CrmActivities.approved_change_orders,
            ApprovedChangeOrdersInput(
                crm=self._request.crm, opportunity_id=self._request.opportunity_id
            ),
            task_queue=activity_queue(workflow.info().task_queue, SystemQueue.SALESFORCE),
            start_to_close_timeout=timedelta(minutes=1),
        )
        for change_order_id in approved:
            if change_order_id in self._waiting:
                return self._waiting[change_order_id]
            if change_order_id in self._done:
                continue
            # Approved earlier, not joined yet: it goes first; start its run if it has none.
            await workflow.execute_activity_method(
                ChangeOrderRunActivities.start_change_order,
                StartChangeOrderInput(
                    crm=self._request.crm,
                    change_order_id=change_order_id,
                    trigger=f"queue:{workflow.info().workflow_id}",
                ),
                start_to_close_timeout=timedelta(seconds=30),
            )
            try:
                await workflow.wait_condition(
                    # Joined, or ended before it could (its run says finished either way).
                    lambda cid=change_order_id: cid in self._waiting or cid in self._done,  # type: ignore[misc]
                    timeout=JOIN_WAIT,
                )
            except TimeoutError:
                workflow.logger.warning("change order %s never joined; skipped", change_order_id)
                self._done.append(change_order_id)
            return None  # look again: the CRM may have moved on meanwhile
        # Joined but not approved in the CRM (any more): first come; its run says why not.
        return next(iter(self._waiting.values()))

    async def _until_finished(self, ticket: QueueTicket) -> None:
        while self._active == ticket.change_order_id:
            try:
                await workflow.wait_condition(
                    lambda: self._active != ticket.change_order_id, timeout=LIVENESS
                )
            except TimeoutError:
                running = await workflow.execute_activity_method(
                    ChangeOrderRunActivities.run_is_open,
                    RunOpenInput(workflow_id=ticket.workflow_id),
                    start_to_close_timeout=timedelta(seconds=30),
                )
                if not running:  # terminated: it never said it finished
                    self._finish(ticket.change_order_id)

    def _finish(self, change_order_id: str) -> None:
        self._waiting.pop(change_order_id, None)
        if change_order_id not in self._done:
            self._done.append(change_order_id)
        if self._active == change_order_id:
            self._active = None

    @workflow.signal(name=ENQUEUE)
    def enqueue(self, ticket: QueueTicket) -> None:
        if ticket.change_order_id == self._active:
            if not workflow.patched(RERUN_TAKES_TURN):
                return
            # A new run of the change order that holds the turn: the run that held it ended
            # without saying so (terminated), or this one could not have started. Its
            # workflow id is open again, so `run_is_open` would never free the turn: the new
            # run takes it instead.
            self._active = None
        if ticket.change_order_id in self._done:
            self._done.remove(ticket.change_order_id)  # run again (a rerun)
        self._waiting[ticket.change_order_id] = ticket

    @workflow.signal(name=FINISHED)
    def finished(self, change_order_id: str) -> None:
        self._finish(change_order_id)

    @workflow.query(name=QUEUE)
    def queue(self) -> QueueView:
        return QueueView(
            active=self._active, waiting=list(self._waiting.values()), done=list(self._done)
        )
