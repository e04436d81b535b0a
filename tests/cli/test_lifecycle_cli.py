"""`q2c start/approve/reject/signal/status/list` against the real dev server, with the
workflow's fake systems worker (`tests/workflows/fakes.py`) polling in the test's loop.

The CLI runs `asyncio.run` itself, so each invocation runs in a thread while the worker
keeps polling here.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from typer.testing import CliRunner, Result

import cli.app  # first: the command modules load through it
import cli.common
import cli.lifecycle
from cli.app import app
from tests.fixtures.ports import free_port
from tests.workflows.fakes import APPROVER, FakeSystems, account, opportunity
from workflows.opportunity_to_project import (
    STATUS,
    DealStatus,
    OpportunityToProjectInput,
    OpportunityToProjectResult,
    Step,
    workflow_id,
)

STEP_WAIT_S = 15.0
RESULT_WAIT_S = 15.0
VISIBILITY_WAIT_S = 10.0

Invoke = Callable[..., Awaitable[Result]]


def new_opportunity_id() -> str:
    return f"006{uuid.uuid4().hex[:15].upper()}"


def wid_of(opportunity_id: str) -> str:
    return workflow_id("salesforce", opportunity_id)


def error_line(result: Result) -> str:
    """A failure is exactly one line, on stderr, and exit code 1."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def make_invoke(env: dict[str, str]) -> Invoke:
    runner = CliRunner()

    async def invoke(*args: str) -> Result:
        result = await asyncio.to_thread(runner.invoke, app, list(args), env=env)
        assert "Traceback" not in result.output
        # Anything but a clean exit would be an exception the CLI let through.
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(
            result.exception
        )
        return result

    return invoke


@pytest.fixture
def cli_env(temporal_client: Client, task_queue: str, tmp_path: Path) -> dict[str, str]:
    return {
        "Q2C_TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host,
        "Q2C_TEMPORAL_NAMESPACE": temporal_client.namespace,
        "Q2C_TASK_QUEUE": task_queue,
        "Q2C_STATE_DIR": str(tmp_path / ".q2c"),
        "Q2C_APPROVER": "",
        # Wide enough that rich does not wrap the reasons a test looks for.
        "COLUMNS": "250",
    }


@pytest.fixture
def q2c(cli_env: dict[str, str]) -> Invoke:
    return make_invoke(cli_env)


@pytest.fixture
async def started_runs(temporal_client: Client) -> AsyncIterator[list[str]]:
    """Workflow ids a test started; runs still going at its end are terminated."""
    ids: list[str] = []
    yield ids
    for wid in ids:
        with contextlib.suppress(RPCError):  # already closed
            await temporal_client.get_workflow_handle(wid).terminate("test finished")


async def start_by_cli(q2c: Invoke, started_runs: list[str]) -> str:
    opp = new_opportunity_id()
    started_runs.append(wid_of(opp))
    result = await q2c("start", "opportunity", opp)
    assert result.exit_code == 0, result.output
    return wid_of(opp)


async def wait_for_step(client: Client, wid: str, step: Step) -> DealStatus:
    handle = client.get_workflow_handle(wid)
    deadline = asyncio.get_running_loop().time() + STEP_WAIT_S
    while True:
        status: DealStatus = await handle.query(STATUS, result_type=DealStatus)
        if status.step == step:
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run stayed at {status.step}, expected {step}")
        await asyncio.sleep(0.05)


async def result_of(client: Client, wid: str) -> OpportunityToProjectResult:
    handle = client.get_workflow_handle(wid, result_type=OpportunityToProjectResult)
    return await asyncio.wait_for(handle.result(), RESULT_WAIT_S)


def risky() -> FakeSystems:
    # 2,000 hours at 150 USD: 300,000 USD, over the 250,000 threshold.
    return FakeSystems(deal=opportunity(hours="2000"))


# --------------------------------------------------------------------------- start


async def test_start_prints_the_run_and_its_link_and_a_second_start_attaches(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    opp = new_opportunity_id()
    wid = wid_of(opp)
    started_runs.append(wid)

    first = await q2c("start", "opportunity", opp)

    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        f"started: {wid}",
        f"Web UI: http://127.0.0.1:8233/namespaces/{temporal_client.namespace}/workflows/{wid}",
    ]
    handle = temporal_client.get_workflow_handle(wid)
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert description.task_queue == task_queue
    assert description.workflow_type == "OpportunityToProjectWorkflow"
    attributes = {k.name: v for k, v in description.typed_search_attributes}
    assert attributes["Q2cCorrelationId"] == opp
    assert attributes["Q2cLifecycle"] == "opportunity-to-project"
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    request = OpportunityToProjectInput.model_validate_json(payload.data)
    assert request.trigger == f"cli:{getpass.getuser()}"
    assert (request.opportunity_id, request.crm) == (opp, "salesforce")

    again = await q2c("start", "opportunity", opp)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0] == f"already running: {wid}"
    as_json = json.loads((await q2c("start", "opportunity", opp, "--json")).stdout)
    assert as_json["workflow_id"] == wid and as_json["started"] is False
    assert as_json["run_id"] == description.run_id  # the same run, not a second one


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("006ABC", "15 or 18 letters and digits"),
        ("006000000000001AA;", "15 or 18 letters and digits"),
        ("001000000000001AAA", "those start with 006, this one with 001"),
    ],
)
async def test_a_malformed_opportunity_id_is_refused_before_temporal(
    q2c: Invoke, temporal_client: Client, bad: str, why: str
) -> None:
    result = await q2c("start", "opportunity", bad)

    assert error_line(result) == f"error: {bad}: not a Salesforce opportunity id ({why})"
    with pytest.raises(RPCError) as missing:
        await temporal_client.get_workflow_handle(wid_of(bad)).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


# --------------------------------------------------------------------------- approvals


async def test_status_of_a_run_awaiting_approval_shows_the_reasons(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    systems = risky()
    async with systems.worker(temporal_client, task_queue):
        wid = await start_by_cli(q2c, started_runs)
        await wait_for_step(temporal_client, wid, Step.AWAITING_APPROVAL)

        human = await q2c("status", wid)
        machine = await q2c("status", wid, "--json")

    assert human.exit_code == 0, human.output
    lines = human.stdout.splitlines()
    assert any(line.split() == ["step", "awaiting_approval"] for line in lines), human.stdout
    assert any(line.split()[:3] == ["customer", "Globex", "Corporation"] for line in lines)
    assert any(line.split() == ["legal", "entity", "NW-US"] for line in lines)
    assert "pending since" in human.stdout
    assert "exceeds the approval threshold" in human.stdout
    assert f"/workflows/{wid}" in human.stdout

    assert machine.exit_code == 0, machine.output
    report = json.loads(machine.stdout)
    assert report["workflow_id"] == wid and report["run_status"] == "running"
    assert report["note"] is None
    deal = report["deal"]
    assert deal["step"] == "awaiting_approval" and deal["currency"] == "USD"
    [reason] = deal["pending_approval"]["reasons"]
    assert "exceeds the approval threshold" in reason
    assert report["search_attributes"]["Q2cStep"] == "awaiting_approval"


async def test_an_unlisted_approver_is_refused_and_a_listed_one_completes_the_run(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    systems = risky()
    async with systems.worker(temporal_client, task_queue):
        wid = await start_by_cli(q2c, started_runs)
        await wait_for_step(temporal_client, wid, Step.AWAITING_APPROVAL)

        refused = await q2c(
            "approve", wid, "--approver", "sales@northwind.example", "--reason", "my deal"
        )
        assert error_line(refused) == (
            f"error: {wid}: sales@northwind.example is not on the finance approvers list"
        )
        assert not systems.called("upsert_customer")

        approved = await q2c("approve", wid, "--approver", APPROVER, "--reason", "margin ok")
        assert approved.exit_code == 0, approved.output
        assert approved.stdout.splitlines()[:2] == [f"approved: {wid}", f"by:     {APPROVER}"]
        result = await result_of(temporal_client, wid)

        # Nothing is pending any more: a second decision is refused by the run.
        late = await q2c("reject", wid, "--approver", APPROVER, "--reason", "second thoughts")

    assert result.status == Step.COMPLETED
    assert [c.status for c in systems.called("write_back_deal")][-1] == "provisioned"
    line = error_line(late)
    assert line.startswith(f"error: {wid}: ")
    assert "no approval is pending" in line or "the run is completed" in line


async def test_approver_from_the_environment_and_reject_ends_the_run_rejected(
    cli_env: dict[str, str], temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    q2c = make_invoke({**cli_env, "Q2C_APPROVER": APPROVER})
    systems = risky()
    async with systems.worker(temporal_client, task_queue):
        wid = await start_by_cli(q2c, started_runs)
        await wait_for_step(temporal_client, wid, Step.AWAITING_APPROVAL)

        rejected = await q2c("reject", wid, "--reason", "margin too thin")
        assert rejected.exit_code == 0, rejected.output
        assert rejected.stdout.splitlines()[:2] == [f"rejected: {wid}", f"by:     {APPROVER}"]
        result = await result_of(temporal_client, wid)
        status = await q2c("status", wid, "--json")

    assert result.status == Step.REJECTED
    assert result.message == f"Rejected by {APPROVER}: margin too thin"
    assert not systems.called("upsert_customer") and not systems.called("create_project")
    [decision] = json.loads(status.stdout)["deal"]["decisions"]
    assert (decision["what"], decision["via"], decision["accepted"]) == (
        "reject",
        "update",
        True,
    )


async def test_a_decision_nobody_answers_is_one_line_not_a_hang(
    q2c: Invoke, started_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.common, "UPDATE_TIMEOUT_S", 1.0)  # decisions use common's
    wid = await start_by_cli(q2c, started_runs)  # no worker polls this task queue

    result = await q2c("approve", wid, "--approver", APPROVER, "--reason", "ok")

    assert error_line(result) == (
        f"error: {wid}: no worker answered within 1s; is `q2c worker` running?"
    )


async def test_a_blank_reason_is_refused_before_temporal(q2c: Invoke) -> None:
    result = await q2c("approve", "some-id", "--approver", APPROVER, "--reason", "")
    assert error_line(result).startswith("error: --reason: ")


# --------------------------------------------------------------------------- corrections


async def test_data_corrected_makes_a_bad_deal_go_through(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    systems = FakeSystems(deal_account=account("JP"))  # no legal entity contracts in JP
    async with systems.worker(temporal_client, task_queue):
        wid = await start_by_cli(q2c, started_runs)
        await wait_for_step(temporal_client, wid, Step.AWAITING_CORRECTION)
        waiting = await q2c("status", wid)
        assert "no legal entity contracts with customers in JP" in waiting.stdout

        systems.deal_account = account("US")
        sent = await q2c("signal", "data-corrected", wid, "--note", "billing country fixed")
        assert sent.exit_code == 0, sent.output
        assert sent.stdout.strip() == f"data_corrected sent: {wid}"
        result = await result_of(temporal_client, wid)

    assert result.status == Step.COMPLETED
    assert len(systems.called("fetch_deal")) == 2
    assert systems.statuses() == ["needs_correction", "provisioned"]


# --------------------------------------------------------------------------- status, list


async def test_status_of_an_unknown_run_is_one_line(q2c: Invoke) -> None:
    wid = wid_of(new_opportunity_id())
    for args in (
        ["status", wid],
        ["status", wid, "--json"],
        ["approve", wid, "--approver", APPROVER, "--reason", "ok"],
        ["signal", "data-corrected", wid],
    ):
        assert error_line(await q2c(*args)) == f"error: no run with workflow id {wid}"


async def test_status_of_a_finished_run_without_a_worker_falls_back_to_temporal(
    q2c: Invoke,
    temporal_client: Client,
    task_queue: str,
    started_runs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli.lifecycle, "QUERY_TIMEOUT_S", 1.0)
    async with FakeSystems().worker(temporal_client, task_queue):
        wid = await start_by_cli(q2c, started_runs)
        await result_of(temporal_client, wid)

    human = await q2c("status", wid)
    machine = await q2c("status", wid, "--json")
    late = await q2c("approve", wid, "--approver", APPROVER, "--reason", "ok")

    assert human.exit_code == 0, human.output
    assert "no worker answered the status query within 1s" in human.stdout
    assert "completed" in human.stdout
    report = json.loads(machine.stdout)
    assert report["deal"] is None and report["run_status"] == "completed"
    assert report["closed_at"] is not None
    assert report["search_attributes"]["Q2cStep"] == "completed"
    assert report["search_attributes"]["Q2cCustomer"] == "Globex Corporation"
    assert error_line(late) == (f"error: {wid}: the run is completed; it takes no more decisions")


async def test_list_finds_the_run_waiting_for_approval(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    systems = risky()
    async with systems.worker(temporal_client, task_queue):
        wid = await start_by_cli(q2c, started_runs)
        await wait_for_step(temporal_client, wid, Step.AWAITING_APPROVAL)

        # Visibility lags the run by a moment: ask again until the run shows.
        deadline = asyncio.get_running_loop().time() + VISIBILITY_WAIT_S
        while True:
            listed = await q2c("list", "--step", "awaiting_approval", "--json")
            assert listed.exit_code == 0, listed.output
            found = [r for r in json.loads(listed.stdout) if r["workflow_id"] == wid]
            if found or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
        table = await q2c("list", "--step", "awaiting_approval", "--limit", "1000")
        elsewhere = await q2c("list", "--step", "completed", "--limit", "1000", "--json")

    assert found == [
        {
            "workflow_id": wid,
            "status": "running",
            "step": "awaiting_approval",
            "customer": "Globex Corporation",
            "started_at": found[0]["started_at"],
        }
    ]
    assert wid in table.stdout and "Globex Corporation" in table.stdout
    assert wid not in [r["workflow_id"] for r in json.loads(elsewhere.stdout)]


async def test_an_unknown_step_is_a_usage_error(q2c: Invoke) -> None:
    result = await q2c("list", "--step", "somewhere")
    assert result.exit_code == 2
    assert "somewhere" in result.stderr


# --------------------------------------------------------------------------- unreachable


async def test_an_unreachable_temporal_is_one_line(cli_env: dict[str, str]) -> None:
    port = free_port()
    q2c = make_invoke({**cli_env, "Q2C_TEMPORAL_ADDRESS": f"127.0.0.1:{port}"})
    for args in (
        ["start", "opportunity", new_opportunity_id()],
        ["status", "opportunity-to-project:salesforce:006000000000001AAA"],
        ["list"],
    ):
        line = error_line(await q2c(*args))
        assert line.startswith(f"error: cannot reach Temporal at 127.0.0.1:{port}: "), line
