"""The roles a lifecycle talks to. Adapters (Salesforce, Tryton, Stripe...) satisfy these
structurally; a deployment picks one per role in `worker.py`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Protocol

from canonical import (
    Account,
    ChangeOrder,
    ChangeOrderStatus,
    Customer,
    Invoice,
    LegalEntity,
    Money,
    Opportunity,
    Project,
)


class CrmPort(Protocol):
    async def fetch_account(self, account_id: str) -> Account: ...

    async def fetch_opportunity(self, opportunity_id: str) -> Opportunity: ...

    async def write_back(
        self,
        opportunity_id: str,
        *,
        status: str,
        project_id: str | None = None,
        billing_customer_id: str | None = None,
        run_url: str | None = None,
        message: str | None = None,
    ) -> None: ...

    async def write_invoice(
        self, opportunity_id: str, *, number: str, amount: Money, status: str
    ) -> None: ...

    async def fetch_change_order(self, change_order_id: str) -> ChangeOrder: ...

    async def list_change_orders(
        self,
        opportunity_id: str,
        *,
        status: ChangeOrderStatus | Sequence[ChangeOrderStatus] | None = None,
    ) -> Sequence[Any]: ...

    async def write_back_change_order(
        self,
        change_order_id: str,
        status: ChangeOrderStatus,
        message: str | None = None,
        run_url: str | None = None,
    ) -> None: ...


class ErpPort(Protocol):
    async def find_customer_record(
        self, external_ref: str, legal_entity: LegalEntity | None = None
    ) -> Customer | None: ...

    async def upsert_customer(self, customer: Customer, external_ref: str) -> int: ...

    async def create_invoice(
        self,
        invoice: Invoice,
        *,
        party_id: int,
        reference: str,
        idempotency_key: str,
        payment_net_days: int,
    ) -> ErpInvoiceHandle: ...

    async def post_invoice(self, invoice_id: int) -> Invoice: ...

    async def recognize_revenue(self, company_code: str, up_to: date) -> None: ...

    async def delete_draft_invoice(self, invoice_id: int) -> None: ...

    async def credit_invoice(self, invoice_id: int, *, reason: str) -> int | None: ...

    async def record_payment(
        self,
        invoice_id: int,
        *,
        amount: Money,
        paid_on: date,
        reference: str,
        idempotency_key: str,
    ) -> None: ...


class ProjectHandle(Protocol):
    @property
    def project_id(self) -> int: ...

    @property
    def task_ids(self) -> Mapping[str, int]: ...

    @property
    def created(self) -> bool:
        """False when the idempotency key found an existing project."""
        ...


class PsaPort(Protocol):
    async def create_project(
        self, project: Project, *, party_id: int, idempotency_key: str
    ) -> ProjectHandle: ...

    async def close_project(self, project_id: int) -> None: ...

    async def mark_time_billed(self, links: dict[int, int]) -> None: ...

    async def unmark_time_billed(self, line_ids: list[int]) -> None: ...

    async def mark_expenses_billed(self, links: dict[int, int]) -> None: ...

    async def unmark_expenses_billed(self, disbursement_ids: list[int]) -> None: ...


class BillingPort(Protocol):
    async def create_customer(self, customer: Customer, *, idempotency_key: str) -> str: ...

    async def update_customer(
        self, customer_id: str, customer: Customer, *, idempotency_key: str
    ) -> None: ...

    async def set_customer_status(
        self, customer_id: str, status: str, *, idempotency_key: str
    ) -> None: ...

    async def create_invoice(
        self,
        invoice: Invoice,
        *,
        customer_id: str,
        idempotency_key: str,
        days_until_due: int,
        metadata: Mapping[str, str] | None = None,
    ) -> str: ...

    async def finalize_invoice(self, invoice_id: str, *, idempotency_key: str) -> Invoice: ...

    async def void_invoice(self, invoice_id: str, *, idempotency_key: str) -> Invoice: ...

    async def delete_draft_invoice(self, invoice_id: str, *, idempotency_key: str) -> None: ...

    async def get_invoice(self, invoice_id: str) -> Invoice: ...


class ErpInvoiceHandle(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def line_ids(self) -> list[int]: ...
