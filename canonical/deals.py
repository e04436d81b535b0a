"""From a won deal to what must exist downstream: the rules, and the plan they produce.

What a deal does not carry (which legal entity contracts, how that country is taxed, which PSA
role delivers a product) comes from configuration, loaded into `DealRules`. `plan_deal` is pure:
the same deal and rules always give the same plan, so a workflow may replay it safely.

Decisions worth knowing:

- A line is billed the way it was sold: its own billing type, else the catalogue's for its
  product. The plan's `contract` (version 1) carries that per line, and each task carries its
  line's type; `Project.billing_type` is only a summary for people (the type carrying most of
  the value) and decides nothing.
- A time-and-materials line bills its hours at the line's unit price, or at the deal's
  negotiated rate card for its role on the close date when the deal has one. A discount is in
  the line's value (the budget), not in its rate.
- The rules of a billable contract (a milestone on a milestone line, milestones adding up to
  their line, instalments needing a term...) are `ContractVersion.problems`, asked of the
  contract before it is made: the deal's issues name the contract's fields.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from pydantic import Field, model_validator

from canonical._base import CanonicalModel, NonEmpty
from canonical.commercial import (
    BillingType,
    ExpensePolicy,
    FeeRemainder,
    Opportunity,
    OpportunityLine,
    RateCard,
    RateCardEntry,
)
from canonical.contract import ContractLine, ContractMilestone, ContractVersion, FeeSchedule
from canonical.delivery import Project, Task
from canonical.errors import NoRate
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
    #: The firm's expense policy for deals that state none: nothing is passed on unless the
    #: firm configures the categories its customers pay for.
    expense_policy: ExpensePolicy = ExpensePolicy()

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

    def billing_type_for(self, line: OpportunityLine) -> BillingType:
        """How a line is billed: as it was sold, else as the catalogue sells its product."""
        return line.billing_type or self.entry_for(line).billing_type

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
    #: The contract as sold (version 1, effective from the close date), as q2c provisions it.
    #: `plan_deal` sets it with the project; a plan recorded before contracts has none, and
    #: `ready` does not ask for it, so runs in flight replay as they ran.
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
    kinds = {ln.id: rules.billing_type_for(ln) for ln in opportunity.lines}
    # The catalogue gives every line its role, so a CRM line without one is not a problem.
    resolved = [
        ln.model_copy(update={"role": entries[ln.id].role, "billing_type": kinds[ln.id]})
        for ln in opportunity.lines
    ]
    issues = opportunity.model_copy(update={"lines": resolved}).booking_issues(
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

    # Every role sold by the hour needs one rate: the deal's rate card, else the lines' prices.
    rate_card, rate_issues = _rate_card(opportunity, resolved)
    issues += rate_issues

    terms = opportunity.payment_terms or rules.default_payment_terms
    sold, contract_issues = _contract(opportunity, resolved, terms, rules)
    issues += contract_issues

    if issues or sold is None or entity is None or rule is None or address is None:
        return DealPlan(issues=issues)

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
    project = Project(
        id=project_id_for(opportunity.crm, opportunity.id),
        name=opportunity.name,
        customer_id=customer.id,
        legal_entity_code=entity.code,
        currency=opportunity.currency,
        budget=opportunity.total(),
        rate_card=rate_card,
        tasks=[_task(ln, sold.lines[i], opportunity.rate_card) for i, ln in enumerate(resolved)],
        billing_type=_main_billing_type(resolved),
        start_date=opportunity.close_date,
        end_date=opportunity.end_date,
        opportunity_id=opportunity.id,
        po_number=opportunity.po_number,
        external_ids={opportunity.crm: opportunity.id},
    )
    contract = ContractVersion.model_validate(sold.model_dump() | {"contract_id": project.id})
    return DealPlan(
        risks=_risks(opportunity, terms, address.country, rule, entity, rules.approval),
        customer=customer,
        project=project,
        contract=contract,
    )


def _contract(
    opportunity: Opportunity,
    lines: list[OpportunityLine],
    terms: PaymentTerms,
    rules: DealRules,
) -> tuple[ContractVersion | None, list[str]]:
    """The contract as sold, unvalidated, and why it cannot be billed (`problems`).

    ``lines`` carry their resolved role and billing type. The version returned is made with
    `model_construct`: the caller validates it once its issues are empty.
    """
    issues: list[str] = []
    milestones: list[ContractMilestone] = []
    for i, m in enumerate(opportunity.milestones):
        if m.line_id is None:
            issues.append(f"milestones[{i}].line_id: milestone {m.name!r} names no line")
            continue
        milestones.append(
            ContractMilestone.model_construct(
                id=m.id, name=m.name, amount=m.amount, line_id=m.line_id, planned_date=m.due_date
            )
        )
    contract_lines: list[ContractLine] = []
    for i, ln in enumerate(lines):
        rate = _line_rate(i, ln, opportunity, issues)
        kind = ln.billing_type or BillingType.TIME_AND_MATERIALS
        hourly = kind is BillingType.TIME_AND_MATERIALS
        scheduled = kind is BillingType.FIXED_FEE or ln.fee_remainder or ln.instalments
        schedule = (
            FeeSchedule.model_construct(
                upfront_percent=(
                    opportunity.upfront_percent if kind is BillingType.FIXED_FEE else Decimal(0)
                ),
                remainder=ln.fee_remainder
                or (FeeRemainder.INSTALMENTS if ln.instalments else FeeRemainder.ON_COMPLETION),
                instalments=ln.instalments,
            )
            if scheduled
            else None
        )
        contract_lines.append(
            ContractLine.model_construct(
                id=ln.id,
                task=ln.description or ln.service,
                task_id=None,
                role=ln.role,
                billing_type=kind,
                rate=rate if hourly else None,
                hours=ln.quantity if hourly else None,
                amount=ln.amount,
                schedule=schedule,
                not_to_exceed=ln.not_to_exceed,
            )
        )
    version = ContractVersion.model_construct(
        contract_id=project_id_for(opportunity.crm, opportunity.id),
        version=1,
        effective_from=opportunity.close_date,
        source=f"opportunity:{opportunity.id}",
        currency=opportunity.currency,
        start_date=opportunity.close_date,
        end_date=opportunity.end_date,
        lines=contract_lines,
        milestones=milestones,
        not_to_exceed=opportunity.not_to_exceed,
        expense_policy=opportunity.expense_policy or rules.expense_policy,
        payment_terms=terms,
        value=opportunity.total(),
        po_number=opportunity.po_number,
    )
    issues += version.problems()
    return (version if contract_lines else None), issues


def _line_rate(
    index: int, line: OpportunityLine, opportunity: Opportunity, issues: list[str]
) -> Money:
    """What an hour of a time-and-materials line costs: the deal's rate card for its role on
    the close date, else the line's unit price."""
    card = opportunity.rate_card
    if card is None or line.billing_type is not BillingType.TIME_AND_MATERIALS:
        return line.unit_rate
    try:
        return card.rate_for(line.role or line.service, opportunity.close_date)
    except NoRate:
        if (line.role or line.service) in card.roles():  # else `_rate_card` said so already
            issues.append(
                f"lines[{index}].role: the deal's rate card has no rate for {line.role!r} "
                f"on the close date {opportunity.close_date.isoformat()}"
            )
        return line.unit_rate


def _rate_card(
    opportunity: Opportunity, lines: list[OpportunityLine]
) -> tuple[RateCard | None, list[str]]:
    """The PSA's rate card: the deal's own, else one rate per role from the hourly lines."""
    issues: list[str] = []
    hourly = [
        (i, ln, ln.role or ln.service)
        for i, ln in enumerate(lines)
        if ln.billing_type is BillingType.TIME_AND_MATERIALS
    ]
    if opportunity.rate_card is not None:
        card = opportunity.rate_card
        for i, _ln, role in hourly:
            if role not in card.roles():
                issues.append(f"lines[{i}].role: the deal's rate card has no rate for {role!r}")
        return card, issues
    rates: dict[str, set[Money]] = defaultdict(set)
    for i, ln, role in hourly:
        if ln.unit_rate.amount <= 0:
            issues.append(f"lines[{i}].unit_rate: no rate for role {role!r}")
        else:
            rates[role].add(ln.unit_rate)
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


def _task(line: OpportunityLine, sold: ContractLine, deal_card: RateCard | None) -> Task:
    """The PSA task delivering a line; its own rate unless the deal's rate card prices it."""
    hourly = sold.billing_type is BillingType.TIME_AND_MATERIALS
    return Task(
        name=sold.task,
        role=sold.role,
        planned_hours=line.quantity if hourly else None,
        rate=line.unit_rate if hourly and deal_card is None else None,
        billing_type=sold.billing_type,
    )


def _main_billing_type(lines: list[OpportunityLine]) -> BillingType:
    """The billing type carrying most of the deal's value: a summary for people only."""
    weight: dict[BillingType, Decimal] = defaultdict(Decimal)
    for ln in lines:
        weight[ln.billing_type or BillingType.TIME_AND_MATERIALS] += ln.amount.amount
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
