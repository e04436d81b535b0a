"""What a bootstrap made: the ids q2c knows its Tryton records by, kept in a marker."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class CompanyResult:
    """One legal entity as a Tryton company, with its own ledger and people."""

    company_id: int
    party_id: int
    currency: str
    employee_ids: dict[str, int]
    revenue_account_id: int
    expense_account_id: int
    receivable_account_id: int
    payable_account_id: int
    tax_account_id: int
    cash_account_id: int
    payment_method_id: int
    fiscal_year_ids: dict[int, int] = field(default_factory=dict)
    #: Customer taxes by rate (`"0.20"`).
    tax_ids: dict[str, int] = field(default_factory=dict)
    #: Where deferred revenue waits until recognized (account_invoice_defer).
    deferred_revenue_account_id: int = 0
    #: The payment journal approved expenses are reimbursed through (project_disbursement).
    reimbursement_journal_id: int = 0
    #: Employee name -> hourly cost (timesheet_cost), as a string (`"85"`).
    employee_costs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BootstrapResult:
    """The records q2c relies on, by the names it knows them by."""

    #: Legal entity code -> its company, in the order of the legal entities file.
    companies: dict[str, CompanyResult]
    currency_ids: dict[str, int]
    product_ids: dict[str, int]
    payment_term_ids: dict[str, int]
    hour_uom_id: int
    bank_journal_id: int
    #: Expense category -> its expense product (not salable).
    expense_product_ids: dict[str, int] = field(default_factory=dict)
    #: The service product of deferred fixed-fee lines (not salable).
    fee_product_id: int = 0
    #: The settings files the database was set up from (a changed file re-runs it).
    inputs_sha256: str = ""

    @property
    def company_ids(self) -> dict[str, int]:
        return {code: c.company_id for code, c in self.companies.items()}

    def company(self, code: str) -> CompanyResult:
        return self.companies[code]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BootstrapResult:
        data = json.loads(text)
        companies = {
            code: CompanyResult(
                **{
                    **values,
                    "fiscal_year_ids": {int(k): v for k, v in values["fiscal_year_ids"].items()},
                }
            )
            for code, values in data.pop("companies").items()
        }
        return cls(companies=companies, **data)
