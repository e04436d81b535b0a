"""The roles a lifecycle talks to. Adapters (Salesforce, Tryton, Stripe...) satisfy these
structurally; a deployment picks one per role in `worker.py`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from canonical import Account, Customer, LegalEntity, Opportunity, Project


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


class ErpPort(Protocol):
    async def find_customer_record(
        self, external_ref: str, legal_entity: LegalEntity | None = None
    ) -> Customer | None: ...

    async def upsert_customer(self, customer: Customer, external_ref: str) -> int: ...


class ProjectHandle(Protocol):
    @property
    def project_id(self) -> int: ...

    @property
    def task_ids(self) -> Mapping[str, int]: ...


class PsaPort(Protocol):
    async def create_project(
        self, project: Project, *, party_id: int, idempotency_key: str
    ) -> ProjectHandle: ...

    async def close_project(self, project_id: int) -> None: ...


class BillingPort(Protocol):
    async def create_customer(self, customer: Customer, *, idempotency_key: str) -> str: ...

    async def update_customer(
        self, customer_id: str, customer: Customer, *, idempotency_key: str
    ) -> None: ...

    async def set_customer_status(
        self, customer_id: str, status: str, *, idempotency_key: str
    ) -> None: ...
