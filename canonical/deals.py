"""From a won deal to what must exist downstream: the rules, and the plan they produce.

What a deal does not carry (which legal entity contracts, how that country is taxed, which PSA
role delivers a product) comes from configuration, loaded into `DealRules`. `plan_deal` is pure:
the same deal and rules always give the same plan, so a workflow may replay it safely.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from pydantic import Field, model_validator

from canonical._base import CanonicalModel, NonEmpty
from canonical.commercial import (
    BillingType,
    Opportunity,
    OpportunityLine,
    RateCard,
    RateCardEntry,
)
from canonical.contract import ContractVersion
from canonical.delivery import Project, Task
from canonical.money import CurrencyCode, Money
from canonical.party import Account, CountryCode, Customer, LegalEntity, PaymentTerms

__all__ = [
    "ApprovalPolicy",
    "CatalogueEntry",
    "CountryRule",
    "DealPlan",
    "DealPolicy",
    "DealRules",
    "OutagePolicy",
    "customer_id_for",
    "plan_deal",
    "project_id_for",
]

#: Tax regimes under which a customer's tax id is mandatory on the invoice.
TAX_ID_REQUIRED_PREFIXES = ("EU-VAT", "GB-VAT")


class CountryRule(CanonicalModel):
    """How deals billed to one country are contracted."""

    legal_entity: NonEmpty  # code of an entity in DealRules.legal_entities
    tax_regime: NonEmpty
    currency: CurrencyCode
    review: bool = False  # deals from here go to finance whatever their size


class CatalogueEntry(CanonicalModel):
    """Which PSA role delivers a product the CRM sells, and how it is billed."""

    role: NonEmpty
    billing_type: BillingType = BillingType.TIME_AND_MATERIALS


class ApprovalPolicy(CanonicalModel):
    """When a deal needs finance, who may decide, and how long they have."""

    #: Deal amount above which finance approves, in the deal's own currency.
    amount_threshold: Decimal = Field(default=Decimal("250000"), gt=0)
    max_discount_percent: Decimal = Field(default=Decimal("15"), ge=0, le=100)
    standard_net_days: int = Field(default=30, ge=0, le=365)
    approvers: list[NonEmpty] = Field(min_length=1)
    remind_after: timedelta = timedelta(hours=24)
    expire_after: timedelta = timedelta(days=7)

    def may_decide(self, approver: str) -> bool:
        return approver.strip().lower() in {a.lower() for a in self.approvers}


class OutagePolicy(CanonicalModel):
    """How long a run retries a system that is down before it tells people, and before it
    stops and waits for a person to decide (retry or compensate). Only a permanent refusal
    undoes work; an outage is waited out."""

    #: After this long retrying one step, the run shows what it waits on and records it.
    notice_after: timedelta = Field(default=timedelta(minutes=3), gt=timedelta(0))
    #: System name ("tryton", "stripe", "salesforce") -> how long an outage is waited out.
    deadlines: dict[str, timedelta] = Field(default_factory=dict)
    #: For a system not named in `deadlines`.
    default_deadline: timedelta = Field(default=timedelta(hours=24), gt=timedelta(0))

    def deadline(self, system: str) -> timedelta:
        return self.deadlines.get(system, self.default_deadline)


class DealRules(CanonicalModel):
    legal_entities: dict[str, LegalEntity]
    countries: dict[CountryCode, CountryRule]
    catalogue: dict[str, CatalogueEntry] = Field(default_factory=dict)  # product name -> entry
    approval: ApprovalPolicy
    default_payment_terms: PaymentTerms = PaymentTerms(net_days=30)
    #: How long a run waits for bad deal data to be corrected before it gives up.
    correction_deadline: timedelta = timedelta(days=3)
    outage: OutagePolicy = OutagePolicy()

    @model_validator(mode="after")
    def _countries_name_known_entities(self) -> DealRules:
        for country, rule in self.countries.items():
            if rule.legal_entity not in self.legal_entities:
                raise ValueError(
                    f"countries.{country}.legal_entity: unknown legal entity {rule.legal_entity!r}"
                )
        return self

    def entry_for(self, line: OpportunityLine) -> CatalogueEntry:
        """A product not in the catalogue is a role of its own name, billed by the hour."""
        found = self.catalogue.get(line.service)
        return found or CatalogueEntry(role=line.service)

    def policy(self) -> DealPolicy:
        return DealPolicy(
            approval=self.approval,
            correction_deadline=self.correction_deadline,
            outage=self.outage,
        )


class DealPolicy(CanonicalModel):
    """What a run needs to know up front: who approves, and how long people have to act."""

    approval: ApprovalPolicy
    correction_deadline: timedelta
    outage: OutagePolicy = OutagePolicy()


class DealPlan(CanonicalModel):
    """What the deal becomes downstream, or why it cannot yet."""

    #: "field: reason" lines a person must fix in the CRM; empty when the deal is usable.
    issues: list[str] = Field(default_factory=list)
    #: Why finance must approve; empty when the deal may go ahead on its own.
    risks: list[str] = Field(default_factory=list)
    customer: Customer | None = None
    project: Project | None = None
    #: The contract as sold, version 1: what invoicing bills from (None: not ready).
    contract: ContractVersion | None = None

    @property
    def ready(self) -> bool:
        return not self.issues and self.customer is not None and self.project is not None


def customer_id_for(crm: str, account_id: str) -> str:
    return f"{crm}:{account_id}"


def project_id_for(crm: str, opportunity_id: str) -> str:
    return f"{crm}:{opportunity_id}"


def plan_deal(opportunity: Opportunity, account: Account, rules: DealRules) -> DealPlan:
    """Derive, validate and assess a won deal. Every problem is reported, not just the first."""
    entries = {ln.id: rules.entry_for(ln) for ln in opportunity.lines}
    # The catalogue gives every line its role, so a CRM line without one is not a problem.
    with_roles = [ln.model_copy(update={"role": entries[ln.id].role}) for ln in opportunity.lines]
    issues = opportunity.model_copy(update={"lines": with_roles}).booking_issues(
        default_payment_terms=True
    )
    if opportunity.account_id != account.id:
        issues.append(
            f"opportunity.account_id: deal names account {opportunity.account_id}, not {account.id}"
        )

    # Legal entity, tax regime and currency come from the billing country.
    rule: CountryRule | None = None
    entity: LegalEntity | None = None
    address = account.billing_address
    if address is None:
        issues.append("account.billing_address: the account has no billing address")
    else:
        rule = rules.countries.get(address.country)
        if rule is None:
            issues.append(
                f"account.billing_address.country: no legal entity contracts with customers "
                f"in {address.country}"
            )
        else:
            entity = rules.legal_entities[rule.legal_entity]
    if rule is not None and entity is not None:
        if opportunity.currency != entity.currency:
            issues.append(
                f"opportunity.currency: the deal is in {opportunity.currency} but "
                f"{entity.name} ({entity.code}) contracts in {entity.currency}"
            )
        if rule.tax_regime.startswith(TAX_ID_REQUIRED_PREFIXES) and not account.tax_id:
            issues.append(
                f"account.tax_id: customers under {rule.tax_regime} need a tax id on the account"
            )

    # Every role sold needs one rate: the contract's rate card, else the lines' unit prices.
    rate_card, rate_issues = _rate_card(opportunity, entries)
    issues += rate_issues

    if issues or entity is None or rule is None or address is None:
        return DealPlan(issues=issues)

    terms = opportunity.payment_terms or (
        opportunity.contract_terms.payment_terms
        if opportunity.contract_terms
        else rules.default_payment_terms
    )
    customer = Customer(
        id=customer_id_for(opportunity.crm, account.id),
        name=account.name,
        legal_entity=entity.model_copy(update={"tax_regime": rule.tax_regime}),
        addresses=[address],
        tax_id=account.tax_id,
        currency=entity.currency,
        payment_terms=terms,
        contacts=account.contacts,
        external_ids={opportunity.crm: account.id},
    )
    # A task's rate overrides the rate card, so the line's price must not shadow the contract's.
    by_contract = opportunity.contract_terms is not None and (
        opportunity.contract_terms.rate_card is not None
    )
    project = Project(
        id=project_id_for(opportunity.crm, opportunity.id),
        name=opportunity.name,
        customer_id=customer.id,
        legal_entity_code=entity.code,
        currency=opportunity.currency,
        budget=opportunity.total(),
        rate_card=rate_card,
        tasks=[_task(ln, entries[ln.id], by_contract) for ln in opportunity.lines],
        billing_type=_main_billing_type(opportunity, entries),
        start_date=opportunity.close_date,
        opportunity_id=opportunity.id,
        po_number=opportunity.po_number,
        external_ids={opportunity.crm: opportunity.id},
    )
    return DealPlan(
        risks=_risks(opportunity, terms, address.country, rule, entity, rules.approval),
        customer=customer,
        project=project,
    )


def _rate_card(
    opportunity: Opportunity, entries: dict[str, CatalogueEntry]
) -> tuple[RateCard | None, list[str]]:
    contract = opportunity.contract_terms
    issues: list[str] = []
    hourly = [
        (i, ln, entries[ln.id])
        for i, ln in enumerate(opportunity.lines)
        if entries[ln.id].billing_type is BillingType.TIME_AND_MATERIALS
    ]
    if contract is not None and contract.rate_card is not None:
        card = contract.rate_card
        for i, _ln, entry in hourly:
            if entry.role not in card.roles():
                issues.append(
                    f"lines[{i}].role: the contract's rate card has no rate for {entry.role!r}"
                )
        return card, issues
    rates: dict[str, set[Money]] = defaultdict(set)
    for i, ln, entry in hourly:
        if ln.unit_rate.amount <= 0:
            issues.append(f"lines[{i}].unit_rate: no rate for role {entry.role!r}")
        else:
            rates[entry.role].add(ln.unit_rate)
    for role, found in sorted(rates.items()):
        if len(found) > 1:
            listed = ", ".join(sorted(str(m.amount) for m in found))
            issues.append(f"lines.unit_rate: role {role!r} is sold at different rates ({listed})")
    if issues or not rates:
        return None, issues
    card = RateCard(
        currency=opportunity.currency,
        entries=[
            RateCardEntry(role=role, rate=next(iter(found)), effective_from=opportunity.close_date)
            for role, found in sorted(rates.items())
        ],
    )
    return card, issues


def _task(line: OpportunityLine, entry: CatalogueEntry, by_contract: bool) -> Task:
    hourly = entry.billing_type is BillingType.TIME_AND_MATERIALS
    return Task(
        name=line.description or line.service,
        role=entry.role,
        planned_hours=line.quantity if hourly else None,
        rate=line.unit_rate if hourly and not by_contract else None,
    )


def _main_billing_type(opportunity: Opportunity, entries: dict[str, CatalogueEntry]) -> BillingType:
    """The billing type carrying most of the deal's value."""
    weight: dict[BillingType, Decimal] = defaultdict(Decimal)
    for ln in opportunity.lines:
        weight[entries[ln.id].billing_type] += ln.amount.amount
    return max(sorted(weight), key=lambda bt: weight[bt])


def _risks(
    opportunity: Opportunity,
    terms: PaymentTerms,
    country: str,
    rule: CountryRule,
    entity: LegalEntity,
    policy: ApprovalPolicy,
) -> list[str]:
    risks: list[str] = []
    total = opportunity.total()
    if total.amount > policy.amount_threshold:
        risks.append(
            f"amount {total.amount:,.2f} {total.currency} exceeds the approval threshold "
            f"{policy.amount_threshold:,.2f} {total.currency}"
        )
    for i, ln in enumerate(opportunity.lines):
        if ln.discount_percent > policy.max_discount_percent:
            risks.append(
                f"lines[{i}] discount {ln.discount_percent}% exceeds the "
                f"{policy.max_discount_percent}% limit"
            )
    if terms.net_days > policy.standard_net_days:
        risks.append(
            f"payment terms net {terms.net_days} days exceed the standard "
            f"{policy.standard_net_days} days"
        )
    if rule.review:
        risks.append(
            f"deals billed to {country} through {entity.code} under {rule.tax_regime} need review"
        )
    return risks
