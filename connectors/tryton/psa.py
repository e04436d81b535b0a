"""Tryton as the PSA: projects with tasks and rates, employees, timesheets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from canonical import NoRate, Project, Task, TimeEntry
from connectors.errors import NotFound, ValidationFailed
from connectors.tryton import mapping
from connectors.tryton.catalog import Catalog
from connectors.tryton.client import SYSTEM, TrytonClient
from connectors.tryton.wire import Employee, ProjectRef, TimesheetLineRecord, WorkRecord

_WORK_FIELDS = [
    "name",
    "type",
    "parent",
    "party",
    "product",
    "list_price",
    "comment",
    "timesheet_works",
    "project_invoice_method",
    "effort_duration",
]
_LINE_FIELDS = ["employee", "work", "date", "duration", "description", "invoice_line"]


class TrytonPsa:
    def __init__(self, client: TrytonClient, catalog: Catalog | None = None) -> None:
        self.client = client
        self._catalog = catalog

    async def catalog(self, *, refresh: bool = False) -> Catalog:
        if self._catalog is None or refresh:
            self._catalog = await Catalog.load(self.client)
        return self._catalog

    # -- employees -----------------------------------------------------------------------------

    async def list_employees(self) -> list[Employee]:
        cat = await self.catalog()
        rows = await self.client.search_read(
            "company.employee",
            [("company", "=", cat.company_id)],
            ["party", "party.name", "company"],
            order=[("id", "ASC")],
        )
        return [
            Employee(
                id=int(r["id"]),
                name=str(r["party."]["name"]),
                party_id=int(r["party"]),
                company_id=int(r["company"]),
            )
            for r in rows
        ]

    # -- projects ------------------------------------------------------------------------------

    async def find_project(self, idempotency_key: str) -> ProjectRef | None:
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

        The project and its tasks are created in one call, so one transaction: a retry
        either finds the whole project by its key or creates it afresh.
        """
        existing = await self.find_project(idempotency_key)
        if existing is not None:
            return existing
        cat = await self.catalog()
        if project.currency != cat.company_currency:
            # project_invoice invoices in the company currency only.
            raise ValidationFailed(
                f"project {project.id} is in {project.currency}; the Tryton company invoices "
                f"in {cat.company_currency}",
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
        default_product = mapping.product_for_role(None, set(cat.product_ids))
        comment = mapping.with_label(None, mapping.KEY_LABEL, idempotency_key)
        comment = mapping.with_label(comment, mapping.PROJECT_LABEL, project.id)
        values: dict[str, Any] = {
            "name": project.name,
            "type": "project",
            "company": cat.company_id,
            "party": party_id,
            "project_invoice_method": "timesheet",
            "timesheet_available": True,
            "product": self._product_id(cat, default_product),
            "list_price": self._price(cat, project, None, default_product),
            "comment": comment,
            "children": [["create", [self._task_values(cat, project, t) for t in project.tasks]]],
        }
        project_id = await self.client.create_one("project.work", values)
        return await self._project_ref(project_id, created=True)

    def _task_values(self, cat: Catalog, project: Project, task: Task) -> dict[str, Any]:
        product = mapping.product_for_role(task.role, set(cat.product_ids))
        values: dict[str, Any] = {
            "name": task.name,
            "type": "task",
            "company": cat.company_id,
            "product": self._product_id(cat, product),
            "list_price": self._price(cat, project, task, product),
            "timesheet_available": True,
            "comment": mapping.with_label(None, mapping.ROLE_LABEL, task.role or product),
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
    def _price(cat: Catalog, project: Project, task: Task | None, product: str) -> Decimal:
        """The task's own rate, else the rate card's for its role, else the product's price."""
        if task is not None and task.rate is not None:
            return task.rate.amount
        if task is not None and task.role and project.rate_card is not None:
            try:
                return project.rate_card.rate_for(task.role, project.start_date).amount
            except NoRate:
                pass
        return Decimal(cat.product_prices[product])

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

    # -- time ----------------------------------------------------------------------------------

    async def create_timesheet_lines(
        self, entries: Sequence[TimeEntry], *, idempotency_key: str
    ) -> dict[str, int]:
        """Book `entries`; returns the Tryton line id for each entry id.

        Each line carries a key derived from the batch key and the entry id; lines whose key
        is already booked are not booked again, and the rest go in one call (one transaction).
        """
        cat = await self.catalog()
        keys = {e.id: mapping.line_key(idempotency_key, e.id) for e in entries}
        if len(keys) != len(entries):
            raise ValidationFailed("two time entries share an id", system=SYSTEM, field="id")
        booked = await self._lines_by_key(list(keys.values()))
        to_create: list[tuple[str, dict[str, Any]]] = []
        work_cache: dict[int, int] = {}
        for entry in entries:
            if keys[entry.id] in booked:
                continue
            if entry.employee not in cat.employees:
                cat = await self.catalog(refresh=True)
            to_create.append(
                (
                    entry.id,
                    {
                        "company": cat.company_id,
                        "employee": cat.employee_id(entry.employee),
                        "work": await self._timesheet_work(entry, work_cache),
                        "date": entry.work_date,
                        "duration": timedelta(seconds=float(entry.hours * 3600)),
                        "description": mapping.tag_description(entry.description, keys[entry.id]),
                    },
                )
            )
        if to_create:
            ids = await self.client.create("timesheet.line", [v for _, v in to_create])
            booked.update(
                {keys[eid]: line_id for (eid, _), line_id in zip(to_create, ids, strict=True)}
            )
        return {e.id: booked[keys[e.id]] for e in entries}

    async def _lines_by_key(self, keys: list[str]) -> dict[str, int]:
        if not keys:
            return {}
        domain: list[Any] = ["OR"] + [("description", "like", f"%[q2c:{k}]") for k in keys]
        rows = await self.client.search_read("timesheet.line", [domain], ["description"])
        wanted = set(keys)
        found: dict[str, int] = {}
        for row in rows:
            _, key = mapping.split_description(row.get("description"))
            if key in wanted:
                found[key] = int(row["id"])
        return found

    async def _timesheet_work(self, entry: TimeEntry, cache: dict[int, int]) -> int:
        """The `timesheet.work` of the task (or of the project when the entry has no task)."""
        work_id = int(entry.task_id) if entry.task_id else int(entry.project_id)
        if work_id not in cache:
            rows = await self.client.read(
                "project.work", [work_id], ["timesheet_works", "parent", "type"]
            )
            if not rows or not rows[0]["timesheet_works"]:
                raise ValidationFailed(
                    f"project work {work_id} does not take time",
                    system=SYSTEM,
                    field="task_id",
                )
            cache[work_id] = int(rows[0]["timesheet_works"][0])
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
