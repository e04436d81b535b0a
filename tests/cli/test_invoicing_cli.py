"""`q2c invoice run|show|adjust|approve|reject` and `q2c schedules` against the real dev
server, with the time-to-invoice fake systems worker (`tests/workflows/invoice_fakes.py`)
polling in the test's loop; its draft is 12.5 h x 160 GBP + 20 % VAT = 2,400.00 GBP."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

import cli.invoicing
from canonical import BillingPeriod
from tests.cli import test_lifecycle_cli as lifecycle_cli
from tests.cli.test_lifecycle_cli import Invoke, error_line, make_invoke
from tests.fixtures.ports import free_port
from tests.workflows.invoice_fakes import APPROVER, FakeInvoicing
from workflows.starters import SWEEPS, schedule_id, sweep_schedule_id
from workflows.time_to_invoice import (
    CONTRACT_CHANGED,
    STATUS,
    ContractChanged,
    InvoiceKind,
    InvoiceStatus,
    InvoiceStep,
    TimeToInvoiceInput,
    TimeToInvoiceResult,
    upfront_workflow_id,
    workflow_id,
)

# The lifecycle CLI tests' fixtures: the CLI's environment, its invoker, runs to terminate.
cli_env = lifecycle_cli.cli_env
q2c = lifecycle_cli.q2c
started_runs = lifecycle_cli.started_runs

PERIOD = "2026-11"
STEP_WAIT_S = 15.0
RESULT_WAIT_S = 15.0


def new_project_id() -> str:
    """Digits, as the PSA's; fresh per test, so runs of other tests are never attached to."""
    return str(uuid.uuid4().int % 10**12)


async def run_by_cli(q2c: Invoke, started_runs: list[str]) -> str:
    project = new_project_id()
    started_runs.append(workflow_id(project, PERIOD))
    result = await q2c("invoice", "run", project, "--period", PERIOD)
    assert result.exit_code == 0, result.output
    return workflow_id(project, PERIOD)


async def wait_for_step(client: Client, wid: str, step: InvoiceStep) -> InvoiceStatus:
    handle = client.get_workflow_handle(wid)
    async with asyncio.timeout(STEP_WAIT_S):
        while True:
            status: InvoiceStatus = await handle.query(STATUS, result_type=InvoiceStatus)
            if status.step == step:
                return status
            await asyncio.sleep(0.05)


def row(stdout: str, label: str) -> list[str]:
    """The words of the one output line that starts with `label`."""
    [line] = [line for line in stdout.splitlines() if line.split()[:1] == [label]]
    return line.split()[1:]


# --------------------------------------------------------------------------- run


async def test_run_prints_the_run_and_its_link_and_a_second_run_attaches(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    project = new_project_id()
    wid = workflow_id(project, PERIOD)
    started_runs.append(wid)

    first = await q2c("invoice", "run", project, "--period", PERIOD)

    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        f"started: {wid}",
        f"Web UI: http://127.0.0.1:8233/namespaces/{temporal_client.namespace}/workflows/{wid}",
    ]
    handle = temporal_client.get_workflow_handle(wid)
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert (description.workflow_type, description.task_queue) == (
        "TimeToInvoiceWorkflow",
        task_queue,
    )
    attributes = {k.name: v for k, v in description.typed_search_attributes}
    assert attributes["Q2cLifecycle"] == "time-to-invoice"
    assert attributes["Q2cStep"] == "load_contract"
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    assert TimeToInvoiceInput.model_validate_json(payload.data) == TimeToInvoiceInput(
        project_id=project, period=PERIOD, trigger=f"cli:{getpass.getuser()}"
    )

    again = await q2c("invoice", "run", project, "--period", PERIOD, "--json")
    assert again.exit_code == 0, again.output
    attached = json.loads(again.stdout)
    assert attached["workflow_id"] == wid and attached["started"] is False
    assert attached["run_id"] == description.run_id


async def test_run_upfront_starts_the_projects_upfront_invoice(
    q2c: Invoke, temporal_client: Client, started_runs: list[str]
) -> None:
    """After finance rejected the upfront invoice, it can be run again from the CLI."""
    project = new_project_id()
    wid = upfront_workflow_id(project)
    started_runs.append(wid)

    result = await q2c("invoice", "run", project, "--upfront")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"started: {wid}"
    history = await temporal_client.get_workflow_handle(wid).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    request = TimeToInvoiceInput.model_validate_json(payload.data)
    assert request.kind is InvoiceKind.UPFRONT and request.project_id == project
    for both_or_neither in (["--upfront", "--period", PERIOD], []):
        refused = await q2c("invoice", "run", project, *both_or_neither)
        assert error_line(refused) == "error: give --period YYYY-MM, or --upfront (not both)"


@pytest.mark.parametrize(
    ("project", "period", "problem"),
    [
        ("42", "2026-13", "--period: billing period '2026-13' is not in the format YYYY-MM"),
        ("42", "11/2026", "--period: billing period '11/2026' is not in the format YYYY-MM"),
        ("PRJ-42", PERIOD, "PRJ-42: not a PSA project id (digits, e.g. 42)"),
    ],
)
async def test_a_bad_period_or_project_starts_nothing(
    q2c: Invoke, temporal_client: Client, project: str, period: str, problem: str
) -> None:
    result = await q2c("invoice", "run", project, "--period", period)

    assert error_line(result).startswith(f"error: {problem}")
    with pytest.raises(RPCError) as missing:
        await temporal_client.get_workflow_handle(workflow_id(project, period)).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


# --------------------------------------------------------------------------- finance


async def test_show_adjust_and_approve_a_draft(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    systems = FakeInvoicing()
    async with systems.worker(temporal_client, task_queue):
        wid = await run_by_cli(q2c, started_runs)
        await wait_for_step(temporal_client, wid, InvoiceStep.AWAITING_APPROVAL)

        human = await q2c("invoice", "show", wid)
        machine = await q2c("invoice", "show", wid, "--json")

        unlisted = await q2c(
            "invoice",
            "adjust",
            wid,
            "--approver",
            "pm@northwind.example",
            "--reason",
            "goodwill",
            "--write-off",
            "Onboarding=400",
        )
        too_big = await q2c(
            "invoice",
            "adjust",
            wid,
            "--approver",
            APPROVER,
            "--reason",
            "goodwill",
            "--write-off",
            "Everything=5000",
        )
        not_a_number = await q2c(
            "invoice",
            "adjust",
            wid,
            "--approver",
            APPROVER,
            "--reason",
            "goodwill",
            "--write-off",
            "Onboarding=four hundred",
        )
        adjusted = await q2c(
            "invoice",
            "adjust",
            wid,
            "--approver",
            APPROVER,
            "--reason",
            "onboarding not billable",
            "--write-off",
            "Onboarding=400",
        )
        after_adjustment = json.loads((await q2c("invoice", "show", wid, "--json")).stdout)

        approved = await q2c("invoice", "approve", wid, "--approver", APPROVER, "--reason", "ok")
        await wait_for_step(temporal_client, wid, InvoiceStep.AWAITING_PAYMENT)
        billed = await q2c("invoice", "show", wid)
        billed_json = json.loads((await q2c("invoice", "show", wid, "--json")).stdout)

    # The draft, line by line, with its totals.
    assert human.exit_code == 0, human.output
    [line] = [line for line in human.stdout.splitlines() if "Development — Developer" in line]
    assert line.split()[-5:] == ["12.5", "160.00", "2,000.00", "400.00", "2,400.00"]
    # Each line traced to the contract version and the entries that produced it.
    assert "contract v1; from 1001, 1002, 1003" in human.stdout
    assert row(human.stdout, "subtotal") == ["2,000.00", "GBP"]
    assert row(human.stdout, "tax") == ["400.00", "GBP"]
    assert row(human.stdout, "total") == ["2,400.00", "GBP"]
    assert row(human.stdout, "step")[0] == "awaiting_approval"
    assert row(human.stdout, "customer") == ["Initech", "UK", "Ltd"]
    assert row(human.stdout, "entries") == ["3", "time", "entries,", "0", "rejected"]
    link = f"http://127.0.0.1:8233/namespaces/{temporal_client.namespace}/workflows/{wid}"
    assert row(human.stdout, "Web") == ["UI", link]

    report = json.loads(machine.stdout)
    assert report["run_status"] == "running" and report["note"] is None
    draft = report["invoice"]["draft"]
    assert (draft["subtotal"], draft["tax"], draft["total"], draft["currency"]) == (
        "2000.00",
        "400.00",
        "2400.00",
        "GBP",
    )
    [json_line] = draft["lines"]
    assert json_line == {
        "description": "Development — Developer",
        "quantity": "12.5",
        "unit_price": "160.00",
        "net": "2000.00",
        "tax": "400.00",
        "total": "2400.00",
        "contract_version": 1,
        "sources": ["1001", "1002", "1003"],
        "source_count": 3,
    }
    assert (draft["hours"], draft["rejected_entries"]) == ("12.5", 0)

    # Finance's adjustment: refusals are one line, the accepted one prints the new total.
    assert error_line(unlisted) == (
        f"error: {wid}: pm@northwind.example is not on the finance approvers list"
    )
    assert error_line(too_big).startswith(
        f"error: {wid}: adjustment of 5000 exceeds the draft's net"
    )
    assert not_a_number.exit_code == 2 and not_a_number.stdout == ""
    [usage] = not_a_number.stderr.splitlines()
    assert usage.startswith("error: --write-off: 'Onboarding=four hundred': ")
    assert adjusted.exit_code == 0, adjusted.output
    assert adjusted.stdout.splitlines()[:5] == [
        f"adjusted: {wid}",
        f"by:     {APPROVER}",
        "reason: onboarding not billable",
        "- write-off Onboarding: 400.00 GBP",
        "new total: 1,920.00 GBP",
    ]
    [adjust_call] = systems.called("adjust_draft")  # the refused ones never reached the draft
    assert [str(line.amount) for line in adjust_call.adjustment.lines] == ["400"]
    # The command made one id for its adjustment, printed it, and the run applied it by it.
    adjustment_id = adjust_call.adjustment.adjustment_id
    assert adjustment_id and adjustment_id.startswith("adj-")
    assert f"adjustment id: {adjustment_id}" in adjusted.stdout.splitlines()
    adjusted_draft = after_adjustment["invoice"]["draft"]
    assert (adjusted_draft["subtotal"], adjusted_draft["total"]) == ("1600.00", "1920.00")
    [adjustment] = adjusted_draft["adjustments"]
    assert adjustment["lines"] == [
        {"kind": "write_off", "description": "Onboarding", "amount": "400"}
    ]
    assert adjustment["adjustment_id"] == adjustment_id

    # Approved: billed, numbered, posted, waiting for the payment.
    assert approved.stdout.splitlines()[:2] == [f"approved: {wid}", f"by:     {APPROVER}"]
    invoice = billed_json["invoice"]
    assert invoice["step"] == "awaiting_payment"
    assert (invoice["invoice_number"], invoice["billing_invoice_id"]) == (
        "Q2CTEST-0001",
        "in_TEST1",
    )
    assert (invoice["erp_invoice_id"], invoice["due_date"]) == ("88", "2026-12-31")
    assert row(billed.stdout, "invoice") == ["Q2CTEST-0001", "(billing", "in_TEST1,", "ERP", "88)"]
    assert row(billed.stdout, "due") == ["2026-12-31"]
    assert row(billed.stdout, "total") == ["1,920.00", "GBP"]
    finance = billed.stdout[billed.stdout.index("finance") :]
    assert "adjust by finance@northwind.example via update" in finance
    assert "approve by finance@northwind.example via update" in finance
    # The validator refused the others: they never became part of the run's history.
    assert "pm@northwind.example" not in finance and "5000" not in finance


async def test_reject_from_the_environment_ends_the_run_rejected(
    cli_env: dict[str, str], temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    q2c = make_invoke({**cli_env, "Q2C_APPROVER": APPROVER})
    systems = FakeInvoicing()
    async with systems.worker(temporal_client, task_queue):
        wid = await run_by_cli(q2c, started_runs)
        await wait_for_step(temporal_client, wid, InvoiceStep.AWAITING_APPROVAL)

        rejected = await q2c("invoice", "reject", wid, "--reason", "hours disputed")
        handle = temporal_client.get_workflow_handle(wid, result_type=TimeToInvoiceResult)
        result = await asyncio.wait_for(handle.result(), RESULT_WAIT_S)
        late = await q2c("invoice", "approve", wid, "--reason", "changed my mind")

    assert rejected.exit_code == 0, rejected.output
    assert rejected.stdout.splitlines()[:3] == [
        f"rejected: {wid}",
        f"by:     {APPROVER}",
        "reason: hours disputed",
    ]
    assert result.status == InvoiceStep.REJECTED
    assert not systems.called("create_billing_invoice")
    assert error_line(late) == f"error: {wid}: the run is completed; it takes no more decisions"


async def test_show_says_a_draft_is_supplementary(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    systems = FakeInvoicing(supplementary_to=["Q2CTEST-0001"])
    async with systems.worker(temporal_client, task_queue):
        wid = await run_by_cli(q2c, started_runs)
        await wait_for_step(temporal_client, wid, InvoiceStep.AWAITING_APPROVAL)
        human = await q2c("invoice", "show", wid)
        machine = await q2c("invoice", "show", wid, "--json")

    assert human.exit_code == 0, human.output
    assert row(human.stdout, "supplementary") == [
        "bills",
        "only",
        "time",
        "not",
        "billed",
        "on",
        "Q2CTEST-0001",
    ]
    shown = json.loads(machine.stdout)["invoice"]
    assert shown["supplementary_to"] == ["Q2CTEST-0001"]
    assert shown["draft"]["supplementary_to"] == ["Q2CTEST-0001"]


async def test_show_says_what_a_change_order_did_to_the_draft(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    systems = FakeInvoicing()
    change = ContractChanged(
        change_order="salesforce:a0X000000000001AAA", version=2, effective_from=date(2026, 11, 1)
    )
    async with systems.worker(temporal_client, task_queue):
        wid = await run_by_cli(q2c, started_runs)
        await wait_for_step(temporal_client, wid, InvoiceStep.AWAITING_APPROVAL)
        handle = temporal_client.get_workflow_handle(wid)
        systems.rate = "180"  # the change order's contract v2
        await handle.signal(CONTRACT_CHANGED, change)
        async with asyncio.timeout(STEP_WAIT_S):
            while not (await handle.query(STATUS, result_type=InvoiceStatus)).rerates:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        human = await q2c("invoice", "show", wid)
        machine = await q2c("invoice", "show", wid, "--json")

    assert human.exit_code == 0, human.output
    shown = " ".join(human.stdout.split())
    assert (
        "re-rates - Re-rated by change order salesforce:a0X000000000001AAA "
        "(contract v2, effective 2026-11-01) at "
    ) in shown
    assert ": total 2,400.00 → 2,700.00 GBP" in shown
    assert row(human.stdout, "total") == ["2,700.00", "GBP"]
    [rerate] = json.loads(machine.stdout)["invoice"]["rerates"]
    assert (rerate["change_order"], rerate["version"], rerate["rerated"]) == (
        "salesforce:a0X000000000001AAA",
        2,
        True,
    )
    assert (rerate["total_before"], rerate["total_after"], rerate["currency"]) == (
        "2400.00",
        "2700.00",
        "GBP",
    )


# --------------------------------------------------------------------------- show


async def test_show_of_an_unknown_or_foreign_run_is_one_line(q2c: Invoke) -> None:
    wid = workflow_id(new_project_id(), PERIOD)
    for args in (
        ["invoice", "show", wid],
        ["invoice", "show", wid, "--json"],
        ["invoice", "approve", wid, "--approver", APPROVER, "--reason", "ok"],
        ["invoice", "adjust", wid, "--approver", APPROVER, "--reason", "ok", "--discount", "x=1"],
    ):
        assert error_line(await q2c(*args)) == f"error: no run with workflow id {wid}"

    foreign = "opportunity-to-project:salesforce:006000000000001AAA"
    refused = await q2c("invoice", "approve", foreign, "--approver", APPROVER, "--reason", "ok")
    assert error_line(refused) == (
        f"error: {foreign}: not a time-to-invoice run "
        "(those are time-to-invoice:<project>:<YYYY-MM>)"
    )


async def test_show_without_a_worker_falls_back_to_what_temporal_recorded(
    q2c: Invoke, started_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.invoicing, "QUERY_TIMEOUT_S", 1.0)
    wid = await run_by_cli(q2c, started_runs)  # no worker polls this task queue

    human = await q2c("invoice", "show", wid)
    machine = json.loads((await q2c("invoice", "show", wid, "--json")).stdout)

    assert human.exit_code == 0, human.output
    assert "no worker answered the status query within 1s" in human.stdout
    assert row(human.stdout, "step") == ["load_contract"]
    assert machine["invoice"] is None and machine["run_status"] == "running"
    assert machine["search_attributes"]["Q2cLifecycle"] == "time-to-invoice"


# --------------------------------------------------------------------------- schedules


def next_first_of_a_month_at_six(now: datetime) -> datetime:
    month = BillingPeriod.of(now.date())
    this_month = datetime.combine(month.start, time(6), tzinfo=UTC)
    if now < this_month:
        return this_month
    return datetime.combine(month.end + timedelta(days=1), time(6), tzinfo=UTC)


@pytest.fixture
async def calendar(temporal_client: Client, task_queue: str) -> AsyncIterator[str]:
    """A calendar of this test's own: the session's server is shared; its schedule goes after,
    and so do the sweeps' schedules of the test's task queue (`--apply` makes them too)."""
    name = f"monthly-{uuid.uuid4().hex[:8]}"
    yield name
    for sid in (schedule_id(name), *(sweep_schedule_id(task_queue, s) for s in SWEEPS)):
        with contextlib.suppress(RPCError):
            await temporal_client.get_schedule_handle(sid).delete()


async def test_schedules_apply_lists_the_monthly_schedule_and_its_next_run(
    cli_env: dict[str, str], temporal_client: Client, task_queue: str, calendar: str
) -> None:
    q2c = make_invoke({**cli_env, "Q2C_BILLING_CALENDARS": json.dumps({calendar: "0 6 1 * *"})})
    sid = schedule_id(calendar)

    applied = await q2c("schedules", "--apply", "--json")

    assert applied.exit_code == 0, applied.output
    [mine] = [s for s in json.loads(applied.stdout) if s["schedule_id"] == sid]
    expected_next = next_first_of_a_month_at_six(datetime.now(UTC))
    assert mine["calendar"] == calendar and mine["cron"] == "0 6 1 * * (UTC)"
    assert mine["note"] == f"q2c billing calendar {calendar!r}: 0 6 1 * * (UTC)"
    assert mine["paused"] is False and mine["settings_cron"] == "0 6 1 * *"
    assert (mine["workflow"], mine["task_queue"]) == ("InvoiceCycleWorkflow", task_queue)
    assert datetime.fromisoformat(mine["next_runs"][0]) == expected_next
    assert len(mine["next_runs"]) == 3 and mine["recent_actions"] == []

    # Run the cycle now (no projects to invoice): it shows among the recent actions.
    handle = temporal_client.get_schedule_handle(sid)
    async with FakeInvoicing(projects=[]).worker(temporal_client, task_queue):
        await handle.trigger()
        async with asyncio.timeout(STEP_WAIT_S):
            while not (await handle.describe()).info.recent_actions:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        listed = await q2c("schedules")

    assert listed.exit_code == 0, listed.output
    text = listed.stdout
    block = text[text.index(sid) :].split("\n\n")[0]
    assert row(block, "cron") == ["0", "6", "1", "*", "*", "(UTC)"]
    assert row(block, "state") == ["active"]
    assert row(block, "next")[1:3] == [expected_next.strftime("%Y-%m-%d"), "06:00:00"]
    assert f"invoice-cycle-{calendar}" in row(block, "recent")[-1]


async def test_schedules_apply_lists_the_sweeps_and_their_interval(
    cli_env: dict[str, str], task_queue: str, calendar: str
) -> None:
    q2c = make_invoke(
        {
            **cli_env,
            "Q2C_BILLING_CALENDARS": json.dumps({calendar: "0 6 1 * *"}),
            "Q2C_SWEEP_INTERVAL": "PT2M",
        }
    )

    applied = await q2c("schedules", "--apply", "--json")

    assert applied.exit_code == 0, applied.output
    sweeps = {s["sweep"]: s for s in json.loads(applied.stdout) if s["sweep"]}
    assert set(sweeps) == {"crm", "billing"}
    for name, workflow in (("crm", "CrmSweepWorkflow"), ("billing", "BillingSweepWorkflow")):
        mine = sweeps[name]
        assert mine["schedule_id"] == f"{task_queue}-sweep-{name}"
        assert (mine["workflow"], mine["task_queue"]) == (workflow, task_queue)
        assert mine["every_s"] == mine["settings_every_s"] == 120
        assert mine["paused"] is False and len(mine["next_runs"]) == 3
        gap = datetime.fromisoformat(mine["next_runs"][1]) - datetime.fromisoformat(
            mine["next_runs"][0]
        )
        assert gap == timedelta(minutes=2)

    # The interval changed in the settings: the listing says so until applied again.
    slower = make_invoke({**cli_env, "Q2C_SWEEP_INTERVAL": "PT5M"})
    listed = await slower("schedules")
    assert listed.exit_code == 0, listed.output
    text = listed.stdout
    block = text[text.index(f"{task_queue}-sweep-crm") :].split("\n\n")[0]
    assert row(block, "every") == ["0:02:00"]
    assert "say every 0:05:00" in block


async def test_an_unreachable_temporal_is_one_line(cli_env: dict[str, str]) -> None:
    port = free_port()
    q2c = make_invoke({**cli_env, "Q2C_TEMPORAL_ADDRESS": f"127.0.0.1:{port}"})
    for args in (
        ["invoice", "run", new_project_id(), "--period", PERIOD],
        ["invoice", "show", workflow_id(new_project_id(), PERIOD)],
        ["schedules", "--apply"],
    ):
        line = error_line(await q2c(*args))
        assert line.startswith(f"error: cannot reach Temporal at 127.0.0.1:{port}: "), line
