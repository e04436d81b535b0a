"""A change order reaching a running project in Tryton: task rates, tasks added and closed,
budget and contract value changed once per key, then restored exactly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pytest

from canonical import (
    Address,
    BillingType,
    Customer,
    Money,
    PaymentTerms,
    Project,
    Task,
    TimeEntry,
)
from connectors.errors import IdempotencyConflict, ValidationFailed
from connectors.tryton import ProjectInfo, ProjectTermsChange, TrytonErp, TrytonPsa
from devstack import tryton as devtryton
from tests.fixtures.tryton import TrytonServer

UK = devtryton.load_legal_entities()["NW-UK"]


def gbp(amount: str) -> Money:
    return Money.of(amount, "GBP")


@dataclass
class Running:
    psa: TrytonPsa
    project_id: int
    tasks: dict[str, int]


@pytest.fixture
async def running(tryton_server: TrytonServer) -> AsyncIterator[Running]:
    """A fresh UK project with three tasks, as q2c provisions it."""
    client = await tryton_server.logged_in_client()
    try:
        erp, psa = TrytonErp(client), TrytonPsa(client)
        ref = f"sf:001{uuid.uuid4().hex[:12]}"
        customer = Customer(
            id=f"acct-{ref[-6:]}",
            name=f"Globex {ref[-6:]}",
            legal_entity=UK,
            addresses=[Address(street="1 Dock Road", city="London", country="GB")],
            currency="GBP",
            payment_terms=PaymentTerms(net_days=30),
        )
        party_id = await erp.upsert_customer(customer, ref)
        project = Project(
            id=f"prj-{uuid.uuid4().hex[:8]}",
            name=f"Ledger migration {ref[-6:]}",
            customer_id=customer.id,
            legal_entity_code="NW-UK",
            currency="GBP",
            budget=gbp("90000"),
            tasks=[
                Task(name="Discovery", role="Senior Consultant", rate=gbp("157.50")),
                Task(name="Build", role="Developer", rate=gbp("140")),
                Task(name="Pre-sales", role="Consultant", billable=False),
            ],
            billing_type=BillingType.TIME_AND_MATERIALS,
            start_date=date.today().replace(day=1),
        )
        created = await psa.create_project(
            project, party_id=party_id, idempotency_key=f"{ref}:project"
        )
        yield Running(psa, created.project_id, dict(created.task_ids))
    finally:
        await client.aclose()


def terms(info: ProjectInfo) -> dict[str, object]:
    """What a change order may touch, as Tryton shows it."""
    return {
        "budget": info.budget,
        "contract_value": info.contract_value,
        "tasks": {t.name: (t.rate, t.state) for t in info.tasks},
    }


async def test_terms_change_once_per_key_and_restore_exactly(running: Running) -> None:
    psa, project_id = running.psa, running.project_id
    discovery, build = running.tasks["Discovery"], running.tasks["Build"]
    original = await psa.get_project(project_id)
    assert original.budget == gbp("90000.00")
    key = f"co:{uuid.uuid4().hex[:8]}:psa"

    async def apply() -> ProjectTermsChange:
        return await psa.update_project_terms(
            project_id,
            task_rates={discovery: gbp("170.00")},
            add_tasks=[Task(name="Data migration", role="Developer", rate=gbp("150"))],
            close_tasks=[build],
            budget=gbp("120000"),
            contract_value=gbp("125000"),
            idempotency_key=key,
        )

    change = await apply()
    assert change.before.task_rates == {discovery: gbp("157.50")}
    assert change.after.task_rates == {discovery: gbp("170.00")}
    assert change.before.budget == gbp("90000.00")
    assert change.before.contract_value == gbp("90000.00")
    assert list(change.added_task_ids) == ["Data migration"]

    changed = await psa.get_project(project_id)
    assert changed.budget == gbp("120000.00")
    assert changed.contract_value == gbp("125000.00")
    tasks = {t.name: t for t in changed.tasks}
    assert tasks["Discovery"].rate == gbp("170.00")
    assert tasks["Build"].state == "done"
    assert tasks["Data migration"].rate == gbp("150.00")
    assert tasks["Data migration"].id == change.added_task_ids["Data migration"]
    assert tasks["Pre-sales"] == next(t for t in original.tasks if t.name == "Pre-sales")

    # A retry changes nothing more and answers with the same record (values before the
    # first attempt, not the ones it set).
    assert await apply() == change
    assert await psa.get_project(project_id) == changed
    with pytest.raises(IdempotencyConflict):
        await psa.update_project_terms(project_id, budget=gbp("130000"), idempotency_key=key)

    await psa.restore_project_terms(project_id, change)
    restored = await psa.get_project(project_id)
    assert terms(restored) == terms(original)
    assert restored == original
    await psa.restore_project_terms(project_id, change)  # a retried compensation
    assert await psa.get_project(project_id) == original


async def test_only_what_is_passed_is_touched(running: Running) -> None:
    psa, project_id = running.psa, running.project_id
    original = await psa.get_project(project_id)
    change = await psa.update_project_terms(
        project_id, budget=gbp("95000"), idempotency_key=f"co:{uuid.uuid4().hex[:8]}:psa"
    )
    assert (change.before.budget, change.after.budget) == (gbp("90000.00"), gbp("95000"))
    assert change.before.task_rates == {} and change.added_task_ids == {}
    changed = await psa.get_project(project_id)
    assert changed.contract_value == original.contract_value
    assert changed.tasks == original.tasks
    await psa.restore_project_terms(project_id, change)
    assert await psa.get_project(project_id) == original


async def test_a_change_that_does_not_fit_the_project_is_refused_untouched(
    running: Running,
) -> None:
    psa, project_id = running.psa, running.project_id
    original = await psa.get_project(project_id)
    key = f"co:{uuid.uuid4().hex[:8]}:psa"
    with pytest.raises(ValidationFailed) as foreign:
        await psa.update_project_terms(
            project_id, task_rates={project_id: gbp("1")}, idempotency_key=key
        )
    assert foreign.value.field == f"task_rates[{project_id}]"
    with pytest.raises(ValidationFailed) as currency:
        await psa.update_project_terms(
            project_id,
            task_rates={running.tasks["Build"]: Money.of("150", "EUR")},
            idempotency_key=key,
        )
    assert currency.value.field == f"task_rates[{running.tasks['Build']}]"
    with pytest.raises(ValidationFailed) as budget:
        await psa.update_project_terms(project_id, budget=Money.of("1", "USD"), idempotency_key=key)
    assert budget.value.field == "budget"
    with pytest.raises(ValidationFailed) as clash:
        await psa.update_project_terms(
            project_id, add_tasks=[Task(name="Build", rate=gbp("1"))], idempotency_key=key
        )
    assert clash.value.field == "add_tasks[0].name"
    assert await psa.get_project(project_id) == original


async def test_restoring_keeps_an_added_task_that_time_was_booked_on(running: Running) -> None:
    psa, project_id = running.psa, running.project_id
    original = await psa.get_project(project_id)
    change = await psa.update_project_terms(
        project_id,
        add_tasks=[Task(name="Hypercare", role="Developer", rate=gbp("150"))],
        idempotency_key=f"co:{uuid.uuid4().hex[:8]}:psa",
    )
    task_id = change.added_task_ids["Hypercare"]
    entry = TimeEntry(
        id="hypercare-1",
        project_id=str(project_id),
        task_id=str(task_id),
        employee="Alan Turing",
        role="-",
        work_date=date.today(),
        hours=Decimal("2"),
        description="Hypercare work",
    )
    await psa.create_timesheet_lines([entry], idempotency_key=f"{change.idempotency_key}:time")

    await psa.restore_project_terms(project_id, change)
    restored = {t.name: t for t in (await psa.get_project(project_id)).tasks}
    # The time stays booked; the task is closed, not deleted.
    assert restored["Hypercare"].state == "done"
    assert {n: t for n, t in restored.items() if n != "Hypercare"} == {
        t.name: t for t in original.tasks
    }


async def test_planned_hours_and_billing_type_change_and_are_restored(running: Running) -> None:
    psa, build = running.psa, running.tasks["Build"]
    before = await psa.get_project(running.project_id)
    was = next(t for t in before.tasks if t.id == build)
    assert was.billing_type is BillingType.TIME_AND_MATERIALS

    change = await psa.update_project_terms(
        running.project_id,
        task_hours={build: Decimal("300")},
        task_billing={build: BillingType.FIXED_FEE},
        idempotency_key="co-hours",
    )
    after = await psa.get_project(running.project_id)
    task = next(t for t in after.tasks if t.id == build)
    assert task.planned_hours == Decimal("300")
    assert task.billing_type is BillingType.FIXED_FEE
    assert task.role == was.role  # the other labels stay

    await psa.restore_project_terms(running.project_id, change)
    restored = next(t for t in (await psa.get_project(running.project_id)).tasks if t.id == build)
    assert restored.planned_hours == was.planned_hours
    assert restored.billing_type is BillingType.TIME_AND_MATERIALS
