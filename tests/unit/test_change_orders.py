"""Change orders against the contract: validated naming fields, applied as the next version,
previewed with every downstream change before and after under a stable digest, the risks
that need finance, and the inverse that gives the original terms back."""

import hashlib
import random
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from canonical import (
    BillingContract,
    BillingPeriod,
    BillingType,
    ChangeAction,
    ChangeOrder,
    ChangePolicy,
    Contract,
    ContractLine,
    ContractMilestone,
    ContractVersion,
    FeeRemainder,
    FeeSchedule,
    ImpactPreview,
    InvalidChange,
    IssuedInvoice,
    ItemKind,
    LineChange,
    MilestoneChange,
    Money,
    PaymentTerms,
    PendingDraft,
    PsaProject,
    Task,
    TaskProgress,
    TimeEntry,
    apply_change,
    billed_so_far,
    canonical_json,
    change_problems,
    change_risks,
    contract_terms,
    invert_change,
    item_key,
    preview_change,
    rate_period,
    rate_upfront,
)

PROJECT = "P1"
START = date(2026, 10, 1)
END = date(2027, 6, 30)
NOV = BillingPeriod(year=2026, month=11)
DEC = BillingPeriod(year=2026, month=12)
JAN = BillingPeriod(year=2027, month=1)
POLICY = ChangePolicy(approvers=["finance@example.com"])


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def hourly(ident: str, task: str, task_id: str, rate: str, hours: str) -> ContractLine:
    return ContractLine(
        id=ident,
        task=task,
        task_id=task_id,
        role="Consultant",
        billing_type=BillingType.TIME_AND_MATERIALS,
        rate=usd(rate),
        hours=Decimal(hours),
        amount=usd(str(Decimal(rate) * Decimal(hours))),
    )


def version1(**over: Any) -> ContractVersion:
    """Hourly Development and Project Management; Training a fixed fee, 20 % up front and
    the rest on completion; Rollout a fee in monthly instalments over the term; Go-live a
    milestone line of Cut-over and Hypercare."""
    values: dict[str, Any] = {
        "contract_id": "salesforce:006A",
        "version": 1,
        "effective_from": START,
        "source": "opportunity:006A",
        "currency": "USD",
        "start_date": START,
        "end_date": END,
        "lines": [
            hourly("L1", "Development", "T1", "165", "100"),
            hourly("L2", "Project Management", "T2", "150", "20"),
            ContractLine(
                id="L3",
                task="Training",
                task_id="T3",
                billing_type=BillingType.FIXED_FEE,
                amount=usd("6000"),
                schedule=FeeSchedule(upfront_percent=Decimal(20)),
            ),
            ContractLine(
                id="L4",
                task="Rollout",
                task_id="T4",
                billing_type=BillingType.FIXED_FEE,
                amount=usd("2700"),
                schedule=FeeSchedule(remainder=FeeRemainder.INSTALMENTS),
            ),
            ContractLine(
                id="L5",
                task="Go-live",
                task_id="T5",
                billing_type=BillingType.MILESTONE,
                amount=usd("5000"),
            ),
        ],
        "milestones": [
            ContractMilestone(id="M1", name="Cut-over", amount=usd("3000"), line_id="L5"),
            ContractMilestone(
                id="M2",
                name="Hypercare",
                amount=usd("2000"),
                line_id="L5",
                planned_date=date(2027, 3, 1),
            ),
        ],
        "payment_terms": PaymentTerms(net_days=30),
        "value": usd("32700"),
    }
    return ContractVersion.model_validate(values | over)


def billing(*versions: ContractVersion, **done: date) -> BillingContract:
    names = {"T1": "Development", "T2": "Project Management", "T3": "Training"}
    names |= {"T4": "Rollout", "T5": "Go-live"}
    return BillingContract(
        project_id=PROJECT,
        customer_id="salesforce:001A",
        customer_name="Globex",
        currency="USD",
        contract=Contract(versions=list(versions) or [version1()]),
        tasks=[TaskProgress(id=i, name=n, done_on=done.get(i)) for i, n in names.items()],
        tax_rate=Decimal("0.20"),
        payment_terms=PaymentTerms(net_days=30),
        legal_entity_code="US01",
    )


def psa() -> PsaProject:
    def task(ident: str, name: str, kind: BillingType, **over: Any) -> Task:
        return Task(id=ident, name=name, billing_type=kind, **over)

    hourly_ = BillingType.TIME_AND_MATERIALS
    return PsaProject(
        budget=usd("32700"),
        tasks=[
            task("T1", "Development", hourly_, rate=usd("165"), planned_hours=Decimal(100)),
            task("T2", "Project Management", hourly_, rate=usd("150"), planned_hours=Decimal(20)),
            task("T3", "Training", BillingType.FIXED_FEE),
            task("T4", "Rollout", BillingType.FIXED_FEE),
            task("T5", "Go-live", BillingType.MILESTONE),
        ],
    )


def change(**over: Any) -> ChangeOrder:
    values: dict[str, Any] = {
        "id": "a0X1",
        "crm": "salesforce",
        "opportunity_id": "006A",
        "name": "CO-1",
        "status": "approved",
        "currency": "USD",
        "effective_date": JAN.start,
        "amount_delta": usd("0"),
    }
    return ChangeOrder.model_validate(values | over)


def repriced(line_id: str = "L1", **fields: Any) -> LineChange:
    return LineChange(action=ChangeAction.CHANGE, line_id=line_id, **fields)


def entry(ident: str, day: date, hours: str, task: str = "T1", **over: Any) -> TimeEntry:
    values: dict[str, Any] = {
        "id": ident,
        "project_id": PROJECT,
        "task_id": task,
        "employee": "ada",
        "role": "Consultant",
        "work_date": day,
        "hours": hours,
        "approved": True,
    }
    return TimeEntry.model_validate(values | over)


def issued(
    number: str,
    period: BillingPeriod,
    *entries: TimeEntry,
    earlier: tuple[IssuedInvoice, ...] = (),
    **over: Any,
) -> IssuedInvoice:
    """An issued invoice of ``entries``, rated as it was after ``earlier`` (and its entries
    now marked billed)."""
    contract = billing().model_copy(update={"billed": billed_so_far(i.rated for i in earlier)})
    rated = rate_period(contract, period, entries)
    marked = [e.model_copy(update={"billed": True}) for e in entries]
    return IssuedInvoice(number=number, rated=rated, entries=marked, **over)


def upfront_invoice() -> IssuedInvoice:
    return IssuedInvoice(number="INV-0", rated=rate_upfront(billing(), on=START))


def lines_of(preview: ImpactPreview) -> list[str]:
    return preview.render()


def term(preview: ImpactPreview, subject: str, field: str) -> tuple[str | None, str | None]:
    found = [
        (c.before, c.after) for c in preview.contract if (c.subject, c.field) == (subject, field)
    ]
    assert len(found) == 1, (subject, field, preview.contract)
    return found[0]


# -- applying: the next version ------------------------------------------------------------------


def test_applying_makes_the_next_version_from_the_change_orders_date_and_source() -> None:
    contract = Contract(versions=[version1()])
    co = change(lines=[repriced(rate=usd("180"))], amount_delta=usd("1500"))
    after = apply_change(contract, co)
    assert (after.version, after.effective_from) == (2, JAN.start)
    assert after.source == "change-order:salesforce:a0X1"
    dev = after.line("L1")
    assert dev is not None and dev.rate == usd("180") and dev.amount == usd("18000")
    assert dev.task_id == "T1"  # the PSA task stays the same
    assert after.value == usd("34200")
    assert after.lines[1:] == version1().lines[1:]
    assert apply_change(contract, co) == after  # deterministic
    Contract(versions=[version1(), after])  # a valid successor


def test_the_order_changes_are_listed_in_does_not_change_the_version() -> None:
    adds = [
        LineChange(
            action=ChangeAction.ADD,
            line_id=f"L{n}",
            task=f"Task {n}",
            billing_type=BillingType.TIME_AND_MATERIALS,
            rate=usd("100"),
        )
        for n in (7, 6, 8)
    ]
    contract = Contract(versions=[version1()])
    one = apply_change(contract, change(lines=adds))
    other = apply_change(contract, change(lines=list(reversed(adds))))
    assert one == other
    assert [ln.id for ln in one.lines][-3:] == ["L6", "L7", "L8"]


# -- validation ----------------------------------------------------------------------------------


def test_problems_name_the_change_orders_fields() -> None:
    contract = Contract(versions=[version1()])
    co = change(
        lines=[
            repriced(rate=usd("170")),
            repriced("L9", rate=usd("1")),
            LineChange(action=ChangeAction.ADD, line_id="L2", task="PM"),
            LineChange(action=ChangeAction.ADD, line_id="L6", billing_type="fixed_fee"),
        ],
        milestones=[MilestoneChange(action=ChangeAction.REMOVE, milestone_id="M7")],
    )
    assert change_problems(co, contract) == [
        "lines[1].line_id: no line 'L9' in the contract",
        "lines[2].line_id: line 'L2' is already in the contract",
        "lines[2].billing_type: an added line needs its billing type",
        "lines[3].task: an added line needs its task",
        "lines[3].amount: an added fixed_fee line needs an amount",
        "milestones[0].milestone_id: no milestone 'M7' in the contract",
    ]
    with pytest.raises(InvalidChange) as raised:
        apply_change(contract, co)
    assert raised.value.problems == change_problems(co, contract)


def test_a_change_order_in_another_currency_cannot_apply() -> None:
    co = change(currency="EUR", amount_delta=Money.of("10", "EUR"))
    assert change_problems(co, Contract(versions=[version1()])) == [
        "currency: the change order is in EUR, the contract in USD"
    ]


def test_broken_milestone_arithmetic_names_the_contracts_field() -> None:
    co = change(
        milestones=[
            MilestoneChange(action=ChangeAction.CHANGE, milestone_id="M1", amount=usd("3500"))
        ]
    )
    assert change_problems(co, Contract(versions=[version1()])) == [
        "contract.lines[4].milestones: milestones of line L5 add up to 5500.00, not the "
        "line's 5000 USD"
    ]
    removed = change(lines=[LineChange(action=ChangeAction.REMOVE, line_id="L5")])
    assert change_problems(removed, Contract(versions=[version1()])) == [
        "contract.milestones[0].line_id: no line 'L5' in the contract",
        "contract.milestones[1].line_id: no line 'L5' in the contract",
    ]


def test_an_effective_date_before_the_current_version_is_refused() -> None:
    v2 = apply_change(Contract(versions=[version1()]), change(lines=[repriced(rate=usd("170"))]))
    co = change(id="a0X2", effective_date=date(2026, 12, 31))
    assert change_problems(co, Contract(versions=[version1(), v2])) == [
        "effective_date: 2026-12-31 is before version 2 of the contract, in force from 2027-01-01"
    ]


def test_reaching_into_an_invoiced_period_needs_the_retroactive_flag() -> None:
    dec = issued("INV-2", DEC, entry("d1", date(2026, 12, 10), "4"))
    co = change(effective_date=date(2026, 12, 16), lines=[repriced(rate=usd("180"))])
    contract = Contract(versions=[version1()])
    assert change_problems(co, contract, issued=[dec.rated]) == [
        "effective_date: 2026-12-16 is in a period already invoiced (through 2026-12-31); "
        "only a retroactive change may reach back"
    ]
    assert (
        change_problems(co.model_copy(update={"retroactive": True}), contract, issued=[dec.rated])
        == []
    )


def test_a_cap_below_what_was_billed_is_refused() -> None:
    nov = issued("INV-1", NOV, entry("n1", date(2026, 11, 3), "10"))  # 1650.00 billed
    co = change(lines=[repriced(not_to_exceed=usd("1000"))])
    assert change_problems(co, Contract(versions=[version1()]), issued=[nov.rated]) == [
        "contract.lines[0].not_to_exceed: the cap 1000.00 USD on line L1 is below the "
        "1650.00 USD already billed on it"
    ]


def test_a_change_effective_after_the_contract_ends_is_refused() -> None:
    co = change(effective_date=date(2027, 7, 1))
    assert change_problems(co, Contract(versions=[version1()])) == [
        "effective_date: 2027-07-01 is after the contract's end date 2027-06-30"
    ]


# -- the preview of each kind of change ----------------------------------------------------------


def test_a_rate_increase_next_month_reaches_the_contract_the_psa_and_the_draft() -> None:
    co = change(lines=[repriced(rate=usd("180"))], amount_delta=usd("1500"))
    dec_draft = PendingDraft(
        draft_id="draft-dec",
        rated=rate_period(billing(), DEC, [entry("d1", date(2026, 12, 10), "4")]),
        entries=[entry("d1", date(2026, 12, 10), "4")],
    )
    jan_entries = [entry("j1", date(2027, 1, 5), "10"), entry("j2", date(2027, 1, 6), "2", "T2")]
    jan_draft = PendingDraft(
        draft_id="draft-jan", rated=rate_period(billing(), JAN, jan_entries), entries=jan_entries
    )
    preview = preview_change(co, billing(), psa=psa(), drafts=[jan_draft, dec_draft])

    assert term(preview, "Development", "rate") == ("165.00", "180.00")
    assert term(preview, "Development", "amount") == ("16500.00", "18000.00")
    assert term(preview, "Contract", "value") == ("32700.00", "34200.00")
    assert "Development rate: 165.00 → 180.00 USD from 2027-01-01" in preview.render()
    [task] = preview.tasks
    assert (task.action, task.task_id) == ("change", "T1")
    assert [(c.field, c.before, c.after) for c in task.changes] == [("rate", "165.00", "180.00")]
    assert preview.psa_budget is None  # the budget did not move
    assert preview.billing_plan == []
    # December is before the change; January's 10 h of Development go from 165 to 180
    # (the draft also holds 2 h of management and four Rollout instalments caught up).
    [draft] = preview.drafts
    assert draft.draft_id == "draft-jan"
    assert (draft.subtotal_before, draft.subtotal_after) == (usd("3150.00"), usd("3300.00"))
    assert (draft.total_before, draft.total_after) == (usd("3780.00"), usd("3960.00"))
    assert preview.corrections == [] and preview.notes == []
    assert change_risks(preview, POLICY) == []


def test_a_budget_increase_over_the_threshold_needs_finance() -> None:
    preview = preview_change(change(budget_delta=usd("25000")), billing(), psa=psa())
    assert (preview.budget_before, preview.budget_after) == (usd("32700"), usd("57700"))
    assert term(preview, "Contract", "budget") == ("32700.00", "57700.00")
    assert preview.psa_budget is not None
    assert (preview.psa_budget.before, preview.psa_budget.after) == (usd("32700"), usd("57700"))
    assert preview.after.value == usd("32700") and preview.after.budget == usd("57700")
    assert change_risks(preview, POLICY) == [
        "budget: up 25000.00 USD, over the 10000 USD finance approves"
    ]
    small = preview_change(change(budget_delta=usd("10000")), billing(), psa=psa())
    assert change_risks(small, POLICY) == []
    strict = ChangePolicy(approvers=["f@example.com"], thresholds={"USD": Decimal("5000")})
    assert len(change_risks(small, strict)) == 1


def test_a_line_added_creates_its_psa_task() -> None:
    add = LineChange(
        action=ChangeAction.ADD,
        line_id="L6",
        task="QA",
        role="Tester",
        billing_type=BillingType.TIME_AND_MATERIALS,
        rate=usd("120"),
        hours=Decimal(50),
    )
    preview = preview_change(change(lines=[add], amount_delta=usd("6000")), billing(), psa=psa())
    assert term(preview, "QA", "line") == (None, "time_and_materials")
    assert term(preview, "QA", "rate") == (None, "120.00")
    assert term(preview, "QA", "amount") == (None, "6000.00")
    [task] = preview.tasks
    assert (task.action, task.task_id, task.name, task.line_id) == ("add", None, "QA", "L6")
    assert ("rate", None, "120.00") in [(c.field, c.before, c.after) for c in task.changes]
    assert "PSA task QA: created" in preview.render()


def test_a_line_removed_closes_its_psa_task() -> None:
    remove = LineChange(action=ChangeAction.REMOVE, line_id="L2")
    preview = preview_change(
        change(lines=[remove], amount_delta=usd("-3000")), billing(), psa=psa()
    )
    assert term(preview, "Project Management", "line") == ("time_and_materials", None)
    assert term(preview, "Contract", "value") == ("32700.00", "29700.00")
    [task] = preview.tasks
    assert (task.action, task.task_id) == ("close", "T2")
    assert "PSA task Project Management: closed from 2027-01-01" in preview.render()
    assert preview.after.line("L2") is None


def test_undoing_a_removal_reopens_the_psa_task() -> None:
    v1 = version1()
    remove = change(lines=[LineChange(action=ChangeAction.REMOVE, line_id="L2")])
    v2 = apply_change(Contract(versions=[v1]), remove)
    undo = invert_change(v1, remove)
    [back] = undo.lines
    assert (back.action, back.line_id, back.task_id, back.rate) == (
        ChangeAction.ADD,
        "L2",
        "T2",
        usd("150"),
    )
    preview = preview_change(undo, billing(v1, v2), psa=psa())
    [task] = preview.tasks
    assert (task.action, task.task_id, task.changes) == ("reopen", "T2", [])
    assert "PSA task Project Management: reopened from 2027-01-01" in preview.render()


def test_milestones_added_removed_and_changed_reach_the_billing_plan() -> None:
    co = change(
        lines=[repriced("L5", amount=usd("4500"))],
        milestones=[
            MilestoneChange(action=ChangeAction.CHANGE, milestone_id="M1", amount=usd("2500")),
            MilestoneChange(action=ChangeAction.REMOVE, milestone_id="M2"),
            MilestoneChange(
                action=ChangeAction.ADD,
                milestone_id="M3",
                line_id="L5",
                name="Sign-off",
                amount=usd("2000"),
                planned_date=date(2027, 5, 1),
            ),
        ],
        amount_delta=usd("-500"),
    )
    preview = preview_change(co, billing(), psa=psa())
    assert term(preview, "Milestone Cut-over", "amount") == ("3000.00", "2500.00")
    assert term(preview, "Milestone Hypercare", "name") == ("Hypercare", None)
    assert term(preview, "Milestone Sign-off", "planned date") == (None, "2027-05-01")
    assert term(preview, "Go-live", "amount") == ("5000.00", "4500.00")
    plan = {c.key: (c.before, c.after) for c in preview.billing_plan}
    assert plan == {
        "milestone:M1": ("3000.00", "2500.00"),
        "milestone:M2": ("2000.00", None),
        "milestone:M3": (None, "2000.00"),
    }
    assert preview.removed_invoiced_milestones == []
    assert change_risks(preview, POLICY) == []


def test_removing_a_milestone_already_invoiced_needs_finance() -> None:
    done = billing(T5=date(2026, 11, 20))
    nov = IssuedInvoice(number="INV-1", rated=rate_period(done, NOV, []))
    assert item_key(ItemKind.MILESTONE, "M2") in billed_so_far([nov.rated]).items
    co = change(
        lines=[repriced("L5", amount=usd("3000"))],
        milestones=[MilestoneChange(action=ChangeAction.REMOVE, milestone_id="M2")],
        amount_delta=usd("-2000"),
    )
    preview = preview_change(co, done, psa=psa(), issued=[nov])
    assert preview.removed_invoiced_milestones == ["M2"]
    assert "milestones: M2 is removed but was already invoiced" in change_risks(preview, POLICY)
    # Done in November, it was billed under version 1 and stays so: nothing to bill or unbill.
    assert preview.billing_plan == [] and preview.notes == []


def test_a_fee_re_priced_moves_what_is_still_to_bill() -> None:
    co = change(lines=[repriced("L3", amount=usd("7500"))], amount_delta=usd("1500"))
    preview = preview_change(co, billing(), psa=psa())
    assert term(preview, "Training", "amount") == ("6000.00", "7500.00")
    plan = {c.key: (c.before, c.after) for c in preview.billing_plan}
    assert plan == {
        "upfront:L3": ("1200.00", "1500.00"),
        "completion:L3": ("4800.00", "6000.00"),
    }
    # With the upfront share invoiced at provisioning, only the completion share moves.
    after_upfront = preview_change(co, billing(), psa=psa(), issued=[upfront_invoice()])
    assert {c.key for c in after_upfront.billing_plan} == {"completion:L3"}
    assert after_upfront.notes == [
        "Training fee up front was already invoiced at 1200.00 USD; it is not billed again"
    ]


def test_a_fee_schedule_changed_is_shown_before_and_after() -> None:
    schedule = FeeSchedule(
        upfront_percent=Decimal(0), remainder=FeeRemainder.INSTALMENTS, instalments=3
    )
    preview = preview_change(change(lines=[repriced("L3", schedule=schedule)]), billing())
    assert term(preview, "Training", "fee schedule") == (
        "20 % up front, rest on_completion",
        "0 % up front, rest instalments (3)",
    )


def test_an_end_date_moved_respreads_instalments_due_from_the_change() -> None:
    co = change(new_end_date=date(2027, 9, 30))
    preview = preview_change(co, billing(), psa=psa())
    assert term(preview, "Contract", "end date") == ("2027-06-30", "2027-09-30")
    plan = {c.key: (c.before, c.after) for c in preview.billing_plan}
    # 2700 over 9 months is 300 a month; over 12 months, 225: instalments due from January
    # are billed under the new version, those due before it under the old one.
    assert plan["instalment:L4:4"] == ("300.00", "225.00")
    assert plan["instalment:L4:9"] == ("300.00", "225.00")
    assert plan["instalment:L4:12"] == (None, "225.00")
    assert "instalment:L4:3" not in plan
    assert len(plan) == 9


def test_a_retroactive_rate_change_credits_and_rebills_so_net_is_hours_at_the_new_rate() -> None:
    nov = issued("INV-1", NOV, entry("n1", date(2026, 11, 3), "10"))
    dec_entries = [entry("d1", date(2026, 12, 10), "2"), entry("d2", date(2026, 12, 20), "3")]
    dec = issued("INV-2", DEC, *dec_entries, earlier=(nov,), invoice_id="in_2")
    co = change(
        effective_date=date(2026, 12, 16),
        retroactive=True,
        lines=[repriced(rate=usd("180"))],
        amount_delta=usd("1500"),
    )
    preview = preview_change(co, billing(), psa=psa(), issued=[dec, nov])
    [fix] = preview.corrections  # November is before the change: untouched
    assert (fix.invoice_number, fix.invoice_id, fix.period) == ("INV-2", "in_2", "2026-12")
    # Cancel and replace: the invoice is credited whole as it was issued, and December is
    # re-billed whole: its hours on each side of the effective date, and the Rollout
    # instalment it billed, as before.
    assert fix.credit_lines == dec.rated.lines
    assert (fix.credit_net, fix.credit_total) == (usd("1125.00"), usd("1350.00"))
    assert sorted((ln.quantity, ln.unit_price.amount) for ln in fix.rebill_lines) == [
        (Decimal(1), Decimal("300.00")),
        (Decimal(2), Decimal("165.00")),
        (Decimal(3), Decimal("180.00")),
    ]
    assert (fix.rebill_net, fix.rebill_total) == (usd("1170.00"), usd("1404.00"))
    instalment = usd("300.00")  # instalment 3 of Rollout, billed in December
    assert fix.net_before == usd("825.00") + instalment
    assert fix.net_after == usd("330") + usd("540") + instalment  # 2 h x 165 + 3 h x 180
    assert (
        "Invoice INV-2 (2026-12): credit note 1350.00, re-bill 1404.00 USD (net 1125.00 → 1170.00)"
        in preview.render()
    )
    assert dec.rated == issued("INV-2", DEC, *dec_entries, earlier=(nov,)).rated  # not edited
    risks = change_risks(preview, POLICY)
    assert risks == [
        "retroactive: effective 2026-12-16, reaching back into invoiced periods (1 issued "
        "invoice corrected by credit note and re-bill)"
    ]


def test_a_retroactive_change_from_the_start_of_a_period_rebills_all_its_hours() -> None:
    dec = issued("INV-2", DEC, entry("d1", date(2026, 12, 10), "4"))
    co = change(effective_date=DEC.start, retroactive=True, lines=[repriced(rate=usd("180"))])
    [fix] = preview_change(co, billing(), issued=[dec]).corrections
    assert fix.credit_net == dec.rated.subtotal  # credited whole
    hours = [ln.net for ln in fix.rebill_lines if ln.quantity == Decimal(4)]
    assert hours == [usd("720.00")]  # 4 h x 180
    assert fix.rebill_net - fix.credit_net == usd("60.00")  # 4 h x 15 more
    assert fix.net_after - fix.net_before == usd("60.00")


def test_a_retroactive_change_needs_the_entries_the_invoice_billed() -> None:
    dec = issued("INV-2", DEC, entry("d1", date(2026, 12, 10), "4"))
    without = dec.model_copy(update={"entries": []})
    co = change(effective_date=DEC.start, retroactive=True, lines=[repriced(rate=usd("180"))])
    with pytest.raises(InvalidChange, match=r"issued\[INV-2\]\.entries"):
        preview_change(co, billing(), issued=[without])


def test_without_the_psa_the_preview_leaves_its_tasks_and_budget_out() -> None:
    preview = preview_change(change(lines=[repriced(rate=usd("180"))]), billing())
    assert preview.tasks == [] and preview.psa_budget is None
    assert term(preview, "Development", "rate") == ("165.00", "180.00")


def test_a_tax_override_needs_finance_and_is_shown() -> None:
    preview = preview_change(change(tax_rate=Decimal("0.05")), billing())
    assert change_risks(preview, POLICY) == [
        "tax_rate: the change order overrides the tax rate (0.05)"
    ]
    assert "Contract tax rate: as the jurisdiction's → 5 % from 2027-01-01" in preview.render()


def test_an_amount_delta_that_disagrees_with_the_lines_is_noted() -> None:
    preview = preview_change(change(lines=[repriced(rate=usd("180"))]), billing())
    assert preview.notes == [
        "the change order states an amount delta of 0.00 USD; its lines change the contract "
        "by 1500.00"
    ]


# -- the digest ---------------------------------------------------------------------------------


def rich_inputs(seed: int | None = None) -> dict[str, Any]:
    """A retroactive change with lines, milestones, drafts and invoices; ``seed`` shuffles
    every list whose order means nothing."""
    shuffle = random.Random(seed).shuffle if seed is not None else (lambda _: None)
    nov_entries = [entry("n1", date(2026, 11, 3), "10"), entry("n2", date(2026, 11, 4), "2", "T2")]
    dec_entries = [entry("d1", date(2026, 12, 10), "2"), entry("d2", date(2026, 12, 20), "3")]
    jan_entries = [entry("j1", date(2027, 1, 5), "7"), entry("j2", date(2027, 1, 6), "1")]
    changes = [
        repriced(rate=usd("180")),
        repriced("L2", rate=usd("155")),
        LineChange(
            action=ChangeAction.ADD,
            line_id="L6",
            task="QA",
            billing_type=BillingType.TIME_AND_MATERIALS,
            rate=usd("120"),
        ),
        LineChange(
            action=ChangeAction.ADD,
            line_id="L7",
            task="Docs",
            billing_type=BillingType.FIXED_FEE,
            amount=usd("900"),
        ),
    ]
    milestones = [
        MilestoneChange(action=ChangeAction.CHANGE, milestone_id="M1", amount=usd("2000")),
        MilestoneChange(action=ChangeAction.CHANGE, milestone_id="M2", amount=usd("3000")),
    ]
    shuffle(changes)
    shuffle(milestones)
    project = psa()
    tasks = list(project.tasks)
    shuffle(tasks)
    nov = issued("INV-1", NOV, *nov_entries)
    invoices = [nov, issued("INV-2", DEC, *dec_entries, earlier=(nov,))]
    billed = billing().model_copy(update={"billed": billed_so_far(i.rated for i in invoices)})
    drafts = [
        PendingDraft(
            draft_id=f"draft-{n}",
            rated=rate_period(billed, JAN, jan_entries[:n]),
            entries=jan_entries[:n],
        )
        for n in (1, 2)
    ]
    for draft in drafts:
        shuffle(draft.entries)  # in place: the order entries come in means nothing
    for invoice in invoices:
        shuffle(invoice.entries)
    shuffle(drafts)
    shuffle(invoices)
    co = change(
        effective_date=date(2026, 12, 16),
        retroactive=True,
        lines=changes,
        milestones=milestones,
        amount_delta=usd("2500"),
        budget_delta=usd("4000"),
    )
    return {
        "change": co,
        "billing": billed,
        "psa": project.model_copy(update={"tasks": tasks}),
        "drafts": drafts,
        "issued": invoices,
    }


def preview_of(inputs: dict[str, Any]) -> ImpactPreview:
    return preview_change(
        inputs["change"],
        inputs["billing"],
        psa=inputs["psa"],
        drafts=inputs["drafts"],
        issued=inputs["issued"],
    )


def test_the_digest_is_stable_across_orderings_that_mean_nothing() -> None:
    first = preview_of(rich_inputs())
    assert len(first.digest) == 64
    assert first.corrections and first.drafts and first.tasks and first.billing_plan
    for seed in range(6):
        again = preview_of(rich_inputs(seed))
        assert again == first
        assert again.digest == first.digest


def test_the_digest_is_sha256_of_the_canonical_json_and_survives_a_round_trip() -> None:
    preview = preview_of(rich_inputs())
    content = preview.model_dump(exclude={"digest"})
    assert preview.digest == hashlib.sha256(canonical_json(content).encode()).hexdigest()
    back = ImpactPreview.model_validate_json(preview.model_dump_json())
    assert back == preview and back.digest == preview.digest
    with pytest.raises(ValidationError, match="does not match"):
        ImpactPreview.model_validate(preview.model_dump() | {"digest": "0" * 64})


def test_the_digest_reads_amounts_by_value_not_spelling() -> None:
    one = preview_change(change(lines=[repriced(rate=usd("180"))]), billing())
    other = preview_change(change(lines=[repriced(rate=usd("180.000"))]), billing())
    assert one.digest == other.digest


@pytest.mark.parametrize(
    "edit",
    [
        {"lines": [repriced(rate=usd("181"))]},
        {"effective_date": date(2027, 2, 1)},
        {"budget_delta": usd("1")},
        {"new_end_date": date(2027, 7, 31)},
        {"id": "a0X2"},
        {"retroactive": True},
    ],
)
def test_any_real_change_changes_the_digest(edit: dict[str, Any]) -> None:
    base = change(lines=[repriced(rate=usd("180"))])
    edited = base.model_copy(update=edit)
    assert preview_change(edited, billing()).digest != preview_change(base, billing()).digest


def test_a_drifted_psa_or_an_invoice_that_moves_the_plan_changes_the_digest() -> None:
    co = change(lines=[repriced("L3", amount=usd("7500"))], amount_delta=usd("1500"))
    base = preview_change(co, billing(), psa=psa())
    drifted = psa().model_copy(update={"budget": usd("30000")})
    assert preview_change(co, billing(), psa=drifted).digest != base.digest
    upfront = preview_change(co, billing(), psa=psa(), issued=[upfront_invoice()])
    assert upfront.digest != base.digest
    # An invoice that changes nothing the change touches leaves the preview as it was.
    empty = preview_change(co, billing(), psa=psa(), issued=[issued("INV-9", NOV)])
    assert empty == base and empty.digest == base.digest


# -- the inverse ----------------------------------------------------------------------------------


def test_the_inverse_of_a_rich_change_gives_the_original_terms_back() -> None:
    inputs = rich_inputs()
    v1 = version1()
    co = inputs["change"].model_copy(update={"retroactive": False, "effective_date": JAN.start})
    v2 = apply_change(Contract(versions=[v1]), co)
    undo = invert_change(v1, co)
    v3 = apply_change(Contract(versions=[v1, v2]), undo)
    assert contract_terms(v3) == contract_terms(v1)
    assert contract_terms(v2) != contract_terms(v1)
    assert (v3.version, v3.source) == (3, "change-order:salesforce:a0X1-undo")


money = st.decimals(min_value=1, max_value=5000, places=2).map(lambda d: usd(str(d)))


@st.composite
def changes(draw: st.DrawFn) -> ChangeOrder:
    """A random change to `version1` that is mostly valid (invalid ones are discarded)."""
    v1 = version1()
    lines: list[LineChange] = []
    if draw(st.booleans()):
        fields: dict[str, Any] = {}
        if draw(st.booleans()):
            fields["rate"] = draw(money)
        if draw(st.booleans()):
            fields["hours"] = Decimal(draw(st.integers(1, 500)))
        if draw(st.booleans()):
            fields["unset"] = ["role", "hours"]
        if draw(st.booleans()):
            fields["not_to_exceed"] = draw(money)
        lines.append(repriced("L1", **fields))
    match draw(st.sampled_from(["keep", "remove", "to_fee"])):
        case "remove":
            lines.append(LineChange(action=ChangeAction.REMOVE, line_id="L2"))
        case "to_fee":
            lines.append(
                repriced(
                    "L2",
                    billing_type=BillingType.FIXED_FEE,
                    amount=draw(money),
                    schedule=FeeSchedule(upfront_percent=Decimal(draw(st.integers(0, 100)))),
                )
            )
    if draw(st.booleans()):
        lines.append(
            repriced(
                "L3",
                amount=draw(money),
                schedule=draw(
                    st.sampled_from(
                        [
                            None,
                            FeeSchedule(),
                            FeeSchedule(remainder=FeeRemainder.INSTALMENTS, instalments=4),
                        ]
                    )
                ),
            )
        )
    if draw(st.booleans()):
        lines.append(
            LineChange(
                action=ChangeAction.ADD,
                line_id="L6",
                task="QA",
                billing_type=BillingType.TIME_AND_MATERIALS,
                rate=draw(money),
                hours=Decimal(draw(st.integers(1, 100))),
            )
        )
    milestones: list[MilestoneChange] = []
    split = draw(st.sampled_from(["keep", "reprice", "add", "drop"]))
    m1, m2 = draw(money), draw(money)
    if split == "reprice":
        milestones += [
            MilestoneChange(
                action=ChangeAction.CHANGE,
                milestone_id="M1",
                amount=m1,
                planned_date=date(2027, 2, 1),
            ),
            MilestoneChange(
                action=ChangeAction.CHANGE, milestone_id="M2", amount=m2, unset=["planned_date"]
            ),
        ]
        lines.append(repriced("L5", amount=m1 + m2))
    elif split == "add":
        milestones.append(
            MilestoneChange(
                action=ChangeAction.ADD, milestone_id="M3", line_id="L5", name="Extra", amount=m1
            )
        )
        lines.append(repriced("L5", amount=usd("5000") + m1))
    elif split == "drop":
        milestones.append(MilestoneChange(action=ChangeAction.REMOVE, milestone_id="M1"))
        lines.append(repriced("L5", amount=usd("2000")))
    terms: dict[str, Any] = {}
    match draw(st.sampled_from(["keep", "move", "unset"])):
        case "move":
            terms["new_end_date"] = date(2027, draw(st.integers(3, 12)), 28)
        case "unset":
            terms["unset"] = ["end_date"]
    if draw(st.booleans()):
        terms["not_to_exceed"] = draw(money) + usd("100000")
    if draw(st.booleans()):
        terms["budget_delta"] = draw(money)
    co = change(
        lines=lines,
        milestones=milestones,
        amount_delta=draw(money) - usd("2500"),
        effective_date=draw(st.dates(date(2026, 10, 1), date(2027, 2, 28))),
        **terms,
    )
    assume(not change_problems(co, Contract(versions=[v1])))
    return co


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(changes())
def test_applying_a_change_then_its_inverse_gives_the_original_terms(co: ChangeOrder) -> None:
    v1 = version1()
    v2 = apply_change(Contract(versions=[v1]), co)
    undo = invert_change(v1, co)
    assert change_problems(undo, Contract(versions=[v1, v2])) == []
    v3 = apply_change(Contract(versions=[v1, v2]), undo)
    assert contract_terms(v3) == contract_terms(v1)
    by_id = sorted(v3.lines, key=lambda ln: ln.id)
    assert by_id == sorted(v1.lines, key=lambda ln: ln.id)
    assert (v3.value, v3.project_budget, v3.end_date) == (v1.value, v1.project_budget, v1.end_date)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(changes(), changes())
def test_the_digest_is_a_function_of_the_previews_content(
    one: ChangeOrder, two: ChangeOrder
) -> None:
    first, second = preview_change(one, billing()), preview_change(two, billing())
    same_content = first.model_dump(exclude={"digest"}) == second.model_dump(exclude={"digest"})
    assert (first.digest == second.digest) == same_content
    rebuilt = ImpactPreview.model_validate(first.model_dump(exclude={"digest"}))
    assert rebuilt.digest == first.digest


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(changes(), st.randoms(use_true_random=False))
def test_the_order_a_change_lists_its_parts_in_does_not_move_the_digest(
    co: ChangeOrder, rnd: random.Random
) -> None:
    lines, milestones = list(co.lines), list(co.milestones)
    rnd.shuffle(lines)
    rnd.shuffle(milestones)
    shuffled = co.model_copy(update={"lines": lines, "milestones": milestones})
    first, second = (
        preview_change(co, billing(), psa=psa()),
        preview_change(shuffled, billing(), psa=psa()),
    )
    assert first == second and first.digest == second.digest
