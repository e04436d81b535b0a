"""Record operations with the org's rules: validation, derived fields, roll-ups, cascades.

Kept apart from HTTP so the REST routes stay a thin translation of these calls.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from standins.salesforce.schema import (
    CHANGE_ORDER_APPROVED,
    CLOSED_STAGES,
    CLOSED_WON,
    CORPORATE_CURRENCY,
    PREFIX_TO_SOBJECT,
    SOBJECTS,
    STAGES,
    Field,
    SalesforceError,
    SObject,
    coerce,
    format_datetime,
    normalize_id,
)
from standins.salesforce.store import Store

#: Called with the opportunity record each time it enters Closed Won.
ClosedWonHook = Callable[[dict[str, Any]], None]
#: Called with the change order record each time its Status__c enters Approved.
ApprovedHook = Callable[[dict[str, Any]], None]
#: Detail objects whose currency is their master's: (object, master-detail field).
_DETAILS = {
    "Change_Order_Line__c": "Change_Order__c",
    "Change_Order_Milestone__c": "Change_Order__c",
}
#: Auto-number names (`COL-000001`), as a custom object's "Auto Number" name field.
_AUTO_NAMES = {"Change_Order_Line__c": "COL-{:06d}"}

_CENT = Decimal("0.01")

#: Children deleted with their parent, as Salesforce does for these standard relationships;
#: every other lookup to a deleted record is cleared instead.
CASCADE_DELETE = frozenset(
    {
        ("Contact", "AccountId"),
        ("Opportunity", "AccountId"),
        ("OpportunityLineItem", "OpportunityId"),
        # Master-detail: the details go with their master.
        ("Change_Order_Line__c", "Change_Order__c"),
        ("Change_Order_Milestone__c", "Change_Order__c"),
    }
)


def _children(parent: SObject) -> list[tuple[SObject, Field]]:
    """Every (object, lookup field) that can point at a record of `parent`."""
    return [
        (child, f)
        for child in SOBJECTS.values()
        for f in child.fields
        if f.type == "reference" and f.reference_to == parent.name
    ]


def not_found() -> SalesforceError:
    return SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")


class Org:
    def __init__(
        self,
        store: Store,
        on_closed_won: ClosedWonHook,
        on_change_order_approved: ApprovedHook | None = None,
    ) -> None:
        self.store = store
        self.on_closed_won = on_closed_won
        self.on_change_order_approved = on_change_order_approved

    # -- reads

    def get(self, obj: SObject, record_id: str) -> dict[str, Any]:
        normalized = normalize_id(record_id)
        found = self.store.get(normalized) if normalized else None
        if found is None or found[0] != obj.name:
            raise not_found()
        return self.complete(obj, found[1])

    def lookup(self, record_id: str) -> dict[str, Any] | None:
        found = self.store.get(record_id)
        return None if found is None else self.complete(SOBJECTS[found[0]], found[1])

    def all(self, obj: SObject) -> list[dict[str, Any]]:
        return [self.complete(obj, r) for r in self.store.all(obj.name)]

    def by_external_id(self, obj: SObject, field_name: str, value: str) -> list[dict[str, Any]]:
        f = self.external_id_field(obj, field_name)
        if f.name == "Id":
            normalized = normalize_id(value)
            found = self.store.get(normalized) if normalized else None
            return [] if found is None or found[0] != obj.name else [found[1]]
        return [self.complete(obj, r) for r in self.store.where(obj.name, f.name, value)]

    @staticmethod
    def external_id_field(obj: SObject, field_name: str) -> Field:
        f = obj.field(field_name)
        if f is None or not (f.external_id or f.name == "Id"):
            raise SalesforceError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field_name}",
            )
        return f

    @staticmethod
    def complete(obj: SObject, record: dict[str, Any]) -> dict[str, Any]:
        """Every field of the object, in schema order; fields added later read as null."""
        return {f.name: record.get(f.name) for f in obj.fields}

    # -- writes

    def create(self, obj: SObject, body: Any) -> dict[str, Any]:
        values = self._validated(obj, body, creating=True)
        missing = [f.name for f in obj.fields if f.required and values.get(f.name) is None]
        if missing:
            raise SalesforceError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        now = format_datetime(datetime.now(UTC))
        record: dict[str, Any] = {f.name: f.default for f in obj.fields}
        record.update(values)
        record.update(
            Id=self.store.new_id(obj.key_prefix),
            IsDeleted=False,
            CreatedDate=now,
            LastModifiedDate=now,
            SystemModstamp=now,
        )
        self._derive(obj, record, values, previous=None)
        self._check_unique(obj, record)
        self.store.insert(obj.name, record)
        self._after_write(obj, record, previous=None)
        return record

    def update(self, obj: SObject, record_id: str, body: Any) -> dict[str, Any]:
        previous = self.get(obj, record_id)
        values = self._validated(obj, body, creating=False, record_id=previous["Id"])
        record = {**previous, **values}
        now = format_datetime(datetime.now(UTC))
        record.update(LastModifiedDate=now, SystemModstamp=now)
        self._derive(obj, record, values, previous=previous)
        self._check_unique(obj, record)
        self.store.replace(record)
        self._after_write(obj, record, previous=previous)
        return record

    def upsert(
        self, obj: SObject, field_name: str, value: str, body: Any
    ) -> tuple[dict[str, Any], bool]:
        f = self.external_id_field(obj, field_name)
        if isinstance(body, dict):
            sent = next((v for k, v in body.items() if k.lower() == f.name.lower()), None)
            if sent is not None and str(sent).lower() != value.lower():
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    f"The value of the external ID field in the body ({sent}) does not match "
                    f"the value in the URL ({value})",
                    [f.name],
                )
        matches = self.by_external_id(obj, f.name, value)
        if len(matches) > 1:
            raise SalesforceError(
                300, "MULTIPLE_CHOICES", f"More than one record found for {f.name} = {value}"
            )
        if matches:
            return self.update(obj, matches[0]["Id"], body), False
        if f.name == "Id":
            raise not_found()
        body = {**(body if isinstance(body, dict) else {}), f.name: value}
        return self.create(obj, body), True

    def delete(self, obj: SObject, record_id: str) -> None:
        record = self.get(obj, record_id)
        if obj.name == "Product2":
            used = self.store.where("OpportunityLineItem", "Product2Id", record["Id"])
            if used:
                raise SalesforceError(
                    400,
                    "DELETE_FAILED",
                    "Your attempt to delete this product could not be completed because it is "
                    f"associated with opportunity products: {used[0]['Id']}",
                )
        for child_obj, ref in _children(obj):
            for child in self.store.where(child_obj.name, ref.name, record["Id"]):
                if (child_obj.name, ref.name) in CASCADE_DELETE:
                    self.delete(child_obj, child["Id"])
                else:
                    # A lookup's default: the child stays, its lookup is cleared.
                    now = format_datetime(datetime.now(UTC))
                    child.update({ref.name: None, "LastModifiedDate": now, "SystemModstamp": now})
                    self.store.replace(child)
        self.store.delete(record["Id"])
        if obj.name == "OpportunityLineItem" and record["OpportunityId"]:
            self._roll_up(record["OpportunityId"])

    # -- validation

    def _validated(
        self, obj: SObject, body: Any, *, creating: bool, record_id: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise SalesforceError(
                400,
                "JSON_PARSER_ERROR",
                "Cannot deserialize instance of the sObject from a value that is not an object",
            )
        values: dict[str, Any] = {}
        for key, raw in body.items():
            if key == "attributes":
                continue
            f = obj.field(key)
            if f is None:
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{key}' on sobject of type {obj.name}",
                    [key],
                )
            if f.name == "Id" and not creating and normalize_id(str(raw)) == record_id:
                continue
            if not (f.createable if creating else f.updateable):
                raise SalesforceError(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {f.name}. Please check the security "
                    "settings of this field and verify that it is read/write for your profile "
                    "or permission set.",
                    [f.name],
                )
            value = coerce(obj, f, raw)
            if f.type == "reference" and value is not None:
                self._check_reference(f, value)
            values[f.name] = value
        return values

    def _check_reference(self, f: Field, value: str) -> None:
        assert f.reference_to is not None
        if PREFIX_TO_SOBJECT.get(value[:3]) not in (None, f.reference_to):
            raise SalesforceError(
                400,
                "FIELD_INTEGRITY_EXCEPTION",
                f"{f.label}: id value of incorrect type: {value}",
                [f.name],
            )
        found = self.store.get(value)
        if found is None or found[0] != f.reference_to:
            raise SalesforceError(
                400,
                "INVALID_CROSS_REFERENCE_KEY",
                f"invalid cross reference id ({f.name}: {value})",
                [f.name],
            )

    def _check_unique(self, obj: SObject, record: dict[str, Any]) -> None:
        for f in obj.fields:
            value = record.get(f.name)
            if not f.external_id or value is None:
                continue
            found = self.store.where(obj.name, f.name, value)
            clash = [r for r in found if r["Id"] != record["Id"]]
            if clash:
                raise SalesforceError(
                    400,
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {f.name} duplicates value on record with id: "
                    f"{clash[0]['Id']}",
                    [f.name],
                )

    # -- derived fields and roll-ups

    def _derive(
        self,
        obj: SObject,
        record: dict[str, Any],
        values: dict[str, Any],
        previous: dict[str, Any] | None,
    ) -> None:
        if "CurrencyIsoCode" in record and record["CurrencyIsoCode"] is None:
            record["CurrencyIsoCode"] = CORPORATE_CURRENCY
        if obj.name == "Contact":
            record["Name"] = " ".join(p for p in (record["FirstName"], record["LastName"]) if p)
        elif obj.name == "Product2":
            if record["IsActive"] is None:
                record["IsActive"] = False
        elif obj.name == "Opportunity":
            self._derive_opportunity(record, values, previous)
        elif obj.name == "OpportunityLineItem":
            self._derive_line(record)
        elif obj.name == "Change_Order__c":
            self._derive_change_order(record, values, previous)
        if obj.name in _DETAILS:
            master = self.store.get(record[_DETAILS[obj.name]])
            assert master is not None  # checked as a reference
            record["CurrencyIsoCode"] = master[1].get("CurrencyIsoCode") or CORPORATE_CURRENCY
        if previous is None and obj.name in _AUTO_NAMES:
            serial = self.store.next_serial(f"name:{obj.name}")
            record["Name"] = _AUTO_NAMES[obj.name].format(serial)

    def _derive_change_order(
        self, record: dict[str, Any], values: dict[str, Any], previous: dict[str, Any] | None
    ) -> None:
        """Entering Approved stamps the approval time (whole seconds, UTC) unless the write
        gives one; the details follow their master's currency."""
        if self._entered_approved(record, previous) and "Approved_At__c" not in values:
            record["Approved_At__c"] = format_datetime(datetime.now(UTC).replace(microsecond=0))
        if previous is not None and record["CurrencyIsoCode"] != previous["CurrencyIsoCode"]:
            for child_obj, master_field in _DETAILS.items():
                for child in self.store.where(child_obj, master_field, record["Id"]):
                    self.store.replace({**child, "CurrencyIsoCode": record["CurrencyIsoCode"]})

    @staticmethod
    def _entered_approved(record: dict[str, Any], previous: dict[str, Any] | None) -> bool:
        return record["Status__c"] == CHANGE_ORDER_APPROVED and (
            previous is None or previous["Status__c"] != CHANGE_ORDER_APPROVED
        )

    def _derive_opportunity(
        self, record: dict[str, Any], values: dict[str, Any], previous: dict[str, Any] | None
    ) -> None:
        stage = record["StageName"]
        stage_changed = previous is None or previous["StageName"] != stage
        if stage_changed and "Probability" not in values:
            record["Probability"] = STAGES[stage]
        record["IsClosed"] = stage in CLOSED_STAGES
        record["IsWon"] = stage == CLOSED_WON
        record["HasOpportunityLineItem"] = bool(previous and previous["HasOpportunityLineItem"])
        if previous is None or not previous["HasOpportunityLineItem"]:
            return
        for name, reason in (
            ("Amount", "the amount of an opportunity with products is the sum of its products"),
            ("CurrencyIsoCode", "cannot change the currency of an opportunity with products"),
        ):
            if name in values and values[name] != previous[name]:
                raise SalesforceError(400, "FIELD_INTEGRITY_EXCEPTION", f"{name}: {reason}", [name])

    def _derive_line(self, record: dict[str, Any]) -> None:
        opportunity = self.store.get(record["OpportunityId"])
        product = self.store.get(record["Product2Id"])
        assert opportunity is not None and product is not None
        quantity = Decimal(str(record["Quantity"]))
        if quantity == 0:
            raise SalesforceError(
                400,
                "FIELD_INTEGRITY_EXCEPTION",
                "field integrity exception: Quantity (quantity must be non-zero)",
                ["Quantity"],
            )
        discount = Decimal(str(record["Discount"] or 0))
        total = quantity * Decimal(str(record["UnitPrice"])) * (1 - discount / 100)
        record["TotalPrice"] = float(total.quantize(_CENT, rounding=ROUND_HALF_UP))
        record["CurrencyIsoCode"] = opportunity[1].get("CurrencyIsoCode") or CORPORATE_CURRENCY
        record["Name"] = f"{opportunity[1]['Name']} {product[1]['Name']}"
        record["ProductCode"] = product[1].get("ProductCode")

    def _after_write(
        self, obj: SObject, record: dict[str, Any], previous: dict[str, Any] | None
    ) -> None:
        if obj.name == "OpportunityLineItem":
            self._roll_up(record["OpportunityId"])
        if obj.name == "Opportunity":
            entered = record["StageName"] == CLOSED_WON and (
                previous is None or previous["StageName"] != CLOSED_WON
            )
            if entered:
                self.on_closed_won(record)
        approved = obj.name == "Change_Order__c" and self._entered_approved(record, previous)
        if approved and self.on_change_order_approved is not None:
            self.on_change_order_approved(record)

    def _roll_up(self, opportunity_id: str) -> None:
        """Salesforce keeps Opportunity.Amount equal to the sum of its products."""
        found = self.store.get(opportunity_id)
        if found is None:
            return
        opportunity = self.complete(SOBJECTS["Opportunity"], found[1])
        lines = self.store.where("OpportunityLineItem", "OpportunityId", opportunity_id)
        opportunity["HasOpportunityLineItem"] = bool(lines)
        if lines:
            total = sum((Decimal(str(line["TotalPrice"])) for line in lines), Decimal(0))
            opportunity["Amount"] = float(total.quantize(_CENT, rounding=ROUND_HALF_UP))
        opportunity["SystemModstamp"] = format_datetime(datetime.now(UTC))
        self.store.replace(opportunity)
