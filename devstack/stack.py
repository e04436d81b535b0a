"""The dev stack: every real part q2c needs, started on 127.0.0.1 in the background.

`up` starts what is not running, waits for each part to be healthy and records what it
started in `<state>/stack.json`; `down` stops exactly those processes; `status` reports.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devstack import tryton, tryton_postgres
from devstack.process import (
    PartFailed,
    http_ok,
    pid_alive,
    spawn,
    stop_process_group,
    wait_until_healthy,
)
from settings import SECRETS_FILE_NAME, Settings, load_settings
from workflows.search_attributes import server_flags

STACK_FILE = "stack.json"
#: The first Tryton start creates and bootstraps its database (~25 s); later ones ~3 s.
TRYTON_START_TIMEOUT_S = 300.0
START_TIMEOUT_S = 90.0

#: (progress, name, seconds) callback so the CLI can show what it waits for.
Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class Part:
    name: str
    url: str
    argv: list[str]
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    before_start: Callable[[], None] | None = None
    after_healthy: Callable[[], None] | None = None
    start_timeout: float = START_TIMEOUT_S
    waiting_for: str = "healthy"
    #: What else a reader of `status` needs to know (Tryton: which database backend).
    detail: str = ""


@dataclass
class Record:
    """What `up` started: the pid, and its start time to tell it from a reused pid."""

    pid: int
    start_ticks: int
    log: str


@dataclass(frozen=True)
class PartStatus:
    name: str
    running: bool
    healthy: bool
    url: str
    pid: int | None
    log: str
    detail: str = ""


def ensure_secrets(state_dir: Path) -> None:
    """Generate the demo's secrets once, into a file only the owner can read."""
    path = state_dir / SECRETS_FILE_NAME
    if path.exists():
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "Q2C_TRYTON_PASSWORD": secrets.token_urlsafe(18),
        "Q2C_SALESFORCE_CLIENT_SECRET": secrets.token_urlsafe(24),
        "Q2C_SALESFORCE_WEBHOOK_SECRET": secrets.token_hex(24),
        "Q2C_STRIPE_API_KEY": f"sk_test_{secrets.token_hex(24)}",
        "Q2C_STRIPE_WEBHOOK_SECRET": f"whsec_{secrets.token_hex(24)}",
        "Q2C_PSA_WEBHOOK_SECRET": secrets.token_hex(24),
    }
    path.touch(mode=0o600)
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))


def _start_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return int(fields[19])  # field 22 of stat: start time in clock ticks after boot


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _worker_polling(settings: Settings, pid: int | None) -> bool:
    """Our worker polls its task queue (its identity carries its pid)."""
    if pid is None or not pid_alive(pid):
        return False

    async def check() -> bool:
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        from workflows.client import connect

        client = await connect(settings)
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=settings.temporal_namespace,
                task_queue=TaskQueue(name=settings.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        return any(p.identity.endswith(f":{pid}") for p in response.pollers)

    try:
        return asyncio.run(check())
    except Exception:
        return False


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir.resolve()
        self.logs = self.state_dir / "logs"

    # Parts ---------------------------------------------------------------------------

    def parts(self) -> list[Part]:
        s = self.settings
        host = s.host
        python = sys.executable
        temporal_bin = shutil.which("temporal", path=str(Path(python).parent)) or "temporal"
        temporal_dir = self.state_dir / "temporal"
        tryton_dir = self.state_dir / "tryton"
        tryton_password = s.tryton_password.get_secret_value()
        service = s.service_url
        child_env = {"Q2C_STATE_DIR": str(self.state_dir)}

        tryton_uri = s.tryton_database_uri

        def tryton_prepare() -> None:
            if tryton_postgres.is_postgresql(tryton_uri):
                reason = tryton_postgres.unreachable(tryton_uri)
                if reason is not None:
                    raise PartFailed("tryton", self.logs / "tryton.log", reason)
            tryton.prepare(
                tryton_dir,
                port=s.tryton_port,
                database=s.tryton_database,
                admin_password=tryton_password,
                database_uri=tryton_uri,
            )

        def store_migrate() -> None:
            # Once, before the service and the worker, which refuse an unmigrated store.
            from store.migrate import migrate_store

            asyncio.run(migrate_store(s.store_url))

        def tryton_bootstrap() -> None:
            asyncio.run(
                tryton.ensure_bootstrapped(
                    tryton_dir,
                    s.tryton_base_url,
                    database=s.tryton_database,
                    admin_password=tryton_password,
                    legal_entities=s.legal_entities_file,
                    database_uri=tryton_uri,
                )
            )

        return [
            Part(
                name="temporal",
                url=s.temporal_ui_url,
                argv=[
                    temporal_bin,
                    "server",
                    "start-dev",
                    "--ip",
                    host,
                    "--port",
                    str(s.temporal_port),
                    "--ui-port",
                    str(s.temporal_ui_port),
                    "--db-filename",
                    str(temporal_dir / "temporal.db"),
                    "--log-level",
                    "warn",
                    "--namespace",
                    s.temporal_namespace,
                    # WAL and the dispatch knob: notes/temporal.md measured 2.5x throughput.
                    "--sqlite-pragma",
                    "journal_mode=wal",
                    "--sqlite-pragma",
                    "synchronous=normal",
                    "--dynamic-config-value",
                    "history.transferProcessorMaxPollRPS=1000",
                    *server_flags(),
                ],
                healthy=lambda: _tcp_open(host, s.temporal_port) and http_ok(s.temporal_ui_url),
                before_start=lambda: temporal_dir.mkdir(parents=True, exist_ok=True),
            ),
            Part(
                name="tryton",
                url=f"{s.tryton_base_url}/{s.tryton_database}/",
                argv=tryton.server_argv(tryton.config_path(tryton_dir), s.tryton_database),
                healthy=lambda: tryton.health_check(s.tryton_base_url, s.tryton_database),
                before_start=tryton_prepare,
                after_healthy=tryton_bootstrap,
                start_timeout=TRYTON_START_TIMEOUT_S,
                waiting_for="healthy (the first start creates and bootstraps the database)",
                detail=f"database {s.tryton_database} on {tryton.backend_label(tryton_uri)}",
            ),
            Part(
                name="salesforce",
                url=s.salesforce_base_url,
                argv=[
                    python,
                    "-m",
                    "standins.salesforce",
                    "--host",
                    host,
                    "--port",
                    str(s.salesforce_port),
                    "--db",
                    str(self.state_dir / "salesforce.sqlite"),
                    "--webhook-url",
                    f"{service}/webhooks/salesforce",
                ],
                env={
                    "STANDIN_SF_CLIENT_ID": s.salesforce_client_id,
                    "STANDIN_SF_CLIENT_SECRET": s.salesforce_client_secret.get_secret_value(),
                    "STANDIN_SF_WEBHOOK_SECRET": s.salesforce_webhook_secret.get_secret_value(),
                },
                healthy=lambda: http_ok(f"{s.salesforce_base_url}/_standin/health"),
            ),
            Part(
                name="stripe",
                url=s.stripe_base_url,
                argv=[
                    python,
                    "-m",
                    "standins.stripe",
                    "--host",
                    host,
                    "--port",
                    str(s.stripe_port),
                    "--db",
                    str(self.state_dir / "stripe.sqlite"),
                    "--webhook-url",
                    f"{service}/webhooks/stripe",
                ],
                env={"STANDIN_STRIPE_WEBHOOK_SECRET": s.stripe_webhook_secret.get_secret_value()},
                healthy=lambda: http_ok(f"{s.stripe_base_url}/_standin/health"),
            ),
            Part(
                name="service",
                url=f"{service}/health",
                argv=[python, "-m", "service"],
                env=child_env,
                before_start=store_migrate,
                healthy=lambda: _service_healthy(f"{service}/health"),
            ),
            Part(
                name="worker",
                url=f"task queue {s.task_queue}",
                argv=[python, "-m", "worker"],
                env=child_env,
                healthy=lambda: _worker_polling(s, self._live_pid("worker")),
            ),
        ]

    # Records -------------------------------------------------------------------------

    def _records(self) -> dict[str, Record]:
        path = self.state_dir / STACK_FILE
        if not path.exists():
            return {}
        return {name: Record(**rec) for name, rec in json.loads(path.read_text()).items()}

    def _save(self, records: dict[str, Record]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / STACK_FILE
        path.write_text(json.dumps({n: asdict(r) for n, r in records.items()}, indent=2))

    def _live_pid(self, name: str) -> int | None:
        """The recorded pid of `name` if that very process still runs."""
        record = self._records().get(name)
        if record is None or not pid_alive(record.pid):
            return None
        return record.pid if _start_ticks(record.pid) == record.start_ticks else None

    # Commands ------------------------------------------------------------------------

    def up(self, progress: Progress) -> None:
        """Start every part that is not running; return when all are healthy."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        for part in self.parts():
            self._start(part, progress)

    def _start(self, part: Part, progress: Progress) -> None:
        log_path = self.logs / f"{part.name}.log"
        pid = self._live_pid(part.name)
        if pid is not None and part.healthy():
            progress(part.name, f"already running (pid {pid}) at {part.url}")
            return
        if pid is not None:
            progress(part.name, f"running but not healthy: restarting (pid {pid})")
            stop_process_group(pid)
        elif part.healthy():
            raise PartFailed(
                part.name, log_path, f"something q2c did not start already answers at {part.url}"
            )
        started = time.monotonic()
        progress(part.name, "starting")
        if part.before_start is not None:
            part.before_start()
        process = spawn(part.argv, log_path=log_path, env=part.env)
        records = self._records()
        records[part.name] = Record(
            pid=process.pid, start_ticks=_start_ticks(process.pid) or 0, log=str(log_path)
        )
        self._save(records)
        progress(part.name, f"waiting until {part.waiting_for}")
        wait_until_healthy(
            part.name,
            part.healthy,
            log_path=log_path,
            process=process,
            timeout=part.start_timeout,
        )
        if part.after_healthy is not None:
            progress(part.name, "setting up")
            try:
                part.after_healthy()
            except Exception as exc:
                raise PartFailed(part.name, log_path, f"setup failed: {exc}") from exc
        progress(part.name, f"healthy at {part.url} ({time.monotonic() - started:.1f} s)")

    def down(self, progress: Progress) -> None:
        """Stop every process `up` started (newest first), and nothing else."""
        records = self._records()
        for name in reversed(list(records)):
            pid = self._live_pid(name)
            if pid is None:
                progress(name, "not running")
            else:
                stop_process_group(pid)
                progress(name, f"stopped (pid {pid})")
            records.pop(name)
            self._save(records)

    def status(self) -> list[PartStatus]:
        result = []
        records = self._records()
        for part in self.parts():
            pid = self._live_pid(part.name)
            record = records.get(part.name)
            result.append(
                PartStatus(
                    name=part.name,
                    running=pid is not None,
                    healthy=pid is not None and part.healthy(),
                    url=part.url,
                    pid=pid,
                    log=record.log if record else str(self.logs / f"{part.name}.log"),
                    detail=part.detail,
                )
            )
        return result


def _service_healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def load_stack(state_dir: Path | None = None) -> Stack:
    """Settings with the demo secrets in place (generated on first use)."""
    settings = load_settings(**({"state_dir": state_dir} if state_dir else {}))
    ensure_secrets(settings.state_dir)
    return Stack(load_settings(state_dir=settings.state_dir))
