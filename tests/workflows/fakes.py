"""Fake role activities for workflow tests: the real workflow, on the real dev server, with
systems that record what they were asked and answer what a test scripts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.billing import (
    DeactivateBillingInput,
    ProvisionBillingInput,
    ProvisionBillingResult,
)
from activities.contracts import RecordContractInput, RecordedContract
from activities.crm import DealSnapshot, FetchDealInput, WriteBackInput
from activities.deal import DealPolicyInput, PlanDealInput
from activities.erp import UpsertCustomerInput, UpsertCustomerResult
from activities.ledger import (
    LinkReferenceInput,
    RecordAuditInput,
    RecordExceptionInput,
    RecordExceptionResult,
    ResolveExceptionInput,
)
from activities.psa import CloseProjectInput, CreateProjectInput, CreateProjectResult
from canonical import (
    Account,
    Address,
    ApprovalPolicy,
    BillingType,
    DealPlan,
    DealPolicy,
    DealRules,
    Money,
    Opportunity,
    OpportunityLine,
    OutagePolicy,
    PaymentTerms,
    plan_deal,
)
from settings import Settings
from settings.rules import load_deal_rules
from workflows.opportunity_to_project import (
    OpportunityToProjectInput,
    OpportunityToProjectWorkflow,
    workflow_id,
)
from workflows.queues import SystemQueue, activity_queue

APPROVER = "finance@northwind.example"
RULES = load_deal_rules(Settings(finance_approvers=[APPROVER]))


def account(country: str = "US", *, tax_id: str | None = None) -> Account:
    return Account(
        id="001000000000001AAA",
        name="Globex Corporation",
        billing_address=Address(street="1 Main St", city="Springfield", country=country),
        tax_id=tax_id,
    )


def opportunity(
    *,
    hours: str = "100",
    rate: str = "150",
    currency: str = "USD",
    net_days: int = 30,
    opportunity_id: str = "006000000000001AAA",
) -> Opportunity:
    return Opportunity(
        id=opportunity_id,
        crm="salesforce",
        name="Globex ERP rollout",
        account_id="001000000000001AAA",
        stage="Closed Won",
        won=True,
        close_date=date(2026, 11, 20),
        currency=currency,
        amount=Money.of(Decimal(hours) * Decimal(rate), currency),
        payment_terms=PaymentTerms(net_days=net_days),
        lines=[
            OpportunityLine(
                id="00k1",
                service="Solution Architecture",
                role="Solution Architect",
                quantity=Decimal(hours),
                unit_rate=Money.of(rate, currency),
                billing_type=BillingType.TIME_AND_MATERIALS,
            ),
            OpportunityLine(
                id="00k2",
                service="Project Management",
                role="Project Manager",
                quantity=Decimal("40"),
                unit_rate=Money.of("120", currency),
                billing_type=BillingType.TIME_AND_MATERIALS,
            ),
        ],
    )


def with_upfront_fee(deal: Opportunity | None = None) -> Opportunity:
    """`deal` (the default deal) with a 5,000 Training fee, 20 % of it invoiced up front."""
    deal = deal or opportunity()
    fee = OpportunityLine(
        id="00k3",
        service="Training",
        quantity=Decimal(1),
        unit_rate=Money.of("5000", deal.currency),
        billing_type=BillingType.FIXED_FEE,
    )
    return deal.model_copy(update={"lines": [*deal.lines, fee], "upfront_percent": Decimal(20)})


@dataclass
class FakeLedger:
    """What every fake-systems worker shares: a record of every call, and q2c's own ledger."""

    calls: dict[str, list[Any]] = field(default_factory=dict)
    #: Every call's activity name, in the order the calls arrived (across activities).
    sequence: list[str] = field(default_factory=list)
    #: q2c's store refuses cross-references (bookkeeping fails).
    fail_link: str | None = None

    def _record(self, name: str, arg: Any) -> None:
        self.calls.setdefault(name, []).append(arg)
        self.sequence.append(name)

    def called(self, name: str) -> list[Any]:
        return self.calls.get(name, [])

    @activity.defn(name="record_audit")
    async def record_audit(self, request: RecordAuditInput) -> None:
        self._record("record_audit", request)

    @activity.defn(name="record_exception")
    async def record_exception(self, request: RecordExceptionInput) -> RecordExceptionResult:
        self._record("record_exception", request)
        return RecordExceptionResult(exception_id=len(self.called("record_exception")))

    @activity.defn(name="resolve_exception")
    async def resolve_exception(self, request: ResolveExceptionInput) -> None:
        self._record("resolve_exception", request)

    @activity.defn(name="link_reference")
    async def link_reference(self, request: LinkReferenceInput) -> None:
        self._record("link_reference", request)
        if self.fail_link:
            raise ApplicationError(self.fail_link, type="StoreError", non_retryable=True)

    @activity.defn(name="record_contract")
    async def record_contract(self, request: RecordContractInput) -> RecordedContract:
        self._record("record_contract", request)
        version = request.contract
        first = len(self.called("record_contract")) == 1
        return RecordedContract(
            contract_id=version.contract_id, version=version.version, created=first
        )

    def ledger_activities(self) -> list[Any]:
        return [
            self.record_contract,
            self.record_audit,
            self.record_exception,
            self.resolve_exception,
            self.link_reference,
        ]

    def open_exceptions(self) -> list[RecordExceptionInput]:
        """Recorded and not resolved since, as the exceptions store would list them."""
        resolved = {r.dedupe_key for r in self.called("resolve_exception")}
        return [e for e in self.called("record_exception") if e.dedupe_key not in resolved]


class Unavailable(ApplicationError):
    """What a connector raises for a 503: retryable."""

    def __init__(self, system: str) -> None:
        super().__init__(f"{system} HTTP 503: service unavailable", type="Unavailable")


@asynccontextmanager
async def serving(
    client: Client,
    task_queue: str,
    *,
    workflows: list[type],
    local: list[Any],
    systems: list[Any],
) -> AsyncIterator[None]:
    """Workers as production runs them: workflows and local activities on the workflow queue,
    system activities on each system's queue (`q2c-tryton`, ...)."""
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(
            Worker(client, task_queue=task_queue, workflows=workflows, activities=local)
        )
        for system in SystemQueue:
            await stack.enter_async_context(
                Worker(client, task_queue=activity_queue(task_queue, system), activities=systems)
            )
        yield


@dataclass
class FakeSystems(FakeLedger):
    """What the CRM holds, and every call each system received."""

    deal: Opportunity = field(default_factory=opportunity)
    deal_account: Account = field(default_factory=account)
    policy: DealPolicy = field(
        default_factory=lambda: RULES.policy().model_copy(
            update={
                "approval": ApprovalPolicy(
                    approvers=[APPROVER],
                    remind_after=timedelta(hours=4),
                    expire_after=timedelta(hours=10),
                ),
                "correction_deadline": timedelta(hours=6),
                "outage": OutagePolicy(
                    notice_after=timedelta(seconds=2), default_deadline=timedelta(hours=1)
                ),
            }
        )
    )
    rules: DealRules = RULES
    fail_billing: str | None = None
    #: Billing answers 503 while set; clear it and billing is back.
    billing_down: bool = False
    #: The project exists already (an earlier run made it): create_project finds it.
    project_exists: bool = False
    #: Closing the project is refused for good (the compensation fails).
    fail_close: str | None = None

    @activity.defn(name="deal_policy")
    async def deal_policy(self, request: DealPolicyInput) -> DealPolicy:
        return self.policy

    @activity.defn(name="fetch_deal")
    async def fetch_deal(self, request: FetchDealInput) -> DealSnapshot:
        self._record("fetch_deal", request)
        return DealSnapshot(opportunity=self.deal, account=self.deal_account)

    @activity.defn(name="plan_deal")
    async def plan_deal(self, request: PlanDealInput) -> DealPlan:
        return plan_deal(request.opportunity, request.account, self.rules)

    @activity.defn(name="write_back_deal")
    async def write_back_deal(self, request: WriteBackInput) -> None:
        self._record("write_back_deal", request)

    @activity.defn(name="upsert_customer")
    async def upsert_customer(self, request: UpsertCustomerInput) -> UpsertCustomerResult:
        self._record("upsert_customer", request)
        return UpsertCustomerResult(erp_customer_id="17", created=True)

    @activity.defn(name="create_project")
    async def create_project(self, request: CreateProjectInput) -> CreateProjectResult:
        self._record("create_project", request)
        return CreateProjectResult(
            project_id="42",
            task_ids={t.name: str(100 + i) for i, t in enumerate(request.project.tasks)},
            created=not self.project_exists,
        )

    @activity.defn(name="close_project")
    async def close_project(self, request: CloseProjectInput) -> None:
        self._record("close_project", request)
        if self.fail_close:
            raise ApplicationError(self.fail_close, type="ValidationFailed", non_retryable=True)

    @activity.defn(name="provision_billing_customer")
    async def provision_billing_customer(
        self, request: ProvisionBillingInput
    ) -> ProvisionBillingResult:
        self._record("provision_billing_customer", request)
        if self.billing_down:
            raise Unavailable("stripe")
        if self.fail_billing:
            raise ApplicationError(self.fail_billing, type="ValidationFailed", non_retryable=True)
        return ProvisionBillingResult(billing_customer_id="cus_TEST1", created=True)

    @activity.defn(name="deactivate_billing_customer")
    async def deactivate_billing_customer(self, request: DeactivateBillingInput) -> None:
        self._record("deactivate_billing_customer", request)

    def local_activities(self) -> list[Any]:
        return [self.deal_policy, self.plan_deal, *self.ledger_activities()]

    def system_activities(self) -> list[Any]:
        return [
            self.fetch_deal,
            self.write_back_deal,
            self.upsert_customer,
            self.create_project,
            self.close_project,
            self.provision_billing_customer,
            self.deactivate_billing_customer,
        ]

    def worker(self, client: Client, task_queue: str) -> AbstractAsyncContextManager[None]:
        return serving(
            client,
            task_queue,
            workflows=[OpportunityToProjectWorkflow],
            local=self.local_activities(),
            systems=self.system_activities(),
        )

    def statuses(self) -> list[str]:
        return [w.status for w in self.called("write_back_deal")]


def start_args(opportunity_id: str | None = None) -> tuple[OpportunityToProjectInput, str]:
    """A run input and a unique workflow id (one dev server serves every test)."""
    opp = opportunity_id or f"006{uuid.uuid4().hex[:15].upper()}"
    return OpportunityToProjectInput(opportunity_id=opp, trigger="test"), workflow_id(
        "salesforce", opp
    )
