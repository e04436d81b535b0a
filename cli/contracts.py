"""`q2c contract show <project> [--history]`: the contract as provisioned, every version (with
`--history`, what made each and what it changed), and what was billed.

The contract lives in q2c's store (written at provisioning, versioned by change orders), so
this command reads the store and needs no Temporal.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from canonical import BillingType, Contract, ContractVersion, FeeRemainder, RatedPeriod
from canonical.impact import version_changes
from cli.app import CliError, app, friendly_errors
from cli.common import Fields, JsonFlag, amount_text, console, settings
from store import Store

contract_app = typer.Typer(help="Contracts as provisioned: lines, schedules, milestones, caps.")
app.add_typer(contract_app, name="contract")

ProjectArg = Annotated[
    str,
    typer.Argument(
        metavar="PROJECT",
        help="The PSA project id (e.g. 42) or the contract id (e.g. salesforce:006...).",
    ),
]


_BILLING_LABEL = {
    BillingType.TIME_AND_MATERIALS: "T&M",
    BillingType.FIXED_FEE: "fixed fee",
    BillingType.MILESTONE: "milestone",
}


@contract_app.command("show")
@friendly_errors
def contract_show(
    project: ProjectArg,
    history: Annotated[
        bool,
        typer.Option(
            "--history",
            help="Every version: since when, what made it (the deal or a change order), "
            "and what it changed.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Every version of the contract, its lines as sold, and what has been billed under it."""
    project = project.strip()
    contract, project_id, billed = asyncio.run(_read(settings().store_url, project))
    if history:
        versions = _history(contract)
        if as_json:
            typer.echo(json.dumps(versions, indent=2))
        else:
            _render_history(console(), contract, project_id, versions)
        return
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "contract_id": contract.contract_id,
                    "project_id": project_id,
                    "versions": [v.model_dump(mode="json") for v in contract.versions],
                    "billed": billed,
                },
                indent=2,
            )
        )
        return
    _render(console(), contract, project_id, billed)


async def _read(url: str, project: str) -> tuple[Contract, str, list[dict[str, Any]]]:
    store = Store.from_url(url)
    try:
        await store.require_migrated()
        by_contract = ":" in project
        rows = await store.contract_versions(
            contract_id=project if by_contract else None,
            project_id=None if by_contract else project,
        )
        if not rows:
            raise CliError(
                f"{project}: no contract recorded (one is kept when a deal is provisioned)"
            )
        contract = Contract(versions=[ContractVersion.model_validate(r.body) for r in rows])
        project_id = rows[-1].project_id
        billed: list[dict[str, Any]] = []
        for draft in await store.billed_drafts(project_id):
            rated = RatedPeriod.model_validate(draft.rated["period"])
            where = {
                "invoice": draft.invoice_number or draft.id,
                "period": draft.period,
                "kind": draft.kind,
                "status": draft.status,
            }
            billed += [
                {**where, "item": f"time:{line_id}", "version": None, "net": str(net)}
                for line_id, net in sorted(rated.time_net.items())
            ]
            billed += [
                {**where, "item": i.key, "version": i.version, "net": str(i.net.amount)}
                for i in rated.billed_items
            ]
        return contract, project_id, billed
    finally:
        await store.close()


def _render(
    out: Console, contract: Contract, project_id: str, billed: list[dict[str, Any]]
) -> None:
    current = contract.current
    c = current.currency
    fields = Fields(label_width=14)
    fields.row("Contract", f"{contract.contract_id} (project {project_id})")
    fields.row(
        "Version",
        f"{current.version} of {len(contract.versions)}, in force from "
        f"{current.effective_from} ({current.source})",
    )
    fields.row("Value", f"{amount_text(current.value.amount, c)} {c}")
    end = current.end_date.isoformat() if current.end_date else "open"
    fields.row("Term", f"{current.start_date} .. {end}")
    fields.row("Payment terms", f"net {current.payment_terms.net_days} days")
    if current.not_to_exceed is not None:
        fields.row("Cap", f"{amount_text(current.not_to_exceed.amount, c)} {c} (whole contract)")
    policy = current.expense_policy
    fields.row(
        "Expenses",
        (
            f"{', '.join(policy.billable_categories)} billed at "
            f"{policy.markup_percent.normalize():f} % markup"
        )
        if policy.billable_categories
        else "none billable",
    )
    if current.po_number:
        fields.row("PO", current.po_number)
    fields.print(out)

    lines = Table(box=box.SIMPLE_HEAD, title="Lines", title_justify="left")
    for column in ("task", "role", "billing", "rate / amount", "hours", "schedule"):
        lines.add_column(
            column, justify="right" if column in ("rate / amount", "hours") else "left"
        )
    for line in current.lines:
        price = (
            f"{amount_text(line.rate.amount, c)}/h"
            if line.rate is not None
            else amount_text(line.amount.amount, c)
        )
        lines.add_row(
            f"{line.task}" + (f" (#{line.task_id})" if line.task_id else ""),
            line.role or "-",
            _BILLING_LABEL[line.billing_type],
            price,
            f"{line.hours.normalize():f}" if line.hours is not None else "-",
            _schedule(current, line.id),
        )
    out.print(lines)

    if current.milestones:
        milestones = Table(box=box.SIMPLE_HEAD, title="Milestones", title_justify="left")
        for column in ("milestone", "task", "planned", "amount"):
            milestones.add_column(column, justify="right" if column == "amount" else "left")
        for m in current.milestones:
            planned = m.planned_date.isoformat() if m.planned_date else "-"
            owner = current.line(m.line_id)
            task = owner.task if owner else m.line_id
            milestones.add_row(m.name, task, planned, amount_text(m.amount.amount, c))
        out.print(milestones)

    if len(contract.versions) > 1:
        out.print("Versions")
        for v in contract.versions:
            out.print(f"  v{v.version} from {v.effective_from}: {v.source}")

    if billed:
        table = Table(box=box.SIMPLE_HEAD, title="Billed", title_justify="left")
        for column in ("item", "version", "invoice", "period", "net"):
            table.add_column(column, justify="right" if column == "net" else "left")
        for item in billed:
            table.add_row(
                _item_label(contract, item["item"]),
                f"v{item['version']}" if item["version"] else "-",
                str(item["invoice"]),
                f"{item['period']}" + (" (upfront)" if item["kind"] == "upfront" else ""),
                amount_text(Decimal(item["net"]), c),
            )
        out.print(table)
    else:
        out.print("Billed: nothing yet")


def _history(contract: Contract) -> list[dict[str, Any]]:
    """Each version with what made it and what it changed from the one before (the first:
    nothing, it is the contract as sold)."""
    out: list[dict[str, Any]] = []
    before: ContractVersion | None = None
    for v in contract.versions:
        kind, _, made_by = v.source.partition(":")
        changes = version_changes(before, v) if before is not None else []
        out.append(
            {
                "version": v.version,
                "effective_from": v.effective_from.isoformat(),
                "source": v.source,
                "change_order": made_by if kind == CHANGE_ORDER_SOURCE else None,
                "changes": [
                    {**c.model_dump(mode="json", exclude={"key"}), "text": c.render()}
                    for c in changes
                ],
                "terms": v.model_dump(mode="json"),
            }
        )
        before = v
    return out


#: A version's `source` when a change order made it: "change-order:<crm>:<id>".
CHANGE_ORDER_SOURCE = "change-order"


def _render_history(
    out: Console, contract: Contract, project_id: str, versions: list[dict[str, Any]]
) -> None:
    current = contract.current
    fields = Fields(label_width=14)
    fields.row("Contract", f"{contract.contract_id} (project {project_id})")
    fields.row(
        "Versions", f"{len(versions)}, v{current.version} in force from {current.effective_from}"
    )
    fields.print(out)
    first = contract.versions[0]
    for index, v in enumerate(versions):
        out.print()
        out.print(f"v{v['version']} from {v['effective_from']}: {v['source']}", style="bold")
        if index == 0:
            c = first.currency
            value = f"{amount_text(first.value.amount, c)} {c}"
            out.print(f"  as sold: {len(first.lines)} lines, value {value}", soft_wrap=True)
        elif not v["changes"]:
            out.print("  no term changed", soft_wrap=True)
        for change in v["changes"]:
            out.print(f"  {change['text']}", soft_wrap=True)


def _item_label(contract: Contract, key: str) -> str:
    """An item's key as a person reads it: the task or milestone instead of CRM ids."""
    kind, _, rest = key.partition(":")
    ident, _, number = rest.partition(":")
    for version in reversed(contract.versions):
        if (line := version.line(ident)) is not None:
            return f"{kind} {number} {line.task}" if number else f"{kind}: {line.task}"
        if (m := next((m for m in version.milestones if m.id == ident), None)) is not None:
            return f"{kind}: {m.name}"
    return key


def _schedule(version: ContractVersion, line_id: str) -> str:
    line = version.line(line_id)
    if line is None:
        return "-"
    if line.billing_type is BillingType.TIME_AND_MATERIALS:
        cap = line.not_to_exceed
        return f"hourly, cap {amount_text(cap.amount, version.currency)}" if cap else "hourly"
    if line.billing_type is BillingType.MILESTONE:
        return f"{len(version.milestones_of(line.id))} milestones"
    schedule = line.fee_schedule
    parts = []
    if schedule.upfront_percent:
        parts.append(f"{schedule.upfront_percent.normalize():f} % upfront")
    if schedule.remainder is FeeRemainder.INSTALMENTS:
        count = len(version.instalments(line))
        parts.append(f"rest in {count} monthly instalments")
    else:
        parts.append("rest on completion" if parts else "on completion")
    return ", ".join(parts)
