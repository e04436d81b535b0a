"""The q2c stack as separate processes, as a user runs it, for the chaos suite.

Every part is a `Part`: one process group on a fixed free port with its state in the
stack's folder, so it can be stopped, SIGKILLed and started again on the same port with the
same state. `ChaosStack.close()` stops every process the stack ever started (newest first)
and is safe to call twice; the fixtures call it from a finalizer, so a failing test leaves
nothing running.

Parts: the Temporal dev server (SQLite file, q2c's search attributes), Tryton (restored from
the test suite's bootstrapped snapshot), the Salesforce and Stripe stand-ins, one or more
q2c service replicas (`python -m service`; behind a round-robin balancer when there are
several) and any number of q2c workers (`q2c worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from devstack import tryton as devtryton
from devstack import tryton_postgres as pgtryton
from devstack.process import (
    PartFailed,
    http_ok,
    spawn,
    stop_process_group,
    wait_until_healthy,
)
from settings import Settings
from standins.stripe import WEBHOOK_SECRET_ENV
from tests.e2e.conftest import settings_env
from tests.fixtures.ports import free_port
from tests.fixtures.temporal import temporal_binary
from tests.fixtures.tryton import DATABASE as TRYTON_DATABASE
from tests.fixtures.tryton import LOGIN as TRYTON_LOGIN
from tests.fixtures.tryton import PG_URI, _cache_dir, _cached_snapshot, cached_template
from workflows.client import connect
from workflows.search_attributes import server_flags

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: A part that is not healthy within this long after start fails the test, naming its log.
START_TIMEOUT_S = 120.0
MIGRATE_TIMEOUT_S = 120.0
#: The dev server's SQLite tuning, as the dev stack runs it (notes/temporal.md).
TEMPORAL_TUNING = [
    "--sqlite-pragma",
    "journal_mode=wal",
    "--sqlite-pragma",
    "synchronous=normal",
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=1000",
]


@dataclass
class Part:
    """One process group of the stack; restartable with the same argv, port and state."""

    name: str
    argv: list[str]
    log: Path
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    start_timeout: float = START_TIMEOUT_S
    process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def start(self) -> None:
        """Start the part and return once it answers its health check."""
        if self.running:
            return
        self.process = spawn(self.argv, log_path=self.log, env=self.env, cwd=REPO)
        try:
            wait_until_healthy(
                self.name,
                self.healthy,
                log_path=self.log,
                process=self.process,
                timeout=self.start_timeout,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the group (SIGKILL after a grace period) and reap the leader."""
        if self.process is None:
            return
        stop_process_group(self.process.pid)
        self.process.wait(timeout=15)
        self.process = None

    def kill(self) -> None:
        """SIGKILL the whole group: no drain, no goodbye, as a crashed host would."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=15)
        stop_process_group(self.process.pid, grace=1)  # anything it forked
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass(frozen=True)
class StackConfig:
    """What varies between chaos tests: the backends, and how many workers and replicas."""

    #: Tryton's database backend. "sqlite": restored from the suite's cached snapshot;
    #: "postgres": a copy of the suite's cached PostgreSQL template (`Q2C_TRYTON_DATABASE_URI`).
    tryton: str = "sqlite"
    #: "sqlite" (a file in the stack's folder) or a PostgreSQL URL for the store.
    store_url: str = "sqlite"
    workers: int = 1
    services: int = 1
    #: Short, so that a run waiting out an outage says so within a test (3 min in production).
    outage_notice_after: timedelta = timedelta(seconds=20)


class Balancer:
    """A round-robin HTTP load balancer in front of the service replicas.

    The Salesforce stand-in posts its webhooks here, as it would to a load balancer in
    production; each replica's share is counted so a test can check the spread.
    """

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.served = [0] * len(backends)
        self._next = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _pick(self) -> list[int]:
        with self._lock:
            first = self._next
            self._next = (self._next + 1) % len(self.backends)
        return [(first + i) % len(self.backends) for i in range(len(self.backends))]

    def start(self) -> None:
        balancer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                status, answer = 502, b""
                # A replica that refuses the connection is skipped, as a balancer's health
                # check would; an answer (any status) is passed back unchanged.
                for index in balancer._pick():
                    try:
                        response = httpx.post(
                            balancer.backends[index] + self.path,
                            content=body,
                            headers=headers,
                            timeout=30,
                        )
                    except httpx.TransportError:
                        continue
                    with balancer._lock:
                        balancer.served[index] += 1
                    status, answer = response.status_code, response.content
                    break
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _answers(check: Callable[[], Coroutine[Any, Any, bool]]) -> bool:
    """Run an async health check from the stack's blocking code; False when it fails."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("ChaosStack blocks: call it in a thread (asyncio.to_thread)")
    try:
        return asyncio.run(check())
    except Exception:
        return False


def _service_healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


class ChaosStack:
    """Every q2c part on free ports in `folder`; see the module docstring."""

    def __init__(self, folder: Path, config: StackConfig) -> None:
        self.folder = folder
        self.config = config
        self.logs = folder / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.task_queue = "q2c"
        self.temporal_port = free_port()
        self.tryton_port = free_port()
        self.salesforce_port = free_port()
        self.stripe_port = free_port()
        self.service_ports = [free_port() for _ in range(config.services)]
        self.tryton_folder = folder / "tryton"
        on_postgres = config.tryton == "postgres"
        self.tryton_uri = PG_URI if on_postgres else None
        self.tryton_database = (
            f"q2c_chaos_{secrets.token_hex(6)}" if on_postgres else TRYTON_DATABASE
        )
        self.tryton_password = secrets.token_urlsafe(18)
        self.balancer = (
            Balancer([f"http://127.0.0.1:{p}" for p in self.service_ports])
            if config.services > 1
            else None
        )
        store_url = (
            f"sqlite+aiosqlite:///{folder / 'q2c.sqlite'}"
            if config.store_url == "sqlite"
            else config.store_url
        )
        self.settings = Settings(
            state_dir=folder,
            temporal_port=self.temporal_port,
            temporal_address=f"127.0.0.1:{self.temporal_port}",
            task_queue=self.task_queue,
            tryton_url=f"http://127.0.0.1:{self.tryton_port}",
            tryton_database=self.tryton_database,
            tryton_database_uri=self.tryton_uri,
            tryton_user=TRYTON_LOGIN,
            tryton_password=SecretStr(self.tryton_password),
            salesforce_url=f"http://127.0.0.1:{self.salesforce_port}",
            salesforce_client_id=f"q2c-chaos-{secrets.token_hex(4)}",
            salesforce_client_secret=SecretStr(secrets.token_urlsafe(24)),
            salesforce_webhook_secret=SecretStr(secrets.token_hex(24)),
            stripe_url=f"http://127.0.0.1:{self.stripe_port}",
            stripe_api_key=SecretStr(f"sk_test_{secrets.token_hex(24)}"),
            stripe_webhook_secret=SecretStr(f"whsec_{secrets.token_hex(24)}"),
            psa_webhook_secret=SecretStr(secrets.token_hex(24)),
            service_port=self.service_ports[0],
            database_url=store_url,
            outage_notice_after=config.outage_notice_after,
        )
        self.temporal = self._temporal()
        self.tryton = self._tryton()
        self.salesforce = self._salesforce()
        self.stripe = self._stripe()
        self.services = [self._service(i, port) for i, port in enumerate(self.service_ports)]
        self.workers: list[Part] = []
        #: Every part ever made, so `close` stops replaced workers too.
        self._all: list[Part] = []

    # -- environment -----------------------------------------------------------------------

    def env(self, **overrides: str) -> dict[str, str]:
        """The `Q2C_` environment that gives a q2c process this stack's settings."""
        return settings_env(self.settings) | {"Q2C_STATE_DIR": str(self.folder)} | overrides

    @property
    def service_url(self) -> str:
        """Where the outside world posts webhooks: the balancer, or the one replica."""
        if self.balancer is not None:
            return self.balancer.url
        return f"http://127.0.0.1:{self.service_ports[0]}"

    # -- parts -----------------------------------------------------------------------------

    def _temporal(self) -> Part:
        db = self.folder / "temporal" / "temporal.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        port = self.temporal_port
        return Part(
            name="temporal",
            argv=[
                temporal_binary(),
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--headless",
                "--db-filename",
                str(db),
                "--log-level",
                "warn",
                *TEMPORAL_TUNING,
                *server_flags(),
            ],
            log=self.logs / "temporal.log",
            healthy=lambda: _tcp_open(port) and self._temporal_answers(),
        )

    def _temporal_answers(self) -> bool:
        async def check() -> bool:
            client = await connect(self.settings)
            return await client.service_client.check_health()

        return _answers(check)

    def _tryton(self) -> Part:
        url = self.settings.tryton_base_url
        return Part(
            name="tryton",
            argv=devtryton.server_argv(
                devtryton.config_path(self.tryton_folder), self.tryton_database
            ),
            log=self.logs / "tryton.log",
            healthy=lambda: devtryton.health_check(url, self.tryton_database),
        )

    def _prepare_tryton(self) -> None:
        """Tryton's database from the suite's cached, bootstrapped snapshot (SQLite) or
        template (PostgreSQL)."""
        database, uri = self.tryton_database, self.tryton_uri
        if self.config.tryton == "sqlite":
            devtryton.restore(_cached_snapshot(_cache_dir()), self.tryton_folder, database)
        elif self.config.tryton == "postgres":
            if (reason := pgtryton.unreachable(PG_URI)) is not None:
                raise PartFailed("tryton", self.logs / "tryton.log", reason)
            template, _ = cached_template(PG_URI)
            pgtryton.create_database(PG_URI, database, template=template)
        else:
            raise ValueError(f"no Tryton backend {self.config.tryton!r} in the harness")
        devtryton.set_admin_password(
            self.tryton_folder, database, self.tryton_password, login=TRYTON_LOGIN, database_uri=uri
        )
        devtryton.write_config(
            self.tryton_folder, port=self.tryton_port, database=database, database_uri=uri
        )

    def _salesforce(self) -> Part:
        s = self.settings
        return Part(
            name="salesforce",
            argv=[
                sys.executable,
                "-m",
                "standins.salesforce",
                "--port",
                str(self.salesforce_port),
                "--db",
                str(self.folder / "salesforce.sqlite"),
                "--webhook-url",
                f"{self.service_url}/webhooks/salesforce",
            ],
            env={
                "STANDIN_SF_CLIENT_ID": s.salesforce_client_id,
                "STANDIN_SF_CLIENT_SECRET": s.salesforce_client_secret.get_secret_value(),
                "STANDIN_SF_WEBHOOK_SECRET": s.salesforce_webhook_secret.get_secret_value(),
            },
            log=self.logs / "salesforce.log",
            healthy=lambda: http_ok(f"{s.salesforce_base_url}/_standin/health"),
        )

    def _stripe(self) -> Part:
        s = self.settings
        return Part(
            name="stripe",
            argv=[
                sys.executable,
                "-m",
                "standins.stripe",
                "--port",
                str(self.stripe_port),
                "--db",
                str(self.folder / "stripe.sqlite"),
                "--webhook-url",
                f"{self.service_url}/webhooks/stripe",
            ],
            env={WEBHOOK_SECRET_ENV: s.stripe_webhook_secret.get_secret_value()},
            log=self.logs / "stripe.log",
            healthy=lambda: http_ok(f"{s.stripe_base_url}/_standin/health"),
        )

    def _service(self, index: int, port: int) -> Part:
        url = f"http://127.0.0.1:{port}"
        return Part(
            name=f"service-{index}",
            argv=[sys.executable, "-m", "service"],
            env=self.env(Q2C_SERVICE_PORT=str(port)),
            log=self.logs / f"service-{index}.log",
            healthy=lambda: _service_healthy(url),
        )

    def _new_worker(self) -> Part:
        index = len([p for p in self._all if p.name.startswith("worker-")])
        part = Part(
            name=f"worker-{index}",
            argv=[str(BIN / "q2c"), "worker"],
            env=self.env(),
            log=self.logs / f"worker-{index}.log",
            healthy=lambda: self._worker_polling(part),
        )
        return part

    def _worker_polling(self, part: Part) -> bool:
        """The worker's own poller (its identity ends with its pid) is on the task queue."""
        if not part.running:
            return False

        async def check() -> bool:
            from temporalio.api.enums.v1 import TaskQueueType
            from temporalio.api.taskqueue.v1 import TaskQueue
            from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

            client = await connect(self.settings)
            response = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.settings.temporal_namespace,
                    task_queue=TaskQueue(name=self.task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
            return any(p.identity.endswith(f":{part.pid}") for p in response.pollers)

        return _answers(check)

    # -- life cycle ------------------------------------------------------------------------

    def _start(self, part: Part) -> None:
        if part not in self._all:
            self._all.append(part)
        part.start()

    def start(self) -> None:
        """Bring every part up, in dependency order, and migrate the store once."""
        self._prepare_tryton()
        for part in (self.temporal, self.tryton, self.stripe):
            self._start(part)
        self.migrate()
        if self.balancer is not None:
            self.balancer.start()
        for part in self.services:
            self._start(part)
        self._start(self.salesforce)
        for _ in range(self.config.workers):
            self.add_worker()

    def migrate(self) -> None:
        """`q2c store migrate`, once, before any service or worker starts."""
        log = self.logs / "migrate.log"
        with log.open("ab") as out:
            done = subprocess.run(
                [str(BIN / "q2c"), "store", "migrate"],
                env={**os.environ, **self.env()},
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=MIGRATE_TIMEOUT_S,
                check=False,
            )
        if done.returncode != 0:
            raise PartFailed("store migration", log, f"exited with code {done.returncode}")

    def add_worker(self) -> Part:
        """Start one more worker process and wait until it polls the task queue."""
        part = self._new_worker()
        self._start(part)
        self.workers.append(part)
        return part

    def kill_worker(self, part: Part) -> None:
        part.kill()
        self.workers.remove(part)

    def parts(self) -> Iterator[Part]:
        yield from (self.temporal, self.tryton, self.stripe, *self.services, self.salesforce)
        yield from self.workers

    def heal(self) -> None:
        """Start again whatever a test left stopped, and clear the stand-ins' faults."""
        for part in self.parts():
            self._start(part)
        while len(self.workers) < self.config.workers:
            self.add_worker()
        for url in (self.settings.salesforce_base_url, self.settings.stripe_base_url):
            httpx.delete(f"{url}/_standin/faults", timeout=10).raise_for_status()

    def close(self) -> None:
        """Stop every process this stack started, newest first. Safe to call again."""
        errors: list[BaseException] = []
        for part in reversed(self._all):
            try:
                part.stop()
            except BaseException as exc:  # keep stopping the others
                errors.append(exc)
        if self.balancer is not None:
            self.balancer.stop()
        if self.tryton_uri is not None:
            try:
                pgtryton.drop_database(self.tryton_uri, self.tryton_database)
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- faults ----------------------------------------------------------------------------

    def inject_fault(self, part: Part, **spec: Any) -> None:
        """A stand-in fault (see `standins.faults`): kind, path, method, count, retry_after."""
        url = {
            "salesforce": self.settings.salesforce_base_url,
            "stripe": self.settings.stripe_base_url,
        }[part.name]
        httpx.post(f"{url}/_standin/faults", json=spec, timeout=10).raise_for_status()
