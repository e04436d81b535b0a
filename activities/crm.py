"""The CRM role: read the deal, write the outcome back on it."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._base import ActivityModel
from activities.errors import translate_connector_errors
from activities.ports import CrmPort
from canonical import Account, ChangeOrder, ChangeOrderStatus, Money, Opportunity
from connectors.errors import ValidationFailed


class FetchDealInput(ActivityModel):
    crm: str
    opportunity_id: str


class DealSnapshot(ActivityModel):
    """The deal as the CRM holds it now, or why it could not be read as a deal."""

    opportunity: Opportunity | None = None
    account: Account | None = None
    #: "field: reason" lines when the CRM data cannot even be mapped (bad type, unknown value).
    problems: list[str] = []


class WriteBackInput(ActivityModel):
    crm: str
    opportunity_id: str
    workflow_id: str
    status: str
    project_id: str | None = None
    billing_customer_id: str | None = None
    message: str | None = None


class CrmInvoiceInput(ActivityModel):
    crm: str
    opportunity_id: str
    number: str
    amount: Decimal
    currency: str
    status: str


class FetchChangeOrderInput(ActivityModel):
    crm: str
    change_order_id: str


class ChangeOrderSnapshot(ActivityModel):
    """The change order as the CRM holds it now, or why it cannot be read as one."""

    change_order: ChangeOrder | None = None
    problems: list[str] = []


class ApprovedChangeOrdersInput(ActivityModel):
    crm: str
    opportunity_id: str


class ChangeOrderWriteBackInput(ActivityModel):
    crm: str
    change_order_id: str
    workflow_id: str
    status: ChangeOrderStatus
    message: str | None = None


class CrmActivities:
    def __init__(self, crms: Mapping[str, CrmPort], *, run_link: str) -> None:
        """`run_link` is the Web UI address of a run, with `{workflow_id}` to fill in."""
        self.crms = crms
        self.run_link = run_link

    def _crm(self, name: str) -> CrmPort:
        try:
            return self.crms[name]
        except KeyError:
            raise ApplicationError(
                f"crm: no adapter configured for {name!r} (configured: {', '.join(self.crms)})",
                type="UnknownCrm",
                non_retryable=True,
            ) from None

    @activity.defn
    @translate_connector_errors
    async def fetch_deal(self, request: FetchDealInput) -> DealSnapshot:
        crm = self._crm(request.crm)
        try:
            opportunity = await crm.fetch_opportunity(request.opportunity_id)
            account = await crm.fetch_account(opportunity.account_id)
        except ValidationFailed as exc:
            # Bad data in the CRM is for a person to fix, not a reason to fail the run.
            where = f"{exc.field}: " if exc.field else ""
            return DealSnapshot(problems=[f"{where}{exc.message}"])
        return DealSnapshot(opportunity=opportunity, account=account)

    @activity.defn
    @translate_connector_errors
    async def write_back_deal(self, request: WriteBackInput) -> None:
        await self._crm(request.crm).write_back(
            request.opportunity_id,
            status=request.status,
            project_id=request.project_id,
            billing_customer_id=request.billing_customer_id,
            run_url=self.run_link.format(workflow_id=request.workflow_id),
            message=request.message,
        )

    @activity.defn
    @translate_connector_errors
    async def fetch_change_order(self, request: FetchChangeOrderInput) -> ChangeOrderSnapshot:
        try:
            change = await self._crm(request.crm).fetch_change_order(request.change_order_id)
        except ValidationFailed as exc:
            where = f"{exc.field}: " if exc.field else ""
            return ChangeOrderSnapshot(problems=[f"{where}{exc.message}"])
        return ChangeOrderSnapshot(change_order=change)

    @activity.defn
    @translate_connector_errors
    async def approved_change_orders(self, request: ApprovedChangeOrdersInput) -> list[str]:
        """The deal's change orders approved and not yet applied, in the CRM's approval order."""
        listed = await self._crm(request.crm).list_change_orders(
            request.opportunity_id, status=ChangeOrderStatus.APPROVED
        )
        return [str(c.id) for c in listed]

    @activity.defn
    @translate_connector_errors
    async def write_back_change_order(self, request: ChangeOrderWriteBackInput) -> None:
        await self._crm(request.crm).write_back_change_order(
            request.change_order_id,
            request.status,
            message=request.message,
            run_url=self.run_link.format(workflow_id=request.workflow_id),
        )

    @activity.defn
    @translate_connector_errors
    async def write_invoice_status(self, request: CrmInvoiceInput) -> None:
        await self._crm(request.crm).write_invoice(
            request.opportunity_id,
            number=request.number,
            amount=Money.of(request.amount, request.currency),
            status=request.status,
        )
