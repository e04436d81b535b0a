"""`q2c retry|compensate` send the run's `operator` update, and an update the run accepted
but had not finished when the command stopped waiting is reported as accepted, not as an
error. The lifecycles' handler is their own; a small run with the same update (a validator
that refuses when nothing waits, a handler that may take its time) stands in for it here."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

import cli.app  # first: the command modules load through it
import cli.common
from tests.cli import test_lifecycle_cli as lifecycle_cli
from tests.cli.test_lifecycle_cli import RESULT_WAIT_S, Invoke, error_line
from workflows.approvals import OPERATOR, OperatorAction, OperatorDecision

cli_env = lifecycle_cli.cli_env
q2c = lifecycle_cli.q2c
started_runs = lifecycle_cli.started_runs

OPERATOR_EMAIL = "ops@northwind.example"
NOT_WAITING = "the run is not waiting for an operator"


class ProbeInput(BaseModel):
    waiting: bool
    #: The handler holds its answer until the `release` signal (which also ends a run that
    #: received no decision).
    slow: bool = False


class ProbeResult(BaseModel):
    decisions: list[OperatorDecision]


@workflow.defn(name="OperatorProbe", sandboxed=False)  # its module imports the CLI
class OperatorProbe:
    def __init__(self) -> None:
        self.waiting = False
        self.released = False
        self.decisions: list[OperatorDecision] = []

    @workflow.run
    async def run(self, request: ProbeInput) -> ProbeResult:
        self.waiting = request.waiting
        self.slow = request.slow
        await workflow.wait_condition(lambda: bool(self.decisions) or self.released)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return ProbeResult(decisions=self.decisions)

    @workflow.update(name=OPERATOR)
    async def operator(self, decision: OperatorDecision) -> ProbeResult:
        self.decisions.append(decision)
        if self.slow:
            await workflow.wait_condition(lambda: self.released)
        return ProbeResult(decisions=self.decisions)

    @operator.validator
    def _only_when_waiting(self, decision: OperatorDecision) -> None:
        if not self.waiting or self.decisions:
            raise ValueError(NOT_WAITING)

    @workflow.signal
    def release(self) -> None:
        self.released = True


async def start_probe(
    client: Client, task_queue: str, started_runs: list[str], request: ProbeInput
) -> str:
    wid = f"probe:{uuid.uuid4()}"
    started_runs.append(wid)
    await client.start_workflow(OperatorProbe.run, request, id=wid, task_queue=task_queue)
    return wid


async def decisions_of(client: Client, wid: str) -> list[OperatorDecision]:
    handle = client.get_workflow_handle(wid, result_type=ProbeResult)
    async with asyncio.timeout(RESULT_WAIT_S):
        result: ProbeResult = await handle.result()
    return result.decisions


@pytest.mark.parametrize(
    ("command", "action", "outcome"),
    [
        ("retry", OperatorAction.RETRY, "retrying"),
        ("compensate", OperatorAction.COMPENSATE, "compensating"),
    ],
)
async def test_the_run_receives_the_decision_and_the_user_sees_it_taken(
    q2c: Invoke,
    temporal_client: Client,
    task_queue: str,
    started_runs: list[str],
    command: str,
    action: OperatorAction,
    outcome: str,
) -> None:
    async with Worker(temporal_client, task_queue=task_queue, workflows=[OperatorProbe]):
        wid = await start_probe(temporal_client, task_queue, started_runs, ProbeInput(waiting=True))
        result = await q2c(
            command, wid, "--operator", f" {OPERATOR_EMAIL} ", "--reason", "Stripe is back"
        )
        received = await decisions_of(temporal_client, wid)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:3] == [
        f"{outcome}: {wid}",
        f"by:     {OPERATOR_EMAIL}",
        "reason: Stripe is back",
    ]
    assert received == [
        OperatorDecision(action=action, operator=OPERATOR_EMAIL, reason="Stripe is back")
    ]


async def test_a_run_that_waits_for_no_operator_refuses_and_receives_nothing(
    q2c: Invoke, temporal_client: Client, task_queue: str, started_runs: list[str]
) -> None:
    async with Worker(temporal_client, task_queue=task_queue, workflows=[OperatorProbe]):
        wid = await start_probe(
            temporal_client, task_queue, started_runs, ProbeInput(waiting=False)
        )
        refused = await q2c("compensate", wid, "--operator", OPERATOR_EMAIL, "--reason", "give up")
        await temporal_client.get_workflow_handle(wid).signal(OperatorProbe.release)
        received = await decisions_of(temporal_client, wid)

    assert error_line(refused) == f"error: {wid}: {NOT_WAITING}"
    assert received == []


async def test_a_decision_accepted_but_not_finished_is_reported_accepted_with_how_to_follow(
    q2c: Invoke,
    temporal_client: Client,
    task_queue: str,
    started_runs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli.common, "UPDATE_RESULT_WAIT_S", 1.0)
    async with Worker(temporal_client, task_queue=task_queue, workflows=[OperatorProbe]):
        request = ProbeInput(waiting=True, slow=True)
        wid = await start_probe(temporal_client, task_queue, started_runs, request)
        accepted = await q2c("retry", wid, "--operator", OPERATOR_EMAIL, "--reason", "try again")
        await temporal_client.get_workflow_handle(wid).signal(OperatorProbe.release)
        received = await decisions_of(temporal_client, wid)

    assert accepted.exit_code == 0, accepted.output
    assert accepted.stderr == ""
    lines = accepted.stdout.splitlines()
    assert lines[0] == f"accepted: {wid}"
    assert "still processing it" in lines[1] and "no need to send it again" in lines[1]
    assert lines[2] == f"Check on it: q2c status {wid}"
    # Accepted once, applied once: the run finished it after the command had returned.
    assert [d.action for d in received] == [OperatorAction.RETRY]


async def test_a_bad_operator_is_refused_before_temporal(q2c: Invoke) -> None:
    result = await q2c("retry", "some-id", "--operator", "x", "--reason", "ok")
    assert error_line(result).startswith("error: --operator: ")
