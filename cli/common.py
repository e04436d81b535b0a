"""What every command that talks to Temporal does the same way.

Connect, call, and turn whatever goes wrong (no server, no such run, a closed run, no
worker, a refusal by the run) into one line a person can act on; read a run's answer with
the fallback to what Temporal recorded; print label/value blocks. The command modules
(`cli/lifecycle.py`, `cli/invoicing.py`) hold only what is theirs.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Generic, NoReturn, Protocol, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import FailureError, TemporalError
from temporalio.service import RPCError, RPCStatusCode

from canonical import minor_unit
from cli.app import CliError, err
from connectors.errors import ValidationFailed
from connectors.salesforce import check_id
from settings import Settings, load_settings
from workflows.approvals import (
    OPERATOR,
    ApprovalDecision,
    Decision,
    DecisionRecord,
    OperatorAction,
    OperatorDecision,
)
from workflows.client import connect as connect_client
from workflows.starters import StartedRun

#: A Temporal that does not answer the connect within this long is treated as unreachable.
CONNECT_TIMEOUT_S = 5.0
#: Describe, signal, start, list: plain server calls, no worker involved.
RPC_TIMEOUT_S = 10.0
#: A query needs a worker; a closed run with none would otherwise hang the command.
QUERY_TIMEOUT_S = 5.0
#: An update needs a worker to accept (validate) it or refuse it.
UPDATE_TIMEOUT_S = 15.0
#: After the run accepted an update, how long the command waits for its result.
UPDATE_RESULT_WAIT_S = 15.0

T = TypeVar("T")
A = TypeVar("A", bound=BaseModel)

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Approver = Annotated[
    str,
    typer.Option(
        "--approver",
        envvar="Q2C_APPROVER",
        help="Your e-mail address, as on the finance approvers list.",
    ),
]
Reason = Annotated[str, typer.Option("--reason", help="Why: kept with the decision.")]
Operator = Annotated[
    str,
    typer.Option(
        "--operator",
        envvar="Q2C_OPERATOR",
        help="Who decides (your e-mail address): kept with the decision.",
    ),
]


# --------------------------------------------------------------------------- calling


def run(settings: Settings, work: Callable[[Client], Awaitable[T]], wid: str | None = None) -> T:
    """Connect, do the work, and turn what Temporal says into one line."""

    async def main() -> T:
        return await work(await connect(settings))

    try:
        return asyncio.run(main())
    except RPCError as exc:
        raise CliError(_rpc_problem(exc, settings, wid)) from None
    except RPCTimeoutOrCancelledError:
        raise CliError(f"{wid or 'Temporal'}: no answer in time") from None
    except TemporalError as exc:
        raise CliError(f"{wid}: {exc}" if wid else str(exc)) from None


async def connect(settings: Settings) -> Client:
    target = settings.temporal_target
    try:
        return await asyncio.wait_for(connect_client(settings), timeout=CONNECT_TIMEOUT_S)
    except TimeoutError:
        raise CliError(
            f"cannot reach Temporal at {target}: no answer within {CONNECT_TIMEOUT_S:g}s"
        ) from None
    except (RuntimeError, OSError, RPCError) as exc:
        # RuntimeError: the SDK's "Failed client connect: <transport error>".
        raise CliError(f"cannot reach Temporal at {target}: {_transport_reason(exc)}") from None


@dataclass(frozen=True)
class StillProcessing:
    """The run accepted the request (its validator said yes) and had not finished it when
    the CLI stopped waiting. It will finish on its own: sending it again is not needed."""

    update_id: str


async def execute_update(
    client: Client,
    wid: str,
    name: str,
    arg: BaseModel,
    *,
    result_type: type[T],
    timeout_s: float,
    consequence: str,
) -> T | StillProcessing:
    """An update whose refusal by the run (its validator, its handler) is the user's answer.

    Two waits: up to `timeout_s` for the run to accept or refuse the request (that needs a
    worker), then up to `UPDATE_RESULT_WAIT_S` for its result. A request accepted but not
    finished by then is `StillProcessing`, not an error: the run has it and carries on.
    `consequence` finishes the sentence for a closed run: "the run is completed; <...>".
    """
    handle = client.get_workflow_handle(wid)
    try:
        update = await asyncio.wait_for(
            handle.start_update(
                name,
                arg,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                result_type=result_type,
                rpc_timeout=timedelta(seconds=timeout_s),
            ),
            timeout_s,
        )
    except (TimeoutError, RPCTimeoutOrCancelledError):
        raise CliError(
            f"{wid}: no worker answered within {timeout_s:g}s; is `q2c worker` running?"
        ) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            await closed_or_missing(handle, consequence)
        raise
    wait = timedelta(seconds=UPDATE_RESULT_WAIT_S)
    try:
        # A refusal by the validator is already known here: no wait, no round trip.
        answer: T = await asyncio.wait_for(update.result(rpc_timeout=wait), UPDATE_RESULT_WAIT_S)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        reason = cause.message if isinstance(cause, FailureError) else str(cause)
        raise CliError(f"{wid}: {reason}") from None
    except (TimeoutError, RPCTimeoutOrCancelledError):
        return StillProcessing(update.id)
    return answer


def print_still_processing(wid: str, what: str, check: str, link: str) -> None:
    """The run has the request: say so, and how to follow it, instead of inviting a retry."""
    typer.echo(f"accepted: {wid}")
    typer.echo(
        f"The run accepted the {what} and is still processing it; it finishes on its own,"
        " so there is no need to send it again."
    )
    typer.echo(f"Check on it: {check} {wid}")
    typer.echo(f"Web UI: {link}")


@dataclass(frozen=True)
class RunView(Generic[A]):
    """A run as Temporal records it, and the run's own answer to its status query."""

    description: WorkflowExecutionDescription
    answer: A | None
    #: Why `answer` is missing (no worker answered the query, the query failed).
    note: str | None = None

    def search_attributes(self) -> dict[str, Any]:
        return attributes(self.description.typed_search_attributes)

    def as_json(self, key: str, link: str, answer: Any = None) -> dict[str, Any]:
        """`answer` replaces the answer's plain dump under `key` (a command's own shape)."""
        d = self.description
        if answer is None and self.answer is not None:
            answer = self.answer.model_dump(mode="json")
        return {
            "workflow_id": d.id,
            "run_id": d.run_id,
            "run_status": run_status(d.status),
            "started_at": d.start_time.isoformat(),
            "closed_at": d.close_time.isoformat() if d.close_time else None,
            "search_attributes": self.search_attributes(),
            key: answer,
            "note": self.note,
            "web_ui": link,
        }


async def describe_and_query(
    client: Client, wid: str, query: str, *, result_type: type[A], timeout_s: float
) -> RunView[A]:
    handle = client.get_workflow_handle(wid)
    description = await handle.describe(rpc_timeout=rpc_timeout())
    answer, note = await query_or_note(handle, query, result_type=result_type, timeout_s=timeout_s)
    return RunView(description, answer, note)


async def query_or_note(
    handle: WorkflowHandle[Any, Any], query: str, *, result_type: type[A], timeout_s: float
) -> tuple[A | None, str | None]:
    """The run's answer, or why there is none: a query needs a worker, a closed run may have
    none, and the command must still show what Temporal recorded instead of hanging."""
    try:
        answer: A = await handle.query(
            query, result_type=result_type, rpc_timeout=timedelta(seconds=timeout_s)
        )
    except (RPCError, RPCTimeoutOrCancelledError) as exc:
        timed_out = isinstance(exc, RPCTimeoutOrCancelledError) or exc.status in (
            RPCStatusCode.CANCELLED,
            RPCStatusCode.DEADLINE_EXCEEDED,
        )
        reason = (
            f"no worker answered the {query} query within {timeout_s:g}s"
            if timed_out
            else f"the {query} query failed: {exc}"
        )
        return None, f"{reason}; showing what Temporal recorded"
    except (WorkflowQueryRejectedError, WorkflowQueryFailedError) as exc:
        return None, f"the {query} query failed: {exc}"
    return answer, None


async def closed_or_missing(handle: WorkflowHandle[Any, Any], consequence: str) -> None:
    """Temporal says NOT_FOUND both for an unknown id and a closed run: tell them apart."""
    try:
        description = await handle.describe(rpc_timeout=rpc_timeout())
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"no run with workflow id {handle.id}") from None
        raise
    if description.status != WorkflowExecutionStatus.RUNNING:
        state = run_status(description.status)
        raise CliError(f"{handle.id}: the run is {state}; {consequence}")


def rpc_timeout() -> timedelta:
    return timedelta(seconds=RPC_TIMEOUT_S)


def _rpc_problem(exc: RPCError, settings: Settings, wid: str | None) -> str:
    target, message = settings.temporal_target, exc.message
    if exc.status == RPCStatusCode.NOT_FOUND:
        if "namespace" in message.lower():
            return f"namespace {settings.temporal_namespace!r} not found at {target}"
        if wid is not None:
            return f"no run with workflow id {wid}"
    if exc.status == RPCStatusCode.UNAVAILABLE:
        return f"cannot reach Temporal at {target}: {message}"
    if exc.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
        return f"Temporal at {target} did not answer in time ({message})"
    if exc.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
        return f"Temporal at {target} refused access: {message}"
    subject = f"{wid}: " if wid else ""
    return f"{subject}Temporal refused: {message} ({exc.status.name.lower()})"


_TONIC_MESSAGE = re.compile(r'message: "([^"]+)"')


def _transport_reason(exc: BaseException) -> str:
    """The useful end of the SDK's transport error ("Connection refused"), not its debug dump."""
    text = str(exc)
    if found := _TONIC_MESSAGE.search(text):
        return found.group(1)
    return text.removeprefix("Failed client connect: ")[:200] or type(exc).__name__


# --------------------------------------------------------------------------- inputs


def settings() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        field, problem = first_problem(exc)
        raise CliError(f"settings: Q2C_{field.upper()}: {problem}") from None


def first_problem(exc: ValidationError) -> tuple[str, str]:
    """The first field pydantic refused and why: one line is enough to fix it."""
    first = exc.errors()[0]
    return "_".join(str(part) for part in first["loc"]), first["msg"]


def user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


# --------------------------------------------------------------------------- output


def console() -> Console:
    """Made per command, so the width follows the terminal (or `COLUMNS`) of this call.

    No markup, emoji or highlighting: customer names and reasons are data, printed as is.
    """
    return Console(highlight=False, markup=False, emoji=False)


def print_started(started: StartedRun, link: str, *, as_json: bool) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "workflow_id": started.workflow_id,
                    "run_id": started.run_id,
                    "started": started.started,
                    "web_ui": link,
                }
            )
        )
        return
    typer.echo(f"{'started' if started.started else 'already running'}: {started.workflow_id}")
    typer.echo(f"Web UI: {link}")


def print_decided(
    outcome: str, wid: str, approver: str, reason: str, link: str, details: Sequence[str] = ()
) -> None:
    typer.echo(f"{outcome}: {wid}")
    typer.echo(f"by:     {approver}")
    typer.echo(f"reason: {reason}")
    for line in details:
        typer.echo(line)
    typer.echo(f"Web UI: {link}")


def run_status(value: WorkflowExecutionStatus | None) -> str:
    return value.name.lower() if value is not None else "unknown"


def attributes(found: TypedSearchAttributes) -> dict[str, Any]:
    return {pair.key.name: pair.value for pair in found}


def when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "-"


def decision_line(record: DecisionRecord) -> str:
    """A decision as a run recorded it, refused ones with the reason they did not count."""
    outcome = "accepted" if record.accepted else f"ignored: {record.ignored_because}"
    return (
        f"{record.what} by {record.approver} via {record.via} at {when(record.at)} "
        f"({outcome}): {record.reason}"
    )


def bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


class Fields:
    """A block of label/value rows; rows without a value are left out."""

    def __init__(self, label_width: int) -> None:
        self.label_width = label_width
        self.grid = Table.grid(padding=(0, 2))
        self.grid.add_column(style="bold", no_wrap=True, min_width=label_width)
        self.grid.add_column()

    def row(self, label: str, value: str | Text | None) -> None:
        if value:
            self.grid.add_row(label, value if isinstance(value, Text) else Text(value))

    def print(self, out: Console, link: str | None = None) -> None:
        out.print(self.grid)
        if link is not None:
            # Outside the grid, never wrapped or cut: the link must survive copy and paste.
            out.print(
                Text.assemble((f"{'Web UI':<{self.label_width}}", "bold"), "  ", link),
                soft_wrap=True,
            )


#: A command line the command cannot run, as click's own usage errors exit.
USAGE_EXIT = 2


def usage_error(option: str, problem: str) -> NoReturn:
    """One line naming the option and what is wrong with it; exit 2."""
    err.print(f"[red]error:[/red] {option}: {escape(problem)}", highlight=False, soft_wrap=True)
    raise typer.Exit(USAGE_EXIT)


class _Acknowledged(Protocol):
    @property
    def approver(self) -> str: ...


def send_decision(
    wid: str,
    decision: Decision,
    approver: str,
    reason: str,
    *,
    update: str,
    ack_type: type[_Acknowledged],
    check: str,
) -> None:
    """Finance's decision as the run's update: it answers at once, or says why it refuses.

    `check` is the command that shows the run (`q2c status`), for a decision the run
    accepted but had not finished processing when the command stopped waiting.
    """
    request = _request(ApprovalDecision, decision=decision, approver=approver, reason=reason)
    config = settings()
    # The run's validator refuses it when the approver is not listed or nothing waits.
    ack = _send(config, wid, update, request, ack_type)
    if isinstance(ack, StillProcessing):
        print_still_processing(wid, f"{decision.value} decision", check, config.run_link(wid))
    else:
        print_decided(DECIDED[decision], wid, ack.approver, reason, config.run_link(wid))


DECIDED = {Decision.APPROVE: "approved", Decision.REJECT: "rejected"}


def send_operator_decision(
    wid: str, action: OperatorAction, operator: str, reason: str, *, check: str
) -> None:
    """A person's way out of a run that waited out a system's outage: retry or compensate,
    by the run's `operator` update, whose validator refuses it when nothing waits."""
    request = _request(OperatorDecision, action=action, operator=operator, reason=reason)
    config = settings()
    # The answer's shape is the run's business; that the run took the decision is ours.
    ack = _send(config, wid, OPERATOR, request, object)
    if isinstance(ack, StillProcessing):
        print_still_processing(wid, f"{action.value} decision", check, config.run_link(wid))
    else:
        print_decided(OPERATED[action], wid, request.operator, reason, config.run_link(wid))


OPERATED = {OperatorAction.RETRY: "retrying", OperatorAction.COMPENSATE: "compensating"}


M = TypeVar("M", bound=BaseModel)


def _request(model: type[M], **fields: Any) -> M:
    """The update's argument, refused before Temporal sees it when an option is bad."""
    people = ("approver", "operator")
    try:
        return model(**{k: v.strip() if k in people else v for k, v in fields.items()})
    except ValidationError as exc:
        field, problem = first_problem(exc)
        raise CliError(f"--{field}: {problem}") from None


def _send(
    config: Settings, wid: str, update: str, request: BaseModel, result_type: type[T]
) -> T | StillProcessing:
    async def send(client: Client) -> T | StillProcessing:
        return await execute_update(
            client,
            wid,
            update,
            request,
            result_type=result_type,
            timeout_s=UPDATE_TIMEOUT_S,
            consequence="it takes no more decisions",
        )

    return run(config, send, wid)


def amount_text(value: Decimal, currency: str | None, *, grouped: bool = True) -> str:
    """Padded to the currency's minor unit, never rounded: a net of 2000.0 reads 2,000.00,
    a unit price of 133.3333 stays what the run holds."""
    exponent = value.as_tuple().exponent
    if currency is not None and isinstance(exponent, int) and exponent > -minor_unit(currency):
        value = value.quantize(Decimal(1).scaleb(-minor_unit(currency)))
    return f"{value:,f}" if grouped else f"{value:f}"


def salesforce_record_id(value: str, *, what: str, prefix: str, prefixed: str) -> str:
    """A Salesforce record id of the kind `prefix` says (`prefixed` tells people which ids
    start so), checked before it becomes part of a workflow id."""
    try:
        check_id(value, field=f"{what} id")
    except ValidationFailed:
        raise CliError(
            f"{value}: not a Salesforce {what} id (15 or 18 letters and digits)"
        ) from None
    if not value.startswith(prefix):
        raise CliError(
            f"{value}: not a Salesforce {what} id ({prefixed} {prefix}, this one with {value[:3]})"
        )
    return value
