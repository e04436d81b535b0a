"""The demo scenario: three deals closed in the CRM stand-in, as a firm would see them.

1. A clean UK deal: provisioned within seconds of Closed Won.
2. A large US deal: waits for finance, and is approved from the `q2c` CLI.
3. A German deal without the customer's VAT number: waits, is corrected in the CRM, and
   completes after `q2c signal data-corrected`.
4. Time booked in Tryton on the UK project is invoiced for the month (`q2c invoice run`),
   approved by finance from the CLI, and paid in the Stripe stand-in, whose webhook closes the run.
5. A mixed US deal (hours under a cap, a fixed fee with 20 % up front, a milestone): its
   mobilization invoice goes out at provisioning; a month of hours next to fixed-fee work,
   with the milestone completed in Tryton, is invoiced line by line as sold
   (`q2c contract show` traces what was billed to the contract).
6. Change orders signed in Salesforce: a rate increase from next month on the UK project
   applies at once (Tryton's rate, the billing plan, the contract's version 2); a budget
   increase on the US programme waits for finance, who reads its preview
   (`q2c change-order preview`) and approves it from the CLI.

Each deal reaches q2c the way it would in production: Salesforce's Closed Won webhook to the
q2c service. The scenario is idempotent: run it again and it reports the same runs.
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from canonical import BillingPeriod, Expense, Money, TimeEntry
from connectors.salesforce import SalesforceClient
from connectors.stripe import StripeBilling
from connectors.tryton import TrytonClient, TrytonPsa
from connectors.tryton.wire import ProjectInfo
from devstack.salesforce_seed import (
    ChangeOrderLine,
    ChangeOrderSpec,
    DealLine,
    DealMilestone,
    DealSpec,
    SeededDeal,
    close_won,
    seed_change_order,
    seed_deal,
)
from settings import Settings
from workflows.change_order import STATUS as CHANGE_ORDER_STATUS
from workflows.change_order import ChangeOrderStep, ChangeOrderView
from workflows.change_order import workflow_id as change_order_workflow_id
from workflows.client import connect
from workflows.opportunity_to_project import (
    STATUS,
    DealStatus,
    Step,
    workflow_id,
)
from workflows.time_to_invoice import STATUS as INVOICE_STATUS
from workflows.time_to_invoice import InvoiceStatus, InvoiceStep, upfront_workflow_id
from workflows.time_to_invoice import workflow_id as invoice_workflow_id

STEP_WAIT_S = 90
Say = Callable[[str], None]

CLEAN = DealSpec(
    key="demo-initech-uk",
    account_name="Initech UK Ltd",
    street="10 Finsbury Square",
    city="London",
    postal_code="EC2A 1AF",
    country="GB",
    tax_id="GB980780684",
    deal_name="Initech finance transformation",
    currency="GBP",
    lines=[
        DealLine(
            product="Solution Architecture", quantity=Decimal("80"), unit_price=Decimal("210")
        ),
        DealLine(product="Development", quantity=Decimal("320"), unit_price=Decimal("160")),
        DealLine(product="Project Management", quantity=Decimal("60"), unit_price=Decimal("140")),
    ],
    contact_email="ap@initech.example",
    po_number="PO-44120",
)
RISKY = DealSpec(
    key="demo-globex-us",
    account_name="Globex Corporation",
    street="1 Globex Way",
    city="Cypress Creek",
    postal_code="97201",
    country="US",
    deal_name="Globex ERP program (multi-year)",
    currency="USD",
    lines=[
        DealLine(product="Development", quantity=Decimal("1500"), unit_price=Decimal("175")),
        DealLine(product="Project Management", quantity=Decimal("400"), unit_price=Decimal("150")),
        DealLine(product="Training", quantity=Decimal("1"), unit_price=Decimal("18000")),
    ],
    payment_terms="Net 45",
    contact_email="payables@globex.example",
)
BAD = DealSpec(
    key="demo-hooli-de",
    account_name="Hooli Deutschland GmbH",
    street="Friedrichstrasse 68",
    city="Berlin",
    postal_code="10117",
    country="DE",
    tax_id=None,  # the VAT id is missing: EU-VAT customers need one
    deal_name="Hooli data platform migration",
    currency="EUR",
    lines=[
        DealLine(product="Data Migration", quantity=Decimal("200"), unit_price=Decimal("150")),
        DealLine(product="Consulting", quantity=Decimal("40"), unit_price=Decimal("180")),
    ],
    contact_email="kreditoren@hooli.example",
)
CORRECT_VAT_ID = "DE136695976"


def _in_days(days: int) -> date:
    return datetime.now(UTC).date() + timedelta(days=days)


#: A contract as professional services sell them: hours next to a fixed fee with 20 % invoiced
#: up front (the mobilization invoice at provisioning), a capped time-and-materials budget, a
#: go-live milestone, and travel and lodging passed through at cost plus 10 %.
MIXED = DealSpec(
    key="demo-soylent-us",
    account_name="Soylent Corp",
    street="200 Park Avenue",
    city="New York",
    postal_code="10166",
    country="US",
    deal_name="Soylent order-to-cash rollout",
    currency="USD",
    lines=[
        DealLine(
            product="Development",
            quantity=Decimal("160"),
            unit_price=Decimal("165"),
            billing_type="Time and Materials",
            not_to_exceed=Decimal("26400"),
        ),
        DealLine(product="Project Management", quantity=Decimal("30"), unit_price=Decimal("145")),
        DealLine(
            product="Implementation Package",
            quantity=Decimal("1"),
            unit_price=Decimal("30000"),
            billing_type="Fixed Fee",
            fee_schedule="On Completion",
        ),
        DealLine(
            product="Go-live Support",
            quantity=Decimal("1"),
            unit_price=Decimal("8000"),
            billing_type="Milestone",
            role="Consultant",
        ),
    ],
    milestones=[
        DealMilestone(
            name="Go-live sign-off", line=3, amount=Decimal("8000"), planned_date=_in_days(60)
        ),
    ],
    upfront_percent=Decimal("20"),
    end_date=_in_days(180),
    expense_markup_percent=Decimal("10"),
    billable_expense_categories=("Travel", "Lodging"),
    payment_terms="Net 30",
    contact_email="ap@soylent.example",
)


@dataclass
class Demo:
    settings: Settings
    say: Say
    temporal: Client
    crm: SalesforceClient

    def q2c(self, *args: str) -> None:
        """Run a `q2c` command as a person would, showing it first."""
        command = [str(Path(sys.executable).parent / "q2c"), *args]
        self.say(f"  $ q2c {shlex.join(args)}")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        for line in (done.stdout + done.stderr).strip().splitlines():
            self.say(f"    {line}")
        if done.returncode != 0:
            raise RuntimeError(f"q2c {args[0]} failed (exit {done.returncode})")

    async def status(self, wid: str) -> DealStatus | None:
        try:
            result: DealStatus = await self.temporal.get_workflow_handle(wid).query(
                STATUS, result_type=DealStatus
            )
            return result
        except RPCError:
            return None

    async def wait_for(self, wid: str, *steps: Step) -> DealStatus:
        async with asyncio.timeout(STEP_WAIT_S):
            while True:
                status = await self.status(wid)
                if status is not None and status.step in steps:
                    return status
                await asyncio.sleep(0.3)

    async def close(self, spec: DealSpec) -> tuple[SeededDeal, str]:
        deal = await seed_deal(self.crm, spec)
        await close_won(self.crm, deal.opportunity_id)
        self.say(f"• {spec.account_name}: '{spec.deal_name}' closed won ({deal.opportunity_id})")
        return deal, workflow_id("salesforce", deal.opportunity_id)


async def run_demo(settings: Settings, say: Say) -> None:
    approver = settings.finance_approvers[0]
    temporal = await connect(settings)
    async with SalesforceClient(
        settings.salesforce_base_url,
        settings.salesforce_client_id,
        settings.salesforce_client_secret,
    ) as crm:
        demo = Demo(settings, say, temporal, crm)
        say("Closing three deals in the Salesforce stand-in; its webhooks start the runs.\n")
        clean, clean_id = await demo.close(CLEAN)
        risky, risky_id = await demo.close(RISKY)
        bad, bad_id = await demo.close(BAD)

        say("\nThe Globex deal is over the approval threshold; finance approves it:")
        status = await demo.wait_for(risky_id, Step.AWAITING_APPROVAL, Step.COMPLETED)
        if status.step == Step.AWAITING_APPROVAL:
            assert status.pending_approval is not None
            say(f"  waiting because: {'; '.join(status.pending_approval.reasons)}")
            demo.q2c("approve", risky_id, "--approver", approver, "--reason", "Margin reviewed")
        else:
            say("  (approved in an earlier demo run)")

        say("\nThe Hooli deal lacks the customer's VAT id; it is fixed in the CRM:")
        status = await demo.wait_for(bad_id, Step.AWAITING_CORRECTION, Step.COMPLETED)
        if status.step == Step.AWAITING_CORRECTION:
            say(f"  waiting because: {'; '.join(status.validation_issues)}")
            await crm.update("Account", bad.account_id, {"Tax_Id__c": CORRECT_VAT_ID})
            say(f"  Account.Tax_Id__c set to {CORRECT_VAT_ID} in Salesforce")
            demo.q2c("signal", "data-corrected", bad_id, "--note", "VAT id added")
        else:
            say("  (corrected in an earlier demo run)")

        say("\nResults:")
        for deal, wid in ((clean, clean_id), (risky, risky_id), (bad, bad_id)):
            await report(demo, deal, wid)

        say("\nTime is booked on the Initech project; the month is invoiced and paid:")
        project_id = (await demo.wait_for(clean_id, Step.COMPLETED)).ids["psa_project"]
        await invoice_month(demo, project_id)

        say("\nA mixed contract: Soylent buys hours, a fixed fee and a milestone.\n")
        mixed, mixed_id = await demo.close(MIXED)
        await report(demo, mixed, mixed_id)
        mixed_project = (await demo.wait_for(mixed_id, Step.COMPLETED)).ids["psa_project"]
        await bill_as_sold(demo, mixed_project)

        say("\nChange orders signed in Salesforce reach Tryton, Stripe and the contract:\n")
        risky_project = (await demo.wait_for(risky_id, Step.COMPLETED)).ids["psa_project"]
        await change_orders(demo, (clean, project_id), (risky, risky_project))


async def report(demo: Demo, deal: SeededDeal, wid: str) -> None:
    settings, say = demo.settings, demo.say
    status = await demo.wait_for(wid, Step.COMPLETED, Step.FAILED, Step.REJECTED, Step.EXPIRED)
    description = await demo.temporal.get_workflow_handle(wid).describe()
    state = description.status.name if description.status else "?"
    if description.status == WorkflowExecutionStatus.COMPLETED:
        state = "completed"
    say(f"\n  {status.customer_name} ({deal.opportunity_id}): {status.step} [{state}]")
    say(f"    Temporal Web UI : {settings.run_link(wid)}")
    project_id = status.ids.get("psa_project")
    if project_id:
        async with _tryton(settings) as tryton:
            project = await TrytonPsa(tryton).get_project(int(project_id))
        tasks = ", ".join(
            f"{t.name} @ {t.rate.rounded().amount} {t.rate.currency}/h"
            if t.planned_hours
            else f"{t.name} (fixed fee)"
            for t in project.tasks
        )
        say(
            f"    Tryton project  : #{project.id} '{project.name}' in {project.legal_entity_code}"
            f" ({project.currency}), budget {project.budget.amount if project.budget else '-'}"
        )
        say(f"    Tryton tasks    : {tasks}")
    customer_id = status.ids.get("billing_customer")
    if customer_id:
        async with StripeBilling(
            settings.stripe_api_key.get_secret_value(), base_url=settings.stripe_base_url
        ) as stripe:
            customer = await stripe.get_customer(customer_id)
        say(f"    Stripe customer : {customer.id} '{customer.name}'")


#: Consultants' time on the Initech project this month: (task, hours).
DEMO_TIME = (
    ("Solution Architecture", "6"),
    ("Development", "22.5"),
    ("Project Management", "4.25"),
)


async def invoice_month(demo: Demo, project_id: str) -> None:
    """Book time in Tryton, run the invoice from the CLI, approve it, pay it in Stripe."""
    settings, say = demo.settings, demo.say
    today = datetime.now(UTC).date()
    period = BillingPeriod.of(today).key
    wid = invoice_workflow_id(project_id, period)
    async with _tryton(settings) as tryton:
        await _book_time(TrytonPsa(tryton), project_id, DEMO_TIME, f"demo-time-{period}")
    say(f"  booked in Tryton: {', '.join(f'{h} h {n}' for n, h in DEMO_TIME)}")

    if await _closed(demo, wid):
        say("  (invoiced and paid in an earlier demo run)")
    else:
        demo.q2c("invoice", "run", project_id, "--period", period)
        await _wait_invoice(demo, wid, InvoiceStep.AWAITING_APPROVAL, InvoiceStep.AWAITING_PAYMENT)
        demo.q2c("invoice", "show", wid)
        status = await _wait_invoice(
            demo, wid, InvoiceStep.AWAITING_APPROVAL, InvoiceStep.AWAITING_PAYMENT
        )
        if status.step == InvoiceStep.AWAITING_APPROVAL:
            approver = settings.finance_approvers[0]
            demo.q2c("invoice", "approve", wid, "--approver", approver, "--reason", "Hours checked")
        status = await _wait_invoice(demo, wid, InvoiceStep.AWAITING_PAYMENT)
        assert status.billing_invoice_id is not None
        async with StripeBilling(
            settings.stripe_api_key.get_secret_value(), base_url=settings.stripe_base_url
        ) as stripe:
            await stripe.pay_invoice(
                status.billing_invoice_id, idempotency_key=f"demo-pay-{status.billing_invoice_id}"
            )
        say(f"  the customer pays {status.invoice_number} in Stripe; its webhook tells q2c")
        await _wait_invoice(demo, wid, InvoiceStep.PAID)
    status = await _wait_invoice(demo, wid, InvoiceStep.PAID)
    say(f"\n  Invoice {status.invoice_number}: paid")
    say(f"    Temporal Web UI : {settings.run_link(wid)}")
    if status.draft is not None:
        say(f"    Total           : {status.draft.total} {status.draft.currency}")
    say(f"    Stripe invoice  : {status.billing_invoice_id}")
    say(f"    Tryton invoice  : #{status.erp_invoice_id}")


async def _book_time(
    psa: TrytonPsa, project_id: str, hours: tuple[tuple[str, str], ...], key: str
) -> ProjectInfo:
    """Today's hours on the project's tasks, spread over its company's consultants; booked
    once however often the demo runs (`key`)."""
    project = await psa.get_project(int(project_id))
    tasks = {t.name: t for t in project.tasks}
    employees = await psa.list_employees(project.legal_entity_code)
    today = datetime.now(UTC).date()
    entries = [
        TimeEntry(
            id=f"{key}-{n}",
            project_id=project_id,
            task_id=str(tasks[name].id),
            employee=employees[n % len(employees)].name,
            role=tasks[name].role or name,
            work_date=today,
            hours=Decimal(worked),
            approved=True,
        )
        for n, (name, worked) in enumerate(hours)
    ]
    await psa.create_timesheet_lines(entries, idempotency_key=f"{key}-{project_id}")
    return project


async def _closed(demo: Demo, wid: str) -> bool:
    try:
        description = await demo.temporal.get_workflow_handle(wid).describe()
    except RPCError:
        return False
    return description.status == WorkflowExecutionStatus.COMPLETED


async def _wait_invoice(demo: Demo, wid: str, *steps: InvoiceStep) -> InvoiceStatus:
    async with asyncio.timeout(STEP_WAIT_S):
        while True:
            try:
                status: InvoiceStatus = await demo.temporal.get_workflow_handle(wid).query(
                    INVOICE_STATUS, result_type=InvoiceStatus
                )
                if status.step in steps:
                    return status
                if status.step == InvoiceStep.FAILED:
                    raise RuntimeError(f"{wid} failed: {status.last_error}")
            except RPCError:
                pass
            await asyncio.sleep(0.3)


def _tryton(settings: Settings) -> TrytonClient:
    return TrytonClient(
        settings.tryton_base_url,
        settings.tryton_database,
        settings.tryton_user,
        settings.tryton_password,
    )


#: A month on the Soylent project: hours by the hour, hours on the fixed-fee work (never
#: billed by the hour) and on the go-live (billed by its milestone).
MIXED_TIME = (
    ("Development", "8"),
    ("Development", "7.5"),
    ("Project Management", "3"),
    ("Implementation Package", "6"),
    ("Go-live Support", "4"),
)


async def bill_as_sold(demo: Demo, project_id: str) -> None:
    """The mobilization invoice at provisioning, then a month of mixed work, each line
    billed the way it was sold; finance approves both from the CLI."""
    settings, say = demo.settings, demo.say
    approver = settings.finance_approvers[0]
    upfront = upfront_workflow_id(project_id)
    say("  At provisioning, the fixed fee's 20 % upfront share is drafted for finance:")
    await _approve_when_drafted(demo, upfront, approver, "Mobilization per contract")

    today = datetime.now(UTC).date()
    period = BillingPeriod.of(today).key
    async with _tryton(settings) as tryton:
        psa = TrytonPsa(tryton)
        project = await _book_time(psa, project_id, MIXED_TIME, f"demo-mixed-{period}")
        tasks = {t.name: t for t in project.tasks}
        employees = await psa.list_employees(project.legal_entity_code)
        travel = Expense(
            id=f"demo-travel-{project_id}",
            project_id=project_id,
            employee=employees[0].name,
            incurred_on=today,
            category="Travel",
            amount=Money.of("640.00", project.currency),
            approved=True,
        )
        await psa.book_expense(travel, idempotency_key=travel.id)
        await psa.set_task_done(tasks["Go-live Support"].id)
    say(f"  booked in Tryton: {', '.join(f'{h} h {n}' for n, h in MIXED_TIME)}, 640.00 travel")
    say("  the Go-live Support task is set to Done in Tryton: its milestone is complete")

    wid = invoice_workflow_id(project_id, period)
    demo.q2c("invoice", "run", project_id, "--period", period)
    await _approve_when_drafted(demo, wid, approver, "Hours and milestone checked")
    demo.q2c("contract", "show", project_id)


async def _approve_when_drafted(demo: Demo, wid: str, approver: str, reason: str) -> None:
    """Show the draft and approve it; a run decided in an earlier demo run is only shown."""
    status = await _wait_invoice(
        demo, wid, InvoiceStep.AWAITING_APPROVAL, InvoiceStep.AWAITING_PAYMENT, InvoiceStep.PAID
    )
    demo.q2c("invoice", "show", wid)
    if status.step == InvoiceStep.AWAITING_APPROVAL:
        demo.q2c("invoice", "approve", wid, "--approver", approver, "--reason", reason)
        status = await _wait_invoice(demo, wid, InvoiceStep.AWAITING_PAYMENT, InvoiceStep.PAID)
    else:
        demo.say("  (approved in an earlier demo run)")
    total = f"{status.draft.total} {status.draft.currency}" if status.draft else "-"
    demo.say(f"  Invoice {status.invoice_number}: {total}, issued in Stripe and Tryton")


def _next_month(today: date) -> date:
    return BillingPeriod.of(BillingPeriod.of(today).end + timedelta(days=1)).start


async def change_orders(demo: Demo, uk: tuple[SeededDeal, str], us: tuple[SeededDeal, str]) -> None:
    """A rate increase on the UK project, applied at once; a budget increase on the US
    programme, previewed and approved by finance from the CLI."""
    settings, say = demo.settings, demo.say
    effective = _next_month(datetime.now(UTC).date())
    uk_deal, uk_project = uk
    rate = ChangeOrderSpec(
        key="demo-initech-rate",
        name="CO-001 Development rate increase",
        effective_date=effective,
        amount_delta=Decimal("3840"),  # 320 h sold, 12 GBP more each
        lines=[ChangeOrderLine(action="Change", line=1, rate=Decimal("172"))],
        approve=True,
    )
    seeded = await seed_change_order(demo.crm, uk_deal, rate)
    wid = change_order_workflow_id("salesforce", seeded.change_order_id)
    say(f"• Initech: '{rate.name}' approved in Salesforce, effective {effective}")
    view = await _wait_change_order(demo, wid, ChangeOrderStep.APPLIED)
    say(f"  applied without approval (nothing risky): contract version {view.applied_version}")
    demo.q2c("contract", "show", uk_project, "--history")

    us_deal, us_project = us
    budget = ChangeOrderSpec(
        key="demo-globex-phase-2",
        name="CO-002 Phase 2: 300 more hours of Development",
        effective_date=effective,
        amount_delta=Decimal("52500"),  # 300 h at 175 USD
        lines=[ChangeOrderLine(action="Change", line=0, hours=Decimal("1800"))],
        budget_delta=Decimal("52500"),
        approve=True,
    )
    seeded = await seed_change_order(demo.crm, us_deal, budget)
    wid = change_order_workflow_id("salesforce", seeded.change_order_id)
    say(f"\n• Globex: '{budget.name}' approved in Salesforce")
    view = await _wait_change_order(
        demo, wid, ChangeOrderStep.AWAITING_APPROVAL, ChangeOrderStep.APPLIED
    )
    if view.step is ChangeOrderStep.AWAITING_APPROVAL:
        say(f"  waiting for finance because: {'; '.join(view.risks)}")
        demo.q2c("change-order", "preview", wid)
        approver = settings.finance_approvers[0]
        demo.q2c(
            "change-order", "approve", wid, "--approver", approver, "--reason", "Phase 2 signed"
        )
        view = await _wait_change_order(demo, wid, ChangeOrderStep.APPLIED)
    else:
        say("  (approved in an earlier demo run)")
    say(f"  applied as contract version {view.applied_version}")
    say(f"    Temporal Web UI : {settings.run_link(wid)}")
    demo.q2c("contract", "show", us_project, "--history")


async def _wait_change_order(demo: Demo, wid: str, *steps: ChangeOrderStep) -> ChangeOrderView:
    async with asyncio.timeout(STEP_WAIT_S):
        while True:
            try:
                view: ChangeOrderView = await demo.temporal.get_workflow_handle(wid).query(
                    CHANGE_ORDER_STATUS, result_type=ChangeOrderView
                )
                if view.step in steps:
                    return view
                if view.step is ChangeOrderStep.FAILED:
                    raise RuntimeError(f"{wid} failed: {view.last_error}")
            except RPCError:
                pass  # the webhook has not started it yet
            await asyncio.sleep(0.3)
