"""Tryton as the PSA: projects with tasks and rates, employees, timesheets.

A project lives in the company of its legal entity and is priced in that company's
currency (project invoicing bills in the company currency only); its tasks, time and
invoices follow it into that company.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from canonical import BillingType, Expense, Money, NoRate, Project, Task, TimeEntry
from connectors.errors import (
    ConnectorError,
    IdempotencyConflict,
    NotFound,
    PermanentError,
    ValidationFailed,
)
from connectors.tryton import mapping
from connectors.tryton.catalog import Catalog, Company
from connectors.tryton.client import SYSTEM, TrytonClient
from connectors.tryton.trytond_q2c import LINK_METHOD, MODULE_NAME
from connectors.tryton.wire import (
    Employee,
    ExpensePage,
    ProjectInfo,
    ProjectRef,
    ProjectTerms,
    ProjectTermsChange,
    TaskInfo,
    TaskState,
    TimePage,
    TimesheetLineRecord,
    WorkRecord,
)

_WORK_FIELDS = [
    "name",
    "type",
    "company",
    "status",
    "progress",
    "parent",
    "party",
    "product",
    "list_price",
    "comment",
    "timesheet_works",
    "project_invoice_method",
    "effort_duration",
    "q2c_done_on",
]
_LINE_FIELDS = ["employee", "work", "date", "duration", "description", "invoice_line"]
#: Timesheet lines per `create` call: one transaction each, well within a request's size.
CREATE_BATCH = 1000
#: Timesheet lines (or disbursements) per call of q2c's module when marking them billed.
LINK_BATCH = 1000
#: What q2c reads of a disbursement (an expense).
_EXPENSE_FIELDS = [
    "work",
    "payment_date",
    "amount",
    "currency.code",
    "description",
    "state",
    "payee.name",
    "q2c_product.template.name",
]
#: A disbursement without an expense product (made by hand in Tryton).
UNCATEGORIZED = "uncategorized"
#: Disbursement states that mean approved (validated, hence a reimbursement payment).
_APPROVED = ("validated", "paid")


class TrytonPsa:
    def __init__(self, client: TrytonClient, catalog: Catalog | None = None) -> None:
        self.client = client
        self._catalog = catalog

    async def catalog(self, *, refresh: bool = False) -> Catalog:
        if self._catalog is None or refresh:
            self._catalog = await Catalog.load(self.client)
        return self._catalog

    # -- employees -----------------------------------------------------------------------------

    async def list_employees(self, legal_entity_code: str | None = None) -> list[Employee]:
        """The employees of every legal entity, or of one."""
        cat = await self.catalog()
        companies = (
            [cat.company(legal_entity_code)] if legal_entity_code else list(cat.companies.values())
        )
        codes = {c.company_id: c.code for c in companies}
        rows = await self.client.search_read(
            "company.employee",
            [("company", "in", list(codes))],
            ["party", "party.name", "company"],
            order=[("id", "ASC")],
        )
        return [
            Employee(
                id=int(r["id"]),
                name=str(r["party."]["name"]),
                party_id=int(r["party"]),
                company_id=int(r["company"]),
                legal_entity_code=codes[int(r["company"])],
            )
            for r in rows
        ]

    # -- projects ------------------------------------------------------------------------------

    async def find_project(self, idempotency_key: str) -> ProjectRef | None:
        """The project created under `idempotency_key`: by its number (unique, indexed),
        else by the key in the comment that projects made before q2c numbered them carry."""
        numbered = await self.client.search(
            "project.work",
            [("number", "=", mapping.project_number(idempotency_key)), ("type", "=", "project")],
            limit=1,
        )
        if numbered:
            return await self._project_ref(numbered[0], created=False)
        found = await self.client.search_read(
            "project.work",
            [
                ("type", "=", "project"),
                ("comment", "like", mapping.like_pattern(f"{mapping.KEY_LABEL} {idempotency_key}")),
            ],
            ["comment"],
        )
        for row in found:
            if mapping.label_value(row.get("comment"), mapping.KEY_LABEL) == idempotency_key:
                return await self._project_ref(int(row["id"]), created=False)
        return None

    async def create_project(
        self, project: Project, *, party_id: int, idempotency_key: str
    ) -> ProjectRef:
        """A timesheet-invoiced project with one task per canonical task, priced per task.

        It is made in the company of `project.legal_entity_code`, whose currency must be
        the project's. The project and its tasks are created in one call, so one
        transaction: a retry either finds the whole project by its key or creates it afresh.
        The project's number is made from the key (`mapping.project_number`, tasks after
        it), so Tryton's unique number refuses a concurrent second create of the project,
        which then returns the first; no numbering sequence is raced.
        """
        existing = await self.find_project(idempotency_key)
        if existing is not None:
            return existing
        company = await self._company(project.legal_entity_code)
        if project.currency != company.currency:
            # project_invoice invoices in the company currency only.
            raise ValidationFailed(
                f"project {project.id} is in {project.currency}; {company.code} "
                f"({company.name}) invoices in {company.currency}",
                system=SYSTEM,
                field="currency",
            )
        names = [t.name for t in project.tasks]
        if len(names) != len(set(names)):
            raise ValidationFailed(
                f"project {project.id} has two tasks with the same name",
                system=SYSTEM,
                field="tasks",
            )
        cat = await self.catalog()
        prices = await cat.product_prices(self.client, company)
        default_product = mapping.product_for_role(None, set(cat.product_ids))
        number = mapping.project_number(idempotency_key)
        values: dict[str, Any] = {
            "number": number,
            "name": project.name,
            "type": "project",
            "company": company.company_id,
            "party": party_id,
            "project_invoice_method": "timesheet",
            "timesheet_available": True,
            "product": self._product_id(cat, default_product),
            "list_price": self._price(prices, project, None, default_product),
            "comment": mapping.project_comment(project, idempotency_key),
            "children": [
                [
                    "create",
                    [
                        {
                            **self._task_values(cat, company, prices, project, t),
                            "number": mapping.task_number(number, i),
                        }
                        for i, t in enumerate(project.tasks, start=1)
                    ],
                ]
            ],
        }
        try:
            project_id = await self.client.for_company(company.company_id).create_one(
                "project.work", values
            )
        except ConnectorError:
            # A concurrent create of the same project may have taken the number first.
            existing = await self.find_project(idempotency_key)
            if existing is None:
                raise
            return existing
        return await self._project_ref(project_id, created=True)

    async def _company(self, code: str) -> Company:
        cat = await self.catalog()
        if code not in cat.companies:
            cat = await self.catalog(refresh=True)  # a legal entity added since we loaded
        return cat.company(code, field="legal_entity_code")

    def _task_values(
        self,
        cat: Catalog,
        company: Company,
        prices: dict[str, Decimal | None],
        project: Project,
        task: Task,
    ) -> dict[str, Any]:
        product = mapping.product_for_role(task.role, set(cat.product_ids))
        values: dict[str, Any] = {
            "name": task.name,
            "type": "task",
            "company": company.company_id,
            "product": self._product_id(cat, product),
            "list_price": self._price(prices, project, task, product),
            "timesheet_available": True,
            "comment": mapping.task_comment(task.role or product, task.billing_type),
        }
        if task.planned_hours is not None:
            values["effort_duration"] = timedelta(hours=float(task.planned_hours))
        if not task.billable:
            # Invoicing is set per project in Tryton; unbilled work goes out at no charge.
            values["list_price"] = Decimal(0)
        return values

    @staticmethod
    def _product_id(cat: Catalog, name: str) -> int:
        try:
            return cat.product_ids[name]
        except KeyError:
            raise ValidationFailed(
                f"no salable service product {name!r} in Tryton", system=SYSTEM, field="product"
            ) from None

    @staticmethod
    def _price(
        prices: dict[str, Decimal | None], project: Project, task: Task | None, product: str
    ) -> Decimal:
        """The task's own rate, else the rate card's for its role, else the product's price."""
        if task is not None and task.rate is not None:
            return task.rate.amount
        if task is not None and task.role and project.rate_card is not None:
            try:
                return project.rate_card.rate_for(task.role, project.start_date).amount
            except NoRate:
                pass
        price = prices.get(product)
        if price is None:
            what = f"task {task.name!r}" if task is not None else f"project {project.id}"
            raise ValidationFailed(
                f"{what} has no rate, and {product!r} has no list price in "
                f"{project.legal_entity_code}",
                system=SYSTEM,
                field="rate",
            )
        return price

    async def _project_ref(self, project_id: int, *, created: bool) -> ProjectRef:
        works = await self.works(project_id)
        return ProjectRef(
            project_id=project_id,
            task_ids={w.name: w.id for w in works if w.parent == project_id},
            created=created,
        )

    async def works(self, project_id: int) -> list[WorkRecord]:
        """The project and everything under it, the project first."""
        rows = await self.client.search_read(
            "project.work",
            [("parent", "child_of", [project_id])],
            _WORK_FIELDS,
            order=[("id", "ASC")],
        )
        if not any(int(r["id"]) == project_id for r in rows):
            raise NotFound(f"no project {project_id} in Tryton", system=SYSTEM)
        return [WorkRecord.model_validate(r) for r in rows]

    async def get_project(self, project_id: int) -> ProjectInfo:
        """The project as Tryton holds it: company, currency, state, budget, tasks."""
        works = await self.works(project_id)
        cat = await self.catalog()
        done = await cat.done_status(self.client)
        project = works[0]
        if project.id != project_id or project.type != "project":
            raise NotFound(f"Tryton work {project_id} is not a project", system=SYSTEM)
        company = cat.company_by_id(project.company)
        products = {v: k for k, v in cat.product_ids.items()}
        budget = mapping.label_value(project.comment, mapping.BUDGET_LABEL)
        contract_value = mapping.label_value(project.comment, mapping.CONTRACT_VALUE_LABEL)
        return ProjectInfo(
            id=project.id,
            name=project.name,
            party_id=project.party,
            company_id=company.company_id,
            legal_entity_code=company.code,
            currency=company.currency,
            state="done" if project.status == done else "open",
            budget=mapping.parse_money(budget) if budget else None,
            contract_value=mapping.parse_money(contract_value) if contract_value else None,
            opportunity_id=mapping.label_value(project.comment, mapping.OPPORTUNITY_LABEL),
            project_ref=mapping.label_value(project.comment, mapping.PROJECT_LABEL),
            tasks=[
                TaskInfo(
                    id=w.id,
                    name=w.name,
                    role=mapping.label_value(w.comment, mapping.ROLE_LABEL),
                    product=products.get(w.product or 0),
                    rate=Money(amount=w.list_price or Decimal(0), currency=company.currency),
                    planned_hours=mapping.hours(w.effort_duration) if w.effort_duration else None,
                    state="done" if w.status == done else "open",
                    billing_type=mapping.task_billing_type(w.comment),
                    done_on=w.q2c_done_on if w.status == done else None,
                )
                for w in works
                if w.parent == project_id
            ],
        )

    async def close_project(self, project_id: int) -> None:
        """Set the project and everything under it to Done (the saga's compensation).

        Closing a closed project changes nothing, and a project that is gone counts as
        closed: a compensation retried after it succeeded must succeed again.
        """
        try:
            works = await self.works(project_id)
        except NotFound:
            return
        done = await (await self.catalog()).done_status(self.client)
        # A Done status asks for full progress, of the work and of all its children.
        still_open = [w.id for w in works if w.status != done or (w.progress or 0) < 1]
        if still_open:
            await self.client.for_company(works[0].company).write(
                "project.work", still_open, {"status": done, "progress": 1.0}
            )

    async def set_task_done(self, task_id: int) -> date:
        """Set a task (or a project's work) Done, as a person completes a milestone or a
        fixed-fee deliverable in Tryton; returns the day it was done.

        Setting a Done task Done again changes nothing and keeps its day (q2c's Tryton
        module records the day the status changed: Tryton keeps only a write date).
        """
        rows = await self.client.read(
            "project.work", [task_id], ["status", "progress", "company", "q2c_done_on"]
        )
        if not rows:
            raise NotFound(f"no project work {task_id} in Tryton", system=SYSTEM)
        row = rows[0]
        done = await (await self.catalog()).done_status(self.client)
        if row["status"] != done or (row["progress"] or 0) < 1 or row["q2c_done_on"] is None:
            children = await self.client.search(
                "project.work", [("parent", "child_of", [task_id]), ("id", "!=", task_id)]
            )
            if children:
                raise ValidationFailed(
                    f"project work {task_id} has sub-works; set them Done first",
                    system=SYSTEM,
                    field="task_id",
                )
            await self.client.for_company(int(row["company"])).write(
                "project.work", [task_id], {"status": done, "progress": 1.0}
            )
            (row,) = await self.client.read("project.work", [task_id], ["q2c_done_on"])
        done_on: date = row["q2c_done_on"]
        return done_on

    # -- change orders -------------------------------------------------------------------------

    async def update_project_terms(
        self,
        project_id: int,
        *,
        task_rates: Mapping[int, Money] | None = None,
        task_hours: Mapping[int, Decimal] | None = None,
        task_billing: Mapping[int, BillingType] | None = None,
        add_tasks: Sequence[Task] = (),
        close_tasks: Sequence[int] = (),
        budget: Money | None = None,
        contract_value: Money | None = None,
        idempotency_key: str,
    ) -> ProjectTermsChange:
        """Apply a change order's terms to a running project; returns what changed, with the
        values before, for `restore_project_terms`.

        Task rates are the tasks' `list_price`; closed tasks are set Done; added tasks are
        created under the project (numbered from the key); the budget and the contract value
        are labels on the project's comment. Only what is passed is touched.

        Idempotent: before changing anything, the values found are recorded on the project
        (its comment, under the key), in the same write as the new labels. A retry reads
        that record instead of the project's values, which the first attempt may already have
        changed, and finishes what is left; so it changes nothing more, and returns the same
        record, whose `before` holds the values from before the first attempt.
        """
        works = await self.works(project_id)
        project = works[0]
        if project.type != "project":
            raise NotFound(f"Tryton work {project_id} is not a project", system=SYSTEM)
        cat = await self.catalog()
        company = cat.company_by_id(project.company)
        client = self.client.for_company(company.company_id)
        label = mapping.terms_label(idempotency_key)
        (numbered,) = await self.client.read("project.work", [project_id], ["number"])
        numbers = [
            mapping.added_task_number(numbered["number"], idempotency_key, i)
            for i in range(1, len(add_tasks) + 1)
        ]
        recorded = mapping.label_value(project.comment, label)
        if recorded is not None:
            change = ProjectTermsChange.model_validate_json(recorded)
            asked = (
                dict(task_rates or {}),
                dict(task_hours or {}),
                dict(task_billing or {}),
                set(close_tasks),
                budget,
                contract_value,
            )
            after = change.after
            done = (
                after.task_rates,
                after.task_hours,
                after.task_billing,
                set(after.task_states),
                after.budget,
                after.contract_value,
            )
            names = [t.name for t in add_tasks]
            if asked != done or (change.added_task_ids and names != list(change.added_task_ids)):
                raise IdempotencyConflict(
                    f"project {project_id}'s terms were changed under key {idempotency_key!r}"
                    " with other values",
                    system=SYSTEM,
                )
        else:
            change = self._terms_change(
                works,
                company,
                await cat.done_status(self.client),
                idempotency_key,
                task_rates=task_rates or {},
                task_hours=task_hours or {},
                task_billing=task_billing or {},
                add_tasks=add_tasks,
                close_tasks=close_tasks,
                budget=budget,
                contract_value=contract_value,
            )
            comment = mapping.with_label(project.comment, label, change.model_dump_json())
            comment = self._terms_labels(comment, change.after)
            await client.write("project.work", [project_id], {"comment": comment})
        by_id = {w.id: w for w in works}
        for task_id, rate in change.after.task_rates.items():
            if by_id[task_id].list_price != rate.amount:
                await client.write("project.work", [task_id], {"list_price": rate.amount})
        for task_id, planned in change.after.task_hours.items():
            await self._plan_hours(client, by_id[task_id], planned)
        for task_id, billing in change.after.task_billing.items():
            await self._bill_task_as(client, by_id[task_id], billing)
        for task_id, state in change.after.task_states.items():
            work = by_id[task_id]
            if (work.status, work.progress) != (state.status, state.progress):
                await client.write(
                    "project.work",
                    [task_id],
                    {"status": state.status, "progress": state.progress},
                )
        added = await self._add_tasks(client, cat, company, project_id, add_tasks, numbers)
        if added != change.added_task_ids:
            change = change.model_copy(update={"added_task_ids": added})
            (row,) = await self.client.read("project.work", [project_id], ["comment"])
            comment = mapping.with_label(row["comment"], label, change.model_dump_json())
            await client.write("project.work", [project_id], {"comment": comment})
        return change

    async def recorded_terms_change(
        self, project_id: int, idempotency_key: str
    ) -> ProjectTermsChange | None:
        """What `update_project_terms` recorded under the key (before changing anything);
        None when it never ran that far, or the project is gone."""
        try:
            works = await self.works(project_id)
        except NotFound:
            return None
        recorded = mapping.label_value(works[0].comment, mapping.terms_label(idempotency_key))
        return ProjectTermsChange.model_validate_json(recorded) if recorded else None

    async def restore_project_terms(self, project_id: int, before: ProjectTermsChange) -> None:
        """Put back what `update_project_terms` changed (a saga's compensation).

        Rates, task states, budget and contract value return to their values before; the
        tasks it added are deleted, or set Done when time was booked on them meanwhile (time
        is never thrown away). Idempotent: restoring twice changes nothing more.
        """
        if before.project_id != project_id:
            raise ValidationFailed(
                f"the change recorded is of project {before.project_id}, not {project_id}",
                system=SYSTEM,
                field="project_id",
            )
        try:
            works = await self.works(project_id)
        except NotFound:
            return
        by_id = {w.id: w for w in works}
        client = self.client.for_company(works[0].company)
        for task_id, rate in before.before.task_rates.items():
            if task_id in by_id and by_id[task_id].list_price != rate.amount:
                await client.write("project.work", [task_id], {"list_price": rate.amount})
        for task_id, planned in before.before.task_hours.items():
            if task_id in by_id:
                await self._plan_hours(client, by_id[task_id], planned)
        for task_id, billing in before.before.task_billing.items():
            if task_id in by_id:
                await self._bill_task_as(client, by_id[task_id], billing)
        for task_id, state in before.before.task_states.items():
            work = by_id.get(task_id)
            if work is not None and (work.status, work.progress) != (state.status, state.progress):
                await client.write(
                    "project.work",
                    [task_id],
                    {"status": state.status, "progress": state.progress},
                )
        for task_id in before.added_task_ids.values():
            work = by_id.get(task_id)
            if work is None:
                continue
            booked = await self.client.search(
                "timesheet.line", [("work", "in", work.timesheet_works)], limit=1
            )
            if booked:
                done = await (await self.catalog()).done_status(self.client)
                await client.write("project.work", [task_id], {"status": done, "progress": 1.0})
            else:
                await client.delete("project.work", [task_id])
        comment = works[0].comment
        restored = mapping.without_label(comment, mapping.terms_label(before.idempotency_key))
        for touched, old, label in (
            (before.after.budget, before.before.budget, mapping.BUDGET_LABEL),
            (
                before.after.contract_value,
                before.before.contract_value,
                mapping.CONTRACT_VALUE_LABEL,
            ),
        ):
            if touched is None:
                continue
            if old is None:
                restored = mapping.without_label(restored, label)
            else:
                restored = mapping.with_label(restored, label, mapping.format_money(old))
        if restored != (comment or ""):
            await client.write("project.work", [project_id], {"comment": restored})

    @staticmethod
    async def _plan_hours(client: TrytonClient, work: WorkRecord, planned: Decimal | None) -> None:
        """Set a task's planned hours (its `effort_duration`) unless it has them already."""
        has = mapping.hours(work.effort_duration) if work.effort_duration else None
        if has != planned:
            duration = timedelta(hours=float(planned)) if planned is not None else None
            await client.write("project.work", [work.id], {"effort_duration": duration})

    @staticmethod
    async def _bill_task_as(client: TrytonClient, work: WorkRecord, billing: BillingType) -> None:
        """Label a task with how its line is billed, unless it is labelled so already."""
        if mapping.task_billing_type(work.comment) != billing:
            comment = mapping.with_label(work.comment, mapping.BILLING_LABEL, billing.value)
            await client.write("project.work", [work.id], {"comment": comment})

    def _terms_change(
        self,
        works: list[WorkRecord],
        company: Company,
        done: int,
        idempotency_key: str,
        *,
        task_rates: Mapping[int, Money],
        task_hours: Mapping[int, Decimal],
        task_billing: Mapping[int, BillingType],
        add_tasks: Sequence[Task],
        close_tasks: Sequence[int],
        budget: Money | None,
        contract_value: Money | None,
    ) -> ProjectTermsChange:
        """Check the change against the project, and pair each value with the one it replaces."""
        project = works[0]
        tasks = {w.id: w for w in works if w.parent == project.id}

        def same_currency(money: Money, field: str) -> None:
            if money.currency != company.currency:
                raise ValidationFailed(
                    f"project {project.id} is priced in {company.currency}, not {money.currency}",
                    system=SYSTEM,
                    field=field,
                )

        for task_id, rate in task_rates.items():
            if task_id not in tasks:
                raise ValidationFailed(
                    f"work {task_id} is not a task of project {project.id}",
                    system=SYSTEM,
                    field=f"task_rates[{task_id}]",
                )
            same_currency(rate, f"task_rates[{task_id}]")
        for task_id in [*task_hours, *task_billing]:
            if task_id not in tasks:
                raise ValidationFailed(
                    f"work {task_id} is not a task of project {project.id}",
                    system=SYSTEM,
                    field=f"task_hours[{task_id}]",
                )
        for i, task_id in enumerate(close_tasks):
            if task_id not in tasks:
                raise ValidationFailed(
                    f"work {task_id} is not a task of project {project.id}",
                    system=SYSTEM,
                    field=f"close_tasks[{i}]",
                )
        names = {w.name for w in tasks.values()}
        for i, task in enumerate(add_tasks):
            if task.name in names or [t.name for t in add_tasks].count(task.name) > 1:
                raise ValidationFailed(
                    f"project {project.id} already has a task {task.name!r}",
                    system=SYSTEM,
                    field=f"add_tasks[{i}].name",
                )
            if task.rate is not None:
                same_currency(task.rate, f"add_tasks[{i}].rate")
        if budget is not None:
            same_currency(budget, "budget")
        if contract_value is not None:
            same_currency(contract_value, "contract_value")

        def rate_of(task_id: int) -> Money:
            return Money(amount=tasks[task_id].list_price or Decimal(0), currency=company.currency)

        def label(name: str) -> Money | None:
            value = mapping.label_value(project.comment, name)
            return mapping.parse_money(value) if value else None

        def hours_of(task_id: int) -> Decimal | None:
            duration = tasks[task_id].effort_duration
            return mapping.hours(duration) if duration else None

        before = ProjectTerms(
            task_rates={t: rate_of(t) for t in task_rates},
            task_hours={t: hours_of(t) for t in task_hours},
            task_billing={t: mapping.task_billing_type(tasks[t].comment) for t in task_billing},
            task_states={
                t: TaskState(status=tasks[t].status, progress=tasks[t].progress)
                for t in close_tasks
            },
            budget=label(mapping.BUDGET_LABEL) if budget is not None else None,
            contract_value=(
                label(mapping.CONTRACT_VALUE_LABEL) if contract_value is not None else None
            ),
        )
        after = ProjectTerms(
            task_rates=dict(task_rates),
            task_hours=dict(task_hours),
            task_billing=dict(task_billing),
            task_states={t: TaskState(status=done, progress=1.0) for t in close_tasks},
            budget=budget,
            contract_value=contract_value,
        )
        return ProjectTermsChange(
            project_id=project.id, idempotency_key=idempotency_key, before=before, after=after
        )

    @staticmethod
    def _terms_labels(comment: str | None, after: ProjectTerms) -> str:
        result = comment or ""
        if after.budget is not None:
            result = mapping.with_label(
                result, mapping.BUDGET_LABEL, mapping.format_money(after.budget)
            )
        if after.contract_value is not None:
            result = mapping.with_label(
                result, mapping.CONTRACT_VALUE_LABEL, mapping.format_money(after.contract_value)
            )
        return result

    async def _add_tasks(
        self,
        client: TrytonClient,
        cat: Catalog,
        company: Company,
        project_id: int,
        tasks: Sequence[Task],
        numbers: list[str],
    ) -> dict[str, int]:
        """The added tasks by name, created where a retry does not find them by number."""
        if not tasks:
            return {}
        found = await self.client.search_read(
            "project.work", [("number", "in", numbers)], ["number"]
        )
        by_number = {r["number"]: int(r["id"]) for r in found}
        missing = [(t, n) for t, n in zip(tasks, numbers, strict=True) if n not in by_number]
        if missing:
            prices = await cat.product_prices(self.client, company)
            values = []
            for task, number in missing:
                product = mapping.product_for_role(task.role, set(cat.product_ids))
                price = task.rate.amount if task.rate is not None else prices.get(product)
                if price is None:
                    raise ValidationFailed(
                        f"task {task.name!r} has no rate, and {product!r} has no list price"
                        f" in {company.code}",
                        system=SYSTEM,
                        field="add_tasks.rate",
                    )
                task_values: dict[str, Any] = {
                    "name": task.name,
                    "number": number,
                    "type": "task",
                    "parent": project_id,
                    "company": company.company_id,
                    "product": self._product_id(cat, product),
                    "list_price": price if task.billable else Decimal(0),
                    "timesheet_available": True,
                    "comment": mapping.task_comment(task.role or product, task.billing_type),
                }
                if task.planned_hours is not None:
                    task_values["effort_duration"] = timedelta(hours=float(task.planned_hours))
                values.append(task_values)
            try:
                await client.create("project.work", values)
            except ConnectorError:
                # A concurrent attempt under the same key may have taken the numbers first:
                # its tasks are these tasks.
                found = await self.client.search_read(
                    "project.work", [("number", "in", numbers)], ["number"]
                )
                if len(found) != len(numbers):
                    raise
            found = await self.client.search_read(
                "project.work", [("number", "in", numbers)], ["number"]
            )
            by_number = {r["number"]: int(r["id"]) for r in found}
        return {t.name: by_number[n] for t, n in zip(tasks, numbers, strict=True)}

    # -- time ----------------------------------------------------------------------------------

    async def create_timesheet_lines(
        self, entries: Sequence[TimeEntry], *, idempotency_key: str
    ) -> dict[str, int]:
        """Book `entries`; returns the Tryton line id for each entry id.

        Each line carries a key derived from the batch key and the entry id; lines whose key
        is already booked are not booked again (one search finds all the batch has booked),
        and the rest go `CREATE_BATCH` lines per call, each call one transaction. Each line
        is booked in the company of its project, by an employee of that company.
        """
        cat = await self.catalog()
        keys = {e.id: mapping.line_key(idempotency_key, e.id) for e in entries}
        if len(keys) != len(entries):
            raise ValidationFailed("two time entries share an id", system=SYSTEM, field="id")
        booked = await self._lines_of_batch(idempotency_key) if entries else {}
        to_create: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        work_cache: dict[int, tuple[int, int]] = {}
        for entry in entries:
            if keys[entry.id] in booked:
                continue
            work, company_id = await self._timesheet_work(entry, work_cache)
            if entry.employee not in cat.company_by_id(company_id).employees:
                cat = await self.catalog(refresh=True)
            company = cat.company_by_id(company_id)
            to_create.setdefault(company_id, []).append(
                (
                    entry.id,
                    {
                        "company": company_id,
                        "employee": company.employee_id(entry.employee),
                        "work": work,
                        "date": entry.work_date,
                        "duration": timedelta(seconds=float(entry.hours * 3600)),
                        "description": mapping.tag_description(entry.description, keys[entry.id]),
                    },
                )
            )
        mine: dict[int, list[int]] = {}
        for company_id, lines in to_create.items():
            client = self.client.for_company(company_id)
            for start in range(0, len(lines), CREATE_BATCH):
                chunk = lines[start : start + CREATE_BATCH]
                mine.setdefault(company_id, []).extend(
                    await client.create("timesheet.line", [v for _, v in chunk])
                )
        if mine:
            # Two attempts of one batch at once may both have booked an entry: the first
            # line booked under a key stays, and this call removes its own later ones.
            booked = await self._lines_of_batch(idempotency_key)
            kept = set(booked.values())
            for company_id, ids in mine.items():
                later = [i for i in ids if i not in kept]
                await self.client.for_company(company_id).delete("timesheet.line", later)
        return {e.id: booked[keys[e.id]] for e in entries}

    async def _lines_of_batch(self, idempotency_key: str) -> dict[str, int]:
        """Line key -> id of the first line booked under it, for the batch key."""
        rows = await self.client.search_read(
            "timesheet.line",
            [("description", "like", mapping.batch_pattern(idempotency_key))],
            ["description"],
            order=[("id", "ASC")],
        )
        found: dict[str, int] = {}
        for row in rows:
            _, key = mapping.split_description(row.get("description"))
            if key is not None:
                found.setdefault(key, int(row["id"]))
        return found

    async def list_time_page(
        self,
        project_id: int,
        *,
        start: date,
        end: date,
        after_id: int | None = None,
        limit: int = 1000,
    ) -> TimePage:
        """The project's unbilled time dated `start`..`end`, a page at a time, by line id.

        Unbilled means no invoice line (see `mark_time_billed`). Every entry is
        `approved`: Tryton has no approval step, a booked line is invoiceable. `billable`
        is False on tasks priced at zero (`create_project` prices non-billable tasks so).
        Two calls per page: the project's tasks and the lines (employees read along).
        """
        if limit < 1:
            raise ValidationFailed("limit must be at least 1", system=SYSTEM, field="limit")
        products = {v: k for k, v in (await self.catalog()).product_ids.items()}
        works = await self._time_works(project_id)
        domain = self._unbilled_domain(works, start, end)
        if after_id is not None:
            domain.append(("id", ">", after_id))
        rows = await self.client.search_read(
            "timesheet.line",
            domain,
            ["work", "date", "duration", "description", "employee.party.name"],
            # One more than asked tells whether another page follows.
            limit=limit + 1,
            order=[("id", "ASC")],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        entries = [_time_entry(project_id, works, products, row) for row in rows]
        return TimePage(entries=entries, next_after=int(rows[-1]["id"]) if more else None)

    async def count_unbilled(self, project_id: int, start: date, end: date) -> int:
        """How many lines `list_time_page` would return over all pages."""
        works = await self._time_works(project_id)
        count = await self.client.model(
            "timesheet.line", "search_count", self._unbilled_domain(works, start, end)
        )
        return int(count)

    async def _time_works(self, project_id: int) -> dict[int, WorkRecord]:
        """The project's works by their timesheet work: where its time is booked."""
        works = await self.works(project_id)
        if works[0].type != "project":
            raise NotFound(f"Tryton work {project_id} is not a project", system=SYSTEM)
        return {tw: w for w in works for tw in w.timesheet_works}

    @staticmethod
    def _unbilled_domain(works: dict[int, WorkRecord], start: date, end: date) -> list[Any]:
        return [
            ("work", "in", list(works)),
            ("date", ">=", start),
            ("date", "<=", end),
            ("invoice_line", "=", None),
            # A line of no time has nothing to bill (and is no canonical entry).
            ("duration", ">", timedelta(0)),
        ]

    async def mark_time_billed(self, links: Mapping[int, int]) -> None:
        """Mark timesheet lines billed by the ERP invoice lines q2c posted (line -> line).

        Tryton then counts them invoiced: they leave `list_time_page`, and its own project
        invoicing will not bill them again. `timesheet.line.invoice_line` is read-only over
        RPC (only Tryton's invoicing button sets it), so this goes through q2c's Tryton
        module (`connectors/tryton/trytond_q2c`), `LINK_BATCH` lines per call. Idempotent;
        a line already billed on another invoice line is refused.
        """
        await self._link(sorted(links.items()))

    async def unmark_time_billed(self, line_ids: Sequence[int]) -> None:
        """Return lines to unbilled (a compensation); lines not billed stay as they are.

        Refused for a line billed on a posted invoice: that needs a credit note first.
        """
        await self._link([(line_id, None) for line_id in sorted(set(line_ids))])

    async def _link(
        self, pairs: list[tuple[int, int | None]], model: str = "timesheet.line"
    ) -> None:
        for start in range(0, len(pairs), LINK_BATCH):
            chunk = [[line, target] for line, target in pairs[start : start + LINK_BATCH]]
            try:
                await self.client.model(model, LINK_METHOD, chunk)
            except ConnectorError as exc:
                if LINK_METHOD in str(exc) and not isinstance(exc, ValidationFailed):
                    raise PermanentError(
                        f"{exc.message}: is q2c's Tryton module ({MODULE_NAME!r}) activated?",
                        system=SYSTEM,
                        code="module_missing",
                    ) from exc
                raise

    async def project_cost(self, project_id: int, start: date, end: date) -> Money:
        """What the project's time dated `start`..`end` cost: hours times each employee's
        hourly cost on the day (timesheet_cost keeps it on every line), in the project's
        company currency, rounded to the minor unit once, at the end."""
        works = await self._time_works(project_id)
        company = (await self.catalog()).company_by_id(next(iter(works.values())).company)
        rows = await self.client.search_read(
            "timesheet.line",
            [("work", "in", list(works)), ("date", ">=", start), ("date", "<=", end)],
            ["duration", "cost_price"],
        )
        total = sum(
            (mapping.hours(r["duration"]) * Decimal(r["cost_price"] or 0) for r in rows),
            Decimal(0),
        )
        return Money(amount=total, currency=company.currency).rounded()

    # -- expenses ------------------------------------------------------------------------------

    async def book_expense(
        self, expense: Expense, *, idempotency_key: str, approve: bool = True
    ) -> int:
        """Book an expense as a disbursement of its project; returns the disbursement id.

        The payee is the employee who spent it, the expense product its category; `approve`
        validates it (Tryton then makes the reimbursement payment, through the company's
        payment journal for the currency, linked to the project on first use). The key is
        tagged on the description: a retry finds the disbursement and books nothing more.
        """
        found = await self._expense_of_key(idempotency_key)
        if found is None:
            found = await self._create_expense(expense, idempotency_key)
        disbursement_id, state, company_id = found
        if approve and state == "draft":
            await self.client.for_company(company_id).model(
                "project.disbursement", "validate_disbursement", [disbursement_id]
            )
        return disbursement_id

    async def _expense_of_key(self, idempotency_key: str) -> tuple[int, str, int] | None:
        tag = mapping.expense_key(idempotency_key)
        rows = await self.client.search_read(
            "project.disbursement",
            [("description", "like", f"%[q2c:{tag}]")],
            ["description", "state", "company"],
            order=[("id", "ASC")],
        )
        for row in rows:
            if mapping.split_description(row.get("description"))[1] == tag:
                return int(row["id"]), str(row["state"]), int(row["company"])
        return None

    async def _create_expense(self, expense: Expense, idempotency_key: str) -> tuple[int, str, int]:
        work_id = int(expense.project_id)
        rows = await self.client.read(
            "project.work",
            [work_id],
            ["company", "type", "disbursement_journals.currency"],
        )
        if not rows or rows[0]["type"] != "project":
            raise ValidationFailed(
                f"no project {expense.project_id} in Tryton", system=SYSTEM, field="project_id"
            )
        cat = await self.catalog()
        company_id = int(rows[0]["company"])
        if expense.employee not in cat.company_by_id(company_id).employees:
            cat = await self.catalog(refresh=True)
        company = cat.company_by_id(company_id)
        employee = company.employee_id(expense.employee)
        (person,) = await self.client.read("company.employee", [employee], ["party"])
        currency = cat.currency_ids.get(expense.amount.currency)
        if currency is None:
            raise ValidationFailed(
                f"Tryton has no currency {expense.amount.currency}",
                system=SYSTEM,
                field="amount",
            )
        product = await self.client.search(
            "product.product",
            [("template.name", "=", expense.category), ("type", "=", "service")],
            limit=1,
        )
        if not product:
            raise ValidationFailed(
                f"no expense product {expense.category!r} in Tryton",
                system=SYSTEM,
                field="category",
            )
        client = self.client.for_company(company_id)
        journals = {int(j["currency"]) for j in rows[0]["disbursement_journals."]}
        if currency not in journals:
            await self._add_disbursement_journal(client, work_id, company_id, currency, expense)
        await client.create(
            "project.disbursement",
            [
                {
                    "work": work_id,
                    "company": company_id,
                    "payee": int(person["party"]),
                    "payment_date": expense.incurred_on,
                    "currency": currency,
                    "amount": expense.amount.amount,
                    "description": mapping.tag_description(
                        expense.description or expense.category,
                        mapping.expense_key(idempotency_key),
                    ),
                    "q2c_product": product[0],
                }
            ],
        )
        # Two attempts at once may both have booked: the first stays, later drafts go.
        rows = await self.client.search_read(
            "project.disbursement",
            [("description", "like", f"%[q2c:{mapping.expense_key(idempotency_key)}]")],
            ["state"],
            order=[("id", "ASC")],
        )
        first, *later = rows
        drafts = [int(r["id"]) for r in later if r["state"] == "draft"]
        if drafts:
            await client.delete("project.disbursement", drafts)
        return int(first["id"]), str(first["state"]), company_id

    async def _add_disbursement_journal(
        self,
        client: TrytonClient,
        work_id: int,
        company_id: int,
        currency: int,
        expense: Expense,
    ) -> None:
        journal = await self.client.search(
            "account.payment.journal",
            [("company", "=", company_id), ("currency", "=", currency)],
            limit=1,
            order=[("id", "ASC")],
        )
        if not journal:
            raise ValidationFailed(
                f"company {company_id} has no payment journal in {expense.amount.currency} "
                "to reimburse expenses",
                system=SYSTEM,
                field="amount",
            )
        await client.write(
            "project.work",
            [work_id],
            {
                "disbursement_journals": [
                    ["create", [{"currency": currency, "journal": journal[0]}]]
                ]
            },
        )

    async def list_expense_page(
        self,
        project_id: int,
        *,
        start: date,
        end: date,
        after_id: int | None = None,
        limit: int = 1000,
    ) -> ExpensePage:
        """The project's unbilled expenses dated `start`..`end`, a page at a time, by id.

        An expense is a disbursement of the project or of one of its tasks; unbilled means
        q2c has not linked it to an invoice line (`mark_expenses_billed`); cancelled ones
        are left out. `approved` is a validated (or paid) disbursement; `billable` is
        True: which categories the customer pays for is the contract's expense policy.
        """
        if limit < 1:
            raise ValidationFailed("limit must be at least 1", system=SYSTEM, field="limit")
        works = await self.works(project_id)
        if works[0].type != "project":
            raise NotFound(f"Tryton work {project_id} is not a project", system=SYSTEM)
        domain: list[Any] = [
            ("work", "in", [w.id for w in works]),
            ("payment_date", ">=", start),
            ("payment_date", "<=", end),
            ("q2c_invoice_line", "=", None),
            ("state", "!=", "cancelled"),
        ]
        if after_id is not None:
            domain.append(("id", ">", after_id))
        rows = await self.client.search_read(
            "project.disbursement",
            domain,
            _EXPENSE_FIELDS,
            limit=limit + 1,
            order=[("id", "ASC")],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return ExpensePage(
            entries=[_expense(project_id, row) for row in rows],
            next_after=int(rows[-1]["id"]) if more else None,
        )

    async def mark_expenses_billed(self, links: Mapping[int, int]) -> None:
        """Mark disbursements billed by the ERP invoice lines q2c posted (id -> line).

        As `mark_time_billed`, through q2c's Tryton module: they leave
        `list_expense_page`, and Tryton's own project invoicing has nothing left to bill
        on them. Idempotent; refused for one billed on another line or not approved.
        """
        await self._link(sorted(links.items()), "project.disbursement")

    async def unmark_expenses_billed(self, disbursement_ids: Sequence[int]) -> None:
        """Return disbursements to unbilled (a compensation); refused once the invoice that
        billed them is posted."""
        await self._link([(i, None) for i in sorted(set(disbursement_ids))], "project.disbursement")

    async def _timesheet_work(
        self, entry: TimeEntry, cache: dict[int, tuple[int, int]]
    ) -> tuple[int, int]:
        """The `timesheet.work` of the task (or of the project when the entry has no task),
        and its company."""
        work_id = int(entry.task_id) if entry.task_id else int(entry.project_id)
        if work_id not in cache:
            rows = await self.client.read("project.work", [work_id], ["timesheet_works", "company"])
            if not rows or not rows[0]["timesheet_works"]:
                raise ValidationFailed(
                    f"project work {work_id} does not take time",
                    system=SYSTEM,
                    field="task_id",
                )
            cache[work_id] = (int(rows[0]["timesheet_works"][0]), int(rows[0]["company"]))
        return cache[work_id]

    async def list_time_entries(self, project_id: int) -> list[TimeEntry]:
        works = await self.works(project_id)
        by_timesheet_work = {tw: w for w in works for tw in w.timesheet_works}
        if not by_timesheet_work:
            return []
        rows = await self.client.search_read(
            "timesheet.line",
            [("work", "in", list(by_timesheet_work))],
            _LINE_FIELDS,
            order=[("date", "ASC"), ("id", "ASC")],
        )
        lines = [TimesheetLineRecord.model_validate(r) for r in rows]
        employees = {e.id: e.name for e in await self.list_employees()}
        products = {v: k for k, v in (await self.catalog()).product_ids.items()}
        result = []
        for line in lines:
            work = by_timesheet_work[line.work]
            role = mapping.label_value(work.comment, mapping.ROLE_LABEL) or products.get(
                work.product or 0, mapping.DEFAULT_PRODUCT
            )
            result.append(
                mapping.to_time_entry(
                    line,
                    project_id=project_id,
                    task_id=None if work.id == project_id else work.id,
                    employee=employees.get(line.employee, str(line.employee)),
                    role=role,
                )
            )
        return result


def _time_entry(
    project_id: int,
    works: dict[int, WorkRecord],
    products: dict[int, str],
    row: dict[str, Any],
) -> TimeEntry:
    work = works[int(row["work"])]
    role = mapping.label_value(work.comment, mapping.ROLE_LABEL) or products.get(
        work.product or 0, mapping.DEFAULT_PRODUCT
    )
    text, _ = mapping.split_description(row.get("description"))
    try:
        return TimeEntry(
            id=str(row["id"]),
            project_id=str(project_id),
            task_id=None if work.id == project_id else str(work.id),
            employee=str(row["employee."]["party."]["name"]),
            role=role,
            work_date=row["date"],
            hours=mapping.hours(row["duration"]),
            billable=(work.list_price or Decimal(0)) > 0,
            approved=True,
            billed=False,
            description=text,
        )
    except ValidationError as exc:
        # A line someone booked by hand that q2c cannot bill as is (more than a day...).
        raise ValidationFailed(
            f"timesheet line {row['id']} of project {project_id}: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
            system=SYSTEM,
            field="duration" if "hours" in str(exc) else "timesheet_line",
        ) from None


def _expense(project_id: int, row: dict[str, Any]) -> Expense:
    text, _ = mapping.split_description(row.get("description"))
    product = row.get("q2c_product.") or {}
    category = (product.get("template.") or {}).get("name") or UNCATEGORIZED
    try:
        return Expense(
            id=str(row["id"]),
            project_id=str(project_id),
            employee=str(row["payee."]["name"]),
            incurred_on=row["payment_date"],
            category=str(category),
            amount=Money(amount=Decimal(row["amount"]), currency=str(row["currency."]["code"])),
            description=text,
            billable=True,
            approved=row["state"] in _APPROVED,
            billed=False,
        )
    except ValidationError as exc:
        raise ValidationFailed(
            f"disbursement {row['id']} of project {project_id}: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
            system=SYSTEM,
            field="disbursement",
        ) from None
