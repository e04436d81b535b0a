"""Tryton as the ERP: the customer financial master and customer invoices.

Parties are shared by all companies in Tryton; what makes a party a customer of one of
the firm's legal entities is company-dependent: its receivable account in that company.
Invoices are made and posted in the company of their project (`invoice_project`, Tryton
rating the time) or of their legal entity (`create_invoice`, q2c rating it), and paid
there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from canonical import Customer, Invoice, InvoiceLine, InvoiceStatus, LegalEntity, Money
from connectors.errors import ConnectorError, IdempotencyConflict, NotFound, ValidationFailed
from connectors.tryton import mapping
from connectors.tryton.catalog import Catalog, Company
from connectors.tryton.client import SYSTEM, TrytonClient
from connectors.tryton.wire import (
    ErpInvoice,
    ErpInvoiceInfo,
    InvoiceCorrection,
    InvoiceLineRecord,
    InvoiceRecord,
    ProjectRevenue,
)

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
#: q2c's Tryton module: run deferrals and book their months up to a day.
_RECOGNIZE = "q2c_recognize"
#: The context key that limits the months a deferral's run books (q2c's Tryton module).
_UP_TO_CONTEXT = "q2c_recognize_up_to"
#: The context key under which q2c's Tryton module posts an invoice with q2c's taxes.
_TAXES_RATED_CONTEXT = "q2c_taxes_rated"
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
        self._fee: tuple[int, int] | None = None

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
        """The party carrying `external_ref`: by its code (unique and indexed), else by the
        identifier parties made before q2c set their code carry."""
        code = mapping.external_ref_code(external_ref)
        for domain in ([("code", "=", code)], [("identifiers.code", "=", code)]):
            found = await self.client.search(
                "party.party",
                domain,
                order=[("id", "ASC")],
                limit=1,
                context={"active_test": False},
            )
            if found:
                return found[0]
        return None

    async def upsert_customer(self, customer: Customer, external_ref: str) -> int:
        """Create or update the party carrying `external_ref`; returns the party id.

        The external reference is the upsert key: the same reference always lands on the
        same party, whatever else changed (name, addresses, tax id, terms). The party is
        made a customer of `customer.legal_entity`'s company (its receivable account
        there), in that company's context; a party may be a customer of several.

        A new party's code is made from the reference, so no numbering sequence is used
        and Tryton's unique code arbitrates concurrent upserts of one account: the loser's
        create is refused, and it updates the winner's party instead.
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
            code = mapping.external_ref_code(external_ref)
            identifiers: list[dict[str, Any]] = [{"type": None, "code": code}]
            if customer.tax_id:
                identifiers.append(self._tax_identifier(customer))
            emails = [mapping.email_values(c) for c in customer.contacts]
            invoice_first = [
                {**a, "invoice": i == 0, "sequence": i + 1} for i, a in enumerate(addresses)
            ]
            values = {
                "code": code,
                "name": customer.name,
                "customer_payment_term": term,
                # Company-dependent: stored for the company of the context.
                "account_receivable": receivable,
                "addresses": [["create", invoice_first]],
                "identifiers": [["create", identifiers]],
                "contact_mechanisms": [["create", emails]] if emails else [],
            }
            try:
                return await client.create_one("party.party", values)
            except ConnectorError:
                # A concurrent upsert of the same account may have taken the code first.
                party_id = await self.find_customer(external_ref)
                if party_id is None:
                    raise
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
            try:
                await self.client.for_company(company).model(
                    "project.work", "invoice", [project_id]
                )
            except ConnectorError:
                # Refused as nothing to invoice when a concurrent attempt has just
                # invoiced the time: its draft is adopted below.
                if not set(await self._project_invoices(project_id)) - set(before):
                    raise
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
        invoice_ids = sorted(await self._invoices_billing_time(project_id))
        rows = await self.client.read("account.invoice", invoice_ids, ["comment", "state"])
        return {int(r["id"]): r.get("comment") for r in rows if r["state"] == "draft"}

    async def create_invoice(
        self,
        invoice: Invoice,
        *,
        party_id: int,
        reference: str,
        idempotency_key: str,
        payment_net_days: int,
    ) -> ErpInvoice:
        """The customer invoice matching q2c's own (billing's), as a draft to post.

        Made in the company of `invoice.legal_entity_code`: one line per canonical line, on
        the company's revenue account, with the company's customer tax at the line's rate;
        `reference` is the billing system's invoice number. The invoice and its lines are
        created in one call (one transaction), so a retry finds it by its key (draft or
        posted) or creates it afresh. The invoice date is the billing invoice's issue date;
        without one, Tryton dates it when posting.

        Tryton rounds half to even where q2c rounds half up: a line whose amount would
        differ goes as one unit at q2c's net (see `mapping.invoice_line_values`), and tax
        amounts Tryton rounded otherwise are set to q2c's while the invoice is a draft, so
        Tryton's total is the canonical total to the minor unit.
        """
        if not invoice.lines:
            raise ValidationFailed(
                f"invoice {invoice.id} has no lines", system=SYSTEM, field="lines"
            )
        company = await self._invoice_company(invoice)
        client = self.client.for_company(company.company_id)
        tax_ids = await self._tax_ids(company, invoice)
        invoice_id = await self.find_invoice(idempotency_key)
        if invoice_id is None:
            values = await self._invoice_values(
                client, company, invoice, party_id, reference, idempotency_key, tax_ids
            )
            values["payment_term"] = await (await self.catalog()).payment_term(
                client, payment_net_days
            )
            created = await client.create_one("account.invoice", values)
            # Nothing unique in an invoice can carry the key, so two attempts of one step
            # running at once could both create: the first invoice made under the key
            # wins, and a later one (a draft this call just made) is removed.
            invoice_id = await self.find_invoice(idempotency_key) or created
            if invoice_id != created:
                await client.delete("account.invoice", [created])
        line_ids = await self._invoice_line_ids(invoice_id)
        if len(line_ids) != len(invoice.lines):
            raise IdempotencyConflict(
                f"invoice {invoice_id} made under key {idempotency_key!r} has "
                f"{len(line_ids)} lines; invoice {invoice.id} has {len(invoice.lines)}",
                system=SYSTEM,
            )
        await self._match_taxes(client, invoice_id, invoice, tax_ids)
        return ErpInvoice(id=invoice_id, line_ids=line_ids)

    async def _invoice_company(self, invoice: Invoice) -> Company:
        if not invoice.legal_entity_code:
            raise ValidationFailed(
                f"invoice {invoice.id} names no legal entity",
                system=SYSTEM,
                field="legal_entity_code",
            )
        cat = await self.catalog()
        if invoice.legal_entity_code not in cat.companies:
            cat = await self.catalog(refresh=True)
        return cat.company(invoice.legal_entity_code, field="legal_entity_code")

    async def _tax_ids(self, company: Company, invoice: Invoice) -> list[int]:
        """The Tryton tax of each line; a rate not in the catalog may be a tax added since."""
        cat = await self.catalog()
        if any(line.tax_rate not in company.taxes for line in invoice.lines):
            cat = await self.catalog(refresh=True)
        return [cat.tax_id(company.code, line.tax_rate) for line in invoice.lines]

    async def _invoice_values(
        self,
        client: TrytonClient,
        company: Company,
        invoice: Invoice,
        party_id: int,
        reference: str,
        idempotency_key: str,
        tax_ids: list[int],
    ) -> dict[str, Any]:
        cat = await self.catalog()
        currency = cat.currency_ids.get(invoice.currency)
        if currency is None:
            raise ValidationFailed(
                f"Tryton has no currency {invoice.currency}", system=SYSTEM, field="currency"
            )
        # Company-dependent: the party's receivable account in this company.
        rows = await client.read(
            "party.party", [party_id], ["addresses", "account_receivable", "tax_identifier"]
        )
        if not rows:
            raise NotFound(f"no party {party_id} in Tryton", system=SYSTEM)
        party = rows[0]
        addresses = await client.read("party.address", party["addresses"], ["invoice", "sequence"])
        addresses.sort(key=lambda a: (not a["invoice"], a["sequence"] is None, a["sequence"] or 0))
        if not addresses:
            raise ValidationFailed(
                f"party {party_id} has no address to invoice", system=SYSTEM, field="addresses"
            )
        revenue = await cat.revenue_account(client, company)
        comment = mapping.with_label(None, mapping.KEY_LABEL, idempotency_key)
        comment = mapping.with_label(comment, mapping.INVOICE_LABEL, invoice.id)
        if invoice.project_id:
            comment = mapping.with_label(comment, mapping.PROJECT_LABEL, invoice.project_id)
        lines = []
        for i, (line, tax) in enumerate(zip(invoice.lines, tax_ids, strict=True)):
            quantity, unit_price, description = mapping.invoice_line_values(line)
            values: dict[str, Any] = {
                "type": "line",
                "sequence": i + 1,
                "company": company.company_id,
                "currency": currency,
                "description": description,
                "quantity": quantity,
                "unit_price": unit_price,
                "account": revenue,
                "taxes": [["add", [tax]]],
            }
            values.update(await self._deferral_values(client, invoice, i))
            lines.append(values)
        return {
            "type": "out",
            "company": company.company_id,
            "party": party_id,
            "invoice_address": addresses[0]["id"],
            "party_tax_identifier": party["tax_identifier"],
            "currency": currency,
            "account": party["account_receivable"] or await cat.receivable_account(client, company),
            "journal": await cat.revenue_journal(client),
            "invoice_date": invoice.issued_at.date() if invoice.issued_at else None,
            "reference": reference,
            "description": invoice.memo,
            "comment": comment,
            "lines": [["create", lines]],
        }

    async def _deferral_values(
        self, client: TrytonClient, invoice: Invoice, index: int
    ) -> dict[str, Any]:
        """A line with a revenue span is deferred over it (account_invoice_defer): it gets
        the fee product (the module defers only service lines) and the span."""
        line = invoice.lines[index]
        if line.revenue_from is None and line.revenue_to is None:
            return {}
        field = f"lines[{index}].revenue_to"
        if line.revenue_from is None or line.revenue_to is None:
            raise ValidationFailed(
                f"invoice {invoice.id} line {index + 1} has half a revenue span",
                system=SYSTEM,
                field=field if line.revenue_to is None else f"lines[{index}].revenue_from",
            )
        if line.revenue_to <= line.revenue_from:
            raise ValidationFailed(
                f"invoice {invoice.id} line {index + 1}: revenue span must end after it "
                f"starts ({line.revenue_from} to {line.revenue_to})",
                system=SYSTEM,
                field=field,
            )
        product, unit = await self._fee_product(client)
        return {
            "product": product,
            "unit": unit,
            "defer_from": line.revenue_from,
            "defer_to": line.revenue_to,
        }

    async def _fee_product(self, client: TrytonClient) -> tuple[int, int]:
        if self._fee is None:
            rows = await client.search_read(
                "product.product",
                [("template.name", "=", mapping.FEE_PRODUCT), ("type", "=", "service")],
                ["default_uom"],
                limit=1,
            )
            if not rows:
                raise ValidationFailed(
                    f"no service product {mapping.FEE_PRODUCT!r} in Tryton to defer revenue",
                    system=SYSTEM,
                    field="product",
                )
            self._fee = (int(rows[0]["id"]), int(rows[0]["default_uom"]))
        return self._fee

    async def _invoice_line_ids(self, invoice_id: int) -> list[int]:
        rows = await self.client.search_read(
            "account.invoice.line",
            [("invoice", "=", invoice_id), ("type", "=", "line")],
            ["sequence"],
            order=[("sequence", "ASC"), ("id", "ASC")],
        )
        return [int(r["id"]) for r in rows]

    async def _match_taxes(
        self, client: TrytonClient, invoice_id: int, invoice: Invoice, tax_ids: list[int]
    ) -> None:
        """Give the draft's taxes q2c's amounts, then check Tryton's total is q2c's.

        Tryton keeps a tax amount set on a draft as long as its base does not change, and
        posts it as set.
        """
        (row,) = await client.read("account.invoice", [invoice_id], ["state", "taxes"])
        if row["state"] != "draft":
            return
        expected = mapping.expected_taxes(invoice.lines, tax_ids)
        await self._set_taxes(client, row["taxes"], expected)
        (totals,) = await client.read("account.invoice", [invoice_id], ["total_amount"])
        if totals["total_amount"] != invoice.total.amount:
            raise ValidationFailed(
                f"Tryton totals invoice {invoice_id} at {totals['total_amount']} "
                f"{invoice.currency}, q2c at {invoice.total.amount}",
                system=SYSTEM,
                field="total",
                code="total_mismatch",
            )

    async def _set_taxes(
        self,
        client: TrytonClient,
        invoice_tax_ids: list[int],
        expected: Mapping[tuple[int, bool], Decimal],
    ) -> None:
        """Give a draft's computed taxes q2c's amounts, per (Tryton tax, base not negative)."""
        taxes = await client.read(
            "account.invoice.tax", invoice_tax_ids, ["tax", "base", "amount", "manual"]
        )
        for tax in taxes:
            if tax["manual"] or tax["tax"] is None:
                continue
            wanted = expected.get((int(tax["tax"]), tax["base"] >= 0))
            if wanted is not None and tax["amount"] != wanted:
                await client.write("account.invoice.tax", [tax["id"]], {"amount": wanted})

    # -- corrections ---------------------------------------------------------------------------

    async def correct_invoice(
        self,
        invoice_id: int,
        new_prices: Mapping[int, Money] | None = None,
        *,
        rebill: Mapping[int, Sequence[InvoiceLine]] | None = None,
        reason: str,
        idempotency_key: str,
    ) -> InvoiceCorrection:
        """Credit these lines of a posted invoice and re-bill them at their new unit prices.

        `new_prices` maps the invoice's line ids to the unit price each should have had.
        Or `rebill` maps each credited line id to the lines it is re-billed as: none (only
        credited), or several (a line split, as hours before and after a change order's
        effective date); each takes the credited line's account, product and taxes.
        Two posted documents come out: a credit note holding each line negated (as Tryton's
        own credit makes it: same price, taxes and account, quantity negated, the line as
        its origin) and a re-bill holding each line at its new price. The invoice itself is
        untouched (no refund, no cancellation, nothing reconciled against it): what the
        customer owes moves to the two new documents.

        Why not account_invoice_correction's `correct` wizard: it makes one draft invoice
        in which each chosen line appears twice (negated, then again at the same price, for
        a person to edit), so the credit and the re-bill are one document with one number,
        and the new prices are typed in by hand afterwards. A change order needs a credit
        note and a re-bill (as Stripe has them) with their own numbers and totals. Tryton's
        credit wizard (`account.invoice.credit`) credits every line of the invoice and
        cannot carry a key, so a retry after a crash could not find its credit note: both
        documents are made here each in one `create` (one transaction) that carries its key
        (`{idempotency_key}:credit`, `{idempotency_key}:rebill`), with the fields Tryton's
        `Invoice._credit` copies. A retry finds each by its key and only finishes what is
        left (taxes set, posted).

        Taxes are q2c's (half up, per line): the credit note's are the original lines' own
        amounts negated, so crediting every line gives back the invoice's total exactly.
        """
        if (new_prices is None) == (rebill is None):
            raise ValueError("give new_prices or rebill, not both")
        field = "new_prices" if new_prices is not None else "rebill"
        credited: dict[int, list[Money]] = (
            {i: [p] for i, p in new_prices.items()}
            if new_prices is not None
            else {i: [ln.unit_price for ln in lines] for i, lines in (rebill or {}).items()}
        )
        header = await self._correctable(invoice_id, credited, field)
        lines = await self.client.read(
            "account.invoice.line",
            sorted(credited),
            [
                "invoice",
                "type",
                "sequence",
                "description",
                "quantity",
                "unit",
                "unit_price",
                "amount",
                "product",
                "account",
                "taxes",
            ],
        )
        company = self.client.for_company(int(header["company"]))
        rates = await self._tax_rates([t for line in lines for t in line["taxes"]])
        currency = str(header["currency."]["code"])
        credit_lines: list[dict[str, Any]] = []
        rebill_lines: list[dict[str, Any]] = []
        credit_taxes: dict[tuple[int, bool], Decimal] = {}
        rebill_taxes: dict[tuple[int, bool], Decimal] = {}
        for line in sorted(lines, key=lambda ln: (ln["sequence"] or 0, ln["id"])):
            common = {
                "type": "line",
                "sequence": line["sequence"],
                "company": header["company"],
                "currency": header["currency"],
                "unit": line["unit"],
                "product": line["product"],
                "account": line["account"],
                "taxes": [["add", line["taxes"]]],
                "origin": f"account.invoice.line,{line['id']}",
            }
            old_net = Decimal(line["amount"])
            credit_lines.append(
                {
                    **common,
                    "description": line["description"],
                    "quantity": -line["quantity"],
                    "unit_price": line["unit_price"],
                }
            )
            tax_rate = sum((rates[t] for t in line["taxes"] if t in rates), Decimal(0))
            wanted = (
                [
                    InvoiceLine(
                        description=line["description"] or "-",
                        quantity=Decimal(str(line["quantity"])),
                        unit_price=new_prices[int(line["id"])],
                        tax_rate=tax_rate,
                    )
                ]
                if new_prices is not None
                else [
                    ln.model_copy(update={"tax_rate": tax_rate})
                    for ln in (rebill or {})[int(line["id"])]
                ]
            )
            for tax in line["taxes"]:
                if tax in rates:
                    old_tax = Money(amount=old_net * rates[tax], currency=currency).rounded()
                    group = (int(tax), -old_net >= 0)
                    credit_taxes[group] = credit_taxes.get(group, Decimal(0)) - old_tax.amount
            for rebilled in wanted:
                quantity, unit_price, description = mapping.invoice_line_values(rebilled)
                rebill_lines.append(
                    {
                        **common,
                        "description": description,
                        "quantity": quantity,
                        "unit_price": unit_price,
                    }
                )
                for tax in line["taxes"]:
                    if tax not in rates:
                        continue
                    new_tax = Money(amount=rebilled.net.amount * rates[tax], currency=currency)
                    group = (int(tax), rebilled.net.amount >= 0)
                    rebill_taxes[group] = (
                        rebill_taxes.get(group, Decimal(0)) + new_tax.rounded().amount
                    )
        if set(credited) == set(await self._invoice_line_ids(invoice_id)):
            # Every line credited: the credit note's taxes are the invoice's own, negated,
            # however they were rounded (Tryton rounds its own invoices half even).
            (row,) = await self.client.read("account.invoice", [invoice_id], ["taxes"])
            own = await self.client.read(
                "account.invoice.tax", row["taxes"], ["tax", "base", "amount"]
            )
            credit_taxes = {}
            for tax in own:
                if tax["tax"] is not None:
                    group = (int(tax["tax"]), -tax["base"] >= 0)
                    credit_taxes[group] = credit_taxes.get(group, Decimal(0)) - tax["amount"]

        def net(values: dict[str, Any]) -> Decimal:
            # `invoice_line_values` made each line one whose half up and half even agree.
            product = Decimal(str(values["quantity"])) * Decimal(values["unit_price"])
            return Money(amount=product, currency=currency).rounded().amount

        documents = []
        untaxed = {
            # Tryton's own amounts of the lines, negated (Tryton rounds half even: the
            # original may not be q2c's half up).
            "credit": -sum((Decimal(line["amount"]) for line in lines), Decimal(0)),
            "rebill": sum((net(v) for v in rebill_lines), Decimal(0)),
        }
        for part, part_lines, taxes in (
            ("credit", credit_lines, credit_taxes),
            ("rebill", rebill_lines, rebill_taxes),
        ):
            key = f"{idempotency_key}:{part}"
            comment = mapping.with_label(None, mapping.KEY_LABEL, key)
            comment = mapping.with_label(comment, mapping.CORRECTS_LABEL, str(invoice_id))
            project = mapping.label_value(header["comment"], mapping.PROJECT_LABEL)
            if project:
                comment = mapping.with_label(comment, mapping.PROJECT_LABEL, project)
            what = "Credit note" if part == "credit" else "Re-bill"
            values = {
                **{
                    f: header[f]
                    for f in (
                        "type",
                        "company",
                        "tax_identifier",
                        "party",
                        "party_tax_identifier",
                        "invoice_address",
                        "currency",
                        "journal",
                        "account",
                        "payment_term",
                    )
                },
                "description": f"{what} of {header['number']}: {reason}"[:250],
                "reference": header["reference"],
                "comment": comment,
                "lines": [["create", part_lines]],
            }
            document = await self._create_once(company, key, values)
            await self._post_correction(company, document, taxes)
            info = await self.get_invoice_info(document)
            if info.untaxed.amount != untaxed[part]:
                raise IdempotencyConflict(
                    f"invoice {info.number} was made under key {key!r} for {info.untaxed},"
                    " not for these prices",
                    system=SYSTEM,
                )
            documents.append(info)
        credit_note, rebill_doc = documents
        return InvoiceCorrection(invoice_id=invoice_id, credit_note=credit_note, rebill=rebill_doc)

    async def _correctable(
        self, invoice_id: int, credited: Mapping[int, Sequence[Money]], field: str
    ) -> dict[str, Any]:
        rows = await self._invoice_row(
            invoice_id,
            [
                "type",
                "state",
                "number",
                "reference",
                "comment",
                "company",
                "currency",
                "currency.code",
                "tax_identifier",
                "party",
                "party_tax_identifier",
                "invoice_address",
                "journal",
                "account",
                "payment_term",
                "lines",
            ],
        )
        if not rows:
            raise NotFound(f"no invoice {invoice_id} in Tryton", system=SYSTEM)
        header = rows[0]
        if header["type"] != "out" or header["state"] not in ("posted", "paid"):
            raise ValidationFailed(
                f"invoice {header['number'] or invoice_id} is {header['state']}: only a posted"
                " customer invoice is corrected by a credit note and a re-bill",
                system=SYSTEM,
                field="state",
                code="invoice_not_posted",
            )
        if not credited:
            raise ValidationFailed(
                f"nothing to correct on invoice {header['number']}",
                system=SYSTEM,
                field=field,
            )
        currency = str(header["currency."]["code"])
        own = set(await self._invoice_line_ids(invoice_id))
        for line_id, prices in credited.items():
            if line_id not in own:
                raise ValidationFailed(
                    f"line {line_id} is not an invoice line of {header['number']}",
                    system=SYSTEM,
                    field=f"{field}[{line_id}]",
                )
            for price in prices:
                if price.currency != currency:
                    raise ValidationFailed(
                        f"invoice {header['number']} is in {currency}; the new price of line"
                        f" {line_id} is in {price.currency}",
                        system=SYSTEM,
                        field=f"{field}[{line_id}]",
                    )
        return header

    async def _tax_rates(self, tax_ids: list[int]) -> dict[int, Decimal]:
        taxes = await self.client.read("account.tax", sorted(set(tax_ids)), ["type", "rate"])
        return {int(t["id"]): Decimal(t["rate"] or 0) for t in taxes if t["type"] == "percentage"}

    async def _create_once(self, client: TrytonClient, key: str, values: dict[str, Any]) -> int:
        """The invoice made under `key`, created now if there is none (as `create_invoice`)."""
        existing = await self.find_invoice(key)
        if existing is not None:
            return existing
        created = await client.create_one("account.invoice", values)
        winner = await self.find_invoice(key) or created
        if winner != created:
            await client.delete("account.invoice", [created])
        return winner

    async def _post_correction(
        self, client: TrytonClient, invoice_id: int, taxes: Mapping[tuple[int, bool], Decimal]
    ) -> None:
        (row,) = await client.read("account.invoice", [invoice_id], ["state", "taxes"])
        if row["state"] in ("posted", "paid"):
            return
        if row["state"] == "draft":
            await self._set_taxes(client, row["taxes"], taxes)
        # The lines keep the corrected invoice's taxes, which q2c rated: skip the warning
        # about taxes that differ from the products' defaults (q2c's Tryton module).
        await client.model(
            "account.invoice", "post", [invoice_id], context={_TAXES_RATED_CONTEXT: True}
        )

    async def delete_draft_invoice(self, invoice_id: int) -> None:
        """Delete a customer invoice that was never posted (a compensation).

        An invoice already gone counts as deleted. Time billed on its lines returns to
        unbilled: Tryton clears the timesheet lines' link when their invoice line goes. A
        posted invoice is part of the books: it is refused, it needs a credit note.
        """
        rows = await self._invoice_row(invoice_id, ["state", "number", "company"])
        if not rows:
            return
        state, number = rows[0]["state"], rows[0]["number"]
        if state in ("posted", "paid") or (state == "cancelled" and number):
            raise ValidationFailed(
                f"invoice {number or invoice_id} is {state}: it cannot be deleted",
                system=SYSTEM,
                field="state",
                code="invoice_posted",
            )
        client = self.client.for_company(int(rows[0]["company"]))
        if state == "validated":
            await client.model("account.invoice", "draft", [invoice_id])
        await client.delete("account.invoice", [invoice_id])

    async def credit_invoice(self, invoice_id: int, *, reason: str) -> int | None:
        """Take a customer invoice out of the books; returns its credit note's id, if any.

        A draft is deleted. A posted one is credited in full with Tryton's credit wizard
        "with refund": a posted credit note reconciled against it, and the invoice cancelled
        (no company setting needed, unlike cancelling a posted invoice). Repeating it finds
        the credit note made before. A paid invoice is refused: it needs a refund.
        """
        rows = await self._invoice_row(invoice_id, ["state", "number", "company"])
        if not rows:
            return None
        state, number = rows[0]["state"], rows[0]["number"]
        if state in ("draft", "validated"):
            await self.delete_draft_invoice(invoice_id)
            return None
        if state == "paid":
            raise ValidationFailed(
                f"invoice {number} is paid: it needs a refund, not a credit note",
                system=SYSTEM,
                field="state",
                code="invoice_paid",
            )
        client = self.client.for_company(int(rows[0]["company"]))
        if state == "posted":
            wizard = "wizard.account.invoice.credit"
            context = {
                "active_model": "account.invoice",
                "active_id": invoice_id,
                "active_ids": [invoice_id],
            }
            session, _, _ = await client.call(f"{wizard}.create", context=context)
            try:
                await client.call(f"{wizard}.execute", session, {}, "start", context=context)
                await client.call(
                    f"{wizard}.execute",
                    session,
                    {"start": {"with_refund": True, "with_refund_allowed": True}},
                    "credit",
                    context=context,
                )
            finally:
                await client.call(f"{wizard}.delete", session, context=context)
        (row,) = await client.read("account.invoice", [invoice_id], ["cancel_move"])
        if not row.get("cancel_move"):
            return None
        credit_ids = await client.search("account.invoice", [("move", "=", row["cancel_move"])])
        if not credit_ids:
            return None
        await client.write(
            "account.invoice",
            credit_ids[:1],
            {"comment": f"q2c: credit note cancelling {number}: {reason}"},
        )
        return int(credit_ids[0])

    async def record_payment(
        self,
        invoice_id: int,
        *,
        amount: Money,
        paid_on: date,
        reference: str,
        idempotency_key: str,
    ) -> None:
        """Record a customer's payment against a posted invoice, with Tryton's pay wizard.

        The payment is a move in the company's payment method's journal whose origin is
        the invoice and whose description carries `reference` and the key. A payment
        already recorded under the key, or an invoice already paid, is left alone. A
        partial payment leaves the rest to pay; paying more than is due is refused.
        """
        rows = await self._invoice_row(
            invoice_id, ["state", "company", "currency.code", "amount_to_pay", "party", "number"]
        )
        if not rows:
            raise NotFound(f"no invoice {invoice_id} in Tryton", system=SYSTEM)
        row = rows[0]
        if row["state"] == "paid":
            return
        if row["state"] != "posted":
            raise ValidationFailed(
                f"invoice {invoice_id} is {row['state']}: only a posted invoice can be paid",
                system=SYSTEM,
                field="state",
            )
        if amount.currency != row["currency."]["code"]:
            raise ValidationFailed(
                f"invoice {row['number']} is in {row['currency.']['code']}, "
                f"the payment in {amount.currency}",
                system=SYSTEM,
                field="currency",
            )
        if await self._payment_recorded(invoice_id, idempotency_key):
            return
        if amount.amount <= 0 or amount.amount > row["amount_to_pay"]:
            raise ValidationFailed(
                f"invoice {row['number']} has {row['amount_to_pay']} {amount.currency} to pay; "
                f"a payment of {amount.amount} does not fit",
                system=SYSTEM,
                field="amount",
            )
        cat = await self.catalog()
        company = cat.company_by_id(int(row["company"]))
        client = self.client.for_company(company.company_id)
        method = await cat.payment_method(client, company)
        description = mapping.payment_description(reference, idempotency_key)
        try:
            await self._pay(client, invoice_id, amount, paid_on, method, description)
        except ConnectorError:
            # Another attempt under the same key may have paid first (the rest to pay is
            # then too small, or the invoice already paid): that payment is this one.
            if await self._payment_recorded(invoice_id, idempotency_key):
                return
            raise

    async def _pay(
        self,
        client: TrytonClient,
        invoice_id: int,
        amount: Money,
        paid_on: date,
        method: int,
        description: str,
    ) -> None:
        """Tryton's pay wizard, as a person would run it from the invoice."""
        wizard = "wizard.account.invoice.pay"
        context = {
            "active_model": "account.invoice",
            "active_id": invoice_id,
            "active_ids": [invoice_id],
        }
        session, start, _ = await client.call(f"{wizard}.create", context=context)
        try:
            shown = await client.call(f"{wizard}.execute", session, {}, start, context=context)
            defaults = _plain(shown["view"]["defaults"])
            data: dict[str, Any] = {
                "start": {
                    **defaults,
                    "amount": amount.amount,
                    "description": description,
                    "payment_method": method,
                    "date": paid_on,
                }
            }
            answer = await client.call(
                f"{wizard}.execute", session, data, "choice", context=context
            )
            if answer.get("view"):
                # Less than what is due: the wizard asks how to treat the rest.
                data["ask"] = {**_plain(answer["view"]["defaults"]), "type": "partial"}
                await client.call(f"{wizard}.execute", session, data, "pay", context=context)
        finally:
            await client.call(f"{wizard}.delete", session, context=context)

    async def _invoice_row(self, invoice_id: int, fields: list[str]) -> list[dict[str, Any]]:
        """The invoice's fields, or nothing when there is no such invoice (`read` refuses)."""
        return await self.client.search_read("account.invoice", [("id", "=", invoice_id)], fields)

    async def _payment_recorded(self, invoice_id: int, idempotency_key: str) -> bool:
        moves = await self.client.search_read(
            "account.move",
            [
                ("origin", "=", f"account.invoice,{invoice_id}"),
                ("description", "like", mapping.like_pattern(f"[q2c-key: {idempotency_key}]")),
            ],
            ["description"],
        )
        return any(mapping.payment_key(m["description"]) == idempotency_key for m in moves)

    async def post_invoice(self, invoice_id: int) -> Invoice:
        """Post (number and book) the invoice; posting a posted or paid invoice changes nothing.

        Lines with a revenue span were deferred by posting (account_invoice_defer makes a
        draft deferral per line): their deferrals run now, so the books hold the revenue
        as deferred, and the months of the span begun by the invoice date are recognized.
        A retry runs those a failed attempt left in draft.
        """
        rows = await self.client.read(
            "account.invoice", [invoice_id], ["state", "company", "comment"]
        )
        if not rows:
            raise NotFound(f"no invoice {invoice_id} in Tryton", system=SYSTEM)
        company = self.client.for_company(int(rows[0]["company"]))
        if rows[0]["state"] in ("draft", "validated"):
            # q2c's own invoice carries the taxes q2c rated, not the products' defaults
            # (a deferred line's fee product): q2c's Tryton module skips that warning.
            mine = mapping.label_value(rows[0]["comment"], mapping.INVOICE_LABEL) is not None
            # Numbered from the sequence of the invoice's company, dated in its time zone.
            await company.model(
                "account.invoice",
                "post",
                [invoice_id],
                context={_TAXES_RATED_CONTEXT: True} if mine else None,
            )
        elif rows[0]["state"] == "cancelled":
            raise ValidationFailed(
                f"invoice {invoice_id} is cancelled", system=SYSTEM, field="state"
            )
        await self._run_deferrals(company, invoice_id)
        return await self.get_invoice(invoice_id)

    async def _run_deferrals(self, company: TrytonClient, invoice_id: int) -> None:
        drafts = await company.search(
            "account.invoice.deferred",
            [("invoice_line.invoice", "=", invoice_id), ("state", "=", "draft")],
        )
        if not drafts:
            return
        (invoice,) = await company.read("account.invoice", [invoice_id], ["invoice_date"])
        await company.model(
            "account.invoice.deferred",
            "run",
            drafts,
            context={_UP_TO_CONTEXT: invoice["invoice_date"]},
        )

    # -- revenue -------------------------------------------------------------------------------

    async def recognize_revenue(self, company_code: str, up_to: date) -> None:
        """Recognize the deferred revenue of the legal entity's months up to `up_to`.

        Runs account_invoice_defer's deferrals through q2c's Tryton module, which books
        only the months that start by `up_to` (the module alone would book every month at
        once). Idempotent: a month booked is never booked again.
        """
        cat = await self.catalog()
        if company_code not in cat.companies:
            cat = await self.catalog(refresh=True)
        company = cat.company(company_code, field="company_code")
        await self.client.for_company(company.company_id).model(
            "account.invoice.deferred", _RECOGNIZE, company.company_id, up_to
        )

    async def revenue_by_project(self, project_id: int) -> ProjectRevenue:
        """The project's revenue in the ERP, from its posted invoices: what is recognized
        and what is still deferred, in the project's company currency.

        Deferred is what the deferrals of the invoices' lines still hold on the deferred
        revenue account; recognized is the rest of the invoiced revenue (lines without a
        span were recognized when posted). Credit notes count negative.
        """
        invoice_ids = await self.invoices_of_project(project_id)
        rows = await self.client.read(
            "account.invoice", invoice_ids, ["state", "company", "currency.code", "lines"]
        )
        works = await self.client.read("project.work", [project_id], ["company"])
        if not works:
            raise NotFound(f"no project {project_id} in Tryton", system=SYSTEM)
        currency = (await self.catalog()).company_by_id(int(works[0]["company"])).currency
        posted = [r for r in rows if r["state"] in ("posted", "paid")]
        line_ids = [line for r in posted for line in r["lines"]]
        invoiced = Decimal(0)
        if line_ids:
            lines = await self.client.search_read(
                "account.invoice.line",
                [("id", "in", line_ids), ("type", "=", "line")],
                ["amount"],
            )
            invoiced = sum((Decimal(line["amount"]) for line in lines), Decimal(0))
        deferred = Decimal(0)
        if line_ids:
            deferrals = await self.client.search_read(
                "account.invoice.deferred",
                [("invoice_line", "in", line_ids)],
                ["moves", "invoice_line.account"],
            )
            for deferral in deferrals:
                if not deferral["moves"]:
                    continue  # not run yet: the books still hold it as revenue
                income = int(deferral["invoice_line."]["account"])
                move_lines = await self.client.search_read(
                    "account.move.line",
                    [("move", "in", deferral["moves"]), ("account", "!=", income)],
                    ["debit", "credit"],
                )
                deferred += sum(
                    (Decimal(m["credit"]) - Decimal(m["debit"]) for m in move_lines), Decimal(0)
                )
        return ProjectRevenue(
            recognized=Money(amount=invoiced - deferred, currency=currency),
            deferred=Money(amount=deferred, currency=currency),
        )

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

    async def get_invoice_info(self, invoice_id: int) -> ErpInvoiceInfo:
        """The invoice as Tryton totals it, with the billing reference and what is left to pay."""
        rows = await self._invoice_row(
            invoice_id,
            [
                "state",
                "number",
                "company",
                "currency.code",
                "invoice_date",
                "reference",
                "comment",
                "untaxed_amount",
                "tax_amount",
                "total_amount",
                "amount_to_pay",
                "lines_to_pay",
            ],
        )
        if not rows:
            raise NotFound(f"no invoice {invoice_id} in Tryton", system=SYSTEM)
        row = rows[0]
        currency = str(row["currency."]["code"])
        cat = await self.catalog()
        legal_entity = next(
            (c.code for c in cat.companies.values() if c.company_id == row["company"]), None
        )

        def money(value: Decimal | None) -> Money:
            return Money(amount=value or Decimal(0), currency=currency)

        return ErpInvoiceInfo(
            id=invoice_id,
            number=row["number"],
            state=row["state"],
            status=mapping.INVOICE_STATUS.get(row["state"], InvoiceStatus.DRAFT),
            legal_entity_code=legal_entity,
            reference=row["reference"] or None,
            idempotency_key=mapping.label_value(row["comment"], mapping.KEY_LABEL),
            invoice_date=row["invoice_date"],
            due_date=await self._due_date(row["lines_to_pay"]),
            untaxed=money(row["untaxed_amount"]),
            tax=money(row["tax_amount"]),
            total=money(row["total_amount"]),
            amount_to_pay=money(row["amount_to_pay"]),
            line_ids=await self._invoice_line_ids(invoice_id),
        )

    async def invoice_reference(self, invoice_id: int) -> str | None:
        """The billing system's number the invoice carries (`create_invoice`'s reference)."""
        rows = await self._invoice_row(invoice_id, ["reference"])
        if not rows:
            raise NotFound(f"no invoice {invoice_id} in Tryton", system=SYSTEM)
        return rows[0]["reference"] or None

    async def invoices_of_project(self, project_id: int) -> list[int]:
        """Customer invoices of the project, in any state: those q2c made for it (labelled
        with the project) and those billing its time (Tryton's own project invoicing)."""
        labelled = await self.client.search_read(
            "account.invoice",
            [
                ("type", "=", "out"),
                ("comment", "like", mapping.like_pattern(f"{mapping.PROJECT_LABEL} {project_id}")),
            ],
            ["comment"],
        )
        found = {
            int(r["id"])
            for r in labelled
            if mapping.label_value(r["comment"], mapping.PROJECT_LABEL) == str(project_id)
        }
        found.update(await self._invoices_billing_time(project_id))
        return sorted(found)

    async def _invoices_billing_time(self, project_id: int) -> set[int]:
        works = await self.client.search_read(
            "project.work", [("parent", "child_of", [project_id])], ["timesheet_works"]
        )
        timesheet_works = [tw for w in works for tw in w["timesheet_works"]]
        if not timesheet_works:
            return set()
        lines = await self.client.search_read(
            "timesheet.line",
            [("work", "in", timesheet_works), ("invoice_line", "!=", None)],
            ["invoice_line.invoice"],
        )
        return {int(ln["invoice_line."]["invoice"]) for ln in lines}

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


def _plain(defaults: dict[str, Any]) -> dict[str, Any]:
    """A wizard view's defaults without the display names (`field.` keys) it adds."""
    return {k: v for k, v in defaults.items() if not k.endswith(".")}
