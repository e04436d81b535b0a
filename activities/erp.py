"""The ERP role: the customer financial master."""

from __future__ import annotations

from temporalio import activity

from activities._base import ActivityModel
from activities.errors import translate_connector_errors
from activities.ports import ErpPort
from canonical import Customer, Entity, System, survive


class UpsertCustomerInput(ActivityModel):
    customer: Customer
    #: Which system the customer data comes from: it wins only the fields it owns.
    source: System = System.CRM


class UpsertCustomerResult(ActivityModel):
    erp_customer_id: str
    created: bool


class ErpActivities:
    def __init__(self, erp: ErpPort) -> None:
        self.erp = erp

    @activity.defn
    @translate_connector_errors
    async def upsert_customer(self, request: UpsertCustomerInput) -> UpsertCustomerResult:
        """Match by the canonical id (the CRM account): never a second customer for one account.

        An existing customer keeps what the ERP owns (legal entity, tax id, terms...) and takes
        from the source what the source owns, by the survivorship rules in `canonical`.
        """
        incoming = request.customer
        current = await self.erp.find_customer_record(incoming.id, incoming.legal_entity)
        merged = incoming
        if current is not None:
            merged = survive(Entity.CUSTOMER, current, incoming, request.source)
        party_id = await self.erp.upsert_customer(merged, incoming.id)
        return UpsertCustomerResult(erp_customer_id=str(party_id), created=current is None)
