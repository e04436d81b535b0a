"""Tryton as the ERP: the customer financial master and customer invoices.

Parties are shared by all companies in Tryton; what makes a party a customer of one of
the firm's legal entities is company-dependent: its receivable account in that company.
Invoices are made and posted in the company of their project.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from canonical import Customer, Invoice, LegalEntity
from connectors.errors import NotFound, ValidationFailed
from connectors.tryton import mapping
from connectors.tryton.catalog import Catalog, Company
from connectors.tryton.client import SYSTEM, TrytonClient
from connectors.tryton.wire import InvoiceLineRecord, InvoiceRecord

_INVOICE_FIELDS = [
    "type",
    "state",
    "number",
    "party",
    "company",
    "currency",
    "invoice_date",
    "untaxed_amount",
    "tax_amount",
    "total_amount",
    "comment",
    "description",
    "reference",
    "lines",
    "lines_to_pay",
]
_INVOICE_LINE_FIELDS = [
    "type",
    "description",
    "quantity",
    "unit_price",
    "amount",
    "taxes",
    "product",
]


class TrytonErp:
    def __init__(self, client: TrytonClient, catalog: Catalog | None = None) -> None:
        self.client = client
        self._catalog = catalog

    async def catalog(self, *, refresh: bool = False) -> Catalog:
        if self._catalog is None or refresh:
            self._catalog = await Catalog.load(self.client)
        return self._catalog

    async def _company(self, legal_entity: LegalEntity) -> Company:
        """The entity's company; its currency must be the one the firm says it keeps."""
        cat = await self.catalog()
        if legal_entity.code not in cat.companies:
            cat = await self.catalog(refresh=True)  # a legal entity added since we loaded
        company = cat.company(legal_entity.code, field="legal_entity")
        if company.currency != legal_entity.currency:
            raise ValidationFailed(
                f"legal entity {legal_entity.code} keeps its books in {legal_entity.currency}; "
                f"its Tryton company {company.name} in {company.currency}",
                system=SYSTEM,
                field="legal_entity",
            )
        return company

    # -- customers -----------------------------------------------------------------------------

    async def find_customer(self, external_ref: str) -> int | None:
        code = mapping.external_ref_code(external_ref)
        found = await self.client.search(
            "party.party",
            [("identifiers.code", "=", code)],
            order=[("id", "ASC")],
            limit=1,
            context={"active_test": False},
        )
        return found[0] if found else None

    async def upsert_customer(self, customer: Customer, external_ref: str) -> int:
        """Create or update the party carrying `external_ref`; returns the party id.

        The external reference is the upsert key: the same reference always lands on the
        same party, whatever else changed (name, addresses, tax id, terms). The party is
        made a customer of `customer.legal_entity`'s company (its receivable account
        there), in that company's context; a party may be a customer of several.
        """
        company = await self._company(customer.legal_entity)
        cat = await self.catalog()
        client = self.client.for_company(company.company_id)
        term = await cat.payment_term(client, customer.payment_terms.net_days)
        receivable = await cat.receivable_account(client, company)
        addresses = [
            mapping.address_values(a, await cat.country(client, a.country))
            for a in customer.addresses
        ]
        party_id = await self.find_customer(external_ref)
        if party_id is None:
            identifiers: list[dict[str, Any]] = [
                {"type": None, "code": mapping.external_ref_code(external_ref)}
            ]
            if customer.tax_id:
                identifiers.append(self._tax_identifier(customer))
            emails = [mapping.email_values(c) for c in customer.contacts]
            return await client.create_one(
                "party.party",
                {
                    "name": customer.name,
                    "customer_payment_term": term,
                    # Company-dependent: stored for the company of the context.
                    "account_receivable": receivable,
                    "addresses": [
                        [
                            "create",
                            [
                                {**a, "invoice": i == 0, "sequence": i + 1}
                                for i, a in enumerate(addresses)
                            ],
                        ]
                    ],
                    "identifiers": [["create", identifiers]],
                    "contact_mechanisms": [["create", emails]] if emails else [],
                },
            )
        await self._update_party(client, party_id, customer, term, receivable, addresses)
        return party_id

    def _tax_identifier(self, customer: Customer) -> dict[str, Any]:
        country = customer.billing_address.country
        kind = mapping.tax_identifier_type(country)
        code = customer.tax_id or ""
        if kind == "eu_vat" and code[:2].upper() != country and not code[:2].isalpha():
            code = f"{country}{code}"  # CRMs often drop the country prefix of a VAT number
        return {"type": kind, "code": code}

    def _tax_id_actions(self, customer: Customer, idents: list[dict[str, Any]]) -> list[Any]:
        """Keep the customer's tax id the party's current one (Tryton reads the first).

        Earlier tax ids stay, ranked after it: posted invoices refer to them.
        """
        tax = self._tax_identifier(customer)
        others = [i for i in idents if not str(i["code"]).startswith(mapping.REF_PREFIX)]
        same_type = [i for i in others if i["type"] == tax["type"]]
        rest = [i["id"] for i in others if i["type"] != tax["type"]]
        if same_type and mapping.same_code(same_type[0]["code"], tax["code"]):
            return []
        actions: list[Any] = []
        if rest:
            # Identifiers sort by sequence, nulls first: the current one has none.
            actions.append(["write", rest, {"sequence": 10}])
        if same_type:
            actions.append(["write", [same_type[0]["id"]], {"code": tax["code"]}])
        else:
            actions.append(["create", [tax]])
        return actions

    async def _update_party(
        self,
        client: TrytonClient,
        party_id: int,
        customer: Customer,
        term: int,
        receivable: int,
        addresses: list[dict[str, Any]],
    ) -> None:
        """Bring the party in line with `customer`, writing only what differs."""
        (party,) = await client.read(
            "party.party",
            [party_id],
            [
                "name",
                "active",
                "customer_payment_term",
                "account_receivable",
                "addresses",
                "identifiers",
                "contact_mechanisms",
            ],
        )
        current = await client.read(
            "party.address",
            party["addresses"],
            ["street", "city", "postal_code", "country", "invoice", "sequence"],
        )
        by_key = {mapping.address_key(a): a for a in current}
        actions: list[Any] = []
        wanted_keys = set()
        for i, address in enumerate(addresses):
            key = mapping.address_key(address)
            wanted_keys.add(key)
            flags = {"invoice": i == 0, "sequence": i + 1, "active": True}
            if key in by_key:
                row = by_key[key]
                if row["invoice"] != flags["invoice"] or row["sequence"] != flags["sequence"]:
                    actions.append(["write", [row["id"]], flags])
            else:
                actions.append(["create", [{**address, **flags}]])
        # Addresses the customer no longer has are archived, not edited or deleted: posted
        # invoices keep pointing at the address they were sent to.
        stale = [a["id"] for a in current if mapping.address_key(a) not in wanted_keys]
        if stale:
            actions.append(["write", stale, {"active": False, "invoice": False}])

        values: dict[str, Any] = {}
        if party["name"] != customer.name:
            values["name"] = customer.name
        if party["customer_payment_term"] != term:
            values["customer_payment_term"] = term
        if not party["account_receivable"]:
            # New to this legal entity. An account someone chose for it is kept.
            values["account_receivable"] = receivable
        if not party["active"]:
            values["active"] = True
        if actions:
            values["addresses"] = actions
        if customer.tax_id:
            idents = await client.read("party.identifier", party["identifiers"], ["type", "code"])
            identifier_actions = self._tax_id_actions(customer, idents)
            if identifier_actions:
                values["identifiers"] = identifier_actions
        if customer.contacts:
            mechanisms = await client.read(
                "party.contact_mechanism", party["contact_mechanisms"], ["type", "value"]
            )
            known = {str(m["value"]).casefold() for m in mechanisms if m["type"] == "email"}
            new = [
                mapping.email_values(c)
                for c in customer.contacts
                if c.email.casefold() not in known
            ]
            if new:
                values["contact_mechanisms"] = [["create", new]]
        if values:
            await client.write("party.party", [party_id], values)

    async def find_customer_record(
        self, external_ref: str, legal_entity: LegalEntity | None = None
    ) -> Customer | None:
        """The customer as Tryton holds it, by its external reference; None when unknown."""
        party_id = await self.find_customer(external_ref)
        if party_id is None:
            return None
        return await self.get_customer(party_id, legal_entity)

    async def get_customer(
        self, party_id: int, legal_entity: LegalEntity | None = None
    ) -> Customer:
        """The customer as Tryton holds it: what survivorship weighs against the CRM.

        With `legal_entity`, the customer as that entity's customer (the entity is checked
        against its Tryton company and returned as given, so it compares equal to the
        caller's). Without it, the first legal entity the party is a customer of.
        """
        rows = await self.client.read(
            "party.party",
            [party_id],
            [
                "name",
                "addresses",
                "identifiers",
                "tax_identifier.type",
                "tax_identifier.code",
                "tax_identifier.code_compact",
                "customer_payment_term",
                "contact_mechanisms",
                "accounts.company",
                "accounts.account_receivable",
            ],
        )
        if not rows:
            raise NotFound(f"no party {party_id} in Tryton", system=SYSTEM)
        party = rows[0]
        if legal_entity is not None:
            company = await self._company(legal_entity)
        else:
            legal_entity = await self._legal_entity_of(party)
            company = (await self.catalog()).company(legal_entity.code)
        # `addresses` lists the active ones: archived addresses are the customer's past.
        addresses = await self.client.read(
            "party.address",
            party["addresses"],
            ["street", "city", "postal_code", "country.code", "invoice", "sequence"],
        )
        mechanisms = await self.client.read(
            "party.contact_mechanism",
            party["contact_mechanisms"],
            ["type", "value", "name", "invoice"],
        )
        idents = await self.client.read("party.identifier", party["identifiers"], ["code"])
        external_ref = next(
            (
                ref
                for ref in (mapping.external_ref_from_code(i["code"]) for i in idents)
                if ref is not None
            ),
            None,
        )
        net_days = await self._net_days(party["customer_payment_term"])
        return mapping.to_customer(
            party_id=party_id,
            name=str(party["name"]),
            legal_entity=legal_entity,
            currency=company.currency,
            addresses=addresses,
            tax_id=mapping.tax_id_from_identifier(party.get("tax_identifier.")),
            net_days=net_days,
            mechanisms=mechanisms,
            external_ref=external_ref,
        )

    async def _legal_entity_of(self, party: dict[str, Any]) -> LegalEntity:
        cat = await self.catalog()
        companies = {
            int(a["company"]) for a in party.get("accounts.", []) if a["account_receivable"]
        }
        for company in cat.companies.values():
            if company.company_id in companies:
                if company.country is None:
                    raise ValidationFailed(
                        f"Tryton company {company.name} has no address with a country",
                        system=SYSTEM,
                        field="legal_entity",
                    )
                return LegalEntity(
                    code=company.code,
                    name=company.name,
                    country=company.country,
                    currency=company.currency,
                )
        raise ValidationFailed(
            f"party {party['id']} is a customer of none of the legal entities "
            f"({', '.join(cat.companies)})",
            system=SYSTEM,
            field="legal_entity",
        )

    async def _net_days(self, term_id: int | None) -> int:
        """Days to pay under the payment term; without one Tryton makes invoices due at once."""
        if not term_id:
            return 0
        (term,) = await self.client.read(
            "account.invoice.payment_term", [term_id], ["lines.relativedeltas"]
        )
        delta_ids = [d for line in term["lines."] for d in line["relativedeltas"]]
        deltas = await self.client.read(
            "account.invoice.payment_term.line.delta", delta_ids, ["days", "weeks", "months"]
        )
        return max(
            (
                int(d["days"] or 0) + 7 * int(d["weeks"] or 0) + 30 * int(d["months"] or 0)
                for d in deltas
            ),
            default=0,
        )

    # -- invoices ------------------------------------------------------------------------------

    async def find_invoice(self, idempotency_key: str) -> int | None:
        rows = await self.client.search_read(
            "account.invoice",
            [
                ("type", "=", "out"),
                ("comment", "like", mapping.like_pattern(f"{mapping.KEY_LABEL} {idempotency_key}")),
            ],
            ["comment"],
            order=[("id", "ASC")],
        )
        for row in rows:
            if mapping.label_value(row.get("comment"), mapping.KEY_LABEL) == idempotency_key:
                return int(row["id"])
        return None

    async def invoice_project(self, project_id: int, *, idempotency_key: str) -> int:
        """Invoice what the project has to invoice; returns the draft customer invoice.

        Tryton's `invoice` button returns nothing and cannot carry a key, so the key is
        written on the invoice right after. A retry after a crash between the two finds
        the untagged draft invoice through the project's timesheet lines and adopts it.
        """
        existing = await self.find_invoice(idempotency_key)
        if existing is not None:
            return existing
        before = await self._project_invoices(project_id)
        orphans = [
            i
            for i, comment in before.items()
            if mapping.label_value(comment, mapping.KEY_LABEL) is None
        ]
        if orphans:
            invoice_id = orphans[0]
        else:
            amount = await self.client.read(
                "project.work", [project_id], ["amount_to_invoice", "company"]
            )
            if not amount:
                raise NotFound(f"no project {project_id} in Tryton", system=SYSTEM)
            if not amount[0]["amount_to_invoice"]:
                raise ValidationFailed(
                    f"project {project_id} has nothing to invoice",
                    system=SYSTEM,
                    field="project",
                    code="nothing_to_invoice",
                )
            company = int(amount[0]["company"])
            await self.client.for_company(company).model("project.work", "invoice", [project_id])
            created = [i for i in await self._project_invoices(project_id) if i not in before]
            if not created:
                raise ValidationFailed(
                    f"Tryton made no invoice for project {project_id}",
                    system=SYSTEM,
                    field="project",
                    code="nothing_to_invoice",
                )
            invoice_id = min(created)
        (row,) = await self.client.read("account.invoice", [invoice_id], ["comment"])
        await self.client.write(
            "account.invoice",
            [invoice_id],
            {"comment": mapping.with_label(row.get("comment"), mapping.KEY_LABEL, idempotency_key)},
        )
        return invoice_id

    async def _project_invoices(self, project_id: int) -> dict[int, str | None]:
        """Draft customer invoices holding this project's time, with their comment."""
        works = await self.client.search_read(
            "project.work", [("parent", "child_of", [project_id])], ["timesheet_works"]
        )
        timesheet_works = [tw for w in works for tw in w["timesheet_works"]]
        if not timesheet_works:
            return {}
        lines = await self.client.search_read(
            "timesheet.line",
            [("work", "in", timesheet_works), ("invoice_line", "!=", None)],
            ["invoice_line.invoice"],
        )
        invoice_ids = sorted({int(ln["invoice_line."]["invoice"]) for ln in lines})
        rows = await self.client.read("account.invoice", invoice_ids, ["comment", "state"])
        return {int(r["id"]): r.get("comment") for r in rows if r["state"] == "draft"}

    async def post_invoice(self, invoice_id: int) -> Invoice:
        """Post (number and book) the invoice; posting a posted or paid invoice changes nothing."""
        rows = await self.client.read("account.invoice", [invoice_id], ["state", "company"])
        if not rows:
            raise NotFound(f"no invoice {invoice_id} in Tryton", system=SYSTEM)
        if rows[0]["state"] in ("draft", "validated"):
            # Numbered from the sequence of the invoice's company, dated in its time zone.
            await self.client.for_company(int(rows[0]["company"])).model(
                "account.invoice", "post", [invoice_id]
            )
        elif rows[0]["state"] == "cancelled":
            raise ValidationFailed(
                f"invoice {invoice_id} is cancelled", system=SYSTEM, field="state"
            )
        return await self.get_invoice(invoice_id)

    async def get_invoice(self, invoice_id: int) -> Invoice:
        rows = await self.client.read("account.invoice", [invoice_id], _INVOICE_FIELDS)
        if not rows:
            raise NotFound(f"no invoice {invoice_id} in Tryton", system=SYSTEM)
        record = InvoiceRecord.model_validate(rows[0])
        lines = [
            InvoiceLineRecord.model_validate(r)
            for r in await self.client.read(
                "account.invoice.line", record.lines, _INVOICE_LINE_FIELDS
            )
        ]
        (currency,) = await self.client.read("currency.currency", [record.currency], ["code"])
        tax_ids = sorted({t for ln in lines for t in ln.taxes})
        taxes = await self.client.read("account.tax", tax_ids, ["type", "rate"])
        tax_rates = {
            int(t["id"]): Decimal(t["rate"] or 0) for t in taxes if t["type"] == "percentage"
        }
        cat = await self.catalog()
        legal_entity = next(
            (c.code for c in cat.companies.values() if c.company_id == record.company), None
        )
        return mapping.to_invoice(
            record,
            lines,
            currency=str(currency["code"]),
            legal_entity_code=legal_entity,
            customer_id=await self._customer_id(record.party),
            tax_rates=tax_rates,
            due_date=await self._due_date(record.lines_to_pay),
        )

    async def _customer_id(self, party_id: int) -> str:
        idents = await self.client.search_read(
            "party.identifier",
            [("party", "=", party_id), ("code", "like", f"{mapping.REF_PREFIX}%")],
            ["code"],
            limit=1,
        )
        if idents:
            ref = mapping.external_ref_from_code(idents[0]["code"])
            if ref:
                return ref
        return f"tryton-party:{party_id}"

    async def _due_date(self, move_lines: list[int]) -> date | None:
        rows = await self.client.read("account.move.line", move_lines, ["maturity_date"])
        dates = [r["maturity_date"] for r in rows if r["maturity_date"]]
        return max(dates) if dates else None
